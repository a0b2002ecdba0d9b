package ipam

// usedSet holds the addresses in use in one pool and family as disjoint,
// non-adjacent intervals in a treap ordered by interval start. Allocation takes
// the lowest free address, which extends an interval rather than adding one, so
// the set's size follows the number of holes left by releases, never the size
// of the pool. Every operation is O(log k) expected for k intervals.
//
// Treap priorities come from a seeded generator, not from math/rand: the tree
// shape never shows in results, but a fixed sequence keeps runs reproducible.
type usedSet struct {
	root *node
	n    u128   // addresses in the set
	seed uint64 // state of the priority generator
}

type node struct {
	lo, hi      u128
	prio        uint64
	left, right *node
}

// floor returns the interval with the largest start <= x, or nil.
func (s *usedSet) floor(x u128) *node {
	var best *node
	for t := s.root; t != nil; {
		if x.less(t.lo) {
			t = t.left
		} else {
			best, t = t, t.right
		}
	}
	return best
}

func (s *usedSet) has(x u128) bool {
	f := s.floor(x)
	return f != nil && !f.hi.less(x)
}

// nextFree returns the lowest address >= x that is not in the set; ok is false
// when every address from x to the top of the address space is in use.
// Intervals never touch, so the address after the one holding x is free.
func (s *usedSet) nextFree(x u128) (u128, bool) {
	f := s.floor(x)
	if f == nil || f.hi.less(x) {
		return x, true
	}
	return f.hi.inc()
}

// add puts x into the set; x must not be in it.
func (s *usedSet) add(x u128) {
	s.n = s.n.addSat(u128{0, 1})
	left := s.floor(x) // nil or left.hi < x
	var right *node
	if next, ok := x.inc(); ok {
		if r := s.floor(next); r != nil && r.lo == next {
			right = r
		}
	}
	joinLeft := false
	if left != nil {
		after, _ := left.hi.inc() // cannot overflow: left.hi < x
		joinLeft = after == x
	}
	switch {
	case joinLeft && right != nil:
		hi := right.hi
		s.delete(right.lo)
		left.hi = hi
	case joinLeft:
		left.hi = x
	case right != nil:
		right.lo = x // keeps the order: left.hi < x < old right.lo
	default:
		s.insert(&node{lo: x, hi: x, prio: s.nextPrio()})
	}
}

// remove takes x out of the set; x must be in it.
func (s *usedSet) remove(x u128) {
	s.n = s.n.sub(u128{0, 1})
	n := s.floor(x)
	switch {
	case n.lo == n.hi:
		s.delete(n.lo)
	case n.lo == x:
		n.lo, _ = x.inc()
	case n.hi == x:
		n.hi, _ = x.dec()
	default:
		hi := n.hi
		n.hi, _ = x.dec()
		lo, _ := x.inc()
		s.insert(&node{lo: lo, hi: hi, prio: s.nextPrio()})
	}
}

func (s *usedSet) insert(n *node) {
	l, r := split(s.root, n.lo)
	s.root = merge(merge(l, n), r)
}

// delete removes the interval starting at lo, which must exist.
func (s *usedSet) delete(lo u128) {
	l, r := split(s.root, lo)
	s.root = merge(l, deleteMin(r))
}

// nextPrio is splitmix64.
func (s *usedSet) nextPrio() uint64 {
	s.seed += 0x9e3779b97f4a7c15
	z := s.seed
	z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
	z = (z ^ z>>27) * 0x94d049bb133111eb
	return z ^ z>>31
}

// split cuts t into the intervals starting before k and those starting at or
// after k.
func split(t *node, k u128) (l, r *node) {
	if t == nil {
		return nil, nil
	}
	if t.lo.less(k) {
		t.right, r = split(t.right, k)
		return t, r
	}
	l, t.left = split(t.left, k)
	return l, t
}

// merge joins two treaps where every start in l is below every start in r.
func merge(l, r *node) *node {
	switch {
	case l == nil:
		return r
	case r == nil:
		return l
	case l.prio > r.prio:
		l.right = merge(l.right, r)
		return l
	default:
		r.left = merge(l, r.left)
		return r
	}
}

func deleteMin(t *node) *node {
	if t.left == nil {
		return t.right
	}
	t.left = deleteMin(t.left)
	return t
}
