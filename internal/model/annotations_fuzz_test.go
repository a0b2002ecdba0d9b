package model

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/heraldlb/herald/api/v1alpha1"
)

// serviceAnnotationKeys are every key ReadServiceAnnotations reads, in order
// of precedence per setting.
var serviceAnnotationKeys = func() (out [][]string) {
	for _, k := range []string{v1alpha1.AnnotationLoadBalancerIPs, v1alpha1.AnnotationAddressPool, v1alpha1.AnnotationAllowSharedIP} {
		name := strings.TrimPrefix(k, heraldAnnotationPrefix)
		out = append(out, []string{k, v1alpha1.MetalLBAnnotationPrefix + name, v1alpha1.MetalLBLegacyAnnotationPrefix + name})
	}
	return append(out, []string{v1alpha1.MetalLBAnnotationPrefix + v1alpha1.MetalLBAnnotationIPAllocatedFromPool,
		v1alpha1.MetalLBLegacyAnnotationPrefix + v1alpha1.MetalLBAnnotationIPAllocatedFromPool})
}()

// Whatever a Service's annotations hold, reading them never panics; a
// refused address list is reported naming the annotation and the value at
// fault, with no addresses; an accepted one holds exactly the addresses
// written; each setting comes from the key of highest precedence present,
// and every other key present with another value is reported.
func FuzzServiceAnnotations(f *testing.F) {
	f.Add(uint16(0b1), "198.51.100.7", "lan", "web")
	f.Add(uint16(0b111_111_111_11), "198.51.100.7, 2001:db8::7", "lan", "")
	f.Add(uint16(0b010_001_100_01), "", "", "web")
	f.Add(uint16(0b100), "fe80::1%eth0", "dmz", "api")
	f.Add(uint16(0b110), "198.51.100.7,,", "a\x00b", "x")
	f.Add(uint16(0b011), "::ffff:198.51.100.7 ,banana", "lan", "web")
	f.Fuzz(func(t *testing.T, present uint16, ips, pool, share string) {
		// present picks which keys are set; later keys of a setting get the
		// value with a suffix now and then, so that they conflict.
		ann := map[string]string{}
		bit := 0
		for i, keys := range serviceAnnotationKeys {
			v := [...]string{ips, pool, share, pool}[i]
			for j, k := range keys {
				if present&(1<<bit) != 0 {
					ann[k] = v
					if j > 0 && present&(1<<(bit+4)) != 0 {
						ann[k] = v + "-other"
					}
				}
				bit++
			}
		}
		for k := range ann {
			if !ReadsServiceAnnotation(k) {
				t.Fatalf("ReadsServiceAnnotation(%q) = false for a key ReadServiceAnnotations reads", k)
			}
		}
		got, err := ReadServiceAnnotations(ann)
		first := func(keys []string) (string, string) {
			for _, k := range keys {
				if v, ok := ann[k]; ok {
					return k, v
				}
			}
			return "", ""
		}
		ipsKey, ipsValue := first(serviceAnnotationKeys[0])
		if got.LoadBalancerIPsKey != ipsKey {
			t.Fatalf("loadBalancerIPs read from %q, want %q", got.LoadBalancerIPsKey, ipsKey)
		}
		if _, v := first(serviceAnnotationKeys[1]); got.AddressPool != v {
			t.Fatalf("address pool %q, want %q", got.AddressPool, v)
		}
		if _, v := first(serviceAnnotationKeys[2]); got.AllowSharedIP != v {
			t.Fatalf("sharing key %q, want %q", got.AllowSharedIP, v)
		}
		if _, v := first(serviceAnnotationKeys[3]); got.MetalLBPool != v {
			t.Fatalf("MetalLB's pool %q, want %q", got.MetalLBPool, v)
		}
		conflicts := 0
		for _, keys := range serviceAnnotationKeys[:3] {
			k, v := first(keys)
			for _, other := range keys {
				if ov, ok := ann[other]; ok && other != k && ov != v {
					conflicts++
				}
			}
		}
		if len(got.Conflicts) != conflicts {
			t.Fatalf("conflicts %v, want %d of them in %v", got.Conflicts, conflicts, ann)
		}
		for _, c := range got.Conflicts {
			if ann[c.Key] != c.Value || ann[c.Ignored] != c.IgnoredValue || !strings.Contains(c.String(), c.Ignored) {
				t.Fatalf("conflict %v does not say what %v holds", c, ann)
			}
		}
		fields := strings.Split(ipsValue, ",")
		if err != nil {
			if got.LoadBalancerIPs != nil {
				t.Fatalf("error %v with addresses %v", err, got.LoadBalancerIPs)
			}
			if !strings.Contains(err.Error(), "annotation "+ipsKey+": ") {
				t.Fatalf("error %q does not name the annotation %s", err, ipsKey)
			}
			named := false
			for _, f := range fields {
				named = named || strings.Contains(err.Error(), fmt.Sprintf("%q", strings.TrimSpace(f)))
			}
			if !named {
				t.Fatalf("error %q names no value of %q", err, ipsValue)
			}
			return
		}
		if ipsKey == "" {
			if got.LoadBalancerIPs != nil {
				t.Fatalf("addresses %v with no annotation", got.LoadBalancerIPs)
			}
			return
		}
		if len(got.LoadBalancerIPs) != len(fields) {
			t.Fatalf("%q read as %v", ipsValue, got.LoadBalancerIPs)
		}
		for i, f := range fields {
			want, perr := netip.ParseAddr(strings.TrimSpace(f))
			if perr != nil || want.Zone() != "" || got.LoadBalancerIPs[i] != want {
				t.Fatalf("%q read as %v: field %d %q", ipsValue, got.LoadBalancerIPs, i, f)
			}
		}
	})
}
