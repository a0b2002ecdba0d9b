package lab

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// FloodConfig describes a flood of ARP requests (IPv4 targets) or neighbour
// solicitations (IPv6 targets) sent from eth0 of a lab namespace.
type FloodConfig struct {
	Netns   string       // where the requests leave from (eth0)
	Targets []netip.Addr // asked for in turn; one family
	// Senders are the requesters' MACs, used in turn (forged ones, for a
	// flood from many hosts); none: eth0's own.
	Senders []net.HardwareAddr
	// SenderIP is the sender protocol address of ARP requests and the
	// source of solicitations; invalid: eth0's own address of the family.
	SenderIP netip.Addr
	Rate     int // requests per second
}

// Flood sends requests at a steady rate until Stop.
type Flood struct {
	cfg  FloodConfig
	fd   int
	stop chan struct{}
	done chan struct{}
	sent int
	took time.Duration
}

// StartFlood opens a send-only packet socket on eth0 of cfg.Netns and sends
// cfg.Rate requests per second, spread over each millisecond, until Stop.
// The frames are built once; sending costs one system call each.
func StartFlood(cfg FloodConfig) (*Flood, error) {
	if len(cfg.Targets) == 0 || cfg.Rate <= 0 {
		return nil, errors.New("flood: no targets or no rate")
	}
	var frames [][]byte
	f := &Flood{cfg: cfg, fd: -1, stop: make(chan struct{}), done: make(chan struct{})}
	err := inNetns(cfg.Netns, func() error {
		ifi, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		v6 := cfg.Targets[0].Is6()
		src := cfg.SenderIP
		if !src.IsValid() {
			if src, err = ifaceAddr(ifi, v6); err != nil {
				return err
			}
		}
		senders := cfg.Senders
		if len(senders) == 0 {
			senders = []net.HardwareAddr{ifi.HardwareAddr}
		}
		// As many frames as it takes to pair every sender with every
		// target at least once.
		n := max(len(senders), len(cfg.Targets))
		for i := range n {
			mac, t := senders[i%len(senders)], cfg.Targets[i%len(cfg.Targets)]
			if v6 {
				frames = append(frames, solicitationFrame(mac, src, t))
			} else {
				frames = append(frames, arpRequestFrame(mac, src, t))
			}
		}
		// Protocol 0: the socket sends and receives nothing, so the flood
		// it sends is not read back.
		if f.fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0); err != nil {
			return err
		}
		return unix.Bind(f.fd, &unix.SockaddrLinklayer{Ifindex: ifi.Index})
	})
	if err != nil {
		if f.fd >= 0 {
			unix.Close(f.fd)
		}
		return nil, fmt.Errorf("flood from %s: %w", cfg.Netns, err)
	}
	go f.run(frames)
	return f, nil
}

func (f *Flood) run(frames [][]byte) {
	defer close(f.done)
	start := time.Now()
	for i := 0; ; {
		select {
		case <-f.stop:
			f.took = time.Since(start)
			return
		default:
		}
		// A sender that falls behind gives up what it missed beyond 10 ms,
		// rather than sending ever longer rounds and seeing Stop late.
		due := int(time.Since(start).Seconds() * float64(f.cfg.Rate))
		due = min(due, f.sent+max(f.cfg.Rate/100, 1))
		for ; f.sent < due; i++ {
			if _, err := unix.Write(f.fd, frames[i%len(frames)]); err == nil {
				f.sent++
			} else if errors.Is(err, unix.ENOBUFS) || errors.Is(err, unix.EAGAIN) {
				break
			} else {
				f.sent++ // counted as sent so one failing frame cannot spin the loop
			}
		}
		time.Sleep(time.Millisecond)
	}
}

// Stop ends the flood and returns how many requests it sent, and over how long.
func (f *Flood) Stop() (sent int, took time.Duration) {
	close(f.stop)
	<-f.done
	unix.Close(f.fd)
	return f.sent, f.took
}

func ifaceAddr(ifi *net.Interface, v6 bool) (netip.Addr, error) {
	addrs, err := ifi.Addrs()
	if err != nil {
		return netip.Addr{}, err
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			ip, _ := netip.AddrFromSlice(n.IP)
			ip = ip.Unmap()
			if ip.Is6() == v6 && !ip.IsLinkLocalUnicast() {
				return ip, nil
			}
		}
	}
	return netip.Addr{}, fmt.Errorf("%s has no address of that family", ifi.Name)
}

