package runner

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus/testutil"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/heraldlb/herald/api/v1alpha1"
	heraldscheme "github.com/heraldlb/herald/internal/scheme"
	"github.com/heraldlb/herald/speaker/bgp"
	"github.com/heraldlb/herald/speaker/dataplane"
	"github.com/heraldlb/herald/speaker/election"
	"github.com/heraldlb/herald/speaker/lease"
	"github.com/heraldlb/herald/speaker/state"
	"github.com/heraldlb/herald/speaker/status"
)

var (
	lan    = netip.MustParsePrefix("198.51.100.0/25")
	gossip = func(i int) netip.AddrPort {
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 51, 100, byte(10 + i)}), 7947)
	}
)

func info(node string, renew time.Time, g netip.AddrPort) lease.Info {
	return lease.Info{Node: node, RenewTime: renew, Duration: 15 * time.Second, Gossip: g,
		Subnets: map[netip.Prefix][]string{lan: {"eth0"}}, Interfaces: []string{"eth0"}}
}

func TestDecideLiveness(t *testing.T) {
	now := time.Unix(10_000, 0)
	started := now.Add(-time.Minute)
	for _, tc := range []struct {
		name string
		in   livenessInput
		want liveness
	}{
		{"fresh Leases and gossip agree",
			livenessInput{Self: "a", Now: now, Started: started, GossipHealthy: true, GossipAlive: map[string]bool{"a": true, "b": true},
				Leases: map[string]lease.Info{"a": info("a", now.Add(-time.Second), gossip(1)), "b": info("b", now.Add(-2*time.Second), gossip(2))}},
			liveness{Live: []string{"a", "b"}, Announce: true, Peers: []string{"198.51.100.12:7947"}, Next: now.Add(13 * time.Second)}},
		{"an expired Lease counts for nothing and sets no timer",
			livenessInput{Self: "a", Now: now, Started: started, GossipHealthy: true, GossipAlive: map[string]bool{"a": true, "b": true},
				Leases: map[string]lease.Info{"a": info("a", now, gossip(1)), "b": info("b", now.Add(-20*time.Second), gossip(2))}},
			liveness{Live: []string{"a"}, Announce: true, Next: now.Add(15 * time.Second)}},
		{"a speaker without gossip counts itself as such only after the grace, and wakes for it",
			livenessInput{Self: "a", Now: now, Started: now.Add(-time.Second),
				Leases: map[string]lease.Info{"a": info("a", now, netip.AddrPort{})}},
			liveness{Live: []string{"a"}, Announce: false, Next: now.Add(-time.Second + gossiplessGrace + time.Millisecond)}},
		{"after the grace it uses the Kubernetes view",
			livenessInput{Self: "a", Now: now, Started: started,
				Leases: map[string]lease.Info{"a": info("a", now, netip.AddrPort{}), "b": info("b", now, gossip(2))}},
			liveness{Live: []string{"a", "b"}, Announce: true, Peers: []string{"198.51.100.12:7947"}, Next: now.Add(15 * time.Second)}},
		{"cut off from its gossip peers: announce nothing",
			livenessInput{Self: "c", Now: now, Started: started, GossipHealthy: true, GossipAlive: map[string]bool{"c": true},
				Leases: map[string]lease.Info{"a": info("a", now, gossip(1)), "b": info("b", now, gossip(2)), "c": info("c", now, gossip(3))}},
			liveness{Live: []string{"c"}, Announce: false, Peers: []string{"198.51.100.11:7947", "198.51.100.12:7947"}, Next: now.Add(15 * time.Second)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := decideLiveness(tc.in); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("decideLiveness =\n %+v\nwant\n %+v", got, tc.want)
			}
		})
	}
}

