// Package dataplane forwards traffic for the LoadBalancer addresses this node
// receives to the Services' backends: the NodePorts of the healthy nodes and
// this node's own ready endpoints.
//
// It is split the way the rest of the speaker is. Generate is pure: the
// desired state of the Services this node serves (from the plan) in, a
// backend-neutral RuleSet out. Each backend (nftables, iptables, ipvs)
// renders a RuleSet into its own rules, also purely, and a thin shell
// programs the kernel: a full sync at start (adopting what a previous run
// left) and partial syncs of the virtual services that changed afterwards.
// A backend touches only what it created.
package dataplane

import (
	"cmp"
	"context"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"k8s.io/apimachinery/pkg/types"
)

// Protocol is a Service port's protocol.
type Protocol string

// The protocols a Service port can have.
const (
	TCP  Protocol = "TCP"
	UDP  Protocol = "UDP"
	SCTP Protocol = "SCTP"
)

// Scheduler picks a backend for a new connection (the
// herald.dev/ipvs-scheduler annotation).
type Scheduler string

// The schedulers. IPVS has them all; netfilter has Random (its default),
// RoundRobin and SourceHash.
const (
	Random           Scheduler = "random"
	RoundRobin       Scheduler = "rr"
	WeightedRR       Scheduler = "wrr"
	LeastConn        Scheduler = "lc"
	DestinationHash  Scheduler = "dh"
	SourceHash       Scheduler = "sh"
	ShortestDelay    Scheduler = "sed"
	NeverQueue       Scheduler = "nq"
	DefaultScheduler           = Random
)

// Key names one virtual service: what a packet is matched on.
type Key struct {
	IP       netip.Addr
	Protocol Protocol
	Port     uint16
}

func (k Key) String() string {
	return fmt.Sprintf("%s/%s", netip.AddrPortFrom(k.IP, k.Port), k.Protocol)
}

// Compare orders keys by address, port, then protocol.
func (k Key) Compare(o Key) int {
	return cmp.Or(k.IP.Compare(o.IP), cmp.Compare(k.Port, o.Port), cmp.Compare(k.Protocol, o.Protocol))
}

// Destination is where a virtual service sends a connection.
type Destination struct {
	Addr netip.Addr
	Port uint16
}

// Compare orders destinations by address then port.
func (d Destination) Compare(o Destination) int {
	return cmp.Or(d.Addr.Compare(o.Addr), cmp.Compare(d.Port, o.Port))
}

func (d Destination) String() string { return netip.AddrPortFrom(d.Addr, d.Port).String() }

// VirtualService is one LB address, protocol and port with where its traffic
// goes.
type VirtualService struct {
	Key
	// Service and PortName say where it comes from, for comments and events.
	Service  types.NamespacedName
	PortName string
	// Destinations, sorted; none: the traffic is rejected (the Service has
	// no endpoint anywhere).
	Destinations []Destination
	// Masquerade: the source of every connection is rewritten to this
	// node's address, so the reply comes back through it (Cluster, or a
	// Local Service without an endpoint here). Not set when the
	// destinations are this node's endpoints only, which reply through it
	// anyway and so see the client's address.
	Masquerade bool
	// Affinity: ClientIP session affinity with this timeout; 0: none.
	Affinity  time.Duration
	Scheduler Scheduler
}

// Equal reports whether v and o program the same thing.
func (v *VirtualService) Equal(o *VirtualService) bool {
	return v.Key == o.Key && v.Service == o.Service && v.PortName == o.PortName &&
		v.Masquerade == o.Masquerade && v.Affinity == o.Affinity && v.Scheduler == o.Scheduler && slices.Equal(v.Destinations, o.Destinations)
}

// RuleSet is everything the dataplane programs: virtual services sorted by Key,
// no two with the same Key.
// Generate makes one; a backend renders it.
type RuleSet struct {
	Services []VirtualService
}

// Stats is what one sync did, for metrics and logs.
type Stats struct {
	// Full: the whole ruleset was rewritten.
	Full bool
	// Services is the number of virtual services programmed after the sync;
	// Rules the number of kernel objects (rules, set or map elements, IPVS
	// services and destinations) they take.
	Services, Rules int
}

// A Backend programs a RuleSet into the kernel.
type Backend interface {
	// Name is the backend's name: nftables, iptables or ipvs.
	Name() string
	// Supports reports whether the backend implements s; Generate falls back
	// to DefaultScheduler (with a warning) for the others.
	Supports(s Scheduler) bool
	// Sync brings the kernel to rs. The first call, and the first after an
	// error, replaces everything the backend owns in one transaction where
	// the kernel allows (adopting what a previous run left, with no gap);
	// later calls change only the virtual services that differ from the
	// last successful Sync.
	Sync(ctx context.Context, rs RuleSet) (Stats, error)
	// Cleanup removes exactly what the backend created, and nothing else.
	Cleanup(ctx context.Context) error
}
