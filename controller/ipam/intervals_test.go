package ipam

import (
	"testing"

	"pgregory.net/rapid"
)

// TestUsedSetMatchesAPlainSetOfAddresses checks the treap of intervals against a
// map, near zero and near the top of the 128-bit space where +1 and -1 overflow.
func TestUsedSetMatchesAPlainSetOfAddresses(t *testing.T) {
	bases := []u128{{}, {0, 1<<32 - 40}, {^uint64(0), ^uint64(0) - 39}}
	rapid.Check(t, func(t *rapid.T) {
		base := rapid.SampledFrom(bases).Draw(t, "base")
		at := func(i int) u128 { return u128{base.hi, base.lo + uint64(i)} }
		var s usedSet
		model := map[int]bool{}
		for range rapid.IntRange(1, 200).Draw(t, "steps") {
			i := rapid.IntRange(0, 39).Draw(t, "i")
			if model[i] {
				s.remove(at(i))
				delete(model, i)
			} else {
				s.add(at(i))
				model[i] = true
			}
			checkTreap(t, s.root)
			if s.n != (u128{0, uint64(len(model))}) {
				t.Fatalf("count %v, want %d", s.n, len(model))
			}
			for j := range 40 {
				if s.has(at(j)) != model[j] {
					t.Fatalf("has(%d) = %v, want %v", j, !model[j], model[j])
				}
				want := j
				for model[want] {
					want++
				}
				got, ok := s.nextFree(at(j))
				if want == 40 && base.hi == ^uint64(0) {
					if ok {
						t.Fatalf("nextFree(%d) = %v past the top of the space", j, got)
					}
					continue
				}
				if !ok || got != at(want) {
					t.Fatalf("nextFree(%d) = %v %v, want %v", j, got, ok, at(want))
				}
			}
		}
	})
}

// checkTreap verifies order, heap priorities, and that intervals neither
// overlap nor touch (which nextFree relies on).
func checkTreap(t *rapid.T, root *node) {
	var prev *node
	var walk func(n *node)
	walk = func(n *node) {
		if n == nil {
			return
		}
		for _, c := range []*node{n.left, n.right} {
			if c != nil && c.prio > n.prio {
				t.Fatalf("heap order broken at %v", n.lo)
			}
		}
		walk(n.left)
		if n.hi.less(n.lo) {
			t.Fatalf("interval %v-%v reversed", n.lo, n.hi)
		}
		if prev != nil {
			if after, _ := prev.hi.inc(); !after.less(n.lo) {
				t.Fatalf("intervals %v-%v and %v-%v touch or overlap", prev.lo, prev.hi, n.lo, n.hi)
			}
		}
		prev = n
		walk(n.right)
	}
	walk(root)
}

func TestBuggyCoordinatesSkipDotZeroAndDot255(t *testing.T) {
	s := &space{family: IPv4, skipBuggy: true}
	var prev u128
	first := true
	for k := uint64(0xfffffe00); k <= 0xffffffff; k++ {
		c, ok := s.coord(u128{0, k})
		if b := k & 0xff; ok == (b == 0 || b == 255) {
			t.Fatalf("coord(%#x) ok = %v", k, ok)
		}
		if !ok {
			continue
		}
		if got := keyOf(s.addr(c)); got != (u128{0, k}) {
			t.Fatalf("addr(coord(%#x)) = %#x", k, got.lo)
		}
		if !first {
			if next, _ := prev.inc(); next != c {
				t.Fatalf("coordinates not consecutive at %#x", k)
			}
		}
		prev, first = c, false
	}
}
