package traffic

import (
	"maps"
	"testing"
	"time"
)

func TestSummarizeTakesResultsInTheOrderSent(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	// Recorded as answered: the slow request sent at 10 ms ends last.
	results := []Result{
		{At: at(0), OK: true},
		{At: at(20), Err: "timeout"},
		{At: at(30), Err: "timeout"},
		{At: at(10), OK: true},
		{At: at(700), OK: true},
		{At: at(710), Err: "timeout"},
		{At: at(720), OK: true},
	}
	s := Summarize(results)
	if s.Total != 7 || s.Failed != 3 || s.Errors["timeout"] != 3 {
		t.Errorf("total %d failed %d errors %v; want 7, 3, timeout:3", s.Total, s.Failed, s.Errors)
	}
	if want := 690 * time.Millisecond; s.Outage != want {
		t.Errorf("outage %s; want %s (from the success sent at 10 ms to the one sent at 700 ms)", s.Outage, want)
	}
}

func TestSummarizeOfNoFailureHasNoOutage(t *testing.T) {
	t0 := time.Now()
	s := Summarize([]Result{{At: t0.Add(time.Second), OK: true}, {At: t0, OK: true}})
	if s.Failed != 0 || s.Outage != 0 {
		t.Errorf("failed %d outage %s; want 0, 0", s.Failed, s.Outage)
	}
}

func TestSummarizeAnswersTakesTheLongestTimeWithoutAnAnswer(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	results := []Result{
		{At: at(0), End: at(2), OK: true},
		// Sent into the outage, answered after a retransmission.
		{At: at(10), End: at(1010), OK: true},
		{At: at(20), End: at(2020), Err: "timeout"},
		{At: at(600), End: at(603), OK: true}, // the first answer after the takeover
		{At: at(610), End: at(612), OK: true},
	}
	s := SummarizeAnswers(results)
	if s.Total != 5 || s.Failed != 1 {
		t.Errorf("total %d failed %d; want 5, 1", s.Total, s.Failed)
	}
	if want := 601 * time.Millisecond; s.Outage != want {
		t.Errorf("outage %s; want %s (from the answer at 2 ms to the one at 603 ms)", s.Outage, want)
	}
}

func TestSummarizeAnswersCountsAnswersByNodeAndBoundsTheFailures(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	results := []Result{
		{At: at(0), End: at(1), OK: true, Node: "node-1"},
		{At: at(10), End: at(2010), Err: "timeout"},
		{At: at(20), End: at(21), OK: true, Node: "node-2"},
		{At: at(30), End: at(2030), Err: "timeout"},
		{At: at(40), End: at(41), OK: true, Node: "node-1"},
		{At: at(50), End: at(51), OK: true}, // not a lab pod's answer
	}
	s := SummarizeAnswers(results)
	if want := map[string]int{"node-1": 2, "node-2": 1}; !maps.Equal(s.ByNode, want) {
		t.Errorf("answers by node %v; want %v", s.ByNode, want)
	}
	if !s.FirstFailure.Equal(at(10)) || !s.LastFailure.Equal(at(30)) {
		t.Errorf("failures sent from %s to %s; want 10 ms to 30 ms", s.FirstFailure, s.LastFailure)
	}
}
