// Package lease is the speaker's per-node Lease in Herald's namespace: the
// Kubernetes view of which speakers are alive, and how a speaker tells the
// others what they cannot learn from the API (its subnets per interface, its
// interface names and where its gossip listens).
//
// The Lease is named herald-speaker-<node>. Its annotations are a small typed
// codec: Annotations writes them, Decode reads them back and refuses anything
// malformed with an error naming the annotation, so a bad value is loud rather
// than quietly read as "no subnets".
package lease

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
)

// Prefix of every speaker Lease's name; the rest is the node name.
const Prefix = "herald-speaker-"

// The annotations of a speaker Lease.
const (
	// AnnotationSubnets: interface=prefix pairs, comma-separated, e.g.
	// "eth0=198.51.100.11/25,eth0=2001:db8:1::11/64".
	AnnotationSubnets = "herald.dev/subnets"
	// AnnotationInterfaces: the node's interface names, comma-separated.
	AnnotationInterfaces = "herald.dev/interfaces"
	// AnnotationGossip: the address:port the speaker's gossip listens on;
	// absent when it runs without gossip.
	AnnotationGossip = "herald.dev/memberlist"
	// AnnotationDataplane: the speaker's --dataplane (nftables, iptables,
	// ipvs, or off). Absent on speakers older than the dataplane, which
	// count as off. The controller writes ipMode Proxy only while every
	// live speaker forwards, and the planner gives a node the addresses of
	// a Service with ipMode Proxy only if it forwards.
	AnnotationDataplane = "herald.dev/dataplane"
	// DataplaneOff is the AnnotationDataplane value of a speaker whose node
	// leaves forwarding to kube-proxy.
	DataplaneOff = "off"
)

// Info is one speaker's Lease, decoded.
type Info struct {
	Node       string
	Subnets    map[netip.Prefix][]string // interfaces per subnet, each sorted
	Interfaces []string                  // sorted
	Gossip     netip.AddrPort            // invalid: the speaker runs without gossip
	Dataplane  string                    // AnnotationDataplane; "" when absent
	RenewTime  time.Time
	Duration   time.Duration
}

// Name is the Lease name of node's speaker.
func Name(node string) string { return Prefix + node }

// Expiry is when the Lease stops being fresh unless renewed.
func (i Info) Expiry() time.Time { return i.RenewTime.Add(i.Duration) }

// Fresh reports whether the Lease is fresh at now.
func (i Info) Fresh(now time.Time) bool { return now.Before(i.Expiry()) }

// Forwards reports whether the speaker's dataplane forwards the traffic its
// node receives (else kube-proxy does, and only for ipMode VIP).
func (i Info) Forwards() bool { return i.Dataplane != "" && i.Dataplane != DataplaneOff }

// SameAnnouncement reports whether two Infos of one speaker say the same
// except when they were renewed: a renewal alone changes no decision.
func (i Info) SameAnnouncement(o Info) bool {
	return i.Node == o.Node && i.Gossip == o.Gossip && i.Duration == o.Duration && i.Dataplane == o.Dataplane &&
		slices.Equal(i.Interfaces, o.Interfaces) &&
		maps.EqualFunc(i.Subnets, o.Subnets, slices.Equal[[]string])
}

// Annotations encodes what a speaker publishes; gossip may be invalid,
// dataplane empty (not said).
func Annotations(subnets map[netip.Prefix][]string, interfaces []string, gossip netip.AddrPort, dataplane string) map[string]string {
	var parts []string
	for p, ifs := range subnets {
		for _, i := range ifs {
			parts = append(parts, i+"="+p.String())
		}
	}
	slices.Sort(parts)
	ifs := slices.Sorted(slices.Values(interfaces))
	ann := map[string]string{
		AnnotationSubnets:    strings.Join(parts, ","),
		AnnotationInterfaces: strings.Join(ifs, ","),
	}
	if gossip.IsValid() {
		ann[AnnotationGossip] = gossip.String()
	}
	if dataplane != "" {
		ann[AnnotationDataplane] = dataplane
	}
	return ann
}