// An API server down for most speakers freezes the Lease view as it was
// when it went down: no speaker can renew, and yet each keeps what it
// announces, gossip alone telling who died. One speaker cut off from the
// API server alone stands down instead, as its peers count it gone.
func TestAPIServerOutageKeepsTheLeaseViewOnlyWhenMostSpeakersShareIt(t *testing.T) {
	now := time.Unix(10_000, 0)
	started := now.Add(-time.Hour)
	lastRenewal := now.Add(-20 * time.Second) // 15 s Leases: all expired by now
	leases := map[string]lease.Info{"a": info("a", lastRenewal, gossip(1)), "b": info("b", lastRenewal, gossip(2)), "c": info("c", lastRenewal, gossip(3))}
	all := map[string]bool{"a": true, "b": true, "c": true}
	in := func(down map[string]bool, alive map[string]bool, prev outage) livenessInput {
		return livenessInput{Self: "a", Now: now, Started: started, Leases: leases, GossipHealthy: true, GossipAlive: alive,
			APIUnreachable: down, Renewed: lastRenewal, Outage: prev, Grace: 15 * time.Second}
	}
	ongoing := outage{Since: lastRenewal}
	peers := []string{"198.51.100.12:7947", "198.51.100.13:7947"}
	for _, tc := range []struct {
		name string
		in   livenessInput
		want liveness
	}{
		{"every speaker down: the Leases as of the last renewal, everyone announces",
			in(all, all, outage{}),
			liveness{Live: []string{"a", "b", "c"}, Announce: true, Peers: peers, Outage: ongoing}},
		{"a majority down (this one reaches the API server): the same view",
			in(map[string]bool{"b": true, "c": true}, all, outage{}),
			liveness{Live: []string{"a", "b", "c"}, Announce: true, Peers: peers, Outage: ongoing}},
		{"only this speaker down: no outage, its own Lease has expired, it stands down",
			in(map[string]bool{"a": true}, all, outage{}),
			liveness{Announce: false}},
		{"a speaker that dies during the outage is gone by gossip",
			in(map[string]bool{"a": true, "b": true}, map[string]bool{"a": true, "b": true}, ongoing),
			liveness{Live: []string{"a", "b"}, Announce: true, Peers: peers, Outage: ongoing}},
		{"the outage over: its view holds for a Lease duration, and the runner wakes at its end",
			in(nil, all, ongoing),
			liveness{Live: []string{"a", "b", "c"}, Announce: true, Peers: peers, Outage: outage{Since: lastRenewal, Until: now.Add(15 * time.Second)}, Next: now.Add(15 * time.Second)}},
		{"after the grace, Leases count as they are",
			in(nil, all, outage{Since: lastRenewal, Until: now}),
			liveness{Announce: false}},
		{"without gossip no speaker can tell an outage from its own cut: none",
			livenessInput{Self: "a", Now: now, Started: started, Leases: leases, APIUnreachable: all, Renewed: lastRenewal, Grace: 15 * time.Second},
			liveness{Announce: false}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := decideLiveness(tc.in); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("decideLiveness =\n %+v\nwant\n %+v", got, tc.want)
			}
		})
	}
}

// fakeLayer2 records what the runner asks of layer 2.
type fakeLayer2 struct {
	mu      sync.Mutex
	owned   map[netip.Addr][]string
	updates int
	held    time.Time // the last Hold
}

func (f *fakeLayer2) Update(changes map[netip.Addr][]string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.updates++
	for ip, ifs := range changes {
		if ifs == nil {
			delete(f.owned, ip)
		} else {
			f.owned[ip] = ifs
		}
	}
	return nil
}
func (f *fakeLayer2) Hold(until time.Time)                                   { f.held = until }
func (f *fakeLayer2) WaitAnnouncedByOther(context.Context, netip.Addr) error { return nil }
func (f *fakeLayer2) Close() error                                           { return nil }

// fakeBGP records what the runner asks of BGP.
type fakeBGP struct {
	sessions []bgp.Session
	routes   map[netip.Prefix]bgp.Route
	detached bool
}

func (f *fakeBGP) SetSessions(s []bgp.Session) error { f.sessions = s; return nil }
func (f *fakeBGP) UpdateRoutes(delta map[netip.Prefix]*bgp.Route) error {
	for p, r := range delta {
		if r == nil {
			delete(f.routes, p)
		} else {
			f.routes[p] = *r
		}
	}
	return nil
}
func (f *fakeBGP) Detach() { f.detached = true }

