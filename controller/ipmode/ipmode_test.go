package ipmode

import (
	"strings"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/heraldlb/herald/speaker/lease"
)

var now = time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)

func sp(node, dataplane string, expiresIn time.Duration) Speaker {
	return Speaker{Node: node, Dataplane: dataplane, Expiry: now.Add(expiresIn)}
}

func TestDecide(t *testing.T) {
	for _, tc := range []struct {
		name     string
		speakers []Speaker
		mode     corev1.LoadBalancerIPMode
		reason   string // a part of the reason
		recheck  time.Duration
	}{
		{"no leases", nil, "VIP", "no speaker's Lease is fresh", -1},
		{"only expired leases", []Speaker{sp("node-1", "nftables", -time.Second)}, "VIP", "no speaker's Lease is fresh", -1},
		{"all on", []Speaker{sp("node-1", "nftables", 10*time.Second), sp("node-2", "nftables", 5*time.Second)}, "Proxy", "(2) runs a dataplane: nftables", 5 * time.Second},
		{"one off", []Speaker{sp("node-1", "nftables", 10*time.Second), sp("node-2", "off", 12*time.Second)}, "VIP", "node-2's speaker runs without a dataplane", 10 * time.Second},
		{"several off", []Speaker{sp("node-3", "off", 10*time.Second), sp("node-2", "off", 12*time.Second), sp("node-1", "ipvs", 12*time.Second)}, "VIP", "the speakers of node-2, node-3 run without a dataplane", 10 * time.Second},
		{"one missing annotation", []Speaker{sp("node-1", "nftables", 10*time.Second), sp("node-2", "", 10*time.Second)}, "VIP", "node-2's speaker runs a version that does not publish herald.dev/dataplane", 10 * time.Second},
		{"an expired off lease is ignored", []Speaker{sp("node-1", "nftables", 10*time.Second), sp("node-2", "off", -time.Millisecond)}, "Proxy", "(1) runs a dataplane: nftables", 10 * time.Second},
		{"a lease expiring right now is not fresh", []Speaker{sp("node-1", "nftables", 10*time.Second), sp("node-2", "off", 0)}, "Proxy", "nftables", 10 * time.Second},
		{"mixed backends still Proxy", []Speaker{sp("node-1", "nftables", 10*time.Second), sp("node-2", "ipvs", 9*time.Second), sp("node-3", "iptables", 11*time.Second)}, "Proxy", "(3) runs a dataplane: iptables, ipvs, nftables", 9 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := Decide(tc.speakers, now)
			if d.Mode != tc.mode {
				t.Errorf("mode %s, want %s (reason: %s)", d.Mode, tc.mode, d.Reason)
			}
			if !strings.Contains(d.Reason, tc.reason) {
				t.Errorf("reason %q, want it to contain %q", d.Reason, tc.reason)
			}
			if tc.recheck < 0 {
				if !d.Recheck.IsZero() {
					t.Errorf("recheck at %v, want none", d.Recheck)
				}
			} else if !d.Recheck.Equal(now.Add(tc.recheck)) {
				t.Errorf("recheck at %v, want %v (the earliest fresh Lease's expiry)", d.Recheck, now.Add(tc.recheck))
			}
		})
	}
}

func TestFromLease(t *testing.T) {
	renew := metav1.NewMicroTime(now)
	l := &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Name: "herald-speaker-node-1", Annotations: map[string]string{lease.AnnotationDataplane: "ipvs"}},
		Spec:       coordinationv1.LeaseSpec{RenewTime: &renew, LeaseDurationSeconds: ptr.To[int32](15)},
	}
	s, ok := FromLease(l)
	if !ok || s != (Speaker{Node: "node-1", Dataplane: "ipvs", Expiry: now.Add(15 * time.Second)}) {
		t.Errorf("FromLease = %+v, %v", s, ok)
	}
	if _, ok := FromLease(&coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: "herald-controller"}}); ok {
		t.Error("the controller's leader-election Lease read as a speaker's")
	}
	l.Spec.RenewTime = nil
	if s, ok := FromLease(l); !ok || !s.Expiry.IsZero() {
		t.Errorf("a Lease never renewed: %+v, %v; want a zero expiry (never fresh)", s, ok)
	}
}

func TestParseSetting(t *testing.T) {
	for in, want := range map[string]Setting{"": Auto, "auto": Auto, "VIP": VIP, "Proxy": Proxy} {
		if got, err := ParseSetting(in); err != nil || got != want {
			t.Errorf("ParseSetting(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"vip", "proxy", "Auto", "off"} {
		if _, err := ParseSetting(in); err == nil {
			t.Errorf("ParseSetting(%q) accepted", in)
		}
	}
}
