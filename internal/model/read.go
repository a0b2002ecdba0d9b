package model

import (
	"context"
	"fmt"
	"net/netip"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/heraldlb/herald/api/v1alpha1"
	"github.com/heraldlb/herald/internal/iprange"
)

// Read lists every Herald object into an Input, from a cache or the API: the
// one way the controller, the speaker and the webhook gather what Build judges.
func Read(ctx context.Context, r client.Reader) (Input, error) {
	var (
		in    Input
		pools v1alpha1.IPAddressPoolList
		l2    v1alpha1.L2AdvertisementList
		peers v1alpha1.BGPPeerList
		bgp   v1alpha1.BGPAdvertisementList
		bfd   v1alpha1.BFDProfileList
	)
	for _, l := range []client.ObjectList{&pools, &l2, &peers, &bgp, &bfd} {
		if err := r.List(ctx, l); err != nil {
			return in, err
		}
	}
	in.Pools, in.L2Advertisements, in.BGPPeers, in.BGPAdvertisements, in.BFDProfiles = pools.Items, l2.Items, peers.Items, bgp.Items, bfd.Items
	return in, nil
}

// ReadReserved lists the addresses the cluster already uses, which no pool
// may hold: every ServiceCIDR (networking.k8s.io/v1, where ClusterIPs come
// from) and every node's address. A cluster that does not serve
// ServiceCIDRs (before Kubernetes 1.33) contributes only node addresses.
func ReadReserved(ctx context.Context, r client.Reader) ([]Reserved, error) {
	var out []Reserved
	var cidrs networkingv1.ServiceCIDRList
	switch err := r.List(ctx, &cidrs); {
	case meta.IsNoMatchError(err):
	case err != nil:
		return nil, fmt.Errorf("listing ServiceCIDRs: %w", err)
	}
	for _, sc := range cidrs.Items {
		for _, s := range sc.Spec.CIDRs {
			if p, err := netip.ParsePrefix(s); err == nil {
				out = append(out, Reserved{Range: iprange.FromPrefix(p), What: "ServiceCIDR " + sc.Name})
			}
		}
	}
	var nodes corev1.NodeList
	if err := r.List(ctx, &nodes); err != nil {
		return nil, fmt.Errorf("listing Nodes: %w", err)
	}
	for _, n := range nodes.Items {
		for _, a := range n.Status.Addresses {
			// A zone names the node's own link, not another address; an
			// IPv4-mapped address is the IPv4 address a pool holds.
			if ip, err := netip.ParseAddr(a.Address); err == nil {
				ip = ip.Unmap().WithZone("")
				out = append(out, Reserved{Range: iprange.Range{First: ip, Last: ip}, What: fmt.Sprintf("node %s's %s", n.Name, a.Type)})
			}
		}
	}
	return out, nil
}
