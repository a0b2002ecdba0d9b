package bgp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	api "github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	"github.com/osrg/gobgp/v4/pkg/packet/bgp"
	"github.com/osrg/gobgp/v4/pkg/server"
	"github.com/prometheus/client_golang/prometheus"
)

// Output is the speaker's BGP output: one embedded GoBGP server, the
// sessions SetSessions asks for and the routes SetRoutes asks for. Its
// methods are safe for concurrent use.
type Output struct {
	log   logr.Logger
	slog  *slog.Logger
	last  *lastErrors
	onChg func()
	onRst func(string, []string)

	mu       sync.Mutex
	srv      *server.BgpServer
	cancel   context.CancelFunc // stops the peer watch
	routerID netip.Addr
	asn      uint32
	desired  map[string]Session // by name, blocked ones too
	running  map[string]Session // in GoBGP
	routes   map[netip.Prefix]Route
	bfdArmed map[string]bool   // sessions whose BFD runs in GoBGP
	refused  map[string]string // sessions shut down for their peer's AS
	closed   bool

	ev evState // fed by GoBGP's peer events
}

// evState is what the peer watch learns; it has its own lock so GoBGP's
// event goroutine never waits on an Output call that waits on GoBGP.
type evState struct {
	mu     sync.Mutex
	byAddr map[netip.Addr]string // running session per peer address
	state  map[string]bgp.FSMState
	flaps  map[string]uint64
}

// Options of an Output.
type Options struct {
	// Registerer gets the Output's metrics; nil exports none.
	Registerer prometheus.Registerer
	// OnStateChange, when set, is called (on GoBGP's event goroutine; it must
	// not block) after a session changed state, so status can be refreshed.
	OnStateChange func()
	// OnReset, when set, is called (it must not block) when SetSessions
	// resets a session for a configuration change, with ResetReasons.
	OnReset func(session string, reasons []string)
}

// New returns an Output with no sessions. GoBGP starts with the first
// session SetSessions can run.
func New(log logr.Logger, opts Options) *Output {
	sl, last := newGobgpLog(log)
	o := &Output{
		log:      log,
		slog:     sl,
		last:     last,
		onChg:    opts.OnStateChange,
		onRst:    opts.OnReset,
		desired:  map[string]Session{},
		running:  map[string]Session{},
		routes:   map[netip.Prefix]Route{},
		bfdArmed: map[string]bool{},
		refused:  map[string]string{},
		ev: evState{
			byAddr: map[netip.Addr]string{},
			state:  map[string]bgp.FSMState{},
			flaps:  map[string]uint64{},
		},
	}
	if opts.Registerer != nil {
		if err := opts.Registerer.Register(&collector{o: o}); err != nil {
			log.Error(err, "registering the BGP metrics; they are not exported")
		}
	}
	return o
}

var errClosed = errors.New("bgp output is closed")

// SetSessions makes the running sessions the desired ones: it opens the new
// ones, closes those no longer desired, and changes the others in place or,
// when ResetReasons says so, by a reset (logged with the reasons). Blocked
// sessions run nowhere and show in State with their reason.
//
// GoBGP has one BGP identifier and listens on no port; should the
// identifier change (Sessions gives all sessions the same), the server is
// restarted, resetting every session.
func (o *Output) SetSessions(desired []Session) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return errClosed
	}
	want := map[string]Session{}
	for _, s := range desired {
		want[s.Name] = s
	}
	o.desired = want

	var routerID netip.Addr
	var asn uint32
	for _, name := range slices.Sorted(maps.Keys(want)) {
		if s := want[name]; s.Blocked == "" && s.RouterID.IsValid() {
			routerID, asn = s.RouterID, s.MyASN
			break
		}
	}
	var errs []error
	if routerID.IsValid() && o.srv != nil && routerID != o.routerID {
		o.log.Info("restarting the BGP server: the BGP identifier changed, every session is reset", "from", o.routerID, "to", routerID)
		o.stopServer()
	}
	if routerID.IsValid() && o.srv == nil {
		if err := o.startServer(routerID, asn); err != nil {
			return fmt.Errorf("starting the BGP server: %w", err)
		}
	}

	// Close what is no longer wanted, or is wanted differently enough to
	// need a reset, then open what is missing.
	for _, name := range slices.Sorted(maps.Keys(o.running)) {
		old := o.running[name]
		s, ok := want[name]
		switch {
		case !ok || s.Blocked != "":
			why := "the BGPPeer no longer applies to this node"
			if ok {
				why = s.Blocked
			}
			o.log.Info("closing BGP session", "peer", name, "address", old.PeerAddress, "reason", why)
			errs = append(errs, o.removeSession(old))
		case len(ResetReasons(old, s)) > 0:
			why := ResetReasons(old, s)
			o.log.Info("resetting BGP session", "peer", name, "address", old.PeerAddress, "reasons", why)
			if o.onRst != nil {
				o.onRst(name, why)
			}
			errs = append(errs, o.removeSession(old))
		default:
			errs = append(errs, o.updateSession(old, s))
		}
	}
	if o.srv != nil {
		for _, name := range slices.Sorted(maps.Keys(want)) {
			s := want[name]
			if _, ok := o.running[name]; ok || s.Blocked != "" {
				continue
			}
			o.log.Info("opening BGP session", "peer", name, "address", s.PeerAddress, "myASN", s.MyASN, "peerASN", s.PeerASN, "dynamicASN", s.DynamicASN, "bfd", s.BFD != nil)
			errs = append(errs, o.addSession(s))
		}
	}
	return errors.Join(errs...)
}

