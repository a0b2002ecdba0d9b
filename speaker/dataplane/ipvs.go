package dataplane

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/cloudflare/ipvs"
)

// IPVSOptions configures the ipvs backend; the zero value is the default.
type IPVSOptions struct {
	// Link is the dummy link holding the VIPs; default herald-ipvs0. Every
	// IPVS service for an address on it is the backend's, and no other.
	Link string
	// Table is the nftables table (one per family) of the masquerade rule;
	// default herald-ipvs.
	Table string
}

// IPVS is the ipvs backend: one IPVS virtual service per VirtualService,
// its destinations in NAT (masquerade) forwarding mode, ClientIP affinity
// as IPVS persistence, the VIPs on a dummy link and an nftables rule for the
// source NAT of the destinations marked Masquerade.
//
// IPVS has no transactions: a full sync diffs against what the kernel holds
// and changes only that, so a restart leaves no gap in service. Operations
// run in the order of ipvsOpKind (see there why).
//
// One caller at a time: Sync and Cleanup are not safe to run concurrently.
type IPVS struct {
	client ipvs.Client
	link   vipLink
	masq   masquerader
	// sysctls writes the settings the backend needs; a field so that the
	// shell's tests need no /proc.
	sysctls func() error

	// What the last successful Sync programmed; nil: the next Sync is full.
	last     map[Key]VirtualService
	lastAddr map[netip.Addr]bool
	lastMasq []masqElem
}

// NewIPVS connects to the kernel's IPVS (generic netlink) and returns the
// backend. It changes nothing until the first Sync.
func NewIPVS(opts IPVSOptions) (*IPVS, error) {
	if opts.Link == "" {
		opts.Link = "herald-ipvs0"
	}
	if opts.Table == "" {
		opts.Table = "herald-ipvs"
	}
	c, err := ipvs.New()
	if err != nil {
		return nil, fmt.Errorf("ipvs: connect to the kernel (is the ip_vs module loaded?): %w", err)
	}
	return newIPVS(c, &dummyLink{name: opts.Link}, &nftMasq{table: opts.Table}, setIPVSSysctls), nil
}

func newIPVS(c ipvs.Client, l vipLink, m masquerader, sysctls func() error) *IPVS {
	return &IPVS{client: c, link: l, masq: m, sysctls: sysctls}
}

// Name is "ipvs".
func (b *IPVS) Name() string { return "ipvs" }

// Supports reports whether IPVS has s: all the schedulers; Random, the
// default, runs as rr.
func (b *IPVS) Supports(s Scheduler) bool { return ipvsSupports(s) }

// Sync brings the kernel to rs; see Backend.
func (b *IPVS) Sync(ctx context.Context, rs RuleSet) (Stats, error) {
	st := Stats{Services: len(rs.Services), Full: b.last == nil}
	for _, vs := range rs.Services {
		st.Rules += 1 + len(vs.Destinations)
	}
	var err error
	if st.Full {
		err = b.fullSync(ctx, rs)
	} else {
		err = b.partialSync(ctx, rs)
	}
	if err != nil {
		b.last = nil
		return st, err
	}
	b.last = make(map[Key]VirtualService, len(rs.Services))
	b.lastAddr = map[netip.Addr]bool{}
	for _, vs := range rs.Services {
		// A copy: the caller may reuse the slice's array for its next
		// RuleSet, and this record must stay what the kernel holds.
		vs.Destinations = slices.Clone(vs.Destinations)
		b.last[vs.Key] = vs
		b.lastAddr[vs.IP] = true
	}
	return st, nil
}

// fullSync reads what the backend owns in the kernel (the services of the
// addresses on its link: adopting what a previous run left) and changes it
// into rs.
func (b *IPVS) fullSync(ctx context.Context, rs RuleSet) error {
	if err := b.sysctls(); err != nil {
		return err
	}
	addrs, err := b.link.Ensure()
	if err != nil {
		return err
	}
	cur, err := b.owned(addrs)
	if err != nil {
		return err
	}
	// The masquerade elements go in before IPVS sends anything to a new
	// destination: the source NAT of a connection is decided on its first
	// packet, and one that passed without a match stays unmasqueraded.
	elems := masqElems(rs.Services)
	if err := b.masq.Replace(elems); err != nil {
		return err
	}
	b.lastMasq = elems
	return b.apply(ctx, planIPVS(rs.Services, addrsOf(rs.Services), cur))
}

