// Package ipmode decides the ipMode the controller writes on ingress entries
// from what the speakers run: Proxy (Herald's dataplane forwards, kube-proxy
// keeps out) only while every live speaker forwards, VIP (kube-proxy
// forwards) otherwise. It reads the speakers' Leases, so the decision
// follows a rollout of the speakers that switches the dataplane on or off,
// whatever the order in which the controller and the speakers restart.
package ipmode

import (
	"fmt"
	"slices"
	"strings"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/heraldlb/herald/speaker/lease"
)

// Setting is the controller's --ip-mode: Auto follows the speakers; VIP and
// Proxy are fixed overrides.
type Setting string

const (
	Auto  Setting = "auto"
	VIP   Setting = Setting(corev1.LoadBalancerIPModeVIP)
	Proxy Setting = Setting(corev1.LoadBalancerIPModeProxy)
)

// ParseSetting reads --ip-mode; empty is Auto.
func ParseSetting(s string) (Setting, error) {
	switch Setting(s) {
	case "", Auto:
		return Auto, nil
	case VIP, Proxy:
		return Setting(s), nil
	}
	return "", fmt.Errorf("%q: want auto, VIP or Proxy", s)
}

// Speaker is what the decision reads of one speaker's Lease.
type Speaker struct {
	Node string
	// Dataplane is the annotation's value; empty when the Lease lacks it.
	Dataplane string
	// Expiry is renewTime + leaseDurationSeconds: the Lease is fresh before.
	Expiry time.Time
}

// FromLease reads a speaker's Lease (see speaker/lease); ok is false for
// any other Lease. A malformed annotation elsewhere in the Lease does not
// matter here: what was read (node, renewal, dataplane) counts.
func FromLease(l *coordinationv1.Lease) (s Speaker, ok bool) {
	if !lease.IsSpeakerLease(l.Name) {
		return Speaker{}, false
	}
	info, _ := lease.Decode(l)
	s = Speaker{Node: info.Node, Dataplane: info.Dataplane}
	if !info.RenewTime.IsZero() {
		s.Expiry = info.Expiry()
	}
	return s, true
}

// Decision is the ipMode to write and why.
type Decision struct {
	Mode corev1.LoadBalancerIPMode
	// Reason says why, naming the speakers that decided it.
	Reason string
	// Recheck is when the decision may change although no Lease does: the
	// earliest expiry of a fresh Lease. Zero when no Lease is fresh.
	Recheck time.Time
	// NoneFresh: no speaker's Lease is fresh. A controller that already
	// wrote a mode keeps it: no speaker announces anything meanwhile, a
	// crashed speaker's rules still forward, and switching would cost a
	// write per Service, undone when the speakers are back (a lone
	// speaker's restart rewrote 10,000 Services twice).
	NoneFresh bool
}

// Decide is Proxy iff at least one speaker's Lease is fresh at now and every
// fresh one says a dataplane other than off (a missing annotation is off);
// VIP otherwise. Expired Leases do not count: their speaker is gone or
// stuck, and forwards nothing the decision could protect.
func Decide(speakers []Speaker, now time.Time) Decision {
	var fresh []Speaker
	for _, s := range speakers {
		if now.Before(s.Expiry) {
			fresh = append(fresh, s)
		}
	}
	if len(fresh) == 0 {
		return Decision{Mode: corev1.LoadBalancerIPModeVIP, NoneFresh: true, Reason: "no speaker's Lease is fresh: no speaker forwards, kube-proxy must"}
	}
	slices.SortFunc(fresh, func(a, b Speaker) int { return strings.Compare(a.Node, b.Node) })
	d := Decision{Recheck: fresh[0].Expiry}
	var off, unknown, backends []string
	for _, s := range fresh {
		if s.Expiry.Before(d.Recheck) {
			d.Recheck = s.Expiry
		}
		switch s.Dataplane {
		case lease.DataplaneOff:
			off = append(off, s.Node)
		case "":
			unknown = append(unknown, s.Node)
		default:
			if !slices.Contains(backends, s.Dataplane) {
				backends = append(backends, s.Dataplane)
			}
		}
	}
	if len(off) > 0 || len(unknown) > 0 {
		d.Mode = corev1.LoadBalancerIPModeVIP
		var parts []string
		if len(off) > 0 {
			parts = append(parts, speakersOf(off)+" without a dataplane")
		}
		if len(unknown) > 0 {
			parts = append(parts, speakersOf(unknown)+" a version that does not publish "+lease.AnnotationDataplane+" (counted as off)")
		}
		d.Reason = strings.Join(parts, "; ")
		return d
	}
	slices.Sort(backends)
	d.Mode = corev1.LoadBalancerIPModeProxy
	d.Reason = fmt.Sprintf("every speaker with a fresh Lease (%d) runs a dataplane: %s", len(fresh), strings.Join(backends, ", "))
	return d
}

// speakersOf names speakers in a sentence that goes on with "runs ...".
func speakersOf(nodes []string) string {
	if len(nodes) == 1 {
		return nodes[0] + "'s speaker runs"
	}
	const most = 5
	names := strings.Join(nodes, ", ")
	if len(nodes) > most {
		names = fmt.Sprintf("%s and %d more", strings.Join(nodes[:most], ", "), len(nodes)-most)
	}
	return "the speakers of " + names + " run"
}