func (o *Output) startServer(routerID netip.Addr, asn uint32) error {
	srv := server.NewBgpServer(server.LoggerOption(o.slog, nil))
	go srv.Serve()
	ctx := context.Background()
	err := srv.StartBgp(ctx, &api.StartBgpRequest{Global: &api.Global{
		Asn:      asn,
		RouterId: routerID.String(),
		// -1: no listener at all (GoBGP listens only on a port > 0; 0 would
		// mean its default, 179). The speaker dials out only.
		ListenPort: -1,
	}})
	if err == nil {
		// Import nothing: only paths this node originates (route type
		// local) enter the RIB; every route a peer sends stays in that
		// peer's Adj-RIB-In, rejected, so it is never re-advertised.
		err = srv.AddPolicy(ctx, &api.AddPolicyRequest{Policy: &api.Policy{
			Name: importPolicy,
			Statements: []*api.Statement{{
				Name:       importStatement,
				Conditions: &api.Conditions{RouteType: api.Conditions_ROUTE_TYPE_LOCAL},
				Actions:    &api.Actions{RouteAction: api.RouteAction_ROUTE_ACTION_ACCEPT},
			}},
		}})
	}
	if err == nil {
		err = srv.SetPolicyAssignment(ctx, &api.SetPolicyAssignmentRequest{Assignment: &api.PolicyAssignment{
			Name: "global", Direction: api.PolicyDirection_POLICY_DIRECTION_IMPORT,
			Policies:      []*api.Policy{{Name: importPolicy}},
			DefaultAction: api.RouteAction_ROUTE_ACTION_REJECT,
		}})
	}
	o.srv, o.routerID, o.asn = srv, routerID, asn
	if err == nil {
		err = o.setExportAssignment()
	}
	if err != nil {
		o.stopServer()
		return err
	}
	wctx, cancel := context.WithCancel(context.Background())
	o.cancel = cancel
	if err := srv.WatchEvent(wctx, server.WatchEventMessageCallbacks{OnPeerUpdate: o.peerEvent}, server.WatchPeer()); err != nil {
		o.log.Error(err, "watching BGP session changes; State still reads them, but flaps are not counted")
	}
	// Paths of routes already asked for.
	var paths []*apiutil.Path
	for _, p := range slices.SortedFunc(maps.Keys(o.routes), comparePrefix) {
		path, err := pathFor(o.routes[p], false)
		if err != nil {
			return err
		}
		paths = append(paths, path)
	}
	if len(paths) > 0 {
		if _, err := srv.AddPath(apiutil.AddPathRequest{Paths: paths}); err != nil {
			return fmt.Errorf("announcing routes: %w", err)
		}
	}
	return nil
}

