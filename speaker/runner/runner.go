// Package runner is the speaker's thin loop: it takes the changes the
// tracker (speaker/state) recorded, turns them into the planner's inputs
// (speaker/plan), and applies what the plan changed to the outputs: the
// layer-2 announcer, and the status queue (speaker/status) that people read.
//
// A Service or EndpointSlice change re-plans that Service's addresses only; a
// change of nodes, speaker Leases, gossip membership or configuration
// re-plans every address, at most once per MinFullInterval for node and
// configuration churn. There is no periodic tick: a timer fires at the
// earliest moment a Lease expires. Nothing on this path waits for an API
// write: the Lease is renewed on its own goroutine (speaker/lease.Keeper) and
// status goes through its own queue.
package runner

import (
	"context"
	"errors"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/heraldlb/herald/internal/model"
	"github.com/heraldlb/herald/speaker/bgp"
	"github.com/heraldlb/herald/speaker/dataplane"
	"github.com/heraldlb/herald/speaker/election"
	"github.com/heraldlb/herald/speaker/lease"
	"github.com/heraldlb/herald/speaker/plan"
	"github.com/heraldlb/herald/speaker/state"
	"github.com/heraldlb/herald/speaker/status"
)

// Options configure a runner.
type Options struct {
	NodeName string
	// HandoverTimeout bounds how long a stopping speaker keeps answering
	// while it waits to see the new owners announce.
	HandoverTimeout time.Duration
	// MinFullInterval spaces re-plans of every address caused by node or
	// configuration churn. Liveness changes are never delayed.
	MinFullInterval time.Duration
	// Namespace is Herald's: BGP password Secrets are read there.
	Namespace string
	// Dataplane forwards the traffic this node receives; nil: kube-proxy
	// does (the Services' ipMode is VIP).
	Dataplane dataplane.Backend
	// ViaNodePorts: the dataplane sends the traffic for other nodes to
	// their NodePorts rather than straight to the endpoints there
	// (dataplane.Nodes.ViaNodePorts).
	ViaNodePorts bool
}

// Layer2 is the layer-2 output (speaker/layer2.Announcer).
type Layer2 interface {
	// Update changes what this node answers for: an address mapped to
	// interfaces is answered there, one mapped to nil no longer.
	Update(changes map[netip.Addr][]string) error
	// Hold answers and announces nothing until the time given, without
	// changing what this node owns.
	Hold(until time.Time)
	WaitAnnouncedByOther(ctx context.Context, ip netip.Addr) error
	Close() error
}

// Gossip is the fast membership (speaker/membership.Membership).
type Gossip interface {
	Join(addrs []string) (int, error)
	Alive() map[string]bool
	Healthy() bool
	Changes() <-chan struct{}
	Leave(timeout time.Duration) error
	SetAPIReachable(ok bool)
	APIUnreachable() map[string]bool
	HeardFrom(since time.Time) map[string]bool
	DeclaredDead() time.Time
	Suspicion() (at, until time.Time)
}

// Runner is one node's speaker loop.
type Runner struct {
	opts     Options
	tracker  *state.Tracker
	cache    client.Reader
	planner  *plan.Planner
	layer2   Layer2
	bgp      BGP        // nil: none
	fwd      *forwarder // nil: no dataplane
	gossip   Gossip     // nil: none
	status   *status.Reporter
	keeper   *lease.Keeper
	metrics  *metrics
	log      logr.Logger
	started  time.Time
	ready    chan struct{}
	cutOff   atomic.Bool // standing down for want of peers' gossip, after the first pass
	settling settle
	// suspectedUntil is the end of the last suspicion of this speaker
	// that layer 2 holds its answers for (logged once each).
	suspectedUntil time.Time
	lastFull       time.Time
	joinPeers      peerList

	// What the last pass decided and applied.
	cfg      *model.Config
	nodes    []election.Node
	healthy  []dataplane.Node
	live     liveness
	world    plan.World
	owned    map[netip.Addr][]string
	sessions []bgp.Session
}

