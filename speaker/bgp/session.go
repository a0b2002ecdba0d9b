package bgp

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/heraldlb/herald/api/v1alpha1"
	"github.com/heraldlb/herald/internal/model"
)

// Node is what the translation reads of the node the speaker runs on.
type Node struct {
	Name   string
	Labels map[string]string
	// Addresses of the node (its InternalIP and ExternalIP addresses), in
	// the order the Node object lists them.
	Addresses []netip.Addr
}

// SecretKey names one key of a Secret in Herald's namespace.
type SecretKey struct{ Name, Key string }

// Session is one desired BGP session of this node, fully resolved: no
// defaults are left for GoBGP to fill in except where noted.
type Session struct {
	// Name is the BGPPeer's name; it identifies the session.
	Name string

	MyASN uint32
	// PeerASN is the AS the peer must have; 0 with DynamicASN.
	PeerASN uint32
	// DynamicASN is "internal" or "external" when the peer's AS is taken
	// from its OPEN message.
	DynamicASN v1alpha1.DynamicASN

	PeerAddress netip.Addr
	PeerPort    uint16
	// SourceAddress is the local address to dial from; invalid lets the
	// kernel choose.
	SourceAddress netip.Addr
	// RouterID is the BGP identifier (RFC 6286). GoBGP has one per server,
	// so Sessions gives every session of a node the same one.
	RouterID netip.Addr

	HoldTime      time.Duration
	KeepaliveTime time.Duration
	ConnectTime   time.Duration

	EBGPMultiHop bool
	// Password is the TCP MD5 password (RFC 2385); empty for none.
	Password        string
	GracefulRestart bool
	// BFD runs BFD on the session; nil for none.
	BFD *BFD

	// NextHopV4 and NextHopV6 are the next hops sent to this peer for IPv4
	// and IPv6 routes. Invalid means the session's own local address, which
	// is right for the family the session runs over; for the other family
	// (IPv6 routes over an IPv4 session, RFC 4760) an invalid next hop
	// means routes of that family are not sent to this peer.
	NextHopV4 netip.Addr
	NextHopV6 netip.Addr

	// Blocked, when set, says why the session cannot run (a Secret that is
	// missing, a second peer on one address): Output opens no session and
	// reports Blocked as the reason in State.
	Blocked string
	// Warnings are settings Output cannot honour as written, for status.
	Warnings []string
}

// BFD holds a session's BFD parameters (RFC 5880), from its BFDProfile.
type BFD struct {
	Profile          string
	ReceiveInterval  time.Duration
	TransmitInterval time.Duration
	DetectMultiplier uint8
}

// Defaults of the BGPPeer and BFDProfile fields, as the CRDs' defaults and
// their documentation state them.
const (
	defaultHoldTime      = 90 * time.Second
	defaultConnectTime   = 120 * time.Second
	defaultBFDInterval   = 300 * time.Millisecond
	defaultBFDMultiplier = 3
	defaultPeerPort      = 179
)

