package main

import (
	"net/netip"
	"sort"
	"sync"
	"time"

	"github.com/heraldlb/herald/e2etest/lab"
)

// wire records, from the client, the probes sent and every layer-2 answer
// seen, so figures come from what a host on the LAN sees.
type wire struct {
	p       *lab.L2Prober
	mu      sync.Mutex
	answers map[netip.Addr][]lab.L2Answer
	probes  map[netip.Addr][]time.Time
}

func newWire() (*wire, error) {
	w := &wire{answers: map[netip.Addr][]lab.L2Answer{}, probes: map[netip.Addr][]time.Time{}}
	p, err := lab.NewL2Prober(lab.ClientNetns, func(a lab.L2Answer) {
		w.mu.Lock()
		w.answers[a.IP] = append(w.answers[a.IP], a)
		w.mu.Unlock()
	})
	if err != nil {
		return nil, err
	}
	w.p = p
	return w, nil
}

func (w *wire) close() { w.p.Close() }

// probe sends one request for ip and records when.
func (w *wire) probe(ip netip.Addr) {
	w.mu.Lock()
	w.probes[ip] = append(w.probes[ip], time.Now())
	w.mu.Unlock()
	_ = w.p.Probe(ip)
}

// reset forgets everything recorded.
func (w *wire) reset() {
	w.mu.Lock()
	w.answers = map[netip.Addr][]lab.L2Answer{}
	w.probes = map[netip.Addr][]time.Time{}
	w.mu.Unlock()
}

// firstFrom returns the first answer for ip from mac at or after since
// (solicited or not), and whether there was one.
func (w *wire) firstFrom(ip netip.Addr, mac string, since time.Time, unsolicitedOnly bool) (time.Time, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, a := range w.answers[ip] {
		if a.MAC == mac && !a.At.Before(since) && (!unsolicitedOnly || a.Unsolicited) {
			return a.At, true
		}
	}
	return time.Time{}, false
}

// firstNotFrom returns the first answer for ip from any MAC but mac at or after since.
func (w *wire) firstNotFrom(ip netip.Addr, mac string, since time.Time) (time.Time, string, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, a := range w.answers[ip] {
		if a.MAC != mac && !a.At.Before(since) {
			return a.At, a.MAC, true
		}
	}
	return time.Time{}, "", false
}

// lastFrom returns the last answer for ip from mac before until.
func (w *wire) lastFrom(ip netip.Addr, mac string, until time.Time) (time.Time, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	var last time.Time
	for _, a := range w.answers[ip] {
		if a.MAC == mac && a.At.Before(until) {
			last = a.At
		}
	}
	return last, !last.IsZero()
}

// double is one probe that more than one MAC answered.
type double struct {
	ip   netip.Addr
	at   time.Time
	macs []string
}

// doubles returns the probes answered by more than one MAC: each solicited
// answer belongs to the last probe of its address sent before it.
func (w *wire) doubles() (probes int, ds []double) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for ip, ps := range w.probes {
		probes += len(ps)
		macs := make([]map[string]bool, len(ps))
		for _, a := range w.answers[ip] {
			if a.Unsolicited {
				continue
			}
			i := sort.Search(len(ps), func(i int) bool { return ps[i].After(a.At) }) - 1
			if i < 0 {
				continue
			}
			if macs[i] == nil {
				macs[i] = map[string]bool{}
			}
			macs[i][a.MAC] = true
		}
		for i, m := range macs {
			if len(m) > 1 {
				d := double{ip: ip, at: ps[i]}
				for mac := range m {
					d.macs = append(d.macs, mac)
				}
				sort.Strings(d.macs)
				ds = append(ds, d)
			}
		}
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i].at.Before(ds[j].at) })
	return probes, ds
}

// macNode maps lab MACs to node names.
func macNode(nodes []lab.Node) map[string]string {
	out := map[string]string{}
	for _, n := range nodes {
		out[n.MAC] = n.Name
	}
	return out
}