// stopServer stops GoBGP. Every session is closed with a Cease
// NOTIFICATION, so peers drop our routes at once; with keepRoutes, sessions
// that negotiated graceful restart are closed without one, so the peer
// keeps our routes as stale while we come back (RFC 4724 4.2, 8).
func (o *Output) stopServer(keepRoutes ...bool) {
	if o.srv == nil {
		return
	}
	if o.cancel != nil {
		o.cancel()
	}
	if len(keepRoutes) > 0 && keepRoutes[0] {
		if err := o.srv.StopBgp(context.Background(), &api.StopBgpRequest{AllowGracefulRestart: true}); err != nil {
			o.log.Error(err, "stopping the BGP server")
		}
	}
	o.srv.Stop() // BFD too; after StopBgp its own StopBgp only logs "not running"
	o.srv = nil
	o.running = map[string]Session{}
	o.bfdArmed = map[string]bool{}
	o.refused = map[string]string{}
	o.ev.mu.Lock()
	o.ev.byAddr = map[netip.Addr]string{}
	o.ev.state = map[string]bgp.FSMState{}
	o.ev.mu.Unlock()
}

func (o *Output) setExportAssignment() error {
	names := slices.Sorted(maps.Keys(o.running))
	pols := make([]*api.Policy, 0, len(names))
	for _, n := range names {
		pols = append(pols, &api.Policy{Name: policyName(n)})
	}
	return o.srv.SetPolicyAssignment(context.Background(), &api.SetPolicyAssignmentRequest{Assignment: &api.PolicyAssignment{
		Name: "global", Direction: api.PolicyDirection_POLICY_DIRECTION_EXPORT,
		Policies:      pols,
		DefaultAction: api.RouteAction_ROUTE_ACTION_REJECT,
	}})
}

// prefixesFor are the prefixes of one family the routes send to a session.
func (o *Output) prefixesFor(name string, v6 bool) []netip.Prefix {
	var out []netip.Prefix
	for p, r := range o.routes {
		if p.Addr().Is6() == v6 && slices.Contains(r.Peers, name) {
			out = append(out, p)
		}
	}
	slices.SortFunc(out, comparePrefix)
	return out
}

func (o *Output) addSession(s Session) (err error) {
	ctx := context.Background()
	// Undo a half-added session, so the next SetSessions starts clean.
	defer func() {
		if err != nil {
			delete(o.running, s.Name)
			o.ev.mu.Lock()
			delete(o.ev.byAddr, s.PeerAddress)
			o.ev.mu.Unlock()
			_ = o.setExportAssignment()
			o.deleteExportObjects(s.Name)
		}
	}()
	sets := []*api.DefinedSet{
		{DefinedType: api.DefinedType_DEFINED_TYPE_NEIGHBOR, Name: neighborSetName(s.Name), List: []string{hostPrefix(s.PeerAddress).String()}},
		{DefinedType: api.DefinedType_DEFINED_TYPE_PREFIX, Name: prefixSetName(s.Name, false), Prefixes: apiPrefixes(o.prefixesFor(s.Name, false))},
		{DefinedType: api.DefinedType_DEFINED_TYPE_PREFIX, Name: prefixSetName(s.Name, true), Prefixes: apiPrefixes(o.prefixesFor(s.Name, true))},
	}
	for _, set := range sets {
		if err := o.srv.AddDefinedSet(ctx, &api.AddDefinedSetRequest{DefinedSet: set, Replace: true}); err != nil {
			return fmt.Errorf("session %s: defined set %s: %w", s.Name, set.Name, err)
		}
	}
	if err := o.srv.AddPolicy(ctx, &api.AddPolicyRequest{Policy: exportPolicy(s)}); err != nil {
		return fmt.Errorf("session %s: export policy: %w", s.Name, err)
	}
	o.running[s.Name] = s
	if err := o.setExportAssignment(); err != nil {
		return fmt.Errorf("session %s: export policy assignment: %w", s.Name, err)
	}
	o.ev.mu.Lock()
	o.ev.byAddr[s.PeerAddress] = s.Name
	o.ev.mu.Unlock()
	o.last.clear(s.PeerAddress.String())
	if err := o.srv.AddPeer(ctx, &api.AddPeerRequest{Peer: peerFor(s, false)}); err != nil {
		return fmt.Errorf("session %s: adding peer %s: %w", s.Name, s.PeerAddress, err)
	}
	return nil
}

