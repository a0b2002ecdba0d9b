package membership

import (
	"runtime"
	"syscall"
	"testing"
	"time"
)

// BenchmarkGossipAtRest runs three speakers on loopback with nothing
// happening, a second per iteration, and reports what the gossip costs one
// speaker per second at rest: heap bytes and objects allocated (garbage the
// collector must come back for) and CPU time. Counts, not a timed goal.
func BenchmarkGossipAtRest(b *testing.B) {
	const n = 3
	cluster(b, n)
	time.Sleep(time.Second) // the joins' push-pulls are over
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	cpu0, start := cpuTime(b), time.Now()
	for b.Loop() {
		time.Sleep(time.Second)
	}
	el := time.Since(start).Seconds()
	cpu := cpuTime(b) - cpu0
	runtime.ReadMemStats(&m1)
	b.ReportMetric(float64(m1.TotalAlloc-m0.TotalAlloc)/el/n, "B/s/speaker")
	b.ReportMetric(float64(m1.Mallocs-m0.Mallocs)/el/n, "allocs/s/speaker")
	b.ReportMetric(100*cpu.Seconds()/el/n, "%cpu/speaker")
	b.ReportMetric(0, "ns/op")
}

// cpuTime is this process's CPU time, user and system.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