type fakeGossip struct {
	alive map[string]bool
	heard map[string]bool // nil: every alive speaker has been heard from
	dead  time.Time
	// suspectedAt, suspectedUntil: Suspicion
	suspectedAt, suspectedUntil time.Time
}

func (g *fakeGossip) DeclaredDead() time.Time          { return g.dead }
func (g *fakeGossip) Suspicion() (at, until time.Time) { return g.suspectedAt, g.suspectedUntil }

func (g *fakeGossip) Join([]string) (int, error) { return 0, nil }
func (g *fakeGossip) Alive() map[string]bool     { return g.alive }
func (g *fakeGossip) Healthy() bool              { return true }
func (g *fakeGossip) Changes() <-chan struct{}   { return nil }
func (g *fakeGossip) Leave(time.Duration) error  { return nil }
func (g *fakeGossip) SetAPIReachable(bool)       {}
func (g *fakeGossip) APIUnreachable() map[string]bool {
	return nil
}
func (g *fakeGossip) HeardFrom(time.Time) map[string]bool {
	if g.heard == nil {
		return g.alive
	}
	return g.heard
}

type recorder struct {
	mu     sync.Mutex
	events []string
}

func (r *recorder) Eventf(_ runtime.Object, _ runtime.Object, eventtype, reason, action, note string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, reason)
}

var _ events.EventRecorder = &recorder{}

func ptr[T any](v T) *T { return &v }

// harness is a runner on node "a" of nodes a, b, c, fed from a fake client.
type harness struct {
	t      *testing.T
	c      client.Client
	r      *Runner
	l2     *fakeLayer2
	bgp    *fakeBGP
	gossip *fakeGossip
	rec    *recorder
	ctx    context.Context
}

func newHarness(t *testing.T, self string) *harness {
	scheme := heraldscheme.New()
	now := time.Now()
	objs := []client.Object{
		&v1alpha1.IPAddressPool{ObjectMeta: metav1.ObjectMeta{Name: "lan"}, Spec: v1alpha1.IPAddressPoolSpec{Addresses: []string{"198.51.100.64/27"}}},
		&v1alpha1.L2Advertisement{ObjectMeta: metav1.ObjectMeta{Name: "lan"}, Spec: v1alpha1.L2AdvertisementSpec{IPAddressPools: []string{"lan"}}},
	}
	for i, n := range []string{"a", "b", "c"} {
		objs = append(objs, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n}})
		objs = append(objs, &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Namespace: "herald-system", Name: lease.Name(n),
				Annotations: lease.Annotations(map[netip.Prefix][]string{lan: {"eth0"}}, []string{"eth0"}, gossip(i+1), "nftables")},
			Spec: coordinationv1.LeaseSpec{RenewTime: ptr(metav1.NewMicroTime(now)), LeaseDurationSeconds: ptr(int32(60))},
		})
	}
	c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(objs...).
		WithIndex(&discoveryv1.EndpointSlice{}, "herald.dev/service", func(o client.Object) []string { return []string{o.GetLabels()[discoveryv1.LabelServiceName]} }).
		Build()
	h := &harness{t: t, c: c, l2: &fakeLayer2{owned: map[netip.Addr][]string{}}, bgp: &fakeBGP{routes: map[netip.Prefix]bgp.Route{}}, gossip: &fakeGossip{alive: map[string]bool{"a": true, "b": true, "c": true}}, rec: &recorder{}}
	tr := state.NewTracker(c, "herald-system", "", logr.Discard(), nil)
	var leases coordinationv1.LeaseList
	if err := c.List(context.Background(), &leases); err != nil {
		t.Fatal(err)
	}
	for i := range leases.Items {
		tr.ObserveLease(&leases.Items[i], false)
	}
	rep := status.NewReporter(c, c, h.rec, self, logr.Discard())
	h.r = New(tr, c, h.l2, h.bgp, h.gossip, rep, nil, Options{NodeName: self, Namespace: "herald-system"}, nil, logr.Discard())
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	h.ctx = ctx
	go rep.Run(ctx, 1)
	return h
}

