package ipam

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"net/netip"
	"strconv"
	"strings"
)

// Range is an inclusive span of addresses of one family: First <= Last.
type Range struct {
	First, Last netip.Addr
}

// String writes the range the way ParseRange reads it and a person wrote it:
// "a" for one address, a CIDR when the range is exactly one, else "a-b".
func (r Range) String() string {
	if r.First == r.Last {
		return r.First.String()
	}
	if r.First.IsValid() && r.First.Is4() == r.Last.Is4() && !r.Last.Less(r.First) {
		first, last := keyOf(r.First), keyOf(r.Last)
		for n := r.First.BitLen() - 1; n >= 0; n-- {
			host := ones(uint(r.First.BitLen() - n))
			if first.hi&host.hi != 0 || first.lo&host.lo != 0 {
				break // First has bits set after n: no shorter prefix starts here
			}
			if end := first.or(host); end == last {
				return netip.PrefixFrom(r.First, n).String()
			} else if last.less(end) {
				break
			}
		}
	}
	return r.First.String() + "-" + r.Last.String()
}

// ParseRange reads one entry of a pool's addresses: a CIDR ("203.0.113.0/24",
// written as its network address), an inclusive range of one family
// ("203.0.113.10-203.0.113.20", spaces around the dash allowed) or a single
// address. Errors quote the entry and say what is wrong with it.
func ParseRange(s string) (Range, error) {
	t := strings.TrimSpace(s)
	switch {
	case t == "":
		return Range{}, errors.New("empty address range")
	case strings.Contains(t, "/"):
		return parseCIDR(t)
	case strings.Contains(t, "-"):
		first, last, _ := strings.Cut(t, "-")
		a, err := parseAddr(t, strings.TrimSpace(first))
		if err != nil {
			return Range{}, err
		}
		b, err := parseAddr(t, strings.TrimSpace(last))
		if err != nil {
			return Range{}, err
		}
		r := Range{First: a, Last: b}
		return r, r.validate()
	default:
		a, err := parseAddr(t, t)
		if err != nil {
			return Range{}, err
		}
		return Range{First: a, Last: a}, nil
	}
}

func parseAddr(entry, s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil {
		if entry == s {
			return netip.Addr{}, fmt.Errorf("%q is not an IP address, a range or a CIDR", entry)
		}
		return netip.Addr{}, fmt.Errorf("range %q: %q is not an IP address", entry, s)
	}
	if a.Zone() != "" {
		return netip.Addr{}, fmt.Errorf("range %q: address %s has a zone; pool addresses cannot", entry, s)
	}
	return a, nil
}

func parseCIDR(t string) (Range, error) {
	addr, length, _ := strings.Cut(t, "/")
	a, err := netip.ParseAddr(addr)
	if err != nil || a.Zone() != "" {
		return Range{}, fmt.Errorf("CIDR %q: %q is not an IP address", t, addr)
	}
	n, err := strconv.Atoi(length)
	if err != nil || n < 0 || n > a.BitLen() {
		return Range{}, fmt.Errorf("CIDR %q: prefix length %q is not a number from 0 to %d", t, length, a.BitLen())
	}
	p := netip.PrefixFrom(a, n)
	if m := p.Masked(); m != p {
		return Range{}, fmt.Errorf("CIDR %q has bits set after the prefix length; write the network address %s", t, m)
	}
	host := uint(a.BitLen() - n)
	last := keyOf(a).or(ones(host))
	return Range{First: a, Last: addrOf(familyOf(a), last)}, nil
}

// validate checks what a Range built by hand can get wrong.
func (r Range) validate() error {
	switch {
	case !r.First.IsValid() || !r.Last.IsValid():
		return fmt.Errorf("range %v-%v lacks an address", r.First, r.Last)
	case r.First.Zone() != "" || r.Last.Zone() != "":
		return fmt.Errorf("range %s has a zone; pool addresses cannot", r)
	case r.First.Is4() != r.Last.Is4():
		return fmt.Errorf("range %s mixes IPv4 and IPv6; write one range per family", r)
	case r.Last.Less(r.First):
		return fmt.Errorf("range %s is reversed; write the lower address first", r)
	}
	return nil
}

// u128 is an address as a number, so ranges can be counted and walked
// without allocating. IPv4 addresses use the low 32 bits.
type u128 struct{ hi, lo uint64 }

var maxU128 = u128{^uint64(0), ^uint64(0)}

func (a u128) less(b u128) bool { return a.hi < b.hi || a.hi == b.hi && a.lo < b.lo }

// inc returns a+1; ok is false when a is the largest value.
func (a u128) inc() (u128, bool) {
	lo, c := bits.Add64(a.lo, 1, 0)
	hi, c := bits.Add64(a.hi, 0, c)
	return u128{hi, lo}, c == 0
}

// dec returns a-1; ok is false when a is zero.
func (a u128) dec() (u128, bool) {
	lo, b := bits.Sub64(a.lo, 1, 0)
	hi, b := bits.Sub64(a.hi, 0, b)
	return u128{hi, lo}, b == 0
}

// sub returns a-b for a >= b.
func (a u128) sub(b u128) u128 {
	lo, br := bits.Sub64(a.lo, b.lo, 0)
	hi, _ := bits.Sub64(a.hi, b.hi, br)
	return u128{hi, lo}
}

// addSat returns a+b, or maxU128 when that overflows.
func (a u128) addSat(b u128) u128 {
	lo, c := bits.Add64(a.lo, b.lo, 0)
	hi, c := bits.Add64(a.hi, b.hi, c)
	if c != 0 {
		return maxU128
	}
	return u128{hi, lo}
}

func (a u128) or(b u128) u128 { return u128{a.hi | b.hi, a.lo | b.lo} }

// uint64Sat returns a, or math.MaxUint64 when a does not fit.
func (a u128) uint64Sat() uint64 {
	if a.hi != 0 {
		return ^uint64(0)
	}
	return a.lo
}

// ones returns the number whose n low bits are set.
func ones(n uint) u128 {
	switch {
	case n == 0:
		return u128{}
	case n < 64:
		return u128{0, 1<<n - 1}
	case n < 128:
		return u128{1<<(n-64) - 1, ^uint64(0)}
	default:
		return maxU128
	}
}

func keyOf(a netip.Addr) u128 {
	if a.Is4() {
		b := a.As4()
		return u128{0, uint64(binary.BigEndian.Uint32(b[:]))}
	}
	b := a.As16()
	return u128{binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])}
}

func addrOf(f Family, k u128) netip.Addr {
	if f == IPv4 {
		var b [4]byte
		binary.BigEndian.PutUint32(b[:], uint32(k.lo))
		return netip.AddrFrom4(b)
	}
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], k.hi)
	binary.BigEndian.PutUint64(b[8:], k.lo)
	return netip.AddrFrom16(b)
}

// familyOf treats an IPv4-mapped IPv6 address as IPv6, as netip does.
func familyOf(a netip.Addr) Family {
	if a.Is4() {
		return IPv4
	}
	return IPv6
}
