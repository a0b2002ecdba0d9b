// Package traffic drives requests at the lab's load-balanced addresses and
// watches who answers for them on the LAN, for the e2e and chaos suites:
// each request's outcome and each change of owner is recorded, so a test
// can report failed requests, the longest gap and ownership moves.
package traffic

import (
	"context"
	"io"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/heraldlb/herald/e2etest/lab"
)

// Prober sends requests, each on a new TCP connection (so each one
// resolves the address afresh), and records outcomes.
type Prober struct {
	mu      sync.Mutex
	results []Result
	stop    context.CancelFunc
	done    chan struct{}
	overlap bool // requests do not wait for each other (StartEvery)
}

// Result is one request.
type Result struct {
	At, End time.Time // the request was sent at At and had its answer or error at End
	OK      bool
	Err     string
	// Node is the node of the pod that answered, from the lab's pods'
	// answer ("pod=... node=... client=..."); empty for a failed request
	// or another server.
	Node string
}

// Stats sum up a prober's results.
type Stats struct {
	Total, Failed int
	// Outage is the longest time from the last success before a failure
	// to the next success.
	Outage time.Duration
	Errors map[string]int // why requests failed, by count
	// ByNode counts the answers by the node of the pod that answered: a
	// path to one node that fails shows as that node's missing share.
	ByNode map[string]int
	// FirstFailure and LastFailure bound when the failed requests were
	// sent (zero without failures).
	FirstFailure, LastFailure time.Time
}

// Timeout is each request's deadline: a request slower than this counts
// as failed.
const Timeout = 300 * time.Millisecond

// Start starts a prober in lab namespace ns (lab.ClientNetns, usually)
// asking url every interval, one request at a time: a slow request delays
// the next.
func Start(ns, url string, interval time.Duration) *Prober {
	return start(ns, url, interval, false)
}

// EveryTimeout is the deadline of each request of StartEvery: long enough
// for TCP to retransmit a lost SYN (after 1 s) and for a stall of the
// test machine, so that only a request that could not be served fails.
const EveryTimeout = 2 * time.Second

// StartEvery starts a prober that opens a new connection to url every
// interval whether or not earlier requests have been answered, so a
// request that waits on a retransmission or a slow machine holds up no
// other. Its outage is the longest time between two answers (see
// SummarizeAnswers): time with no answer, whatever the requests' fate.
func StartEvery(ns, url string, interval time.Duration) *Prober {
	return start(ns, url, interval, true)
}

func start(ns, url string, interval time.Duration, overlap bool) *Prober {
	ctx, cancel := context.WithCancel(context.Background())
	p := &Prober{stop: cancel, done: make(chan struct{}), overlap: overlap}
	timeout := Timeout
	if overlap {
		timeout = EveryTimeout
	}
	hc := &http.Client{Timeout: timeout, Transport: &http.Transport{
		DialContext: lab.DialContextIn(ns), DisableKeepAlives: true,
	}}
	ask := func() {
		at := time.Now()
		resp, err := hc.Get(url)
		r := Result{At: at, OK: err == nil && resp.StatusCode == 200}
		if err != nil {
			r.Err = err.Error()
		}
		if resp != nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
			resp.Body.Close()
			if a, err := lab.ParseAnswer(string(body)); r.OK && err == nil {
				r.Node = a.Node
			}
		}
		r.End = time.Now()
		p.mu.Lock()
		p.results = append(p.results, r)
		p.mu.Unlock()
	}
	go func() {
		var inFlight sync.WaitGroup
		defer close(p.done)
		defer inFlight.Wait() // requests sent are answered or time out
		t := time.NewTicker(interval)
		defer t.Stop()
		for ctx.Err() == nil {
			if overlap {
				inFlight.Go(ask)
			} else {
				ask()
			}
			select {
			case <-ctx.Done():
			case <-t.C:
			}
		}
	}()
	return p
}

// Finish stops the prober (it may be called again) and sums up its results.
func (p *Prober) Finish() Stats {
	p.stop()
	<-p.done
	if p.overlap {
		return SummarizeAnswers(p.Results())
	}
	return Summarize(p.Results())
}

// Results are the requests so far, in the order they were sent.
func (p *Prober) Results() []Result {
	p.mu.Lock()
	defer p.mu.Unlock()
	return sorted(p.results)
}

// sorted is a copy of results in the order they were sent.
func sorted(results []Result) []Result {
	out := slices.Clone(results)
	slices.SortStableFunc(out, func(a, b Result) int { return a.At.Compare(b.At) })
	return out
}

// Summarize counts failures and finds the longest outage in results, taken
// in the order they were sent.
func Summarize(results []Result) Stats {
	s := Stats{Errors: map[string]int{}, ByNode: map[string]int{}}
	var lastOK time.Time
	inOutage := false
	for _, r := range sorted(results) {
		if !s.count(r) {
			inOutage = true
			continue
		}
		if inOutage && !lastOK.IsZero() && r.At.Sub(lastOK) > s.Outage {
			s.Outage = r.At.Sub(lastOK)
		}
		inOutage = false
		lastOK = r.At
	}
	return s
}

// SummarizeAnswers counts failures in results and takes as the outage the
// longest time between two successive answers (by when they arrived), the
// measure for requests that overlap: one that waited out a retransmission
// may be answered after later ones, and a request sent into an outage may
// still be answered once it is over.
func SummarizeAnswers(results []Result) Stats {
	s := Stats{Errors: map[string]int{}, ByNode: map[string]int{}}
	var answers []time.Time
	for _, r := range results {
		if !s.count(r) {
			continue
		}
		answers = append(answers, r.End)
	}
	slices.SortFunc(answers, time.Time.Compare)
	for i := 1; i < len(answers); i++ {
		s.Outage = max(s.Outage, answers[i].Sub(answers[i-1]))
	}
	return s
}

// count adds r to s's totals and reports whether it was answered.
func (s *Stats) count(r Result) bool {
	s.Total++
	if r.OK {
		if r.Node != "" {
			s.ByNode[r.Node]++
		}
		return true
	}
	s.Failed++
	s.Errors[r.Err]++
	if s.FirstFailure.IsZero() || r.At.Before(s.FirstFailure) {
		s.FirstFailure = r.At
	}
	if r.At.After(s.LastFailure) {
		s.LastFailure = r.At
	}
	return false
}
