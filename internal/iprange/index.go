package iprange

import (
	"net/netip"
	"slices"
	"sort"
)

// Entry is one range of an Index and the value it maps to.
type Entry[V any] struct {
	Range
	Value V
}

// Index maps disjoint ranges to values. Lookups and overlap checks are
// binary searches over the ranges sorted by start; adding a range is linear
// in the ranges held, which suits configuration-sized sets (pools, Service
// CIDRs), built once and read on every allocation.
//
// The zero value is an empty index ready to use.
type Index[V any] struct {
	// entries are sorted by First; netip orders every IPv4 address before
	// every IPv6 address, so one slice holds both families.
	entries []Entry[V]
}

// Len is the number of ranges in the index.
func (x *Index[V]) Len() int { return len(x.entries) }

// Entries returns the ranges in address order (IPv4 first). The slice is
// the index's own: do not change it.
func (x *Index[V]) Entries() []Entry[V] { return x.entries }

// Add puts r into the index with value v unless r overlaps a range already
// there; then it leaves the index as it was and returns the lowest such
// range. r must be valid (see Range.Validate).
func (x *Index[V]) Add(r Range, v V) (conflict Entry[V], ok bool) {
	if e, found := x.FirstOverlap(r); found {
		return e, false
	}
	i := x.search(r.First)
	x.entries = slices.Insert(x.entries, i, Entry[V]{r, v})
	return Entry[V]{}, true
}

// FirstOverlap returns the lowest range of the index that shares an address
// with r.
func (x *Index[V]) FirstOverlap(r Range) (Entry[V], bool) {
	// Ranges are disjoint, so the only range starting before r.First that
	// can overlap r is the one right before; after it, the first range
	// starting at or after r.First overlaps when it starts by r.Last.
	i := x.search(r.First)
	if i > 0 && x.entries[i-1].Overlaps(r) {
		return x.entries[i-1], true
	}
	if i < len(x.entries) && x.entries[i].Overlaps(r) {
		return x.entries[i], true
	}
	var zero Entry[V]
	return zero, false
}

// Lookup returns the range holding ip.
func (x *Index[V]) Lookup(ip netip.Addr) (Entry[V], bool) {
	var zero Entry[V]
	if !ip.IsValid() || ip.Zone() != "" {
		return zero, false
	}
	// The last range starting at or before ip is the only one that can hold it.
	i := sort.Search(len(x.entries), func(i int) bool { return x.entries[i].First.Compare(ip) > 0 })
	if i > 0 && x.entries[i-1].Contains(ip) {
		return x.entries[i-1], true
	}
	return zero, false
}

// search returns the index of the first range starting at or after a.
func (x *Index[V]) search(a netip.Addr) int {
	i, _ := slices.BinarySearchFunc(x.entries, a, func(e Entry[V], a netip.Addr) int { return e.First.Compare(a) })
	return i
}