// Sessions returns the sessions this node opens: one for every accepted
// BGPPeer whose nodeSelectors match the node, sorted by name. passwords
// holds the values of the Secrets' keys the peers refer to, as read by the
// caller; a missing one blocks the session with a reason.
//
// The BGP identifier is one per node (GoBGP runs one per server): the
// routerID of the first peer, by name, that sets one; otherwise the node's
// IPv4 address on the side of the first session's peer (the address sharing
// the longest prefix with the peer address, or the source address when it
// is IPv4). A node with no IPv4 address takes the low 32 bits of its first
// IPv6 address, which differ between nodes of one subnet in practice.
func Sessions(node Node, cfg *model.Config, passwords map[SecretKey]string) []Session {
	if cfg == nil {
		return nil
	}
	names := make([]string, 0, len(cfg.BGPPeers))
	for name, p := range cfg.BGPPeers {
		if matches(p.Spec.NodeSelectors, node.Labels) {
			names = append(names, name)
		}
	}
	slices.Sort(names)

	var out []Session
	byAddr := map[netip.Addr]string{}
	for _, name := range names {
		p := cfg.BGPPeers[name]
		s := session(node, p, cfg.BFDProfiles, passwords)
		if other, dup := byAddr[s.PeerAddress]; dup && s.Blocked == "" {
			s.Blocked = fmt.Sprintf("BGPPeer %s already peers with %s from this node; GoBGP holds one session per peer address", other, s.PeerAddress)
		} else if s.PeerAddress.IsValid() {
			byAddr[s.PeerAddress] = name
		}
		out = append(out, s)
	}
	routerID, from := nodeRouterID(node, out)
	for i := range out {
		s := &out[i]
		if want := s.RouterID; want.IsValid() && want != routerID {
			s.Warnings = append(s.Warnings, fmt.Sprintf("routerID %s is not used: this node's BGP speaker has one BGP identifier, %s (%s)", want, routerID, from))
		}
		s.RouterID = routerID
	}
	return out
}

func matches(sels []metav1.LabelSelector, set map[string]string) bool {
	compiled := make([]labels.Selector, 0, len(sels))
	for i := range sels {
		s, err := metav1.LabelSelectorAsSelector(&sels[i])
		if err != nil {
			return false // the model refuses such peers; never match by accident
		}
		compiled = append(compiled, s)
	}
	return model.AnyMatches(compiled, set)
}

func session(node Node, p *v1alpha1.BGPPeer, profiles map[string]*v1alpha1.BFDProfile, passwords map[SecretKey]string) Session {
	spec := p.Spec
	s := Session{
		Name:            p.Name,
		MyASN:           spec.MyASN,
		PeerASN:         spec.PeerASN,
		DynamicASN:      spec.DynamicASN,
		PeerPort:        defaultPeerPort,
		HoldTime:        defaultHoldTime,
		ConnectTime:     defaultConnectTime,
		EBGPMultiHop:    spec.EBGPMultiHop,
		GracefulRestart: spec.GracefulRestart,
	}
	if s.PeerASN != 0 {
		s.DynamicASN = ""
	}
	var err error
	if s.PeerAddress, err = netip.ParseAddr(spec.PeerAddress); err != nil {
		s.Blocked = fmt.Sprintf("peerAddress %q is not an IP address", spec.PeerAddress)
		return s
	}
	s.PeerAddress = s.PeerAddress.Unmap()
	if spec.PeerPort != 0 {
		s.PeerPort = uint16(spec.PeerPort)
	}
	if spec.SourceAddress != "" {
		if s.SourceAddress, err = netip.ParseAddr(spec.SourceAddress); err != nil {
			s.Blocked = fmt.Sprintf("sourceAddress %q is not an IP address", spec.SourceAddress)
			return s
		}
		s.SourceAddress = s.SourceAddress.Unmap()
		if !slices.Contains(node.Addresses, s.SourceAddress) {
			s.Warnings = append(s.Warnings, fmt.Sprintf("sourceAddress %s is not among node %s's addresses; the session fails unless the address is on one of its interfaces", s.SourceAddress, node.Name))
		}
	}
	if spec.RouterID != "" {
		if s.RouterID, err = netip.ParseAddr(spec.RouterID); err != nil || !s.RouterID.Is4() {
			s.RouterID = netip.Addr{}
			s.Warnings = append(s.Warnings, fmt.Sprintf("routerID %q is not an IPv4 address; the node's default is used", spec.RouterID))
		}
	}
	if spec.HoldTime != nil {
		s.HoldTime = spec.HoldTime.Duration
	}
	if s.HoldTime == 0 {
		// GoBGP reads a hold time of 0 as "unset" and uses 90 s; it cannot
		// run a session without keepalives (RFC 4271 4.2 allows one).
		s.HoldTime = defaultHoldTime
		s.Warnings = append(s.Warnings, "holdTime 0 (no keepalives) is not supported by the embedded GoBGP; 90s is used")
	}
	s.KeepaliveTime = s.HoldTime / 3
	if spec.KeepaliveTime != nil && spec.KeepaliveTime.Duration > 0 {
		s.KeepaliveTime = spec.KeepaliveTime.Duration
	}
	if spec.ConnectTime != nil && spec.ConnectTime.Duration > 0 {
		s.ConnectTime = spec.ConnectTime.Duration
	}
	if spec.VRF != "" {
		s.Blocked = fmt.Sprintf("vrf %q: sessions in a VRF are not supported yet", spec.VRF)
		return s
	}
	if spec.PasswordSecret != nil {
		key := SecretKey{Name: spec.PasswordSecret.Name, Key: cmp.Or(spec.PasswordSecret.Key, "password")}
		pw, ok := passwords[key]
		if !ok {
			s.Blocked = fmt.Sprintf("passwordSecret: Secret %q has no key %q (or does not exist) in Herald's namespace", key.Name, key.Key)
			return s
		}
		s.Password = pw
	}
	if spec.BFDProfile != "" {
		prof, ok := profiles[spec.BFDProfile]
		if !ok {
			s.Blocked = fmt.Sprintf("bfdProfile %q does not exist", spec.BFDProfile)
			return s
		}
		s.BFD, s.Warnings = bfd(prof, s.Warnings)
		if s.EBGPMultiHop {
			s.Warnings = append(s.Warnings, "bfdProfile with ebgpMultiHop: the embedded BFD is single-hop only (RFC 5881, no RFC 5883 multi-hop); BFD comes up only if the peer is in fact one hop away")
		}
	}
	s.NextHopV4, s.NextHopV6 = nextHops(node, s)
	return s
}