// deleteExportObjects deletes a session's export policy and defined sets
// (the policy first: it refers to the sets).
func (o *Output) deleteExportObjects(name string) []error {
	ctx := context.Background()
	var errs []error
	if err := o.srv.DeletePolicy(ctx, &api.DeletePolicyRequest{Policy: &api.Policy{Name: policyName(name)}, All: true}); err != nil {
		errs = append(errs, fmt.Errorf("session %s: deleting export policy: %w", name, err))
	}
	for _, set := range []*api.DefinedSet{
		{DefinedType: api.DefinedType_DEFINED_TYPE_NEIGHBOR, Name: neighborSetName(name)},
		{DefinedType: api.DefinedType_DEFINED_TYPE_PREFIX, Name: prefixSetName(name, false)},
		{DefinedType: api.DefinedType_DEFINED_TYPE_PREFIX, Name: prefixSetName(name, true)},
	} {
		if err := o.srv.DeleteDefinedSet(ctx, &api.DeleteDefinedSetRequest{DefinedSet: set, All: true}); err != nil {
			errs = append(errs, fmt.Errorf("session %s: deleting defined set %s: %w", name, set.Name, err))
		}
	}
	return errs
}

func (o *Output) removeSession(s Session) error {
	ctx := context.Background()
	var errs []error
	// DeletePeer sends a Cease NOTIFICATION: the peer drops our routes.
	if err := o.srv.DeletePeer(ctx, &api.DeletePeerRequest{Address: s.PeerAddress.String()}); err != nil {
		errs = append(errs, fmt.Errorf("session %s: deleting peer %s: %w", s.Name, s.PeerAddress, err))
	}
	delete(o.running, s.Name)
	delete(o.bfdArmed, s.Name)
	delete(o.refused, s.Name)
	o.ev.mu.Lock()
	delete(o.ev.byAddr, s.PeerAddress)
	delete(o.ev.state, s.Name)
	o.ev.mu.Unlock()
	if err := o.setExportAssignment(); err != nil {
		errs = append(errs, err)
	}
	errs = append(errs, o.deleteExportObjects(s.Name)...)
	return errors.Join(errs...)
}

// updateSession applies changes that need no reset (see ResetReasons).
func (o *Output) updateSession(old, s Session) error {
	ctx := context.Background()
	o.running[s.Name] = s
	if old.HoldTime != s.HoldTime || old.KeepaliveTime != s.KeepaliveTime || old.ConnectTime != s.ConnectTime {
		o.log.Info("updating BGP session in place", "peer", s.Name, "holdTime", s.HoldTime, "keepaliveTime", s.KeepaliveTime, "connectTime", s.ConnectTime)
		if _, err := o.srv.UpdatePeer(ctx, &api.UpdatePeerRequest{Peer: peerFor(s, o.bfdArmed[s.Name])}); err != nil {
			return fmt.Errorf("session %s: updating peer: %w", s.Name, err)
		}
	}
	if old.NextHopV4 != s.NextHopV4 || old.NextHopV6 != s.NextHopV6 {
		o.log.Info("updating BGP next hops in place", "peer", s.Name, "nextHopV4", s.NextHopV4, "nextHopV6", s.NextHopV6)
		// GoBGP deletes no policy in use: take it out of the assignment,
		// replace it, put it back. Nothing is sent meanwhile (o.mu is held
		// and GoBGP re-reads policies only when it propagates), and the
		// soft reset out re-sends the routes with the new next hops.
		delete(o.running, s.Name)
		err := o.setExportAssignment()
		if err == nil {
			err = o.srv.DeletePolicy(ctx, &api.DeletePolicyRequest{Policy: &api.Policy{Name: policyName(s.Name)}, All: true})
		}
		if err == nil {
			err = o.srv.AddPolicy(ctx, &api.AddPolicyRequest{Policy: exportPolicy(s)})
		}
		o.running[s.Name] = s
		if err2 := o.setExportAssignment(); err == nil {
			err = err2
		}
		if err != nil {
			return fmt.Errorf("session %s: replacing export policy: %w", s.Name, err)
		}
		return o.softResetOut(s)
	}
	return nil
}

// softResetOut re-sends the session's routes through the export policy as
// it is now, withdrawing what it no longer lets out. A session that is not
// established has nothing to re-send.
func (o *Output) softResetOut(s Session) error {
	err := o.srv.ResetPeer(context.Background(), &api.ResetPeerRequest{
		Address: s.PeerAddress.String(), Soft: true, Direction: api.ResetPeerRequest_DIRECTION_OUT,
	})
	if err != nil {
		return fmt.Errorf("session %s: re-sending routes: %w", s.Name, err)
	}
	return nil
}

