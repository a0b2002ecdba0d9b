// Package chaos measures what a fault does to the traffic Herald serves:
// while a case's fault runs, steady requests go to several load-balanced
// addresses (a new TCP connection every 10 ms per address) and the client
// watches who answers for them on the LAN; afterwards the Services'
// addresses are compared with what they were. The cases themselves live in
// package e2etest (chaos_test.go), beside the lab they share; `make chaos`
// runs them at full length and prints `bench:` lines.
package chaos

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"os"
	"slices"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/heraldlb/herald/e2etest/lab"
	"github.com/heraldlb/herald/e2etest/traffic"
)

// Full reports whether the full-length cases run (`make chaos`, which sets
// HERALD_CHAOS=full); otherwise each case runs its short version.
func Full() bool { return os.Getenv("HERALD_CHAOS") == "full" }

// Pick is short in the short version of a case and full in `make chaos`.
func Pick[T any](short, full T) T {
	if Full() {
		return full
	}
	return short
}

// Interval is how often each address gets a new request, on a new
// connection, whether or not the earlier ones have been answered.
const Interval = 10 * time.Millisecond

// Run is one case under way: traffic to its addresses and the watch of
// their owners, started before the fault.
type Run struct {
	name    string
	ips     []netip.Addr
	probers []*traffic.Prober
	owners  *traffic.Owners
	start   time.Time
}

// Start starts traffic (http://IP/ from the client) and the owner watch
// for ips.
func Start(name string, ips []netip.Addr) (*Run, error) {
	r := &Run{name: name, ips: ips, start: time.Now()}
	for _, ip := range ips {
		r.probers = append(r.probers, traffic.StartEvery(lab.ClientNetns, "http://"+hostPort(ip)+"/", Interval))
	}
	o, err := traffic.WatchOwners(lab.ClientNetns, ips, 100*time.Millisecond)
	if err != nil {
		for _, p := range r.probers {
			p.Finish()
		}
		return nil, err
	}
	r.owners = o
	return r, nil
}

func hostPort(ip netip.Addr) string {
	if ip.Is6() {
		return "[" + ip.String() + "]"
	}
	return ip.String()
}

// Result is what a case measured.
type Result struct {
	Case     string
	Duration time.Duration
	Requests int
	Failed   int
	// LongestGap is the longest time any address went without a
	// successful request.
	LongestGap time.Duration
	Errors     map[string]int
	// OwnerMoves are changes of the MAC answering for an address.
	OwnerMoves []traffic.Move
	// DuplicateOwners are requests two nodes answered.
	DuplicateOwners []traffic.Double
	// ChangedIPs and DuplicateIPs come from comparing Snapshots (Compare).
	ChangedIPs   []string
	DuplicateIPs []string
	// Extra are the case's own figures, reported as they are.
	Extra []Figure
	// Addresses are each address's own figures, for the log.
	Addresses []Address
}

// Address is what the requests to one address met.
type Address struct {
	IP    netip.Addr
	Stats traffic.Stats
	Owner string // the MAC that answered for it last
}

func (a Address) String() string {
	s := fmt.Sprintf("%s: %d of %d failed, longest gap %s, answers by node %v", a.IP, a.Stats.Failed, a.Stats.Total, a.Stats.Outage.Round(time.Millisecond), a.Stats.ByNode)
	if a.Stats.Failed > 0 {
		s += fmt.Sprintf(", failures sent %s-%s", a.Stats.FirstFailure.Format("15:04:05.000"), a.Stats.LastFailure.Format("15:04:05.000"))
	}
	return s
}

// Figure is one named measurement.
type Figure struct {
	Name  string
	Value float64
	Unit  string
}