func (h *harness) pass(ch state.Changes, liveness bool) {
	h.t.Helper()
	if err := h.r.pass(h.ctx, ch, liveness); err != nil {
		h.t.Fatal(err)
	}
	select { // ready after the first pass, as in Run
	case <-h.r.ready:
	default:
		close(h.r.ready)
	}
}

func (h *harness) createService(name, ip string) types.NamespacedName {
	h.t.Helper()
	s := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name, UID: types.UID("uid-" + name)},
		Spec:   corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer},
		Status: corev1.ServiceStatus{LoadBalancer: corev1.LoadBalancerStatus{Ingress: []corev1.LoadBalancerIngress{{IP: ip}}}}}
	if err := h.c.Create(h.ctx, s); err != nil {
		h.t.Fatal(err)
	}
	return types.NamespacedName{Namespace: "ns", Name: name}
}

func (h *harness) announcements() map[string][]string {
	out := map[string][]string{}
	var list v1alpha1.AnnouncementList
	if err := h.c.List(h.ctx, &list); err != nil {
		h.t.Fatal(err)
	}
	for _, a := range list.Items {
		out[a.Name] = a.Spec.IPs
	}
	return out
}

func (h *harness) eventually(what string, cond func() bool) {
	h.t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if cond() {
			return
		}
	}
	h.t.Fatalf("timed out waiting for %s", what)
}

func ownerOf(ip string, nodes ...string) string {
	o, _ := election.Owner(netip.MustParseAddr(ip), nodes, nil)
	return o
}

// The glue from a Service to layer 2 and the Announcement, and back when
// the Service goes: on the owner only.
func TestPassAnnouncesOnTheOwnerAndReportsIt(t *testing.T) {
	const ip = "198.51.100.70"
	owner := ownerOf(ip, "a", "b", "c")
	for _, self := range []string{"a", "b", "c"} {
		t.Run(self, func(t *testing.T) {
			h := newHarness(t, self)
			web := h.createService("web", ip)
			h.pass(state.Changes{Services: []types.NamespacedName{web}, Nodes: true, Leases: true, Config: true}, true)
			want := map[netip.Addr][]string{}
			if self == owner {
				want[netip.MustParseAddr(ip)] = []string{"eth0"}
			}
			if !reflect.DeepEqual(h.l2.owned, want) {
				t.Fatalf("layer 2 answers for %v, want %v (owner %s)", h.l2.owned, want, owner)
			}
			if self != owner {
				time.Sleep(100 * time.Millisecond)
				if got := h.announcements(); len(got) != 0 {
					t.Fatalf("a node that does not own %s wrote %v", ip, got)
				}
				return
			}
			h.eventually("the Announcement", func() bool {
				return reflect.DeepEqual(h.announcements(), map[string][]string{"web." + self: {ip}})
			})
			h.eventually("an Announcing event", func() bool {
				h.rec.mu.Lock()
				defer h.rec.mu.Unlock()
				return slices.Contains(h.rec.events, status.ReasonAnnouncing)
			})
			// A partial pass for an unrelated Service touches nothing else.
			updates := h.l2.updates
			other := h.createService("other", "198.51.100.200")
			h.pass(state.Changes{Services: []types.NamespacedName{other}}, false)
			if h.l2.updates != updates {
				t.Errorf("a Service outside every pool changed layer 2")
			}
			// The Service goes: layer 2 stops, the Announcement goes.
			if err := h.c.Delete(h.ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "web"}}); err != nil {
				t.Fatal(err)
			}
			h.pass(state.Changes{Services: []types.NamespacedName{web}}, false)
			if len(h.l2.owned) != 0 {
				t.Errorf("layer 2 still answers for %v", h.l2.owned)
			}
			h.eventually("the Announcement to go", func() bool { return len(h.announcements()) == 0 })
		})
	}
}