// SetRoutes makes the announced routes the given ones: new prefixes are
// announced to their peers, gone ones withdrawn, changed attributes
// re-announced, and a prefix that no longer names a peer is withdrawn from
// that peer alone. Routes naming a session that does not run wait for it.
func (o *Output) SetRoutes(routes []Route) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	want := map[netip.Prefix]*Route{}
	for _, r := range routes {
		if !r.Prefix.IsValid() {
			return fmt.Errorf("route with an invalid prefix %v", r.Prefix)
		}
		r = r.normalize()
		if prev, dup := want[r.Prefix]; dup {
			return fmt.Errorf("route %s is given twice (peers %v and %v); merge its attributes first", r.Prefix, prev.Peers, r.Peers)
		}
		want[r.Prefix] = &r
	}
	for p := range o.routes {
		if _, ok := want[p]; !ok {
			want[p] = nil
		}
	}
	return o.updateRoutes(want)
}

// UpdateRoutes changes the routes of the given prefixes only, as SetRoutes
// would: a prefix mapped to nil is withdrawn. Its cost is that of the
// change, whatever the number of routes.
func (o *Output) UpdateRoutes(delta map[netip.Prefix]*Route) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	norm := make(map[netip.Prefix]*Route, len(delta))
	for p, r := range delta {
		if r == nil {
			norm[p.Masked()] = nil
			continue
		}
		n := r.normalize()
		if !n.Prefix.IsValid() {
			return fmt.Errorf("route with an invalid prefix %v", r.Prefix)
		}
		norm[n.Prefix] = &n
	}
	return o.updateRoutes(norm)
}

func (o *Output) updateRoutes(delta map[netip.Prefix]*Route) error {
	if o.closed {
		return errClosed
	}
	old := make(map[netip.Prefix]Route, len(delta))
	for p, r := range delta {
		if prev, ok := o.routes[p]; ok {
			old[p] = prev
		}
		if r == nil {
			delete(o.routes, p)
		} else {
			o.routes[p] = *r
		}
	}
	if o.srv == nil {
		return nil // announced when the server starts
	}

	type setKey struct {
		session string
		v6      bool
	}
	adds := map[setKey][]netip.Prefix{}
	dels := map[setKey][]netip.Prefix{}
	shrunk := map[string]bool{}
	var announce, withdraw []*apiutil.Path
	for _, p := range slices.SortedFunc(maps.Keys(delta), comparePrefix) {
		r := delta[p]
		prev, existed := old[p]
		if r == nil {
			if !existed {
				continue
			}
			path, err := pathFor(prev, true)
			if err != nil {
				return err
			}
			withdraw = append(withdraw, path)
			for _, peer := range prev.Peers {
				dels[setKey{peer, p.Addr().Is6()}] = append(dels[setKey{peer, p.Addr().Is6()}], p)
			}
			continue
		}
		grew := false
		for _, peer := range r.Peers {
			if !existed || !slices.Contains(prev.Peers, peer) {
				adds[setKey{peer, p.Addr().Is6()}] = append(adds[setKey{peer, p.Addr().Is6()}], p)
				grew = true
			}
		}
		if existed {
			for _, peer := range prev.Peers {
				if !slices.Contains(r.Peers, peer) {
					dels[setKey{peer, p.Addr().Is6()}] = append(dels[setKey{peer, p.Addr().Is6()}], p)
					shrunk[peer] = true
				}
			}
		}
		if !existed || grew || !r.sameAttributes(prev) {
			path, err := pathFor(*r, false)
			if err != nil {
				return err
			}
			announce = append(announce, path)
		}
	}

	ctx := context.Background()
	var errs []error
	setOp := func(m map[setKey][]netip.Prefix, add bool) {
		for k, ps := range m {
			if _, ok := o.running[k.session]; !ok {
				continue // seeded from o.routes when the session is added
			}
			set := &api.DefinedSet{DefinedType: api.DefinedType_DEFINED_TYPE_PREFIX, Name: prefixSetName(k.session, k.v6), Prefixes: apiPrefixes(ps)}
			var err error
			if add {
				err = o.srv.AddDefinedSet(ctx, &api.AddDefinedSetRequest{DefinedSet: set})
			} else {
				err = o.srv.DeleteDefinedSet(ctx, &api.DeleteDefinedSetRequest{DefinedSet: set})
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("session %s: prefix set: %w", k.session, err))
			}
		}
	}
	// Order matters: a prefix joins its peers' sets before its path is
	// announced (the export policy reads the sets), and leaves them after
	// its withdrawal went out (withdrawals pass every policy).
	setOp(adds, true)
	if len(withdraw) > 0 {
		if err := o.srv.DeletePath(apiutil.DeletePathRequest{Paths: withdraw}); err != nil {
			errs = append(errs, fmt.Errorf("withdrawing %d routes: %w", len(withdraw), err))
		}
	}
	if len(announce) > 0 {
		if _, err := o.srv.AddPath(apiutil.AddPathRequest{Paths: announce}); err != nil {
			errs = append(errs, fmt.Errorf("announcing %d routes: %w", len(announce), err))
		}
	}
	setOp(dels, false)
	for _, name := range slices.Sorted(maps.Keys(shrunk)) {
		if s, ok := o.running[name]; ok {
			errs = append(errs, o.softResetOut(s))
		}
	}
	return errors.Join(errs...)
}