// arpRequestFrame is a broadcast ARP request (RFC 826) from mac and src for target.
func arpRequestFrame(mac net.HardwareAddr, src, target netip.Addr) []byte {
	b := make([]byte, 14+28)
	copy(b[0:6], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	copy(b[6:12], mac)
	binary.BigEndian.PutUint16(b[12:14], ethARP)
	p := b[14:]
	binary.BigEndian.PutUint16(p[0:2], 1)      // Ethernet
	binary.BigEndian.PutUint16(p[2:4], 0x0800) // IPv4
	p[4], p[5] = 6, 4
	binary.BigEndian.PutUint16(p[6:8], 1) // request
	copy(p[8:14], mac)
	s, t := src.As4(), target.As4()
	copy(p[14:18], s[:])
	copy(p[24:28], t[:])
	return b
}

// solicitationFrame is a neighbour solicitation (RFC 4861 section 4.3) from
// src, with mac as its source link-layer address, for target, sent to
// target's solicited-node group.
func solicitationFrame(mac net.HardwareAddr, src, target netip.Addr) []byte {
	t := target.As16()
	dst := [16]byte{0xff, 0x02, 11: 1, 12: 0xff, 13: t[13], 14: t[14], 15: t[15]}
	icmp := make([]byte, 32)
	icmp[0] = 135
	copy(icmp[8:24], t[:])
	icmp[24], icmp[25] = 1, 1
	copy(icmp[26:32], mac)
	binary.BigEndian.PutUint16(icmp[2:4], icmpv6Checksum(src.As16(), dst, icmp))
	b := make([]byte, 14+40+len(icmp))
	copy(b[0:6], []byte{0x33, 0x33, 0xff, t[13], t[14], t[15]})
	copy(b[6:12], mac)
	binary.BigEndian.PutUint16(b[12:14], ethIPv6)
	ip := b[14:54]
	ip[0] = 0x60
	binary.BigEndian.PutUint16(ip[4:6], uint16(len(icmp)))
	ip[6], ip[7] = 58, 255
	s := src.As16()
	copy(ip[8:24], s[:])
	copy(ip[24:40], dst[:])
	copy(b[54:], icmp)
	return b
}

// ReplyCounter counts, on one interface of a lab namespace, the ARP replies
// or neighbour advertisements for a set of addresses, by the MAC they are
// sent to, with a kernel filter so the requests of a flood on the same wire
// cost it nothing.
type ReplyCounter struct {
	fd      int
	targets map[netip.Addr]bool
	v6      bool
	mu      sync.Mutex
	to      map[string]int // Ethernet destination -> replies
	times   []time.Time    // of every counted reply, for rates over time
	done    chan struct{}
	closing atomic.Bool
}

// ReplyCounterAt listens on ifname in ns for answers about targets (one family).
func ReplyCounterAt(ns, ifname string, targets []netip.Addr) (*ReplyCounter, error) {
	c := &ReplyCounter{fd: -1, targets: map[netip.Addr]bool{}, to: map[string]int{}, done: make(chan struct{})}
	for _, t := range targets {
		c.targets[t] = true
		c.v6 = t.Is6()
	}
	var prog []bpf.Instruction
	if c.v6 {
		// IPv6, next header ICMPv6, type 136 (neighbour advertisement).
		prog = []bpf.Instruction{
			bpf.LoadAbsolute{Off: 12, Size: 2},
			bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: ethIPv6, SkipTrue: 5},
			bpf.LoadAbsolute{Off: 20, Size: 1},
			bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: 58, SkipTrue: 3},
			bpf.LoadAbsolute{Off: 54, Size: 1},
			bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: 136, SkipTrue: 1},
			bpf.RetConstant{Val: 128},
			bpf.RetConstant{Val: 0},
		}
	} else {
		// ARP, operation 2 (reply).
		prog = []bpf.Instruction{
			bpf.LoadAbsolute{Off: 12, Size: 2},
			bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: ethARP, SkipTrue: 3},
			bpf.LoadAbsolute{Off: 20, Size: 2},
			bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: 2, SkipTrue: 1},
			bpf.RetConstant{Val: 128},
			bpf.RetConstant{Val: 0},
		}
	}
	raw, err := bpf.Assemble(prog)
	if err != nil {
		return nil, err
	}
	filter := make([]unix.SockFilter, len(raw))
	for i, r := range raw {
		filter[i] = unix.SockFilter{Code: r.Op, Jt: r.Jt, Jf: r.Jf, K: r.K}
	}
	err = inNetns(ns, func() error {
		ifi, err := net.InterfaceByName(ifname)
		if err != nil {
			return err
		}
		if c.fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0); err != nil {
			return err
		}
		if err := unix.SetsockoptSockFprog(c.fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &unix.SockFprog{Len: uint16(len(filter)), Filter: &filter[0]}); err != nil {
			return err
		}
		if err := unix.SetsockoptInt(c.fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 16<<20); err != nil {
			return err
		}
		if err := unix.SetsockoptTimeval(c.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Usec: 100_000}); err != nil {
			return err
		}
		// Bound to every protocol only now, with the filter in place.
		return unix.Bind(c.fd, &unix.SockaddrLinklayer{Ifindex: ifi.Index, Protocol: htons(unix.ETH_P_ALL)})
	})
	if err != nil {
		if c.fd >= 0 {
			unix.Close(c.fd)
		}
		return nil, fmt.Errorf("reply counter on %s in %s: %w", ifname, ns, err)
	}
	go c.read()
	return c, nil
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

func (c *ReplyCounter) read() {
	defer close(c.done)
	buf := make([]byte, 256)
	for {
		if c.closing.Load() {
			return
		}
		n, _, err := unix.Recvfrom(c.fd, buf, 0)
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return
		}
		var about netip.Addr
		switch {
		case !c.v6 && n >= 42:
			about = netip.AddrFrom4([4]byte(buf[28:32])) // the sender protocol address
		case c.v6 && n >= 78:
			about = netip.AddrFrom16([16]byte(buf[62:78])) // the target
		default:
			continue
		}
		if !c.targets[about] {
			continue
		}
		to := net.HardwareAddr(buf[0:6]).String()
		c.mu.Lock()
		c.to[to]++
		c.times = append(c.times, time.Now())
		c.mu.Unlock()
	}
}

// Counts returns the replies seen so far by destination MAC, and their times.
func (c *ReplyCounter) Counts() (map[string]int, []time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]int, len(c.to))
	for k, v := range c.to {
		out[k] = v
	}
	return out, append([]time.Time(nil), c.times...)
}

// Reset forgets what was counted.
func (c *ReplyCounter) Reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.to, c.times = map[string]int{}, nil
}

// Close stops counting.
func (c *ReplyCounter) Close() {
	c.closing.Store(true)
	<-c.done // within the receive timeout
	unix.Close(c.fd)
}
