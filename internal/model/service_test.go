package model

import (
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

func TestHandlesOnlyLoadBalancersOfTheConfiguredClass(t *testing.T) {
	other, mine := "other.example/lb", "herald.dev/lb"
	for _, tc := range []struct {
		name  string
		typ   corev1.ServiceType
		class *string
		want  map[string]bool // configured class -> handled
	}{
		{"no class", corev1.ServiceTypeLoadBalancer, nil, map[string]bool{"": true, mine: false}},
		{"another implementation's class", corev1.ServiceTypeLoadBalancer, &other, map[string]bool{"": false, mine: false}},
		{"Herald's class", corev1.ServiceTypeLoadBalancer, &mine, map[string]bool{"": false, mine: true}},
		{"not a LoadBalancer", corev1.ServiceTypeNodePort, nil, map[string]bool{"": false, mine: false}},
	} {
		svc := &corev1.Service{Spec: corev1.ServiceSpec{Type: tc.typ, LoadBalancerClass: tc.class}}
		for class, want := range tc.want {
			if got := Handles(svc, class); got != want {
				t.Errorf("%s, configured class %q: Handles = %v, want %v", tc.name, class, got, want)
			}
		}
	}
}

func TestMetalLBAnnotationsAreReadAsHeraldsWithHeraldsWinning(t *testing.T) {
	const (
		hIPs, ioIPs, tfIPs    = "herald.dev/loadBalancerIPs", "metallb.io/loadBalancerIPs", "metallb.universe.tf/loadBalancerIPs"
		hPool, ioPool, tfPool = "herald.dev/address-pool", "metallb.io/address-pool", "metallb.universe.tf/address-pool"
		hShare, tfShare       = "herald.dev/allow-shared-ip", "metallb.universe.tf/allow-shared-ip"
		ioShare               = "metallb.io/allow-shared-ip"
	)
	for _, tc := range []struct {
		name      string
		ann       map[string]string
		ips       string // LoadBalancerIPs joined by ","
		ipsKey    string
		pool      string
		share     string
		metallb   string
		conflicts []string
		err       string
	}{
		{name: "none"},
		{name: "Herald's own", ann: map[string]string{hIPs: "198.51.100.7", hPool: "lan", hShare: "web"},
			ips: "198.51.100.7", ipsKey: hIPs, pool: "lan", share: "web"},
		{name: "MetalLB's legacy prefix", ann: map[string]string{tfIPs: "198.51.100.7, 2001:db8::7", tfPool: "lan", tfShare: "web",
			"metallb.universe.tf/ip-allocated-from-pool": "lan"},
			ips: "198.51.100.7,2001:db8::7", ipsKey: tfIPs, pool: "lan", share: "web", metallb: "lan"},
		{name: "MetalLB's new prefix", ann: map[string]string{ioIPs: "198.51.100.8", ioPool: "dmz", ioShare: "api",
			"metallb.io/ip-allocated-from-pool": "dmz"},
			ips: "198.51.100.8", ipsKey: ioIPs, pool: "dmz", share: "api", metallb: "dmz"},
		{name: "same value under two keys is no conflict", ann: map[string]string{hPool: "lan", tfPool: "lan", ioPool: "lan"}, pool: "lan"},
		{name: "Herald's wins over both of MetalLB's", ann: map[string]string{hPool: "lan", ioPool: "dmz", tfPool: "old"}, pool: "lan",
			conflicts: []string{
				`annotation metallb.io/address-pool="dmz" ignored: herald.dev/address-pool="lan" wins`,
				`annotation metallb.universe.tf/address-pool="old" ignored: herald.dev/address-pool="lan" wins`}},
		{name: "metallb.io wins over metallb.universe.tf", ann: map[string]string{ioIPs: "198.51.100.8", tfIPs: "198.51.100.9"},
			ips: "198.51.100.8", ipsKey: ioIPs,
			conflicts: []string{`annotation metallb.universe.tf/loadBalancerIPs="198.51.100.9" ignored: metallb.io/loadBalancerIPs="198.51.100.8" wins`}},
		{name: "an empty Herald key still wins", ann: map[string]string{hShare: "", tfShare: "web"},
			conflicts: []string{`annotation metallb.universe.tf/allow-shared-ip="web" ignored: herald.dev/allow-shared-ip="" wins`}},
		{name: "conflicts of several settings, in a fixed order", ann: map[string]string{hShare: "a", tfShare: "b", hIPs: "198.51.100.1", tfIPs: "198.51.100.2"},
			ips: "198.51.100.1", ipsKey: hIPs, share: "a",
			conflicts: []string{
				`annotation metallb.universe.tf/loadBalancerIPs="198.51.100.2" ignored: herald.dev/loadBalancerIPs="198.51.100.1" wins`,
				`annotation metallb.universe.tf/allow-shared-ip="b" ignored: herald.dev/allow-shared-ip="a" wins`}},
		{name: "a bad address names the MetalLB key it came from; other settings still read", ann: map[string]string{tfIPs: "198.51.100.1,nope", tfPool: "lan"},
			ipsKey: tfIPs, pool: "lan", err: `annotation metallb.universe.tf/loadBalancerIPs: "nope" is not an IP address`},
		{name: "a bad ignored alias does not matter", ann: map[string]string{hIPs: "198.51.100.1", tfIPs: "garbage"},
			ips: "198.51.100.1", ipsKey: hIPs,
			conflicts: []string{`annotation metallb.universe.tf/loadBalancerIPs="garbage" ignored: herald.dev/loadBalancerIPs="198.51.100.1" wins`}},
		{name: "other MetalLB annotations are not read", ann: map[string]string{"metallb.universe.tf/address-pools": "lan", "metallb.io/ipvs-scheduler": "rr"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ReadServiceAnnotations(tc.ann)
			if (err == nil) != (tc.err == "") || err != nil && err.Error() != tc.err {
				t.Errorf("error %v, want %q", err, tc.err)
			}
			var ips, conflicts []string
			for _, ip := range got.LoadBalancerIPs {
				ips = append(ips, ip.String())
			}
			for _, c := range got.Conflicts {
				conflicts = append(conflicts, c.String())
			}
			if strings.Join(ips, ",") != tc.ips || got.LoadBalancerIPsKey != tc.ipsKey || got.AddressPool != tc.pool || got.AllowSharedIP != tc.share || got.MetalLBPool != tc.metallb {
				t.Errorf("read IPs %v from %q, pool %q, sharing key %q, MetalLB pool %q; want %s from %q, %q, %q, %q",
					ips, got.LoadBalancerIPsKey, got.AddressPool, got.AllowSharedIP, got.MetalLBPool, tc.ips, tc.ipsKey, tc.pool, tc.share, tc.metallb)
			}
			if !slices.Equal(conflicts, tc.conflicts) {
				t.Errorf("conflicts %q, want %q", conflicts, tc.conflicts)
			}
		})
	}
}

func TestCachesKeepExactlyTheServiceAnnotationsHeraldReads(t *testing.T) {
	for key, want := range map[string]bool{
		"herald.dev/loadBalancerIPs":                       true,
		"herald.dev/ipvs-scheduler":                        true,
		"metallb.universe.tf/loadBalancerIPs":              true,
		"metallb.io/loadBalancerIPs":                       true,
		"metallb.universe.tf/address-pool":                 true,
		"metallb.io/allow-shared-ip":                       true,
		"metallb.universe.tf/ip-allocated-from-pool":       true,
		"metallb.io/ip-allocated-from-pool":                true,
		"metallb.universe.tf/address-pools":                false,
		"metallb.io/ipvs-scheduler":                        false,
		"kubectl.kubernetes.io/last-applied-configuration": false,
		"example.com/loadBalancerIPs":                      false,
	} {
		if got := ReadsServiceAnnotation(key); got != want {
			t.Errorf("ReadsServiceAnnotation(%q) = %v, want %v", key, got, want)
		}
	}
}
