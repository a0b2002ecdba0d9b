package dataplane

import (
	"encoding/binary"
	"strconv"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Partial syncs over nf_tables netlink, without the nft binary.
//
// Why: before it runs even a one-line transaction that adds a rule or an
// element, nft (1.0.6) dumps every chain, set and object of the ruleset
// into its cache (one netlink dump each, whatever the table named: the
// chain dump alone is 1.1 MB for 10,000 services) and builds its cache of
// them. At 10,000 virtual services a partial sync of one through nft took
// 109 ms of CPU, 0.14-0.26 s wall; a transaction of `flush chain` alone,
// which needs no cache, 20-30 ms wall (mostly starting nft). A batch sent
// straight to the kernel costs none of that: 22-27 ms of CPU, nearly all of
// it the kernel's validation of the table (nftables.go, "Measured").
//
// What goes this way: the changes that keep each virtual service's chain and
// need no set, which is every change of destinations of a Service without
// session affinity (the goal this serves: one Service's endpoints changed),
// a virtual service removed, and one with no destination added. The rest (a
// new chain, whose comment this library cannot write, and affinity sets)
// goes through nft as before; so does every full sync.
//
// The batch is the transaction nft would send for the same change: the same
// operations in the same order, and each rule the expressions nft compiles
// from the text nftRenderer writes (TestNFTablesNetlinkPartialMatchesNft
// holds the two to the same `nft list table`, bytecode included).

// nftNetlinkCan reports whether the netlink path can program changes.
func nftNetlinkCan(changes []change) bool {
	for _, c := range changes {
		for _, vs := range []*VirtualService{c.Old, c.New} {
			if vs != nil && vs.Affinity > 0 {
				return false
			}
		}
		if c.New == nil {
			continue
		}
		if _, ok := c.New.Protocol.number(); !ok {
			return false // for nft to refuse
		}
		if len(c.New.Destinations) == 0 {
			continue
		}
		// The chain must be there already, with the comment it would get.
		if c.Old == nil || len(c.Old.Destinations) == 0 || c.Old.comment() != c.New.comment() {
			return false
		}
		switch c.New.Scheduler {
		case Random, RoundRobin, SourceHash:
		default:
			return false
		}
	}
	return true
}

// partialNetlink programs changes (nftNetlinkCan) in one netlink batch, in
// the order nftRenderer.partial gives nft.
func (n *NFTables) partialNetlink(changes []change) error {
	// A connection per sync: its socket is opened when the batch is sent,
	// in the network namespace of the calling thread.
	c, err := nftables.New()
	if err != nil {
		return err
	}
	t := &nftables.Table{Name: n.opts.Table, Family: nftables.TableFamilyINet}
	for _, ch := range changes {
		if ch.Old != nil && (ch.New == nil || len(ch.Old.Destinations) == 0 != (len(ch.New.Destinations) == 0)) {
			set, elem := nftNetlinkElement(t, ch.Old)
			if err := c.SetDeleteElements(set, []nftables.SetElement{elem}); err != nil {
				return err
			}
		}
	}
	for _, ch := range changes {
		if ch.Old != nil && len(ch.Old.Destinations) > 0 {
			c.FlushChain(&nftables.Chain{Table: t, Name: nftServiceChain(ch.Old.Key)})
		}
	}
	for _, ch := range changes {
		if ch.Old != nil && len(ch.Old.Destinations) > 0 && (ch.New == nil || len(ch.New.Destinations) == 0) {
			c.DelChain(&nftables.Chain{Table: t, Name: nftServiceChain(ch.Old.Key)})
		}
	}
	for _, ch := range changes {
		vs := ch.New
		if vs == nil {
			continue
		}
		if len(vs.Destinations) > 0 {
			chain := &nftables.Chain{Table: t, Name: nftServiceChain(vs.Key)}
			for _, exprs := range n.nftNetlinkRules(vs) {
				c.AddRule(&nftables.Rule{Table: t, Chain: chain, Exprs: exprs})
			}
		}
		if ch.Old == nil || len(ch.Old.Destinations) == 0 != (len(vs.Destinations) == 0) {
			set, elem := nftNetlinkElement(t, vs)
			if err := c.SetAddElements(set, []nftables.SetElement{elem}); err != nil {
				return err
			}
		}
	}
	return c.Flush()
}

// nftNetlinkRules is what nft compiles the rules of serviceRules into
// (without affinity): for each destination, the scheduler's condition
// (none for the last), the mark, the protocol and the DNAT.
func (n *NFTables) nftNetlinkRules(vs *VirtualService) [][]expr.Any {
	v4 := vs.IP.Is4()
	nfproto, saddrOff, addrLen := byte(unix.NFPROTO_IPV4), uint32(12), uint32(4)
	if !v4 {
		nfproto, saddrOff, addrLen = unix.NFPROTO_IPV6, 8, 16
	}
	num := len(vs.Destinations)
	out := make([][]expr.Any, 0, num)
	for i, d := range vs.Destinations {
		var e []expr.Any
		if i < num-1 {
			switch vs.Scheduler {
			case SourceHash:
				// jhash ip saddr mod N seed S == i; "ip saddr" in an inet
				// table brings its dependency, meta nfproto.
				e = append(e,
					&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
					&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{nfproto}},
					&expr.Payload{DestRegister: 2, Base: expr.PayloadBaseNetworkHeader, Offset: saddrOff, Len: addrLen},
					&expr.Hash{SourceRegister: 2, DestRegister: 1, Length: addrLen, Modulus: uint32(num), Seed: nftHashSeed, Type: expr.HashTypeJenkins},
					&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(uint32(i))})
			default:
				typ := uint32(unix.NFT_NG_RANDOM)
				if vs.Scheduler == RoundRobin {
					typ = unix.NFT_NG_INCREMENTAL
				}
				e = append(e,
					&expr.Numgen{Register: 1, Modulus: uint32(num - i), Type: typ, Offset: 0},
					&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(0)})
			}
		}
		if vs.Masquerade {
			// meta mark set meta mark | M
			mark := n.opts.MasqueradeMark
			e = append(e,
				&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
				&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
					Mask: binaryutil.NativeEndian.PutUint32(^mark), Xor: binaryutil.NativeEndian.PutUint32(mark)},
				&expr.Meta{Key: expr.MetaKeyMARK, SourceRegister: true, Register: 1})
		}
		e = append(e,
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{vs.Protocol.proto()}},
			&expr.Immediate{Register: 1, Data: d.Addr.AsSlice()},
			&expr.Immediate{Register: 2, Data: binaryutil.BigEndian.PutUint16(d.Port)},
			&expr.NAT{Type: expr.NATTypeDestNAT, Family: uint32(nfproto), RegAddrMin: 1, RegProtoMin: 2, Specified: true})
		out = append(out, e)
	}
	return out
}

