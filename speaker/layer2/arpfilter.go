package layer2

import (
	"encoding/binary"
	"net/netip"

	"golang.org/x/net/bpf"
)

// maxFilteredARP is how many owned IPv4 addresses the ARP socket's kernel
// filter names; with more, it passes every ARP frame and the speaker
// decides (two instructions per address and per field, well inside the
// kernel's 4,096).
const maxFilteredARP = 512

// arpFilter passes the ARP frames whose sender or target protocol address
// is one of owned, and drops the rest in the kernel: a flood of requests
// for addresses this node does not own then never wakes the speaker.
// The sender address matters too: another node's announcement of an owned
// address (a reply, or a request with sender and target equal) is how
// WaitAnnouncedByOther learns of a takeover. nil: no filter.
func arpFilter(owned []netip.Addr) []bpf.Instruction {
	if len(owned) > maxFilteredARP {
		return nil
	}
	const accept, reject = 0x40000, 0
	// Ethernet header (14 bytes), then ARP: sender protocol address at 14,
	// target protocol address at 24 (RFC 826, for Ethernet and IPv4).
	prog := []bpf.Instruction{}
	for _, off := range []uint32{14 + 14, 14 + 24} {
		prog = append(prog, bpf.LoadAbsolute{Off: off, Size: 4})
		for _, ip := range owned {
			a := ip.As4()
			prog = append(prog,
				bpf.JumpIf{Cond: bpf.JumpEqual, Val: binary.BigEndian.Uint32(a[:]), SkipTrue: 0, SkipFalse: 1},
				bpf.RetConstant{Val: accept})
		}
	}
	return append(prog, bpf.RetConstant{Val: reject})
}

// maxFilteredNDP is how many owned IPv6 addresses the ICMPv6 socket's
// kernel filter names (nine instructions each); with more, it passes every
// message.
const maxFilteredNDP = 256

// ndpFilter passes the neighbour solicitations and advertisements whose
// target is one of owned, as the ICMPv6 socket receives them (from the
// ICMPv6 header on, the target at byte 8), and drops the rest in the
// kernel: a flood of solicitations for other addresses that share an owned
// address's solicited-node group never wakes the speaker. nil: no filter.
func ndpFilter(owned []netip.Addr) []bpf.Instruction {
	if len(owned) > maxFilteredNDP {
		return nil
	}
	const accept, reject = 0x40000, 0
	var prog []bpf.Instruction
	for _, ip := range owned {
		a := ip.As16()
		for w := range 4 {
			prog = append(prog,
				bpf.LoadAbsolute{Off: uint32(8 + 4*w), Size: 4},
				bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: binary.BigEndian.Uint32(a[4*w:]), SkipTrue: uint8(2*(3-w) + 1)})
		}
		prog = append(prog, bpf.RetConstant{Val: accept})
	}
	return append(prog, bpf.RetConstant{Val: reject})
}

// setFilter installs prog on conn, or a program passing everything when all
// is set or prog is nil. *unfiltered records that the last program passes
// everything, so that installing it again is skipped.
func setFilter(conn interface {
	SetBPF([]bpf.RawInstruction) error
}, prog []bpf.Instruction, all bool, unfiltered *bool) error {
	passAll := all || prog == nil
	if passAll {
		if *unfiltered {
			return nil
		}
		prog = []bpf.Instruction{bpf.RetConstant{Val: 0x40000}}
	}
	raw, err := bpf.Assemble(prog)
	if err != nil {
		return err
	}
	if err := conn.SetBPF(raw); err != nil {
		return err
	}
	*unfiltered = passAll
	return nil
}