// A speaker that finds itself cut off from most of its peers stops
// answering at once, and resumes when it rejoins.
func TestMinorityStopsAnsweringAtOnce(t *testing.T) {
	const ip = "198.51.100.70"
	h := newHarness(t, ownerOf(ip, "a", "b", "c"))
	web := h.createService("web", ip)
	h.pass(state.Changes{Services: []types.NamespacedName{web}, Nodes: true, Leases: true, Config: true}, true)
	if len(h.l2.owned) != 1 {
		t.Fatalf("the owner answers for %v", h.l2.owned)
	}
	h.eventually("the Announcement", func() bool { return len(h.announcements()) == 1 })
	h.gossip.alive = map[string]bool{h.r.opts.NodeName: true}
	h.pass(state.Changes{}, true)
	if len(h.l2.owned) != 0 {
		t.Errorf("isolated, it still answers for %v", h.l2.owned)
	}
	h.eventually("the Announcement to go", func() bool { return len(h.announcements()) == 0 })
	if h.r.CutOff() == nil {
		t.Error("isolated, the speaker reports itself ready")
	}
	h.gossip.alive = map[string]bool{"a": true, "b": true, "c": true}
	h.pass(state.Changes{}, true)
	if len(h.l2.owned) != 1 {
		t.Errorf("rejoined, it answers for %v", h.l2.owned)
	}
	if err := h.r.CutOff(); err != nil {
		t.Errorf("rejoined, the speaker is not ready: %v", err)
	}
	h.pass(state.Changes{}, true)
	if got := h.rec.count(status.ReasonGossipCutOff); got != 1 {
		t.Errorf("%d %s events, want 1 for one cut", got, status.ReasonGossipCutOff)
	}
	if got := h.rec.count(status.ReasonGossipRejoined); got != 1 {
		t.Errorf("%d %s events, want 1", got, status.ReasonGossipRejoined)
	}
	if cuts, now := testutil.ToFloat64(h.r.metrics.cutOffs), testutil.ToFloat64(h.r.metrics.cutOff); cuts != 1 || now != 0 {
		t.Errorf("metrics: %v cut-offs counted, cut off now %v; want 1 and 0", cuts, now)
	}
}

// A speaker back in the majority (here after a cut) answers only once
// every live peer has sent it something: a peer that has not heard of its
// return would still answer for the same addresses.
func TestRejoinedSpeakerWaitsToHearFromEveryPeer(t *testing.T) {
	const ip = "198.51.100.70"
	h := newHarness(t, ownerOf(ip, "a", "b", "c"))
	web := h.createService("web", ip)
	h.pass(state.Changes{Services: []types.NamespacedName{web}, Nodes: true, Leases: true, Config: true}, true)
	h.gossip.alive = map[string]bool{h.r.opts.NodeName: true}
	h.pass(state.Changes{}, true)
	h.gossip.alive = map[string]bool{"a": true, "b": true, "c": true}
	h.gossip.heard = map[string]bool{}
	h.pass(state.Changes{}, true)
	if len(h.l2.owned) != 0 {
		t.Fatalf("rejoined, it answers for %v before hearing from any peer", h.l2.owned)
	}
	if wait := time.Until(h.r.live.Next); wait <= 0 || wait > 50*time.Millisecond {
		t.Errorf("it looks again in %s; want within a gossip round", wait)
	}
	for _, n := range []string{"a", "b", "c"} {
		if n != h.r.opts.NodeName {
			h.gossip.heard[n] = true
			break
		}
	}
	h.pass(state.Changes{}, true)
	if len(h.l2.owned) != 0 {
		t.Fatalf("it answers for %v having heard from one peer of two", h.l2.owned)
	}
	h.gossip.heard = nil
	h.pass(state.Changes{}, true)
	if len(h.l2.owned) != 1 {
		t.Errorf("having heard from every peer, it answers for %v", h.l2.owned)
	}
	if got := h.rec.count(status.ReasonGossipCutOff); got != 1 {
		t.Errorf("%d %s events: waiting to hear from peers is no cut", got, status.ReasonGossipCutOff)
	}
	// Declared dead by its peers (a false suspicion): they took its address
	// over; it stands down until each has heard from it again.
	h.gossip.dead, h.gossip.heard = time.Now(), map[string]bool{}
	h.pass(state.Changes{}, true)
	if len(h.l2.owned) != 0 {
		t.Errorf("declared dead by its peers, it still answers for %v", h.l2.owned)
	}
	h.gossip.heard = nil
	h.pass(state.Changes{}, true)
	if len(h.l2.owned) != 1 {
		t.Errorf("heard again by every peer, it answers for %v", h.l2.owned)
	}
	// Suspected by a peer (memberlist refuted it): the suspector may still
	// declare it dead when the suspicion times out if the refutation was
	// lost; layer 2 holds its answers until then, and what it owns stays.
	until := time.Now().Add(time.Second)
	h.gossip.suspectedAt, h.gossip.suspectedUntil = time.Now(), until
	h.pass(state.Changes{}, true)
	if !h.l2.held.Equal(until) {
		t.Errorf("suspected until %s, layer 2 holds its answers until %s", until, h.l2.held)
	}
	if len(h.l2.owned) != 1 {
		t.Errorf("suspected, it owns %v; want its address kept (no status churn)", h.l2.owned)
	}
	// A suspicion refuted while it settled (at a restart, the peers'
	// record of its previous life) is the settling's: no hold after it.
	h.l2.held = time.Time{}
	h.gossip.dead, h.gossip.heard = time.Now(), map[string]bool{}
	h.pass(state.Changes{}, true)
	h.gossip.suspectedAt, h.gossip.suspectedUntil = time.Now(), time.Now().Add(time.Second)
	h.gossip.heard = nil
	h.pass(state.Changes{}, true)
	if !h.l2.held.IsZero() || len(h.l2.owned) != 1 {
		t.Errorf("suspected while it settled, it holds its answers until %s and answers for %v; want no hold and its address", h.l2.held, h.l2.owned)
	}
}

