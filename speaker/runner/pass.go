package runner

import (
	"context"
	"net/netip"
	"reflect"
	"slices"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/heraldlb/herald/internal/model"
	"github.com/heraldlb/herald/speaker/dataplane"
	"github.com/heraldlb/herald/speaker/plan"
	"github.com/heraldlb/herald/speaker/state"
	"github.com/heraldlb/herald/speaker/status"
)

// pass applies one batch of changes: it refreshes what they touched, plans
// and applies the plan's changes. livenessDue re-runs the partition rule
// (gossip changed, a Lease expired or changed).
func (r *Runner) pass(ctx context.Context, ch state.Changes, livenessDue bool) error {
	start := time.Now()
	full := ch.Full() || livenessDue
	if full && !livenessDue {
		// Node and configuration churn: at most one full re-plan per
		// MinFullInterval; what arrives meanwhile joins this one.
		if wait := r.opts.MinFullInterval - time.Since(r.lastFull); wait > 0 {
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(wait):
			}
			more := r.tracker.Take()
			ch.Services = append(ch.Services, more.Services...)
			ch.Nodes, ch.Leases, ch.Config = ch.Nodes || more.Nodes, ch.Leases || more.Leases, ch.Config || more.Config
		}
	}
	if ch.Config {
		in, err := model.Read(ctx, r.cache)
		if err != nil {
			return err
		}
		// Like the controller, keep a pool whose change is refused in force as
		// last accepted, so its addresses stay announced.
		if r.cfg != nil {
			in.LastAccepted = r.cfg.Pools
		}
		r.cfg = model.Build(in)
	}
	if ch.Nodes {
		nodes, healthy, err := r.tracker.Nodes(ctx)
		if err != nil {
			return err
		}
		r.nodes, r.healthy = nodes, healthy
	}
	peers := r.world.Peers
	if ch.Config || ch.Nodes {
		var err error
		if peers, err = r.setSessions(ctx); err != nil {
			return err
		}
	}
	wasAnnouncing := r.live.Announce
	if full {
		leases := r.tracker.Leases()
		in := livenessInput{Self: r.opts.NodeName, Leases: leases, Now: time.Now(), Started: r.started, Outage: r.live.Outage}
		var overdue time.Time
		if r.keeper != nil {
			in.Renewed, in.Grace, overdue = r.keeper.Renewed(), r.keeper.Duration, r.keeper.Overdue()
		}
		if r.gossip != nil {
			r.gossip.SetAPIReachable(overdue.IsZero() || in.Now.Before(overdue))
			in.GossipHealthy, in.GossipAlive, in.APIUnreachable = r.gossip.Healthy(), r.gossip.Alive(), r.gossip.APIUnreachable()
		}
		prevOutage := r.live.Outage
		r.live = decideLiveness(in)
		if in.Now.Before(overdue) && (r.live.Next.IsZero() || overdue.Before(r.live.Next)) {
			r.live.Next = overdue.Add(time.Millisecond) // publish it when a renewal fails
		}
		r.noteOutage(prevOutage, r.live.Outage)
		r.offerPeers(r.live.Peers)
		r.noteCutOff(in)
		r.holdUntilHeard(in)
		if !r.live.Announce && len(r.owned) > 0 {
			// Cut off from most peers, who will take this node's addresses
			// over: stop answering now, before planning anything.
			r.log.Info("announcing nothing: this speaker sees a minority of its peers alive, or waits to hear from them", "live", r.live.Live)
			r.withdrawAll()
		}
		w := plan.World{Config: r.cfg, Nodes: worldNodes(r.nodes, leases, r.live.Live), Self: r.opts.NodeName, Peers: peers}
		if w.Config != r.world.Config || !reflect.DeepEqual(w.Nodes, r.world.Nodes) || !slices.Equal(w.Peers, r.world.Peers) {
			r.world = w
			r.planner.SetWorld(w)
		}
		r.lastFull = time.Now()
	}
	for _, k := range ch.Services {
		s, err := r.tracker.Service(ctx, k)
		if err != nil {
			return err
		}
		if s == nil {
			r.planner.DeleteService(k)
		} else {
			r.planner.SetService(s)
		}
	}
	diff := r.planner.Plan()
	// Rules first: a node that starts answering for an address forwards
	// its traffic from the first packet.
	r.forward(ctx, diff.Dataplane, full)
	// A re-plan reports every decision it changed; only a flip of Announce
	// changes what this node answers for without changing a decision.
	r.apply(diff.L2, wasAnnouncing != r.live.Announce)
	// BGP does not wait on the layer-2 liveness rule: each node announces
	// itself, and its routers judge it by its sessions (hold time, BFD).
	r.applyRoutes(diff.Routes)
	r.reportBGP(diff)
	scope := "partial"
	if full {
		scope = "full"
	}
	r.metrics.observe(scope, time.Since(start), len(r.owned))
	return nil
}

