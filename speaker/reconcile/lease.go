package reconcile

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// A speaker keeps a Lease named leasePrefix+node in Herald's namespace, the
// way a kubelet keeps a node Lease: the API's view of which speakers live
// (the slow but always available fallback to gossip). Its annotations publish
// what other speakers need to elect owners without asking: the node's
// subnets per interface and where its gossip listens.
const (
	leasePrefix         = "herald-speaker-"
	annotationSubnets   = "herald.dev/subnets"    // "eth0=198.51.100.11/25,eth0=2001:db8:1::11/64"
	annotationGossip    = "herald.dev/memberlist" // "198.51.100.11:7947"
	annotationInterface = "herald.dev/interfaces" // "eth0,eth1"
)

// leaseInfo is what a speaker's Lease says.
type leaseInfo struct {
	node       string
	fresh      bool
	subnets    map[netip.Prefix][]string
	interfaces []string
	gossip     string
}

func encodeSubnets(subnets map[netip.Prefix][]string) string {
	var parts []string
	for p, ifs := range subnets {
		for _, i := range ifs {
			parts = append(parts, i+"="+p.String())
		}
	}
	slices.Sort(parts)
	return strings.Join(parts, ",")
}

func decodeSubnets(s string) map[netip.Prefix][]string {
	out := map[netip.Prefix][]string{}
	for _, part := range strings.Split(s, ",") {
		ifname, pfx, ok := strings.Cut(part, "=")
		if !ok {
			continue
		}
		if p, err := netip.ParsePrefix(pfx); err == nil {
			out[p] = append(out[p], ifname)
		}
	}
	return out
}

// readLease turns a Lease into leaseInfo; fresh compares its renewal to now.
func readLease(l *coordinationv1.Lease, now time.Time) (leaseInfo, bool) {
	node, ok := strings.CutPrefix(l.Name, leasePrefix)
	if !ok {
		return leaseInfo{}, false
	}
	info := leaseInfo{
		node:    node,
		subnets: decodeSubnets(l.Annotations[annotationSubnets]),
		gossip:  l.Annotations[annotationGossip],
	}
	if s := l.Annotations[annotationInterface]; s != "" {
		info.interfaces = strings.Split(s, ",")
	}
	if l.Spec.RenewTime != nil && l.Spec.LeaseDurationSeconds != nil {
		info.fresh = now.Before(l.Spec.RenewTime.Add(time.Duration(*l.Spec.LeaseDurationSeconds) * time.Second))
	}
	return info, true
}

// renewLease creates or renews this speaker's Lease with current annotations.
func (s *Speaker) renewLease(ctx context.Context, subnets map[netip.Prefix][]string, interfaces []string) error {
	now := metav1.NewMicroTime(time.Now())
	dur := int32(s.opts.LeaseDuration / time.Second)
	ann := map[string]string{
		annotationSubnets:   encodeSubnets(subnets),
		annotationInterface: strings.Join(interfaces, ","),
	}
	if s.opts.GossipAddr.IsValid() {
		ann[annotationGossip] = netip.AddrPortFrom(s.opts.GossipAddr, uint16(s.opts.GossipPort)).String()
	}
	key := types.NamespacedName{Namespace: s.opts.Namespace, Name: leasePrefix + s.opts.NodeName}
	var l coordinationv1.Lease
	err := s.client.Get(ctx, key, &l)
	if apierrors.IsNotFound(err) {
		l = coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name, Annotations: ann},
			Spec:       coordinationv1.LeaseSpec{HolderIdentity: &s.opts.NodeName, LeaseDurationSeconds: &dur, RenewTime: &now},
		}
		return s.client.Create(ctx, &l)
	}
	if err != nil {
		return err
	}
	l.Annotations = ann
	l.Spec.RenewTime, l.Spec.LeaseDurationSeconds, l.Spec.HolderIdentity = &now, &dur, &s.opts.NodeName
	return s.client.Update(ctx, &l)
}

// dropLease deletes this speaker's Lease on shutdown, so the API view sees
// it gone at once rather than after the lease duration.
func (s *Speaker) dropLease(ctx context.Context) error {
	l := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Namespace: s.opts.Namespace, Name: leasePrefix + s.opts.NodeName}}
	return client.IgnoreNotFound(s.client.Delete(ctx, l))
}

func (i leaseInfo) String() string {
	return fmt.Sprintf("%s fresh=%v gossip=%s", i.node, i.fresh, i.gossip)
}
