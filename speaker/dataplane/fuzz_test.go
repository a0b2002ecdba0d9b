package dataplane

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
)

// Whatever a Service's herald.dev/ipvs-scheduler annotation holds, the rules
// use a scheduler the backend supports, the one written when it can, and
// any other value gets one warning naming the annotation and the value.
func FuzzSchedulerAnnotation(f *testing.F) {
	for _, s := range []string{"", "rr", "sh", "lc", "wrr", "round-robin", "RR", " rr", "rr\x00", "\"", "%q"} {
		f.Add(s)
	}
	netfilter := func(s Scheduler) bool { return s == Random || s == RoundRobin || s == SourceHash }
	f.Fuzz(func(t *testing.T, annotation string) {
		svc := Service{Key: svcKey, IPs: []netip.Addr{genVIP4}, Scheduler: annotation, Ports: []Port{webPort()}}
		vs, warns := ServiceRules(&svc, lanNode, netfilter)
		usable := annotation == "" || Scheduler(annotation).Known() && netfilter(Scheduler(annotation))
		for _, v := range vs {
			if !netfilter(v.Scheduler) || usable && annotation != "" && v.Scheduler != Scheduler(annotation) {
				t.Fatalf("annotation %q: scheduler %s", annotation, v.Scheduler)
			}
		}
		if usable {
			if len(warns) > 0 {
				t.Fatalf("annotation %q: warnings %v", annotation, warns)
			}
			return
		}
		if len(warns) != 1 || warns[0].Service != svcKey || !strings.HasPrefix(warns[0].Message, "annotation herald.dev/ipvs-scheduler: ") ||
			!strings.Contains(warns[0].Message, fmt.Sprintf("%q", annotation)) {
			t.Fatalf("annotation %q: warnings %v, want one naming the annotation and the value", annotation, warns)
		}
	})
}