// New returns a runner. bgp and gossip may be nil; reg may be nil (no metrics).
func New(tracker *state.Tracker, cache client.Reader, l2 Layer2, bgp BGP, gossip Gossip, reporter *status.Reporter, keeper *lease.Keeper, opts Options, reg prometheus.Registerer, log logr.Logger) *Runner {
	if opts.HandoverTimeout == 0 {
		opts.HandoverTimeout = 3 * time.Second
	}
	if opts.MinFullInterval == 0 {
		opts.MinFullInterval = 100 * time.Millisecond
	}
	return &Runner{
		opts: opts, tracker: tracker, cache: cache, planner: plan.New(), layer2: l2, bgp: bgp, gossip: gossip,
		status: reporter, keeper: keeper, metrics: newMetrics(reg), log: log,
		started: time.Now(), ready: make(chan struct{}), joinPeers: peerList{kick: make(chan struct{}, 1)},
		owned: map[netip.Addr][]string{},
		fwd:   newForwarder(opts.Dataplane, opts.NodeName, opts.ViaNodePorts, reg),
	}
}

// Ready is closed after the first pass has applied a plan.
func (r *Runner) Ready() <-chan struct{} { return r.ready }

// CutOff says why the speaker is announcing nothing, when it stands down
// because it hears the gossip of too few of the peers the API server
// shows alive (a partition, a firewall, a wrong gossip key); nil otherwise.
// The readiness probe reports it, so the pod shows NotReady.
func (r *Runner) CutOff() error {
	if r.cutOff.Load() {
		return errors.New("cut off from its peers' gossip: announcing nothing until it hears a majority again")
	}
	return nil
}

// Run plans and applies until ctx ends, then hands over: it withdraws its
// Lease and leaves the gossip so the others elect new owners at once, keeps
// answering until each new owner has announced (or HandoverTimeout passes),
// and only then stops answering.
func (r *Runner) Run(ctx context.Context) error {
	kctx, stopKeeper := context.WithCancel(context.Background())
	var keeperDone sync.WaitGroup
	keeperDone.Add(1)
	go func() { defer keeperDone.Done(); r.keeper.Run(kctx) }()
	go r.status.Run(ctx, 2)
	var gossipChanges <-chan struct{}
	if r.gossip != nil {
		gossipChanges = r.gossip.Changes()
		go r.joiner(ctx)
	}
	first, livenessDue := true, false
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for ctx.Err() == nil {
		changes := r.tracker.Take()
		if first {
			keys, err := r.tracker.ServiceKeys(ctx)
			if err != nil {
				r.log.Error(err, "listing Services")
			} else {
				changes.Services, changes.Config, changes.Nodes, changes.Leases = keys, true, true, true
			}
		}
		if err := r.pass(ctx, changes, livenessDue || changes.Leases); err != nil {
			r.log.Error(err, "planning")
			// The tracker's changes were taken: try them all again soon.
			first = true
			timer.Reset(time.Second)
		} else if first {
			first = false
			if err := r.status.Prune(ctx); err != nil {
				r.log.Error(err, "listing this node's Announcements")
			}
			select {
			case <-r.ready:
			default:
				close(r.ready)
			}
		}
		livenessDue = false
		if !first {
			next := r.live.Next
			if r.fwd != nil && r.fwd.failed && (next.IsZero() || time.Until(next) > time.Second) {
				next = time.Now().Add(time.Second)
			}
			resetTimer(timer, next)
		}
		select {
		case <-ctx.Done():
		case <-r.tracker.Wake():
		case <-gossipChanges:
			livenessDue = true
		case <-timer.C:
			livenessDue = true
		}
	}
	return r.handover(stopKeeper, &keeperDone)
}

func resetTimer(t *time.Timer, at time.Time) {
	if !t.Stop() {
		select {
		case <-t.C:
		default:
		}
	}
	if at.IsZero() {
		t.Reset(time.Hour)
		return
	}
	t.Reset(max(time.Until(at), 0))
}