// forward brings the dataplane in line with the plan: the Services it
// names, and every forwarded Service when the nodes that can take traffic
// changed (full: nodes, Leases or gossip may have).
func (r *Runner) forward(ctx context.Context, keys []types.NamespacedName, full bool) {
	if r.fwd == nil {
		return
	}
	if full {
		keys = append(keys, r.fwd.setNodes(r.reachable())...)
	}
	for _, w := range r.fwd.update(r.planner, keys) {
		r.status.Warn(w.Service, "SchedulerFallback", "%s", w.Message)
	}
	synced, err := r.fwd.sync(ctx)
	if err != nil {
		// Retried by the runner's timer; the rules last programmed stay.
		r.log.Error(err, "dataplane sync", "backend", r.fwd.backend.Name())
	} else if synced != nil {
		r.log.V(1).Info("dataplane synced", "backend", r.fwd.backend.Name(), "full", synced.Full,
			"virtualServices", synced.Services, "rules", synced.Rules, "nodes", len(r.fwd.nodes.Healthy), "regenerated", len(keys))
	}
}

// reachable are the healthy nodes (Ready, not excluded) minus those whose
// speaker has a Lease but is not in the live set: gossip notices a dead
// node in well under a second, while Kubernetes marks it NotReady only
// after 40 s, and until then its NodePort would swallow connections.
func (r *Runner) reachable() []dataplane.Node {
	leases := r.tracker.Leases()
	out := make([]dataplane.Node, 0, len(r.healthy))
	for _, n := range r.healthy {
		if _, speaker := leases[n.Name]; speaker && !slices.Contains(r.live.Live, n.Name) {
			continue
		}
		out = append(out, n)
	}
	return out
}

// owns is what this node answers for an address under decision d: its
// interfaces when it is the owner and may announce, else nil.
func (r *Runner) owns(d plan.L2) []string {
	if r.live.Announce && d.Owner == r.opts.NodeName {
		return d.Interfaces
	}
	return nil
}

// apply brings the layer-2 output and the status queue in line with the plan.
// Only the changed addresses are looked at, unless all must be (this speaker
// started or stopped announcing).
func (r *Runner) apply(changes []plan.Change, all bool) {
	delta := map[netip.Addr][]string{}
	consider := func(ip netip.Addr, d plan.L2) {
		want := r.owns(d)
		cur, had := r.owned[ip]
		switch {
		case want == nil && had:
			delta[ip] = nil
		case want != nil && (!had || !slices.Equal(cur, want)):
			delta[ip] = want
		}
	}
	if all {
		for ip, d := range r.planner.Addresses() {
			consider(ip, d)
		}
		for ip := range r.owned {
			if !r.planner.L2(ip).Planned() {
				delta[ip] = nil
			}
		}
	} else {
		for _, c := range changes {
			consider(c.IP, c.New)
		}
	}

	// Services whose Announcement may change: those of every address whose
	// decision involves this node, or whose answering here changed.
	touched := map[types.NamespacedName]bool{}
	for _, c := range changes {
		if c.Old.Owner == r.opts.NodeName || c.New.Owner == r.opts.NodeName {
			for _, k := range c.Old.Services {
				touched[k] = true
			}
			for _, k := range c.New.Services {
				touched[k] = true
			}
		}
	}
	taken := map[netip.Addr]bool{}
	for ip, ifs := range delta {
		for _, k := range r.planner.L2(ip).Services {
			touched[k] = true
		}
		if _, had := r.owned[ip]; ifs != nil && !had {
			taken[ip] = true
		}
	}

	if len(delta) > 0 {
		if err := r.layer2.Update(delta); err != nil {
			// The new set is in force; listeners that failed to open retry.
			r.log.Error(err, "layer 2")
		}
		for ip, ifs := range delta {
			if ifs == nil {
				delete(r.owned, ip)
			} else {
				r.owned[ip] = ifs
			}
		}
	}
	for k := range touched {
		r.report(k, taken)
	}
	r.reportUnannounced(changes)
}

