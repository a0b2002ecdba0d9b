package layer2_test

import (
	"encoding/binary"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"

	"github.com/heraldlb/herald/speaker/layer2"
)

// A client floods ARP requests for an owned address from one MAC and from
// thousands of forged ones: each requester gets at most its bound, all of
// them together at most the total bound, and another host is still
// answered. The lab's flood test (e2etest) measures the same with the
// default limits at 50,000 requests/s; here the limits are small so a
// second of flood crosses them.
func TestFloodedRepliesStayWithinTheLimits(t *testing.T) {
	t.Parallel()
	n, speaker, client := speakerAndClient(t)
	other := n.addHost("o", "02:00:00:00:02:03", "198.51.100.203", "2001:db8:9::203")
	reg := prometheus.NewRegistry()
	a := announcerIn(t, speaker, reg)
	// The other host shares the total with the forged senders: a quarter of
	// the flood's rate, so 50 requests are all but sure to get answers.
	limits := layer2.ReplyLimits{Rate: 100, Burst: 200, TotalRate: 5000, TotalBurst: 5000}
	if err := a.SetReplyLimits(limits); err != nil {
		t.Fatal(err)
	}
	setOwned(t, a, map[netip.Addr][]string{vip4: {"eth0"}})

	for _, c := range []struct {
		name    string
		senders int
	}{{"one MAC", 1}, {"many MACs", 5000}} {
		// Replies to forged MACs leave the LAN's bridge by its uplink.
		var replies, toOne, toOther atomic.Int64
		one := forged(0)
		counting := time.Now()
		stopCount := countARPReplies(t, n.ns, "lan1", func(dst net.HardwareAddr) {
			replies.Add(1)
			if dst.String() == one.String() {
				toOne.Add(1)
			}
		})
		stopOther := countARPReplies(t, other, "eth0", func(dst net.HardwareAddr) {
			if dst.String() == "02:00:00:00:02:03" {
				toOther.Add(1)
			}
		})
		var frames [][]byte
		for i := range c.senders {
			frames = append(frames, layer2.ARPRequest(forged(i), netip.MustParseAddr("198.51.100.220"), vip4))
		}
		const length = time.Second
		flooded := make(chan int)
		go func() { flooded <- sendFor(t, client, frames, 20000, length) }()
		asked := sendFor(t, other, [][]byte{layer2.ARPRequest(net.HardwareAddr{2, 0, 0, 0, 2, 3}, netip.MustParseAddr("198.51.100.203"), vip4)}, 50, length)
		sent := <-flooded
		time.Sleep(100 * time.Millisecond)
		stopCount()
		stopOther()
		// The bounds hold over the time the replies were counted: on a
		// loaded machine the speaker drains its backlog after the flood.
		span := time.Since(counting).Seconds()
		t.Logf("%s: %d requests sent; %d replies in all, %d to the first sender; the other host got %d of %d",
			c.name, sent, replies.Load(), toOne.Load(), toOther.Load(), asked)
		if got, bound := float64(toOne.Load()), limits.Rate*span+float64(limits.Burst); got > bound || got == 0 {
			t.Errorf("%s: %v replies to one requester, want 1 to %v", c.name, got, bound)
		}
		if got, bound := float64(replies.Load()), limits.TotalRate*span+float64(limits.TotalBurst); got > bound {
			t.Errorf("%s: %v replies in all, more than %v", c.name, got, bound)
		}
		if toOther.Load() == 0 {
			t.Errorf("%s: another host got no answer to %d requests", c.name, asked)
		}
	}
	if got := counter(t, reg, "herald_speaker_layer2_replies_limited_total", "reason", "requester"); got == 0 {
		t.Error("herald_speaker_layer2_replies_limited_total{reason=requester} = 0 after a flood from one MAC")
	}
}

func forged(i int) net.HardwareAddr {
	return net.HardwareAddr{0x0a, 0xf1, 0, byte(i >> 16), byte(i >> 8), byte(i)}
}

// sendFor sends frames in turn from eth0 of ns at rate per second for d,
// and returns how many it sent.
func sendFor(t *testing.T, ns string, frames [][]byte, rate int, d time.Duration) int {
	t.Helper()
	fd := -1
	inNetns(t, ns, func() {
		ifi, err := net.InterfaceByName("eth0")
		if err != nil {
			t.Error(err)
			return
		}
		if fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0); err != nil {
			t.Error(err)
			return
		}
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Ifindex: ifi.Index}); err != nil {
			t.Error(err)
		}
	})
	if fd < 0 {
		t.FailNow()
	}
	defer unix.Close(fd)
	sent, start := 0, time.Now()
	for time.Since(start) < d {
		for due := int(time.Since(start).Seconds() * float64(rate)); sent < due; sent++ {
			_, _ = unix.Write(fd, frames[sent%len(frames)])
		}
		time.Sleep(time.Millisecond)
	}
	return sent
}

// countARPReplies calls fn with the destination of every ARP reply seen on
// ifname in ns until the returned stop is called.
func countARPReplies(t *testing.T, ns, ifname string, fn func(dst net.HardwareAddr)) (stop func()) {
	t.Helper()
	fd := -1
	inNetns(t, ns, func() {
		ifi, err := net.InterfaceByName(ifname)
		if err != nil {
			t.Error(err)
			return
		}
		if fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ARP))); err != nil {
			t.Error(err)
			return
		}
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 8<<20)
		_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Usec: 50_000})
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Ifindex: ifi.Index, Protocol: htons(unix.ETH_P_ARP)}); err != nil {
			t.Error(err)
		}
	})
	if fd < 0 {
		t.FailNow()
	}
	var stopping atomic.Bool
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 128)
		for !stopping.Load() {
			n, _, err := unix.Recvfrom(fd, buf, 0)
			if err != nil || n < 42 || binary.BigEndian.Uint16(buf[20:22]) != 2 {
				continue
			}
			fn(net.HardwareAddr(buf[0:6]))
		}
	}()
	return func() {
		stopping.Store(true)
		<-done
		unix.Close(fd)
	}
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }
