package bgp

import (
	"fmt"
	"net/netip"
	"time"

	api "github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	"github.com/osrg/gobgp/v4/pkg/packet/bgp"
)

// What Output names in GoBGP. Every object is Herald's own; one Output owns
// its GoBGP server, so names need no per-instance part.
const (
	importPolicy    = "herald-import"
	importStatement = "herald-import-local"
)

func neighborSetName(session string) string { return "herald-n-" + session }
func prefixSetName(session string, v6 bool) string {
	if v6 {
		return "herald-p6-" + session
	}
	return "herald-p4-" + session
}
func policyName(session string) string { return "herald-out-" + session }
func statementName(session string, v6 bool) string {
	if v6 {
		return "herald-out6-" + session
	}
	return "herald-out4-" + session
}

// idleHoldAfterReset is how long GoBGP waits before dialling again after it
// reset a session (BFD down, a NOTIFICATION): GoBGP's default is 30 s, which
// would keep a session down long after BFD saw the link come back.
const idleHoldAfterReset = 3 * time.Second

func seconds(d time.Duration) uint64 { return uint64((d + time.Second/2) / time.Second) }

// peerFor is the GoBGP peer of a session; withBFD arms its BFD (see
// Output.armBFD for why that waits).
func peerFor(s Session, withBFD bool) *api.Peer {
	peerASN := s.PeerASN
	switch {
	case peerASN != 0:
	case s.DynamicASN == "internal":
		peerASN = s.MyASN
	default:
		// 0 makes GoBGP take the AS from the peer's OPEN. GoBGP does not
		// refuse our own AS then: see Output.checkPeerAS.
	}
	p := &api.Peer{
		Conf: &api.PeerConf{
			NeighborAddress: s.PeerAddress.String(),
			PeerAsn:         peerASN,
			LocalAsn:        s.MyASN,
			AuthPassword:    s.Password,
			Description:     "BGPPeer " + s.Name,
		},
		Timers: &api.Timers{Config: &api.TimersConfig{
			ConnectRetry:           seconds(s.ConnectTime),
			HoldTime:               seconds(s.HoldTime),
			KeepaliveInterval:      seconds(s.KeepaliveTime),
			IdleHoldTimeAfterReset: seconds(idleHoldAfterReset),
		}},
		Transport: &api.Transport{RemotePort: uint32(s.PeerPort)},
	}
	if s.SourceAddress.IsValid() {
		p.Transport.LocalAddress = s.SourceAddress.String()
	}
	if s.EBGPMultiHop {
		p.EbgpMultihop = &api.EbgpMultihop{Enabled: true, MultihopTtl: 255}
	}
	if s.GracefulRestart {
		// RFC 4724: the restart time is how long the peer keeps our routes
		// while we come back; 120 s is the RFC's suggested default.
		p.GracefulRestart = &api.GracefulRestart{Enabled: true, RestartTime: 120}
	}
	for _, f := range []api.Family_Afi{api.Family_AFI_IP, api.Family_AFI_IP6} {
		a := &api.AfiSafi{Config: &api.AfiSafiConfig{Family: &api.Family{Afi: f, Safi: api.Family_SAFI_UNICAST}, Enabled: true}}
		if s.GracefulRestart {
			a.MpGracefulRestart = &api.MpGracefulRestart{Config: &api.MpGracefulRestartConfig{Enabled: true}}
		}
		p.AfiSafis = append(p.AfiSafis, a)
	}
	if s.BFD != nil && withBFD {
		p.Bfd = &api.BfdPeerConfig{
			Enabled:                  true,
			DesiredMinimumTxInterval: uint32(s.BFD.TransmitInterval / time.Microsecond),
			RequiredMinimumReceive:   uint32(s.BFD.ReceiveInterval / time.Microsecond),
			DetectionMultiplier:      uint32(s.BFD.DetectMultiplier),
		}
	}
	return p
}

// exportPolicy lets a session's routes out to it: a route whose prefix is
// in the session's prefix set of its family, towards the session's
// neighbour, with the session's next hop for that family. A family with no
// usable next hop gets no statement: the global default rejects its routes.
func exportPolicy(s Session) *api.Policy {
	p := &api.Policy{Name: policyName(s.Name)}
	for _, v6 := range []bool{false, true} {
		nh := s.NextHopV4
		if v6 {
			nh = s.NextHopV6
		}
		sameFamily := s.PeerAddress.Is6() == v6
		if !nh.IsValid() && !sameFamily {
			continue
		}
		actions := &api.Actions{RouteAction: api.RouteAction_ROUTE_ACTION_ACCEPT}
		if nh.IsValid() {
			actions.Nexthop = &api.NexthopAction{Address: nh.String()}
		}
		p.Statements = append(p.Statements, &api.Statement{
			Name: statementName(s.Name, v6),
			Conditions: &api.Conditions{
				NeighborSet: &api.MatchSet{Type: api.MatchSet_TYPE_ANY, Name: neighborSetName(s.Name)},
				PrefixSet:   &api.MatchSet{Type: api.MatchSet_TYPE_ANY, Name: prefixSetName(s.Name, v6)},
			},
			Actions: actions,
		})
	}
	return p
}

func hostPrefix(a netip.Addr) netip.Prefix { return netip.PrefixFrom(a, a.BitLen()) }

func apiPrefixes(ps []netip.Prefix) []*api.Prefix {
	out := make([]*api.Prefix, 0, len(ps))
	for _, p := range ps {
		out = append(out, &api.Prefix{IpPrefix: p.String(), MaskLengthMin: uint32(p.Bits()), MaskLengthMax: uint32(p.Bits())})
	}
	return out
}

func family(p netip.Prefix) bgp.Family {
	if p.Addr().Is6() {
		return bgp.RF_IPv6_UC
	}
	return bgp.RF_IPv4_UC
}

// pathFor is the GoBGP path of a route. Its next hop is left unspecified
// (0.0.0.0 or ::): GoBGP puts the session's local address there, and the
// export policy overrides it where the session says otherwise.
func pathFor(r Route, withdraw bool) (*apiutil.Path, error) {
	nlri, err := bgp.NewIPAddrPrefix(r.Prefix)
	if err != nil {
		return nil, fmt.Errorf("route %s: %w", r.Prefix, err)
	}
	attrs := []bgp.PathAttributeInterface{
		bgp.NewPathAttributeOrigin(bgp.BGP_ORIGIN_ATTR_TYPE_IGP),
		bgp.NewPathAttributeAsPath(nil),
	}
	fam := family(r.Prefix)
	if fam == bgp.RF_IPv4_UC {
		nh, err := bgp.NewPathAttributeNextHop(netip.IPv4Unspecified())
		if err != nil {
			return nil, err
		}
		attrs = append(attrs, nh)
	} else {
		mp, err := bgp.NewPathAttributeMpReachNLRI(fam, []bgp.PathNLRI{{NLRI: nlri}}, netip.IPv6Unspecified())
		if err != nil {
			return nil, fmt.Errorf("route %s: %w", r.Prefix, err)
		}
		attrs = append(attrs, mp)
	}
	if r.LocalPref != nil {
		attrs = append(attrs, bgp.NewPathAttributeLocalPref(*r.LocalPref))
	}
	if len(r.Communities) > 0 {
		attrs = append(attrs, bgp.NewPathAttributeCommunities(r.Communities))
	}
	if len(r.LargeCommunities) > 0 {
		l := make([]*bgp.LargeCommunity, 0, len(r.LargeCommunities))
		for _, c := range r.LargeCommunities {
			l = append(l, bgp.NewLargeCommunity(c.Global, c.Local1, c.Local2))
		}
		attrs = append(attrs, bgp.NewPathAttributeLargeCommunities(l))
	}
	return &apiutil.Path{Family: fam, Nlri: nlri, Attrs: attrs, Withdrawal: withdraw}, nil
}