// Finish stops the traffic and the watch and returns their figures.
func (r *Run) Finish() Result {
	res := Result{Case: r.name, Duration: time.Since(r.start), Errors: map[string]int{}}
	for i, p := range r.probers {
		s := p.Finish()
		res.Addresses = append(res.Addresses, Address{IP: r.ips[i], Stats: s})
		res.Requests += s.Total
		res.Failed += s.Failed
		res.LongestGap = max(res.LongestGap, s.Outage)
		for k, v := range s.Errors {
			res.Errors[k] += v
		}
	}
	o := r.owners.Finish()
	res.OwnerMoves, res.DuplicateOwners = o.Moves, o.Doubles
	for i := range res.Addresses {
		res.Addresses[i].Owner = o.Owner[res.Addresses[i].IP]
	}
	return res
}

// Lines are the result as `bench: NAME VALUE UNIT` lines, NAME prefixed
// with chaos_<case>_.
func (res Result) Lines() []string {
	p := "chaos_" + res.Case + "_"
	lines := []string{
		fmt.Sprintf("bench: %sfailed_requests %d count", p, res.Failed),
		fmt.Sprintf("bench: %srequests %d count", p, res.Requests),
		fmt.Sprintf("bench: %slongest_gap_ms %d ms", p, res.LongestGap.Milliseconds()),
		fmt.Sprintf("bench: %sowner_moves %d count", p, len(res.OwnerMoves)),
		fmt.Sprintf("bench: %sduplicate_owners %d count", p, len(res.DuplicateOwners)),
		fmt.Sprintf("bench: %schanged_ips %d count", p, len(res.ChangedIPs)),
		fmt.Sprintf("bench: %sduplicate_ips %d count", p, len(res.DuplicateIPs)),
	}
	for _, f := range res.Extra {
		lines = append(lines, fmt.Sprintf("bench: %s%s %g %s", p, f.Name, f.Value, f.Unit))
	}
	return lines
}

// Report writes the result's lines to w; in `make chaos` to stdout instead
// (once, at the start of a line, where tools read them).
func (res Result) Report(w io.Writer) {
	if Full() {
		w = os.Stdout
	}
	for _, l := range res.Lines() {
		fmt.Fprintln(w, l)
	}
}

// Snapshot is every LoadBalancer Service's ingress addresses, by
// namespace/name.
type Snapshot map[string][]string

// Take lists the LoadBalancer Services of the namespaces given (all when
// none).
func Take(ctx context.Context, c kubernetes.Interface, namespaces ...string) (Snapshot, error) {
	if len(namespaces) == 0 {
		namespaces = []string{metav1.NamespaceAll}
	}
	s := Snapshot{}
	for _, ns := range namespaces {
		list, err := c.CoreV1().Services(ns).List(ctx, metav1.ListOptions{ResourceVersion: "0"})
		if err != nil {
			return nil, err
		}
		for _, svc := range list.Items {
			if svc.Spec.Type != corev1.ServiceTypeLoadBalancer {
				continue
			}
			var ips []string
			for _, in := range svc.Status.LoadBalancer.Ingress {
				ips = append(ips, in.IP)
			}
			sort.Strings(ips)
			s[svc.Namespace+"/"+svc.Name] = ips
		}
	}
	return s, nil
}

// Changed lists the Services present in both snapshots that held
// addresses in before and hold different ones in after (a Service that
// lost its address counts; one that gained its first does not).
func Changed(before, after Snapshot) []string {
	var out []string
	for k, b := range before {
		a, ok := after[k]
		if !ok || len(b) == 0 || slices.Equal(a, b) {
			continue
		}
		out = append(out, fmt.Sprintf("%s: %v -> %v", k, b, a))
	}
	sort.Strings(out)
	return out
}

// Duplicates lists addresses that more than one Service holds (the cases
// use no sharing keys).
func Duplicates(s Snapshot) []string {
	holders := map[string][]string{}
	for k, ips := range s {
		for _, ip := range ips {
			holders[ip] = append(holders[ip], k)
		}
	}
	var out []string
	for ip, hs := range holders {
		if len(hs) < 2 {
			continue
		}
		sort.Strings(hs)
		out = append(out, ip+" held by "+strings.Join(hs, ", "))
	}
	sort.Strings(out)
	return out
}

// Pending lists Services with no address.
func Pending(s Snapshot) []string {
	var out []string
	for k, ips := range s {
		if len(ips) == 0 {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}