// owned lists the IPVS services for the addresses on the link, with their
// destinations. Services for any other address are left alone.
func (b *IPVS) owned(addrs []netip.Addr) (ipvsState, error) {
	st := ipvsState{Addrs: addrs}
	ours := make(map[netip.Addr]bool, len(addrs))
	for _, a := range addrs {
		ours[a] = true
	}
	all, err := b.client.Services()
	if err != nil {
		return st, fmt.Errorf("ipvs: list services: %w", err)
	}
	for _, s := range all {
		if s.FWMark != 0 || !ours[s.Address] {
			continue
		}
		ds, err := b.client.Destinations(s.Service)
		if err != nil {
			return st, fmt.Errorf("ipvs: list destinations of %s: %w", serviceName(s.Service), err)
		}
		own := ipvsService{Service: s.Service}
		for _, d := range ds {
			own.Destinations = append(own.Destinations, d.Destination)
		}
		st.Services = append(st.Services, own)
	}
	return st, nil
}

// partialSync changes only the virtual services that differ from the last
// successful Sync, trusting that the kernel still holds what that Sync
// programmed (as kube-proxy's partial syncs do).
func (b *IPVS) partialSync(ctx context.Context, rs RuleSet) error {
	var desired []VirtualService
	var cur ipvsState
	seen := make(map[Key]bool, len(rs.Services))
	for i := range rs.Services {
		vs := &rs.Services[i]
		seen[vs.Key] = true
		old, ok := b.last[vs.Key]
		if ok && old.Equal(vs) {
			continue
		}
		desired = append(desired, *vs)
		if ok {
			cur.Services = append(cur.Services, programmed(&old))
		}
	}
	for k, old := range b.last {
		if !seen[k] {
			cur.Services = append(cur.Services, programmed(&old))
		}
	}
	for a := range b.lastAddr {
		cur.Addrs = append(cur.Addrs, a)
	}
	// New masquerade elements before the destinations they are for (see
	// fullSync), stale ones only after IPVS stopped using them.
	elems := masqElems(rs.Services)
	add, del := diffMasq(b.lastMasq, elems)
	if err := b.masq.Update(add, nil); err != nil {
		return err
	}
	if err := b.apply(ctx, planIPVS(desired, addrsOf(rs.Services), cur)); err != nil {
		return err
	}
	if err := b.masq.Update(nil, del); err != nil {
		return err
	}
	b.lastMasq = elems
	return nil
}

// programmed is what the kernel holds for vs after a successful Sync.
func programmed(vs *VirtualService) ipvsService {
	s := ipvsService{Service: desiredService(vs)}
	for _, d := range vs.Destinations {
		s.Destinations = append(s.Destinations, desiredDest(d))
	}
	return s
}

// apply runs the operations in order, stopping at the first error (the
// next Sync is full and starts again from what the kernel holds).
func (b *IPVS) apply(ctx context.Context, ops []ipvsOp) error {
	for _, op := range ops {
		if err := ctx.Err(); err != nil {
			return err
		}
		var err error
		switch op.Kind {
		case opAddAddr:
			err = b.link.AddAddr(op.Addr)
		case opDelAddr:
			err = b.link.DelAddr(op.Addr)
		case opAddService:
			err = b.client.CreateService(op.Service)
		case opUpdateService:
			err = b.client.UpdateService(op.Service)
		case opDelService:
			err = b.client.RemoveService(op.Service)
		case opAddDest:
			err = b.client.CreateDestination(op.Service, op.Dest)
		case opUpdateDest:
			err = b.client.UpdateDestination(op.Service, op.Dest)
		case opDelDest:
			err = b.client.RemoveDestination(op.Service, op.Dest)
		}
		if err != nil {
			return fmt.Errorf("ipvs: %s: %w", op, err)
		}
	}
	return nil
}

// Cleanup removes the IPVS services of the addresses on the link, the link
// with its addresses, and the masquerade tables. The link goes last: the
// addresses on it are how the backend knows its services, so a Cleanup that
// failed half-way can be run again. The sysctls stay (see setIPVSSysctls).
func (b *IPVS) Cleanup(ctx context.Context) error {
	b.last = nil
	addrs, err := b.link.Addrs()
	if err != nil {
		return err
	}
	cur, err := b.owned(addrs)
	if err != nil {
		return err
	}
	var errs []error
	for _, s := range cur.Services {
		if err := b.client.RemoveService(s.Service); err != nil {
			errs = append(errs, fmt.Errorf("ipvs: remove %s: %w", serviceName(s.Service), err))
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	return errors.Join(b.masq.Cleanup(), b.link.Delete())
}
