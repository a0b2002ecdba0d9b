package dataplane

import (
	"slices"
	"strings"
)

// What the two netfilter backends (nftables, iptables) share: the mark that
// asks for masquerading, and the bookkeeping of a partial sync.

// DefaultMasqueradeMark is the packet mark bit the netfilter backends set on
// a connection's first packet when its destination wants masquerading, and
// clear again in postrouting where they masquerade it.
//
// Why a packet mark and not a ct mark: NAT chains see only the first packet
// of a connection, and that packet crosses prerouting (or output) and then
// postrouting, so a mark on it is all that is needed; nothing needs
// remembering per connection. Why 0x1000: kube-proxy uses 0x4000
// (masquerade) and 0x8000 (drop), Calico the upper 16 bits, Cilium the
// 0x0f00 nibble; 0x1000 is free in all of them. It is an option for clusters
// where it is not.
const DefaultMasqueradeMark uint32 = 0x1000

// change is one virtual service a partial sync rewrites: what the last
// successful sync programmed (Old) and what is wanted (New); either may be
// nil (added, removed).
type change struct {
	Old, New *VirtualService
}

// diff lists the virtual services that differ between applied and rs, in
// key order. Each virtual service of rs costs one map lookup and a
// comparison; a second pass, only when some key of applied was not found,
// finds the removed ones.
func diff(applied map[Key]VirtualService, rs RuleSet) []change {
	var out []change
	found := 0
	for i := range rs.Services {
		vs := &rs.Services[i]
		old, ok := applied[vs.Key]
		switch {
		case !ok:
			out = append(out, change{New: vs})
		case !old.Equal(vs):
			found++
			o := old // only the changed ones escape to the heap
			out = append(out, change{Old: &o, New: vs})
		default:
			found++
		}
	}
	if found < len(applied) {
		want := make(map[Key]bool, len(rs.Services))
		for i := range rs.Services {
			want[rs.Services[i].Key] = true
		}
		for k, old := range applied {
			if !want[k] {
				o := old
				out = append(out, change{Old: &o})
			}
		}
		slices.SortFunc(out, func(a, b change) int { return a.key().Compare(b.key()) })
	}
	return out
}

// apply records changes into applied, as a successful partial sync does.
func apply(applied map[Key]VirtualService, changes []change) {
	for _, c := range changes {
		if c.New == nil {
			delete(applied, c.Old.Key)
			continue
		}
		vs := *c.New
		vs.Destinations = slices.Clone(vs.Destinations)
		applied[vs.Key] = vs
	}
}

func (c change) key() Key {
	if c.New != nil {
		return c.New.Key
	}
	return c.Old.Key
}

func index(rs RuleSet) map[Key]VirtualService {
	m := make(map[Key]VirtualService, len(rs.Services))
	for _, vs := range rs.Services {
		vs.Destinations = slices.Clone(vs.Destinations)
		m[vs.Key] = vs
	}
	return m
}

// comment is what the rules of a virtual service say they are for:
// namespace/name:port.
func (vs *VirtualService) comment() string {
	c := vs.Service.String()
	if vs.PortName != "" {
		c += ":" + vs.PortName
	}
	return c
}

func (p Protocol) lower() string { return strings.ToLower(string(p)) }