// withdrawAll stops answering for every address at once. It leaves
// r.owned to apply, which then sees each address go and reports it.
func (r *Runner) withdrawAll() {
	delta := make(map[netip.Addr][]string, len(r.owned))
	for ip := range r.owned {
		delta[ip] = nil
	}
	if err := r.layer2.Update(delta); err != nil {
		r.log.Error(err, "layer 2")
	}
}

// report hands the status queue what this node announces for one Service.
func (r *Runner) report(k types.NamespacedName, taken map[netip.Addr]bool) {
	svc := r.planner.Service(k)
	if svc == nil {
		r.status.Set(k, nil)
		return
	}
	var a status.Announcement
	for _, ip := range svc.IPs {
		ifs, ok := r.owned[ip]
		if !ok || !slices.Contains(r.planner.L2(ip).Services, k) {
			continue
		}
		a.IPs = append(a.IPs, ip)
		for _, i := range ifs {
			if !slices.Contains(a.Interfaces, i) {
				a.Interfaces = append(a.Interfaces, i)
			}
		}
		if taken[ip] {
			a.Taken = append(a.Taken, ip)
		}
	}
	if len(a.IPs) == 0 {
		r.status.Set(k, nil)
		return
	}
	slices.SortFunc(a.IPs, netip.Addr.Compare)
	slices.Sort(a.Interfaces)
	a.Live = r.live.Live
	r.status.Set(k, &a)
}

// reportUnannounced tells, on the Service, when an address has just lost its
// last possible owner (or never had one), and why that usually is. Every
// speaker plans the same; only the first live speaker by name reports.
func (r *Runner) reportUnannounced(changes []plan.Change) {
	if len(r.live.Live) == 0 || r.live.Live[0] != r.opts.NodeName {
		return
	}
	for _, c := range changes {
		if !c.New.Planned() || c.New.Owner != "" || (c.Old.Planned() && c.Old.Owner == "") {
			continue
		}
		for _, k := range c.New.Services {
			why := "no live speaker runs on a node that matches the L2Advertisement's nodeSelectors and has an interface in the address's subnet (or one of its interfaces)"
			if svc := r.planner.Service(k); svc != nil {
				if svc.LocalTrafficPolicy {
					why += ", and externalTrafficPolicy Local needs such a node with a ready endpoint"
				}
				if svc.ProxyMode {
					why += ", and ipMode Proxy needs such a node whose speaker runs a dataplane (--dataplane not off)"
				}
			}
			r.status.Warn(k, status.ReasonAnnounceFailed, "no node can announce %s: %s", c.IP, why)
		}
	}
}

// peerList hands the joiner the current gossip peers.
type peerList struct {
	mu    sync.Mutex
	peers []string
	kick  chan struct{} // a new list: join now, not at the next tick
}

func (r *Runner) offerPeers(peers []string) {
	r.joinPeers.mu.Lock()
	changed := !slices.Equal(r.joinPeers.peers, peers)
	r.joinPeers.peers = peers
	r.joinPeers.mu.Unlock()
	if changed {
		select {
		case r.joinPeers.kick <- struct{}{}:
		default:
		}
	}
}