func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}

// PeerState is one session as it is, for status and metrics.
type PeerState struct {
	Name        string
	PeerAddress netip.Addr
	// State is the BGP FSM state (RFC 4271 8.2.2): Idle, Connect, Active,
	// OpenSent, OpenConfirm, Established; or Blocked when the session
	// cannot run (see Reason).
	State string
	// Since is when the session became Established; zero otherwise.
	Since time.Time
	// PeerASN is the AS the peer announced in its OPEN (Established only).
	PeerASN uint32
	// BFD is the BFD session's state (Up, Down, Init, AdminDown); empty
	// when the session runs no BFD.
	BFD string
	// Advertised are the prefixes announced to the peer (Established only),
	// sorted; AdvertisedCount is GoBGP's own count of them.
	Advertised      []netip.Prefix
	AdvertisedCount int
	UpdatesSent     uint64
	// Flaps counts the times the session left Established.
	Flaps uint64
	// Reason says why the session is not Established, when known.
	Reason   string
	Warnings []string
}

const (
	StateEstablished = "Established"
	StateBlocked     = "Blocked"
)

var fsmNames = map[api.PeerState_SessionState]string{
	api.PeerState_SESSION_STATE_IDLE:        "Idle",
	api.PeerState_SESSION_STATE_CONNECT:     "Connect",
	api.PeerState_SESSION_STATE_ACTIVE:      "Active",
	api.PeerState_SESSION_STATE_OPENSENT:    "OpenSent",
	api.PeerState_SESSION_STATE_OPENCONFIRM: "OpenConfirm",
	api.PeerState_SESSION_STATE_ESTABLISHED: StateEstablished,
}

var bfdNames = map[api.BfdSessionState]string{
	api.BfdSessionState_BFD_SESSION_STATE_UP:         "Up",
	api.BfdSessionState_BFD_SESSION_STATE_DOWN:       "Down",
	api.BfdSessionState_BFD_SESSION_STATE_ADMIN_DOWN: "AdminDown",
	api.BfdSessionState_BFD_SESSION_STATE_INIT:       "Init",
}