// IsSpeakerLease reports whether l is a speaker's Lease by its name.
func IsSpeakerLease(name string) bool {
	node, ok := strings.CutPrefix(name, Prefix)
	return ok && node != ""
}

// Decode reads a speaker's Lease. A Lease that is not a speaker's, lacks its
// renew time or duration, or carries a malformed annotation is refused with
// an error that names it; the Info returned with such an error still holds
// the node and its renewal, so a caller can keep counting the speaker alive.
func Decode(l *coordinationv1.Lease) (Info, error) {
	node, ok := strings.CutPrefix(l.Name, Prefix)
	if !ok || node == "" {
		return Info{}, fmt.Errorf("Lease %s/%s is not a speaker Lease (want %s<node>)", l.Namespace, l.Name, Prefix)
	}
	info := Info{Node: node}
	if l.Spec.RenewTime == nil || l.Spec.LeaseDurationSeconds == nil {
		return info, fmt.Errorf("Lease %s/%s: spec.renewTime and spec.leaseDurationSeconds are required", l.Namespace, l.Name)
	}
	info.RenewTime = l.Spec.RenewTime.Time
	info.Duration = time.Duration(*l.Spec.LeaseDurationSeconds) * time.Second
	subnets, err := decodeSubnets(l.Annotations[AnnotationSubnets])
	if err != nil {
		return info, fmt.Errorf("Lease %s/%s annotation %s: %w", l.Namespace, l.Name, AnnotationSubnets, err)
	}
	var ifs []string
	if s := l.Annotations[AnnotationInterfaces]; s != "" {
		ifs = strings.Split(s, ",")
		for _, i := range ifs {
			if !validInterfaceName(i) {
				return info, fmt.Errorf("Lease %s/%s annotation %s: %q is not an interface name", l.Namespace, l.Name, AnnotationInterfaces, i)
			}
		}
		slices.Sort(ifs)
	}
	var gossip netip.AddrPort
	if s, ok := l.Annotations[AnnotationGossip]; ok {
		if gossip, err = netip.ParseAddrPort(s); err != nil {
			return info, fmt.Errorf("Lease %s/%s annotation %s: %w", l.Namespace, l.Name, AnnotationGossip, err)
		}
	}
	dp := l.Annotations[AnnotationDataplane]
	if dp != "" && strings.Trim(dp, "abcdefghijklmnopqrstuvwxyz") != "" {
		return info, fmt.Errorf("Lease %s/%s annotation %s: %q is not a dataplane name", l.Namespace, l.Name, AnnotationDataplane, dp)
	}
	info.Subnets, info.Interfaces, info.Gossip, info.Dataplane = subnets, ifs, gossip, dp
	return info, nil
}

func decodeSubnets(s string) (map[netip.Prefix][]string, error) {
	out := map[netip.Prefix][]string{}
	if s == "" {
		return out, nil
	}
	for _, part := range strings.Split(s, ",") {
		ifname, pfx, ok := strings.Cut(part, "=")
		if !ok || !validInterfaceName(ifname) {
			return nil, fmt.Errorf("%q is not interface=prefix", part)
		}
		p, err := netip.ParsePrefix(pfx)
		if err != nil {
			return nil, fmt.Errorf("%q: %w", part, err)
		}
		if !slices.Contains(out[p], ifname) {
			out[p] = append(out[p], ifname)
			slices.Sort(out[p])
		}
	}
	return out, nil
}

// validInterfaceName follows the kernel's rule (net/core/dev.c
// dev_valid_name): 1 to 15 bytes, not "." or "..", no '/', ':' or space.
func validInterfaceName(s string) bool {
	if s == "" || len(s) > 15 || s == "." || s == ".." {
		return false
	}
	return !strings.ContainsAny(s, "/: \t\n=,")
}
