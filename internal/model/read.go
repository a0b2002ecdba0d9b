package model

import (
	"context"

	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/heraldlb/herald/api/v1alpha1"
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
