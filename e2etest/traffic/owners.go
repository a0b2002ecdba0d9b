package traffic

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/heraldlb/herald/e2etest/lab"
)

// Owners asks the LAN, from a lab namespace, who answers for some
// addresses (ARP or NDP, one request per address every interval) and
// records each change of the answering MAC and each request that two MACs
// answered.
type Owners struct {
	prober *lab.L2Prober
	stop   context.CancelFunc
	done   chan struct{}

	mu       sync.Mutex
	owner    map[netip.Addr]string          // the MAC that answered last
	current  map[netip.Addr]map[string]bool // MACs answering the latest request
	requests int
	moves    []Move
	doubles  []Double
}

// Move is a change of the MAC answering for an address.
type Move struct {
	IP       netip.Addr
	At       time.Time
	From, To string // MACs; From is empty for the first answer seen
}

func (m Move) String() string {
	return fmt.Sprintf("%s %s %s->%s", m.At.Format("15:04:05.000"), m.IP, m.From, m.To)
}

// Double is a request that two MACs answered: two owners at once.
type Double struct {
	IP   netip.Addr
	At   time.Time
	MACs []string
}

func (d Double) String() string {
	return fmt.Sprintf("%s %s answered by %v", d.At.Format("15:04:05.000"), d.IP, d.MACs)
}

// WatchOwners starts asking for ips from namespace ns every interval.
func WatchOwners(ns string, ips []netip.Addr, interval time.Duration) (*Owners, error) {
	w := &Owners{owner: map[netip.Addr]string{}, current: map[netip.Addr]map[string]bool{}, done: make(chan struct{})}
	for _, ip := range ips {
		w.current[ip] = map[string]bool{}
	}
	p, err := lab.NewL2Prober(ns, w.answer)
	if err != nil {
		return nil, err
	}
	w.prober = p
	ctx, cancel := context.WithCancel(context.Background())
	w.stop = cancel
	go func() {
		defer close(w.done)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			for _, ip := range ips {
				w.mu.Lock()
				w.current[ip] = map[string]bool{}
				w.requests++
				w.mu.Unlock()
				_ = p.Probe(ip)
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return w, nil
}

func (w *Owners) answer(a lab.L2Answer) {
	w.mu.Lock()
	defer w.mu.Unlock()
	cur, watched := w.current[a.IP]
	if !watched {
		return
	}
	if prev := w.owner[a.IP]; prev != a.MAC {
		w.moves = append(w.moves, Move{IP: a.IP, At: a.At, From: prev, To: a.MAC})
		w.owner[a.IP] = a.MAC
	}
	// A takeover's unsolicited announcement answers no request: only two
	// replies to one request are two owners.
	if a.Unsolicited || cur[a.MAC] {
		return
	}
	cur[a.MAC] = true
	if len(cur) == 2 {
		var macs []string
		for m := range cur {
			macs = append(macs, m)
		}
		w.doubles = append(w.doubles, Double{IP: a.IP, At: a.At, MACs: macs})
	}
}

// OwnerReport is what an Owners watch saw.
type OwnerReport struct {
	Requests int
	// Moves are the changes of owner after the first answer for each
	// address (which is not a change).
	Moves   []Move
	Doubles []Double
	Owner   map[netip.Addr]string // the last MAC seen per address
}

// Finish stops the watch; it waits a little for late answers.
func (w *Owners) Finish() OwnerReport {
	w.stop()
	<-w.done
	time.Sleep(100 * time.Millisecond)
	w.prober.Close()
	w.mu.Lock()
	defer w.mu.Unlock()
	r := OwnerReport{Requests: w.requests, Doubles: w.doubles, Owner: map[netip.Addr]string{}}
	for _, m := range w.moves {
		if m.From != "" {
			r.Moves = append(r.Moves, m)
		}
	}
	for ip, mac := range w.owner {
		r.Owner[ip] = mac
	}
	return r
}