// joiner asks the gossip to join the peers with a fresh Lease when they
// change and every second: members already alive are skipped, and after a
// partition heals this is how the two sides find each other again. Joining
// dials each peer (a dead one until its Lease expires: a 1 s timeout), so it
// never runs inside a pass, where it would delay every failover.
func (r *Runner) joiner(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		r.joinPeers.mu.Lock()
		peers := r.joinPeers.peers
		r.joinPeers.mu.Unlock()
		if len(peers) > 0 {
			if n, err := r.gossip.Join(peers); err != nil && n == 0 {
				r.log.V(1).Info("gossip join failed; will retry", "peers", peers, "error", err.Error())
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-r.joinPeers.kick:
		}
	}
}

// handover runs once the runner's context has ended: see Run.
func (r *Runner) handover(stopKeeper context.CancelFunc, keeperDone *sync.WaitGroup) error {
	stopKeeper()
	keeperDone.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), r.opts.HandoverTimeout+2*time.Second)
	defer cancel()
	if err := r.keeper.Drop(ctx); err != nil {
		r.log.Error(err, "withdrawing the speaker Lease")
	}
	if r.gossip != nil {
		if err := r.gossip.Leave(500 * time.Millisecond); err != nil {
			r.log.Error(err, "leaving the gossip")
		}
	}
	wctx, wcancel := context.WithTimeout(ctx, r.opts.HandoverTimeout)
	var wg sync.WaitGroup
	for ip := range r.owned {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := r.layer2.WaitAnnouncedByOther(wctx, ip); err != nil {
				r.log.Info("no new owner announced before the handover timeout", "ip", ip.String())
				return
			}
			// The new owner answers now: stop at once, not when the last
			// address is handed over, or both would answer meanwhile.
			if err := r.layer2.Update(map[netip.Addr][]string{ip: nil}); err != nil {
				r.log.Error(err, "layer 2", "ip", ip.String())
			}
		}()
	}
	wg.Wait()
	wcancel()
	gracefulRestart := false
	if r.bgp != nil {
		// Routers with graceful restart keep this node's routes while the
		// next speaker starts; the others drop them now.
		r.bgp.Detach()
		for _, s := range r.sessions {
			gracefulRestart = gracefulRestart || s.GracefulRestart
		}
	}
	if r.fwd != nil {
		if gracefulRestart {
			// The routers keep sending this node traffic until the next
			// speaker starts, which adopts these rules.
			r.log.Info("keeping the dataplane's rules for the next speaker: BGP peers with graceful restart still route here")
		} else if err := r.fwd.backend.Cleanup(ctx); err != nil {
			r.log.Error(err, "removing the dataplane's rules", "backend", r.fwd.backend.Name())
		}
	}
	err := r.layer2.Close()
	r.status.DeleteAll(ctx)
	return err
}

// noteCutOff records whether this speaker, up and running, stands down for
// want of gossip: gossip runs here, its own Lease is fresh, and yet the
// partition rule says announce nothing (its peers may take its addresses
// over). One event on the Node when that starts and one when it ends; the
// start-up, before the first pass is done, is not a cut.
func (r *Runner) noteCutOff(in livenessInput) {
	select {
	case <-r.ready:
	default:
		return
	}
	cut := in.GossipHealthy && !r.live.Announce && in.fresh(in.Leases[r.opts.NodeName], r.live.Outage)
	if r.cutOff.Swap(cut) == cut {
		return
	}
	r.metrics.cut(cut)
	peers := len(r.live.Peers)
	if cut {
		r.status.NodeEvent(corev1.EventTypeWarning, status.ReasonGossipCutOff,
			"The speaker hears the gossip of %d of the %d other speakers the API server shows alive: it announces nothing until it hears a majority (check that the gossip port, UDP and TCP, is open between the nodes, and that every speaker has the same gossip key)",
			len(r.live.Live)-1, peers)
		return
	}
	r.status.NodeEvent(corev1.EventTypeNormal, status.ReasonGossipRejoined, "The speaker hears a majority of its peers' gossip again and announces")
}

