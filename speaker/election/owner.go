package election

import (
	"crypto/sha256"
	"encoding/binary"
	"iter"
	"net/netip"
	"slices"
	"strings"
)

// Owner picks the node that announces ip among candidates: the first entry of
// preferred that is a candidate, else the candidate with the highest weight
// (see the package doc for the hash). The order of candidates does not matter.
// It returns false when there are no candidates.
func Owner(ip netip.Addr, candidates []string, preferred []string) (string, bool) {
	for _, p := range preferred {
		if slices.Contains(candidates, p) {
			return p, true
		}
	}
	var (
		best       string
		bestWeight uint64
		found      bool
	)
	for _, c := range candidates {
		w := Weight(c, ip)
		if !found || w > bestWeight || (w == bestWeight && c < best) {
			best, bestWeight, found = c, w, true
		}
	}
	return best, found
}

// Weight is the rendezvous weight of node for ip: the first 8 bytes,
// big-endian, of SHA-256(ip as 16 bytes || node). It is exported so that tools
// and tests can explain an election.
func Weight(node string, ip netip.Addr) uint64 {
	a := ip.Unmap().WithZone("").As16()
	h := sha256.New()
	h.Write(a[:])
	h.Write([]byte(node))
	var sum [sha256.Size]byte
	return binary.BigEndian.Uint64(h.Sum(sum[:0]))
}

// Ranking orders nodes by their weight for ip, highest first (equal weights:
// smaller name first): the order in which Owner would pick them were each
// the only candidate left above the rest. It depends only on ip and the
// names, not on liveness, so a caller can keep it while nodes come and go and
// find the owner with OwnerByRanking, without hashing again.
func Ranking(ip netip.Addr, nodes []string) []string {
	type ranked struct {
		name string
		w    uint64
	}
	rs := make([]ranked, len(nodes))
	for i, n := range nodes {
		rs[i] = ranked{n, Weight(n, ip)}
	}
	slices.SortFunc(rs, func(a, b ranked) int {
		if a.w != b.w {
			if a.w > b.w {
				return -1
			}
			return 1
		}
		return strings.Compare(a.name, b.name)
	})
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.name
	}
	return out
}

// OwnerByRanking is Owner with the hash order given: the first preferred node
// that is a candidate, else the first node of ranking that is one. ranking
// must hold every candidate (Ranking over a superset of them); then the
// result equals Owner's.
func OwnerByRanking(ranking iter.Seq[string], isCandidate func(string) bool, preferred []string) (string, bool) {
	for _, p := range preferred {
		if isCandidate(p) {
			return p, true
		}
	}
	for n := range ranking {
		if isCandidate(n) {
			return n, true
		}
	}
	return "", false
}