func bfd(p *v1alpha1.BFDProfile, warnings []string) (*BFD, []string) {
	ms := func(v *int32) time.Duration {
		if v == nil {
			return defaultBFDInterval
		}
		return time.Duration(*v) * time.Millisecond
	}
	b := &BFD{
		Profile:          p.Name,
		ReceiveInterval:  ms(p.Spec.ReceiveInterval),
		TransmitInterval: ms(p.Spec.TransmitInterval),
		DetectMultiplier: defaultBFDMultiplier,
	}
	if m := p.Spec.DetectMultiplier; m != nil && *m >= 1 && *m <= 255 {
		b.DetectMultiplier = uint8(*m)
	}
	// GoBGP v4's BFD is single-hop asynchronous mode only (RFC 5881).
	if p.Spec.EchoMode {
		warnings = append(warnings, fmt.Sprintf("BFDProfile %s: echoMode is not supported by the embedded BFD; asynchronous mode runs without echo", p.Name))
	}
	if p.Spec.PassiveMode {
		warnings = append(warnings, fmt.Sprintf("BFDProfile %s: passiveMode is not supported by the embedded BFD; the speaker starts the BFD session", p.Name))
	}
	return b, warnings
}

// nextHops leaves the next hop of the session's own family to GoBGP (the
// session's local address) and picks the node's address of the other
// family for routes of that family: the first one the node lists.
func nextHops(node Node, s Session) (v4, v6 netip.Addr) {
	peer4 := s.PeerAddress.Is4()
	for _, a := range node.Addresses {
		a = a.Unmap()
		if a.Is4() && !peer4 && !v4.IsValid() {
			v4 = a
		}
		if a.Is6() && peer4 && !v6.IsValid() && !a.IsLinkLocalUnicast() {
			v6 = a
		}
	}
	return v4, v6
}