func (r *recorder) count(reason string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, e := range r.events {
		if e == reason {
			n++
		}
	}
	return n
}

// When the owner dies, the next node in the ranking takes the address over
// and removes the dead node's Announcement.
func TestTakeoverRemovesTheDeadOwnersAnnouncement(t *testing.T) {
	const ip = "198.51.100.70"
	owner := ownerOf(ip, "a", "b", "c")
	var rest []string
	for _, n := range []string{"a", "b", "c"} {
		if n != owner {
			rest = append(rest, n)
		}
	}
	next := ownerOf(ip, rest...)
	h := newHarness(t, next)
	web := h.createService("web", ip)
	stale := &v1alpha1.Announcement{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "web." + owner,
		Labels: map[string]string{state.LabelNode: owner, state.LabelService: "web"}},
		Spec: v1alpha1.AnnouncementSpec{Service: "web", Mode: status.ModeLayer2, Node: owner, IPs: []string{ip}}}
	if err := h.c.Create(h.ctx, stale); err != nil {
		t.Fatal(err)
	}
	h.pass(state.Changes{Services: []types.NamespacedName{web}, Nodes: true, Leases: true, Config: true}, true)
	if len(h.l2.owned) != 0 {
		t.Fatalf("%s answers while %s is alive", next, owner)
	}
	delete(h.gossip.alive, owner)
	h.pass(state.Changes{}, true)
	if len(h.l2.owned) != 1 {
		t.Fatalf("%s did not take over from the dead %s", next, owner)
	}
	h.eventually("the dead owner's Announcement replaced", func() bool {
		return reflect.DeepEqual(h.announcements(), map[string][]string{"web." + next: {ip}})
	})
}

