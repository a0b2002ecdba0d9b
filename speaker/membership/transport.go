package membership

import (
	"bytes"
	"fmt"
	"log"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// udpTransport is the speaker's memberlist transport on one address: UDP
// for probes and gossip, TCP for the push-pull streams. It replaces
// memberlist's NetTransport, which allocates a 64 KiB buffer for every
// packet it receives: at ten probes a second that was half of a speaker's
// garbage at rest. This one reads into one buffer and passes on a copy the
// size of the packet (a few hundred bytes).
type udpTransport struct {
	tcp     *net.TCPListener
	udp     *net.UDPConn
	log     *log.Logger
	packets chan *memberlist.Packet
	streams chan net.Conn
	done    chan struct{} // closed by Shutdown
	once    sync.Once
	wg      sync.WaitGroup
}

// udpRecvBuffer is the socket receive buffer asked for: room for the burst
// of a join's gossip, as memberlist's own transport asks.
const udpRecvBuffer = 2 << 20

// listenTransport binds TCP and UDP on ip:port; port 0 takes the port the
// kernel gives the TCP listener for both.
func listenTransport(ip netip.Addr, port int, logger *log.Logger) (*udpTransport, error) {
	tcp, err := net.ListenTCP("tcp", net.TCPAddrFromAddrPort(netip.AddrPortFrom(ip, uint16(port))))
	if err != nil {
		return nil, err
	}
	if port == 0 {
		port = tcp.Addr().(*net.TCPAddr).Port
	}
	udp, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip, uint16(port))))
	if err != nil {
		tcp.Close()
		return nil, err
	}
	if err := udp.SetReadBuffer(udpRecvBuffer); err != nil {
		logger.Printf("[WARN] memberlist: UDP receive buffer of %d bytes refused: %v", udpRecvBuffer, err)
	}
	t := &udpTransport{tcp: tcp, udp: udp, log: logger,
		packets: make(chan *memberlist.Packet), streams: make(chan net.Conn), done: make(chan struct{})}
	t.wg.Add(2)
	go t.readPackets()
	go t.accept()
	return t, nil
}

// port is the port both listeners are bound to.
func (t *udpTransport) port() int { return t.tcp.Addr().(*net.TCPAddr).Port }

func (t *udpTransport) readPackets() {
	defer t.wg.Done()
	buf := make([]byte, 65536)
	for {
		n, from, err := t.udp.ReadFrom(buf)
		at := time.Now()
		if err != nil {
			if t.closed() {
				return
			}
			t.log.Printf("[ERR] memberlist: reading a UDP packet: %v", err)
			continue
		}
		if n == 0 {
			// The words refused.go counts as a malformed packet.
			t.log.Printf("[ERR] memberlist: UDP packet too short (0 bytes) %s", memberlist.LogAddress(from))
			continue
		}
		select {
		case t.packets <- &memberlist.Packet{Buf: bytes.Clone(buf[:n]), From: from, Timestamp: at}:
		case <-t.done:
			return
		}
	}
}

func (t *udpTransport) accept() {
	defer t.wg.Done()
	backoff := 5 * time.Millisecond
	for {
		c, err := t.tcp.AcceptTCP()
		if err != nil {
			if t.closed() {
				return
			}
			t.log.Printf("[ERR] memberlist: accepting a TCP connection: %v", err)
			time.Sleep(backoff)
			backoff = min(2*backoff, time.Second)
			continue
		}
		backoff = 5 * time.Millisecond
		select {
		case t.streams <- c:
		case <-t.done:
			c.Close()
			return
		}
	}
}

// FinalAdvertiseAddr is the address given: the speaker always names it.
func (t *udpTransport) FinalAdvertiseAddr(ip string, port int) (net.IP, int, error) {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return nil, 0, fmt.Errorf("advertise address: %w", err)
	}
	return net.IP(a.Unmap().AsSlice()), port, nil
}

func (t *udpTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	to, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return time.Time{}, err
	}
	_, err = t.udp.WriteTo(b, to)
	return time.Now(), err
}

func (t *udpTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	d := net.Dialer{Timeout: timeout}
	return d.Dial("tcp", addr)
}

func (t *udpTransport) PacketCh() <-chan *memberlist.Packet { return t.packets }
func (t *udpTransport) StreamCh() <-chan net.Conn           { return t.streams }

// closed reports whether Shutdown has begun.
func (t *udpTransport) closed() bool {
	select {
	case <-t.done:
		return true
	default:
		return false
	}
}

func (t *udpTransport) Shutdown() error {
	t.once.Do(func() { close(t.done) })
	err1, err2 := t.tcp.Close(), t.udp.Close()
	t.wg.Wait()
	if err1 != nil {
		return err1
	}
	return err2
}
