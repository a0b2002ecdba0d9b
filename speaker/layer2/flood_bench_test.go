package layer2

import (
	"net"
	"net/netip"
	"testing"

	"github.com/go-logr/logr"
)

// The cost of one ARP request under a flood, from the frame's bytes to the
// decision, for an address nobody here owns and for an owned one whose
// requester has spent its budget. No socket: the Announcer owns the
// address without a listener.
func BenchmarkARPRequestUnderFlood(b *testing.B) {
	owned, foreign := netip.MustParseAddr("198.51.100.64"), netip.MustParseAddr("198.51.100.61")
	sha := net.HardwareAddr{0x0a, 0xf1, 0, 0, 0, 1}
	for _, c := range []struct {
		name   string
		target netip.Addr
	}{{"foreign", foreign}, {"owned_limited", owned}} {
		b.Run(c.name, func(b *testing.B) {
			a := New(logr.Discard(), nil)
			defer a.Close()
			if err := a.SetReplyLimits(ReplyLimits{Rate: 1e-6, Burst: 1}); err != nil {
				b.Fatal(err)
			}
			a.mu.Lock()
			a.owned[owned] = map[string]bool{"eth0": true}
			a.mu.Unlock()
			a.mayReply("ipv4", requester{mac: [6]byte(sha)}) // spends the burst
			conn := &arpConn{l: newListener(a, listenerKey{ifname: "eth0"}), mac6: [6]byte{2, 0, 0, 0, 1, 1}}
			frame := arpRequest(sha, netip.MustParseAddr("198.51.100.101"), c.target)
			b.ReportAllocs()
			for b.Loop() {
				if f, ok := parseARPFrame(frame); ok {
					conn.handle(&f)
				}
			}
		})
	}
}

func arpRequest(sha net.HardwareAddr, spa, tpa netip.Addr) []byte {
	b := make([]byte, 42)
	copy(b[0:6], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	copy(b[6:12], sha)
	b[12], b[13] = 0x08, 0x06
	p := b[14:]
	p[1], p[2], p[3], p[4], p[5], p[7] = 1, 0x08, 0x00, 6, 4, 1
	copy(p[8:14], sha)
	s, t := spa.As4(), tpa.As4()
	copy(p[14:18], s[:])
	copy(p[24:28], t[:])
	return b
}
