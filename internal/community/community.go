// Package community reads BGP communities as a BGPAdvertisement writes them:
// "ASN:value" (RFC 1997), "large:global:local1:local2" (RFC 8092) or a
// well-known name. The speaker attaches what it reads to its routes, and
// heraldctl checks what it translates from MetalLB with the same reading.
package community

import (
	"fmt"
	"strconv"
	"strings"
)

// Large is a large community, global:local1:local2 (RFC 8092).
type Large struct{ Global, Local1, Local2 uint32 }

func (c Large) String() string {
	return fmt.Sprintf("%d:%d:%d", c.Global, c.Local1, c.Local2)
}

// Compare orders large communities by global, then local1, then local2.
func (c Large) Compare(o Large) int {
	for _, d := range [][2]uint32{{c.Global, o.Global}, {c.Local1, o.Local1}, {c.Local2, o.Local2}} {
		if d[0] != d[1] {
			if d[0] < d[1] {
				return -1
			}
			return 1
		}
	}
	return 0
}

// Community is one standard or large community.
type Community struct {
	// Standard is the RFC 1997 value, the AS in the high 16 bits; unused
	// when IsLarge.
	Standard uint32
	Large    Large
	IsLarge  bool
}

// wellKnown are the names a BGPAdvertisement may use (RFC 1997, 7999,
// 8326, 8642, 9494 and the LLGR draft), as its CRD lists them.
var wellKnown = map[string]uint32{
	"no-export":           0xFFFFFF01,
	"no-advertise":        0xFFFFFF02,
	"no-export-subconfed": 0xFFFFFF03,
	"no-peer":             0xFFFFFF04,
	"blackhole":           0xFFFF029A,
	"graceful-shutdown":   0xFFFF0000,
	"accept-own":          0xFFFF0001,
	"llgr-stale":          0xFFFF0006,
	"no-llgr":             0xFFFF0007,
}

// Parse reads one community; the error says what is wrong with it.
func Parse(s string) (Community, error) {
	if v, ok := wellKnown[s]; ok {
		return Community{Standard: v}, nil
	}
	if rest, ok := strings.CutPrefix(s, "large:"); ok {
		parts := strings.Split(rest, ":")
		if len(parts) != 3 {
			return Community{}, fmt.Errorf("community %q: a large community is large:global:local1:local2", s)
		}
		var v [3]uint32
		for i, p := range parts {
			n, err := strconv.ParseUint(p, 10, 32)
			if err != nil {
				return Community{}, fmt.Errorf("community %q: part %q is not a number from 0 to 4294967295", s, p)
			}
			v[i] = uint32(n)
		}
		return Community{Large: Large{v[0], v[1], v[2]}, IsLarge: true}, nil
	}
	hi, lo, ok := strings.Cut(s, ":")
	a, errA := strconv.ParseUint(hi, 10, 16)
	b, errB := strconv.ParseUint(lo, 10, 16)
	if !ok || errA != nil || errB != nil {
		return Community{}, fmt.Errorf("community %q: write ASN:value with both parts from 0 to 65535, large:global:local1:local2, or a well-known name", s)
	}
	return Community{Standard: uint32(a)<<16 | uint32(b)}, nil
}