// nftNetlinkElement is nftElement: the map and its element for vs.
func nftNetlinkElement(t *nftables.Table, vs *VirtualService) (*nftables.Set, nftables.SetElement) {
	// The key, address . inet_proto . inet_service: each field in network
	// order, padded to 4 bytes.
	key := vs.IP.AsSlice()
	key = append(key, vs.Protocol.proto(), 0, 0, 0)
	key = binary.BigEndian.AppendUint16(key, vs.Port)
	key = append(key, 0, 0)
	elem := nftables.SetElement{Key: key, Comment: vs.comment()}
	set := &nftables.Set{Table: t, IsMap: true}
	if len(vs.Destinations) == 0 {
		set.Name = nftNoEndpointsMap(vs.IP.Is4())
		elem.VerdictData = &expr.Verdict{Kind: expr.VerdictGoto, Chain: nftRejectChain}
	} else {
		set.Name = nftServicesMap(vs.IP.Is4())
		elem.VerdictData = &expr.Verdict{Kind: expr.VerdictGoto, Chain: nftServiceChain(vs.Key)}
	}
	return set, elem
}

// number is the IP protocol number; false: not a protocol of ours.
func (p Protocol) number() (byte, bool) {
	switch p {
	case TCP:
		return unix.IPPROTO_TCP, true
	case UDP:
		return unix.IPPROTO_UDP, true
	case SCTP:
		return unix.IPPROTO_SCTP, true
	}
	return 0, false
}

// proto is the number of a protocol nftNetlinkCan accepted.
func (p Protocol) proto() byte {
	n, ok := p.number()
	if !ok {
		panic("dataplane: unknown protocol " + strconv.Quote(string(p)))
	}
	return n
}
