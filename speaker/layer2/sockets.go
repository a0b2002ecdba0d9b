package layer2

import (
	"net"

	"golang.org/x/net/bpf"
	"golang.org/x/net/ipv6"
)

// frameConn is what the responders use of a packet socket (*packet.Conn),
// and icmpConn what they use of an ICMPv6 socket (*ipv6.PacketConn): tests
// feed the responders frames through fakes of these, with no socket.
type frameConn interface {
	ReadFrom(b []byte) (int, net.Addr, error)
	WriteTo(b []byte, addr net.Addr) (int, error)
	SetBPF(filter []bpf.RawInstruction) error
	Close() error
}

type icmpConn interface {
	ReadFrom(b []byte) (int, *ipv6.ControlMessage, net.Addr, error)
	WriteTo(b []byte, cm *ipv6.ControlMessage, dst net.Addr) (int, error)
	SetICMPFilter(f *ipv6.ICMPFilter) error
	SetHopLimit(hoplim int) error
	SetMulticastHopLimit(hoplim int) error
	SetMulticastLoopback(on bool) error
	SetControlMessage(cf ipv6.ControlFlags, on bool) error
	SetBPF(filter []bpf.RawInstruction) error
	Close() error
}
