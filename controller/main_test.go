package main

import (
	"testing"
	"time"
)

func TestMemoryLimitIsNinetyPercentOfTheContainersUnlessGOMEMLIMITIsSet(t *testing.T) {
	for _, tc := range []struct {
		name   string
		env    map[string]string
		want   int64
		wantOK bool
	}{
		{"the chart's default limit, 256Mi", map[string]string{"HERALD_MEMORY_LIMIT": "268435456"}, 241591905, true},
		{"GOMEMLIMIT wins", map[string]string{"HERALD_MEMORY_LIMIT": "268435456", "GOMEMLIMIT": "100MiB"}, 0, false},
		{"no limit", nil, 0, false},
		{"not a number", map[string]string{"HERALD_MEMORY_LIMIT": "256Mi"}, 0, false},
		{"zero", map[string]string{"HERALD_MEMORY_LIMIT": "0"}, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := memoryLimit(func(k string) string { return tc.env[k] })
			if got != tc.want || ok != tc.wantOK {
				t.Errorf("memoryLimit = %d, %v; want %d, %v", got, ok, tc.want, tc.wantOK)
			}
		})
	}
}

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
