package migrate

import (
	"bytes"
	"strings"
	"testing"

	"github.com/heraldlb/herald/internal/iprange"
)

// No configuration, however broken, crashes the ConfigMap parser or the
// translation behind it, and what the translation writes is something
// Herald can read: every pool address parses, every object has a name, and
// the YAML is written.
func FuzzParseConfigMap(f *testing.F) {
	for _, seed := range []string{
		"address-pools:\n- name: default\n  protocol: layer2\n  addresses:\n  - 192.168.1.240-192.168.1.250\n",
		"address-pools:\n- name: p\n  protocol: bgp\n  addresses: [203.0.113.7/24, '2001:db8::/120', 192.0.2.1 - 192.0.2.9]\n  avoid-buggy-ips: true\n  auto-assign: false\n  bgp-advertisements:\n  - aggregation-length: 24\n    aggregation-length-v6: 120\n    localpref: 100\n    communities: [a, '65535:65282', 'large:1:2:3']\n",
		"peers:\n- my-asn: 64500\n  peer-asn: 64501\n  peer-address: 198.51.100.1\n  hold-time: 90s\n  keepalive-time: 30s\n  password: x\n  node-selectors:\n  - match-labels: {a: b}\n    match-expressions:\n    - {key: k, operator: In, values: [v]}\nbgp-communities:\n  a: 65535:65281\n",
		"bfd-profiles:\n- name: fast\n  receive-interval: 10\n  echo-mode: true\n  minimum-ttl: 0\n",
		"peers:\n- peer-address: '::1%eth0'\n  my-asn: 1\n  peer-asn: 1\n  hold-time: 1ns\n",
		"address-pools:\n- name: ''\n  addresses: ['', '1.2.3.4-', '-', '::/0', '0.0.0.0/0', '255.255.255.255/33']\n",
		"address-pools: 7\n",
		"{}",
		"- [",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, config string) {
		_, _, _ = ParseConfigMap(config)
		in := &Input{}
		in.addLegacy("fuzz", config)
		res := Translate(in, Options{})
		for _, p := range res.Pools {
			for _, a := range p.Spec.Addresses {
				if _, err := iprange.Parse(a); err != nil {
					t.Fatalf("pool %q: written address %q does not parse: %v", p.Name, a, err)
				}
				if strings.Contains(a, "/") && strings.Contains(a, "-") {
					t.Fatalf("pool %q: written address %q mixes CIDR and range", p.Name, a)
				}
			}
		}
		for _, o := range res.objects() {
			if n := o.(interface{ GetName() string }).GetName(); n == "" {
				t.Fatalf("an object without a name: %#v", o)
			}
		}
		var out bytes.Buffer
		if err := res.WriteYAML(&out); err != nil {
			t.Fatalf("writing the YAML: %v", err)
		}
		if err := res.WriteReport(&out); err != nil {
			t.Fatal(err)
		}
	})
}

// MetalLB's YAML decoder matches keys exactly: "Addresses" is not
// "addresses". heraldctl reports such a key and reads the configuration as
// MetalLB does, without it.
func TestKeysAreMatchedExactlyAsMetalLBDoes(t *testing.T) {
	in := &Input{}
	in.addLegacy("test", "address-pools:\n- name: p\n  protocol: layer2\n  Addresses: [192.0.2.0/28]\n  addresses: [198.51.100.0/28]\n")
	res := Translate(in, Options{})
	if len(res.Pools) != 1 || len(res.Pools[0].Spec.Addresses) != 1 || res.Pools[0].Spec.Addresses[0] != "198.51.100.0/28" {
		t.Errorf("pools: %+v, want p with 198.51.100.0/28 only", res.Pools)
	}
	found := false
	for _, f := range res.Findings {
		found = found || (f.Severity == Lost && strings.Contains(f.Field, "address-pools[0].Addresses"))
	}
	if !found {
		t.Errorf("Addresses is not reported: %v", res.Findings)
	}
}