// State returns every desired session's state, sorted by name.
func (o *Output) State() []PeerState {
	o.mu.Lock()
	defer o.mu.Unlock()
	peers := map[string]*api.Peer{}
	if o.srv != nil {
		err := o.srv.ListPeer(context.Background(), &api.ListPeerRequest{EnableAdvertised: true}, func(p *api.Peer) {
			if a, err := netip.ParseAddr(p.GetConf().GetNeighborAddress()); err == nil {
				peers[a.String()] = p
			}
		})
		if err != nil {
			o.log.Error(err, "listing BGP sessions")
		}
	}
	o.ev.mu.Lock()
	flaps := maps.Clone(o.ev.flaps)
	o.ev.mu.Unlock()

	out := make([]PeerState, 0, len(o.desired))
	for _, name := range slices.Sorted(maps.Keys(o.desired)) {
		s := o.desired[name]
		st := PeerState{Name: name, PeerAddress: s.PeerAddress, Flaps: flaps[name], Warnings: s.Warnings}
		if s.Blocked != "" {
			st.State, st.Reason = StateBlocked, s.Blocked
			out = append(out, st)
			continue
		}
		p := peers[s.PeerAddress.String()]
		if _, running := o.running[name]; !running || p == nil {
			st.State, st.Reason = "Idle", "not configured in the BGP server yet"
			out = append(out, st)
			continue
		}
		ps := p.GetState()
		st.State = cmpOr(fsmNames[ps.GetSessionState()], "Idle")
		st.UpdatesSent = ps.GetMessages().GetSent().GetUpdate()
		if s.BFD != nil {
			st.BFD = cmpOr(bfdNames[ps.GetBfdState().GetSessionState()], "Down")
		}
		if st.State == StateEstablished {
			if up := p.GetTimers().GetState().GetUptime(); up != nil {
				st.Since = up.AsTime()
			}
			st.PeerASN = ps.GetPeerAsn()
			for _, a := range p.GetAfiSafis() {
				st.AdvertisedCount += int(a.GetState().GetAdvertised())
			}
			for _, v6 := range []bool{false, true} {
				if statementFor(s, v6) {
					st.Advertised = append(st.Advertised, o.prefixesFor(name, v6)...)
				}
			}
		} else if r := o.refused[name]; r != "" {
			st.Reason = r
		} else {
			st.Reason = o.reason(s, ps)
		}
		out = append(out, st)
	}
	return out
}

// statementFor reports whether the session's export policy lets routes of
// the family out at all (see exportPolicy).
func statementFor(s Session, v6 bool) bool {
	nh := s.NextHopV4
	if v6 {
		nh = s.NextHopV6
	}
	return nh.IsValid() || s.PeerAddress.Is6() == v6
}

