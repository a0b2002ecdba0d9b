package main

import (
	"testing"
	"time"
)

func TestRenewDeadlineIsTwoThirdsOfTheLeaseAndFitsTheRetryPeriod(t *testing.T) {
	for _, tc := range []struct {
		lease, retry, want time.Duration
		ok                 bool
	}{
		{15 * time.Second, 2 * time.Second, 10 * time.Second, true}, // the chart's defaults
		{4 * time.Second, 500 * time.Millisecond, 2666666666, true}, // the lab's
		{3 * time.Second, 2 * time.Second, 0, false},                // 2 s renew, 2.4 s with jitter
		{15 * time.Second, 0, 0, false},
	} {
		got, err := renewDeadline(tc.lease, tc.retry)
		if got != tc.want || (err == nil) != tc.ok {
			t.Errorf("renewDeadline(%s, %s) = %s, %v; want %s, ok %v", tc.lease, tc.retry, got, err, tc.want, tc.ok)
		}
	}
}
