package lease_test

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/heraldlb/herald/speaker/lease"
)

func speakerLease(name string, ann map[string]string) *coordinationv1.Lease {
	renew := metav1.NewMicroTime(time.Unix(1000, 0))
	dur := int32(15)
	return &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Namespace: "herald-system", Name: name, Annotations: ann},
		Spec:       coordinationv1.LeaseSpec{RenewTime: &renew, LeaseDurationSeconds: &dur},
	}
}

func TestAnnotationsRoundTrip(t *testing.T) {
	subnets := map[netip.Prefix][]string{
		netip.MustParsePrefix("198.51.100.0/25"): {"eth0", "bond0.7"},
		netip.MustParsePrefix("2001:db8:1::/64"): {"eth0"},
	}
	gossip := netip.MustParseAddrPort("198.51.100.11:7947")
	info, err := lease.Decode(speakerLease("herald-speaker-node-1", lease.Annotations(subnets, []string{"eth1", "eth0"}, gossip, "nftables")))
	if err != nil {
		t.Fatal(err)
	}
	want := lease.Info{
		Node: "node-1",
		Subnets: map[netip.Prefix][]string{
			netip.MustParsePrefix("198.51.100.0/25"): {"bond0.7", "eth0"},
			netip.MustParsePrefix("2001:db8:1::/64"): {"eth0"},
		},
		Interfaces: []string{"eth0", "eth1"},
		Gossip:     gossip,
		Dataplane:  "nftables",
		RenewTime:  time.Unix(1000, 0),
		Duration:   15 * time.Second,
	}
	if !reflect.DeepEqual(info, want) {
		t.Errorf("decoded %+v\nwant    %+v", info, want)
	}
	if !info.Fresh(time.Unix(1014, 0)) || info.Fresh(time.Unix(1015, 0)) {
		t.Errorf("a 15 s Lease renewed at 1000 must be fresh at 1014 and not at 1015")
	}
	// Without gossip: no annotation, an invalid address.
	info, err = lease.Decode(speakerLease("herald-speaker-node-1", lease.Annotations(nil, nil, netip.AddrPort{}, "")))
	if err != nil || info.Gossip.IsValid() || len(info.Subnets) != 0 {
		t.Errorf("a speaker without gossip or subnets decodes as %+v, %v", info, err)
	}
	if !lease.Info.Forwards(want) || info.Forwards() {
		t.Errorf("a speaker saying nftables must forward, one saying nothing (older than the dataplane) must not")
	}
}

func TestDecodeRefusesGarbageNamingTheAnnotation(t *testing.T) {
	for _, tc := range []struct {
		name  string
		lease *coordinationv1.Lease
		want  string
	}{
		{"not a speaker Lease", speakerLease("herald-controller", nil), "not a speaker Lease"},
		{"subnets without =", speakerLease("herald-speaker-a", map[string]string{lease.AnnotationSubnets: "eth0:198.51.100.0/25"}), lease.AnnotationSubnets},
		{"a subnet that is no prefix", speakerLease("herald-speaker-a", map[string]string{lease.AnnotationSubnets: "eth0=198.51.100.300/25"}), lease.AnnotationSubnets},
		{"an interface name too long", speakerLease("herald-speaker-a", map[string]string{lease.AnnotationInterfaces: "eth0,averyverylonginterfacename"}), lease.AnnotationInterfaces},
		{"a gossip address without a port", speakerLease("herald-speaker-a", map[string]string{lease.AnnotationGossip: "198.51.100.11"}), lease.AnnotationGossip},
		{"a dataplane that is no name", speakerLease("herald-speaker-a", map[string]string{lease.AnnotationDataplane: "nft tables"}), lease.AnnotationDataplane},
	} {
		t.Run(tc.name, func(t *testing.T) {
			info, err := lease.Decode(tc.lease)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Decode error %v, want one naming %q", err, tc.want)
			}
			if tc.want != "not a speaker Lease" && (info.Node != "a" || info.RenewTime.IsZero()) {
				t.Errorf("a refused Lease still tells who renewed it and when; got %+v", info)
			}
		})
	}
	l := speakerLease("herald-speaker-a", nil)
	l.Spec.RenewTime = nil
	if _, err := lease.Decode(l); err == nil {
		t.Error("a Lease without renewTime is refused")
	}
}

func TestSameAnnouncementIgnoresOnlyTheRenewal(t *testing.T) {
	a := lease.Info{Node: "a", Interfaces: []string{"eth0"}, RenewTime: time.Unix(1, 0), Duration: time.Second}
	b := a
	b.RenewTime = time.Unix(5, 0)
	if !a.SameAnnouncement(b) {
		t.Error("a renewal alone is the same announcement")
	}
	b.Interfaces = []string{"eth0", "eth1"}
	if a.SameAnnouncement(b) {
		t.Error("a new interface is a different announcement")
	}
}