// reason explains a session that is not established, from what GoBGP says
// about the last disconnection and the last dial.
func (o *Output) reason(s Session, ps *api.PeerState) string {
	var parts []string
	if r := ps.GetDisconnectReason(); r != api.PeerState_DISCONNECT_REASON_UNSPECIFIED {
		msg := strings.ToLower(strings.ReplaceAll(strings.TrimPrefix(r.String(), "DISCONNECT_REASON_"), "_", " "))
		if m := ps.GetDisconnectMessage(); m != "" {
			msg += " (" + m + ")"
		}
		parts = append(parts, "last disconnection: "+msg)
	}
	if dial := o.last.get(s.PeerAddress.String()); dial != "" {
		if s.Password != "" && strings.Contains(dial, "timeout") {
			dial += "; with a TCP MD5 password set, a peer that has another password (or none) drops our segments unanswered, which looks like this"
		}
		parts = append(parts, dial)
	}
	if len(parts) == 0 {
		return "connecting"
	}
	return strings.Join(parts, "; ")
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func (o *Output) peerEvent(ev *apiutil.WatchEventMessage_PeerEvent, _ time.Time) {
	if ev.Type != apiutil.PEER_EVENT_STATE {
		return
	}
	addr := ev.Peer.State.NeighborAddress
	o.ev.mu.Lock()
	name, ok := o.ev.byAddr[addr]
	if !ok {
		o.ev.mu.Unlock()
		return
	}
	prev := o.ev.state[name]
	now := ev.Peer.State.SessionState
	o.ev.state[name] = now
	if prev == bgp.BGP_FSM_ESTABLISHED && now != bgp.BGP_FSM_ESTABLISHED {
		o.ev.flaps[name]++
	}
	o.ev.mu.Unlock()

	switch {
	case now == bgp.BGP_FSM_ESTABLISHED && prev != now:
		o.last.clear(addr.String())
		o.log.Info("BGP session up", "peer", name, "address", addr, "peerASN", ev.Peer.State.PeerASN)
		go o.armBFD(name)
		go o.checkPeerAS(name, ev.Peer.State.PeerASN)
	case prev == bgp.BGP_FSM_ESTABLISHED && now != prev:
		go o.disarmBFD(name)
		o.log.Info("BGP session down", "peer", name, "address", addr, "reason", ev.Peer.State.DisconnectReason.String(), "message", ev.Peer.State.DisconnectMessage)
	default:
		return
	}
	if o.onChg != nil {
		o.onChg()
	}
}

// armBFD starts BFD on a session once BGP is Established, and leaves it
// running from then on.
//
// Why not from the start: GoBGP v4.8's BFD binds to the first remote
// discriminator it hears and then drops every packet with another one, and
// it resets the BGP session when its detection time expires even in Init
// (RFC 5882 asks for a reset only when an Up session goes Down). FRR's bgpd
// re-registers its BFD session when BGP comes up (it learns the local
// address then), so bfdd replaces the session and its discriminator: a
// GoBGP BFD started with the peer stuck in Init and reset the new BGP
// session about 3 s after it came up, every time (seen against FRR 8.4).
// Started after Established, GoBGP's BFD meets the session FRR keeps.
func (o *Output) armBFD(name string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	s, ok := o.running[name]
	if o.closed || !ok || s.BFD == nil || o.bfdArmed[name] || o.srv == nil || !o.established(name) {
		return
	}
	if _, err := o.srv.UpdatePeer(context.Background(), &api.UpdatePeerRequest{Peer: peerFor(s, true)}); err != nil {
		o.log.Error(err, "starting BFD", "peer", name)
		return
	}
	o.bfdArmed[name] = true
	o.log.Info("BFD started", "peer", name, "receiveInterval", s.BFD.ReceiveInterval, "transmitInterval", s.BFD.TransmitInterval, "detectMultiplier", s.BFD.DetectMultiplier)
}

// disarmBFD stops BFD on a session that left Established, for the same
// reason armBFD starts it late: the router's BFD session for the next BGP
// session gets a new discriminator, which GoBGP's BFD, bound to the old one,
// would drop until its detection time reset the new BGP session, over and
// over (seen against FRR after a link cut and repair). armBFD starts it
// afresh once BGP is back.
func (o *Output) disarmBFD(name string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	s, ok := o.running[name]
	if o.closed || !ok || !o.bfdArmed[name] || o.srv == nil || o.established(name) {
		return
	}
	if _, err := o.srv.UpdatePeer(context.Background(), &api.UpdatePeerRequest{Peer: peerFor(s, false)}); err != nil {
		o.log.Error(err, "stopping BFD", "peer", name)
		return
	}
	delete(o.bfdArmed, name)
	o.log.Info("BFD stopped until the session is Established again", "peer", name)
}

// established reports whether the last peer event left the session
// Established: arming and disarming run on goroutines of their own, and
// must not act on a state that has passed.
func (o *Output) established(name string) bool {
	o.ev.mu.Lock()
	defer o.ev.mu.Unlock()
	return o.ev.state[name] == bgp.BGP_FSM_ESTABLISHED
}

// checkPeerAS shuts down a dynamicASN external session whose peer turned
// out to be in our own AS: GoBGP, told to accept any AS (peer AS 0), runs it
// as iBGP instead of refusing it. The session stays down, with the reason in
// State, until its configuration changes.
func (o *Output) checkPeerAS(name string, peerASN uint32) {
	o.mu.Lock()
	defer o.mu.Unlock()
	s, ok := o.running[name]
	if o.closed || !ok || o.srv == nil || s.DynamicASN != "external" || peerASN != s.MyASN {
		return
	}
	reason := fmt.Sprintf("dynamicASN external, but the peer announced our own AS %d: session shut down (set dynamicASN internal or peerASN for an iBGP peer)", peerASN)
	if err := o.srv.DisablePeer(context.Background(), &api.DisablePeerRequest{Address: s.PeerAddress.String(), Communication: "AS mismatch: external peer expected"}); err != nil {
		o.log.Error(err, "shutting down a session with an AS mismatch", "peer", name)
		return
	}
	o.refused[name] = reason
	o.log.Info("BGP session refused", "peer", name, "reason", reason)
}

// Close withdraws every route, closes every session (a Cease NOTIFICATION,
// so peers drop our routes at once even with graceful restart) and stops
// GoBGP. The Output is unusable afterwards.
func (o *Output) Close() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return nil
	}
	o.closed = true
	var err error
	if o.srv != nil && len(o.routes) > 0 {
		err = o.srv.DeletePath(apiutil.DeletePathRequest{DeleteAll: true})
	}
	o.stopServer()
	o.routes = map[netip.Prefix]Route{}
	return err
}

// Detach stops GoBGP without withdrawing anything, for a speaker that
// restarts: peers that negotiated graceful restart with this node keep its
// routes (marked stale) until the next speaker re-announces them or the
// restart time (120 s) ends; other peers drop them as with Close. The
// Output is unusable afterwards.
func (o *Output) Detach() {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return
	}
	o.closed = true
	o.stopServer(true)
}