// noteOutage logs an API server outage shared by most speakers starting and
// its grace ending.
func (r *Runner) noteOutage(prev, cur outage) {
	switch {
	case prev.Since.IsZero() && !cur.Since.IsZero():
		r.log.Info("most speakers cannot reach the API server: keeping every Lease as it was, gossip alone tells who died", "leasesAsOf", cur.Since)
	case prev.Until.IsZero() && !cur.Until.IsZero():
		r.log.Info("most speakers reach the API server again: the Leases as they were count until every speaker renews", "until", cur.Until)
	case !prev.Since.IsZero() && cur.Since.IsZero():
		r.log.Info("the API server outage is over")
	}
}

// settleCap bounds how long a speaker that reached a majority waits to
// hear from its peers before it announces anyway.
const settleCap = time.Second

// settle is a speaker's wait, after it reached a majority of its peers'
// gossip (at its start, or after a cut), to hear from each of them.
type settle struct {
	since time.Time // zero: not waiting
	done  bool
	at    time.Time // when it was done
}

// holdUntilHeard keeps a speaker that has just reached a majority from
// announcing until every live peer has sent it a packet since (or
// settleCap passes). A peer sends only to the members it holds alive, so
// one heard from knows this speaker is back and gives up the addresses it
// wins; a peer that has not heard of it yet would answer for them too
// (two owners for a gossip round, seen when every speaker restarted at
// once). The wait is a gossip round or two; the peers keep answering
// until they hear of this speaker, so no address goes dark meanwhile.
func (r *Runner) holdUntilHeard(in livenessInput) {
	if !r.live.Announce || r.gossip == nil || !in.GossipHealthy {
		r.settling = settle{}
		return
	}
	// Declared dead by its peers since it last settled (a false suspicion
	// on a lossy or overloaded LAN): they took its addresses over and count
	// it alive again only as its refutation reaches them. Stand down and
	// wait to be heard again, as after a rejoin.
	if dead := r.gossip.DeclaredDead(); dead.After(r.settling.since) {
		r.log.Info("the peers declared this speaker dead: announcing nothing until each has heard it is back")
		r.settling = settle{since: dead}
	}
	// Suspected by a peer: memberlist refuted it, but a refutation lost on
	// the way (a lossy LAN) leaves the suspector to declare this speaker
	// dead when its suspicion times out and take its addresses over, a
	// gossip round or more before this speaker hears of it: two owners.
	// Answer nothing until the suspicion is over either way (then a dead
	// declaration stands it down as above). Layer 2 holds its answers
	// only: what this node owns, and so its Announcements, stay as they
	// are, and the clients' neighbour entries keep its traffic coming.
	// A suspicion refuted before this speaker last settled is the
	// settling's: at a (re)start the peers' record of its previous life
	// says suspect, and the wait below to hear from each peer covers it; a
	// hold then would only silence the addresses the peers hand back.
	if at, until := r.gossip.Suspicion(); r.settling.done && at.After(r.settling.at) && in.Now.Before(until) && !until.Equal(r.suspectedUntil) {
		r.log.Info("a peer suspects this speaker: answering nothing on the LAN until its suspicion has ended or turned into a dead declaration", "until", until)
		r.suspectedUntil = until
		r.layer2.Hold(until)
	}
	if r.settling.done {
		return
	}
	if r.settling.since.IsZero() {
		r.settling.since = in.Now
	}
	heard := r.gossip.HeardFrom(r.settling.since)
	var waiting []string
	for _, n := range r.live.Live {
		if n != r.opts.NodeName && in.Leases[n].Gossip.IsValid() && !heard[n] {
			waiting = append(waiting, n)
		}
	}
	if len(waiting) == 0 || in.Now.Sub(r.settling.since) >= settleCap {
		if len(waiting) > 0 {
			r.log.Info("announcing without having heard from every peer since rejoining", "silent", waiting)
		}
		r.settling.done, r.settling.at = true, in.Now
		return
	}
	r.live.Announce = false
	if next := in.Now.Add(20 * time.Millisecond); r.live.Next.IsZero() || next.Before(r.live.Next) {
		r.live.Next = next
	}
}
