package ipam

import (
	"encoding/binary"
	"math/bits"
	"net/netip"
)

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