// The glue from a Service to BGP: every node announces it to its sessions,
// whoever answers over layer 2; a missing password Secret blocks the
// session until it appears; the route and the BGP Announcement go with the
// Service.
func TestPassAnnouncesOverBGPFromEveryNode(t *testing.T) {
	const ip = "198.51.100.70"
	h := newHarness(t, "b")
	for _, o := range []client.Object{
		&v1alpha1.BGPPeer{ObjectMeta: metav1.ObjectMeta{Name: "tor"}, Spec: v1alpha1.BGPPeerSpec{MyASN: 64600, PeerASN: 64512, PeerAddress: "198.51.100.1",
			PasswordSecret: &v1alpha1.SecretKeyReference{Name: "bgp-pass"}}},
		&v1alpha1.BGPAdvertisement{ObjectMeta: metav1.ObjectMeta{Name: "lan"}, Spec: v1alpha1.BGPAdvertisementSpec{IPAddressPools: []string{"lan"}, Communities: []string{"64512:7"}}},
	} {
		if err := h.c.Create(h.ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	node := &corev1.Node{}
	if err := h.c.Get(h.ctx, types.NamespacedName{Name: "b"}, node); err != nil {
		t.Fatal(err)
	}
	node.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "198.51.100.12"}}
	if err := h.c.Status().Update(h.ctx, node); err != nil {
		t.Fatal(err)
	}
	web := h.createService("web", ip)
	h.pass(state.Changes{Services: []types.NamespacedName{web}, Nodes: true, Leases: true, Config: true}, true)
	if len(h.bgp.sessions) != 1 || h.bgp.sessions[0].Blocked == "" || h.bgp.sessions[0].RouterID != netip.MustParseAddr("198.51.100.12") {
		t.Fatalf("sessions %+v: want tor, blocked for its missing Secret, router ID from the Node's address", h.bgp.sessions)
	}
	route := h.bgp.routes[netip.MustParsePrefix(ip+"/32")]
	if !slices.Equal(route.Peers, []string{"tor"}) || !slices.Equal(route.Communities, []uint32{64512<<16 | 7}) {
		t.Fatalf("routes %+v: want %s/32 to tor with 64512:7", h.bgp.routes, ip)
	}
	h.eventually("the BGP Announcement", func() bool {
		_, ok := h.announcements()["web.b.bgp"]
		return ok
	})
	if err := h.c.Create(h.ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "herald-system", Name: "bgp-pass"}, Data: map[string][]byte{"password": []byte("s3cret")}}); err != nil {
		t.Fatal(err)
	}
	h.pass(state.Changes{Config: true}, false)
	if s := h.bgp.sessions[0]; s.Blocked != "" || s.Password != "s3cret" {
		t.Fatalf("after the Secret appeared: %+v", s)
	}
	if err := h.c.Delete(h.ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "web"}}); err != nil {
		t.Fatal(err)
	}
	h.pass(state.Changes{Services: []types.NamespacedName{web}}, false)
	if len(h.bgp.routes) != 0 {
		t.Errorf("routes left after the Service went: %v", h.bgp.routes)
	}
}

// fakeDataplane records what it was asked to program.
type fakeDataplane struct {
	syncs int
	last  dataplane.RuleSet
	fail  bool
}

func (f *fakeDataplane) Name() string                        { return "fake" }
func (f *fakeDataplane) Supports(s dataplane.Scheduler) bool { return s == dataplane.Random }
func (f *fakeDataplane) Cleanup(context.Context) error       { f.last = dataplane.RuleSet{}; return nil }
func (f *fakeDataplane) Sync(_ context.Context, rs dataplane.RuleSet) (dataplane.Stats, error) {
	f.syncs++
	if f.fail {
		return dataplane.Stats{}, errors.New("refused")
	}
	f.last = rs
	return dataplane.Stats{Services: len(rs.Services)}, nil
}

func (f *fakeDataplane) destinations() []string {
	var out []string
	for _, vs := range f.last.Services {
		for _, d := range vs.Destinations {
			out = append(out, vs.Key.String()+" -> "+d.String())
		}
	}
	return out
}