// nodeRouterID picks the node's one BGP identifier and says where from.
func nodeRouterID(node Node, sessions []Session) (netip.Addr, string) {
	for _, s := range sessions {
		if s.RouterID.IsValid() {
			return s.RouterID, "the routerID of BGPPeer " + s.Name
		}
	}
	var first *Session
	for i := range sessions {
		if sessions[i].PeerAddress.IsValid() {
			first = &sessions[i]
			break
		}
	}
	if first != nil && first.SourceAddress.Is4() {
		return first.SourceAddress, "the sourceAddress of BGPPeer " + first.Name
	}
	var best netip.Addr
	bestLen := -1
	for _, a := range node.Addresses {
		a = a.Unmap()
		if !a.Is4() {
			continue
		}
		l := 0
		if first != nil && first.PeerAddress.Is4() {
			l = commonPrefixLen(a, first.PeerAddress)
		}
		if l > bestLen {
			best, bestLen = a, l
		}
	}
	if best.IsValid() {
		return best, "node " + node.Name + "'s IPv4 address"
	}
	for _, a := range node.Addresses {
		if a.Is6() {
			b := a.As16()
			return netip.AddrFrom4([4]byte{b[12], b[13], b[14], b[15]}), "the low 32 bits of node " + node.Name + "'s IPv6 address"
		}
	}
	return netip.Addr{}, "none: node " + node.Name + " has no address"
}

func commonPrefixLen(a, b netip.Addr) int {
	x, y := a.As4(), b.As4()
	n := 0
	for i := range 4 {
		d := x[i] ^ y[i]
		if d == 0 {
			n += 8
			continue
		}
		for d&0x80 == 0 {
			n++
			d <<= 1
		}
		break
	}
	return n
}

// ResetReasons says which changes from old to new need the session to be
// reset (torn down and opened again), one reason per field, for the log and
// the event. An empty result means the change is applied in place and the
// session, its uptime and the routes the peer holds are kept.
//
// Applied in place, and why that is enough:
//   - holdTime and keepaliveTime: RFC 4271 4.2 fixes them when the OPEN
//     messages are exchanged, so the new values apply from the next time the
//     session is established; tearing a working session down (and
//     withdrawing every route) to retune a timer costs more than it brings;
//   - connectTime: it only paces dialling while the session is down;
//   - next hops: they are export policy, re-sent to the peer with a soft
//     reset out (RFC 2918 style re-advertisement; no session reset).
//
// The rest needs a reset because it is part of the OPEN exchange or of the
// TCP connection itself (see each reason).
func ResetReasons(old, new Session) []string {
	var r []string
	add := func(changed bool, field, why string) {
		if changed {
			r = append(r, field+" changed: "+why)
		}
	}
	add(old.PeerAddress != new.PeerAddress, "peerAddress", "the session is to another router")
	add(old.PeerPort != new.PeerPort, "peerPort", "the TCP connection goes to another port")
	add(old.SourceAddress != new.SourceAddress, "sourceAddress", "the TCP connection comes from another address")
	add(old.MyASN != new.MyASN, "myASN", "our AS is sent in the OPEN message")
	add(old.PeerASN != new.PeerASN || old.DynamicASN != new.DynamicASN, "peerASN", "the peer's AS is checked against its OPEN message")
	add(old.RouterID != new.RouterID, "routerID", "the BGP identifier is sent in the OPEN message")
	add(old.Password != new.Password, "password", "the TCP MD5 key signs every segment of the connection (RFC 2385); a new key needs a new connection")
	add(old.EBGPMultiHop != new.EBGPMultiHop, "ebgpMultiHop", "the TTL of the connection's packets is set when it opens")
	add(old.GracefulRestart != new.GracefulRestart, "gracefulRestart", "the capability is negotiated in the OPEN message (RFC 4724)")
	add(!old.BFD.equal(new.BFD), "bfdProfile", "GoBGP restarts the BFD session to apply new parameters (no RFC 5880 6.8.3 poll sequence), and a peer that ties BGP to BFD drops the session then anyway; a clean reset is the honest change")
	add(old.Blocked != new.Blocked, "blocked", "the session can run now, or cannot any more")
	return r
}

func (b *BFD) equal(o *BFD) bool {
	if b == nil || o == nil {
		return b == o
	}
	return *b == *o
}
