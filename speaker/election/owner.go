package election

import (
	"crypto/sha256"
	"encoding/binary"
	"net/netip"
	"slices"
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