// The glue from a Service to the dataplane: the owner forwards the
// Service's port to the other Ready nodes' NodePorts (remote targets
// nodeports, the mode that reads the nodes), the others forward
// nothing; a node going NotReady leaves the destinations; an unavailable
// scheduler is said once; a failed sync is retried.
func TestPassForwardsOnTheOwner(t *testing.T) {
	const ip = "198.51.100.70"
	owner := ownerOf(ip, "a", "b", "c")
	for _, self := range []string{"a", "b", "c"} {
		t.Run(self, func(t *testing.T) {
			h := newHarness(t, self)
			dp := &fakeDataplane{}
			h.r.fwd = newForwarder(dp, self, true, nil)
			for i, n := range []string{"a", "b", "c"} {
				h.setNode(n, corev1.ConditionTrue, fmt.Sprintf("198.51.100.%d", 11+i))
			}
			s := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "web", Annotations: map[string]string{state.AnnotationScheduler: "lc"}},
				Spec:   corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, Ports: []corev1.ServicePort{{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80, NodePort: 30080}}},
				Status: corev1.ServiceStatus{LoadBalancer: corev1.LoadBalancerStatus{Ingress: []corev1.LoadBalancerIngress{{IP: ip}}}}}
			if err := h.c.Create(h.ctx, s); err != nil {
				t.Fatal(err)
			}
			web := types.NamespacedName{Namespace: "ns", Name: "web"}
			h.pass(state.Changes{Services: []types.NamespacedName{web}, Nodes: true, Leases: true, Config: true}, true)
			var want []string
			for i, n := range []string{"a", "b", "c"} {
				if self == owner && n != self {
					want = append(want, fmt.Sprintf("%s:80/TCP -> 198.51.100.%d:30080", ip, 11+i))
				}
			}
			if got := dp.destinations(); !slices.Equal(got, want) || dp.syncs != 1 {
				t.Fatalf("after %d syncs the dataplane forwards %v, want %v (owner %s)", dp.syncs, got, want, owner)
			}
			if self != owner {
				return
			}
			h.eventually("a SchedulerFallback event", func() bool {
				h.rec.mu.Lock()
				defer h.rec.mu.Unlock()
				return slices.Contains(h.rec.events, "SchedulerFallback")
			})
			// Nothing changed: no sync.
			h.pass(state.Changes{Services: []types.NamespacedName{web}}, false)
			if dp.syncs != 1 {
				t.Errorf("a pass that changed nothing synced the dataplane again")
			}
			gone := "a"
			if self == "a" {
				gone = "b"
			}
			goneDest := fmt.Sprintf(".%d:30080", 11+slices.Index([]string{"a", "b", "c"}, gone))
			// Its speaker dies (gossip says so long before Kubernetes marks
			// the node NotReady): it leaves the destinations at once.
			delete(h.gossip.alive, gone)
			h.pass(state.Changes{}, true)
			if d := dp.destinations(); len(d) != 1 || strings.HasSuffix(d[0], goneDest) {
				t.Errorf("with %s's speaker dead the dataplane forwards %v, want only the other live node", gone, d)
			}
			h.gossip.alive[gone] = true
			h.pass(state.Changes{}, true)
			if len(dp.destinations()) != 2 {
				t.Errorf("with %s's speaker back the dataplane forwards %v, want both other nodes", gone, dp.destinations())
			}
			syncs := dp.syncs
			// The node goes NotReady: it leaves the destinations.
			h.setNode(gone, corev1.ConditionFalse, "")
			dp.fail = true
			h.pass(state.Changes{Nodes: true}, false)
			if !h.r.fwd.failed {
				t.Fatalf("a refused sync is not marked for retry")
			}
			dp.fail = false
			h.pass(state.Changes{}, true)
			if dp.syncs != syncs+2 {
				t.Errorf("%d syncs for a refused and a retried one, want 2", dp.syncs-syncs)
			}
			for _, d := range dp.destinations() {
				if strings.HasSuffix(d, goneDest) {
					t.Errorf("NotReady node %s is still a destination: %v", gone, dp.destinations())
				}
			}
			if len(dp.destinations()) != 1 {
				t.Errorf("destinations %v, want the one Ready node left", dp.destinations())
			}
			h.rec.mu.Lock()
			n := 0
			for _, e := range h.rec.events {
				if e == "SchedulerFallback" {
					n++
				}
			}
			h.rec.mu.Unlock()
			if n != 1 {
				t.Errorf("%d SchedulerFallback events, want 1", n)
			}
		})
	}
}

// setNode sets a Node's Ready condition and, when addr is set, its internal address.
func (h *harness) setNode(name string, ready corev1.ConditionStatus, addr string) {
	h.t.Helper()
	n := &corev1.Node{}
	if err := h.c.Get(h.ctx, types.NamespacedName{Name: name}, n); err != nil {
		h.t.Fatal(err)
	}
	n.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: ready}}
	if addr != "" {
		n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: addr}}
	}
	if err := h.c.Status().Update(h.ctx, n); err != nil {
		h.t.Fatal(err)
	}
}
