package election_test

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"

	"pgregory.net/rapid"

	"github.com/heraldlb/herald/speaker/election"
)

func TestOwnerWithoutCandidatesIsNobody(t *testing.T) {
	for _, pref := range [][]string{nil, {"node-a"}} {
		if owner, ok := election.Owner(netip.MustParseAddr("203.0.113.10"), nil, pref); ok || owner != "" {
			t.Errorf("Owner(no candidates, preferred %v) = %q, %v; want \"\", false", pref, owner, ok)
		}
	}
}

func TestOwnerPrefersTheFirstPreferredCandidate(t *testing.T) {
	ip := netip.MustParseAddr("203.0.113.10")
	cands := []string{"node-a", "node-b", "node-c"}
	hrw, _ := election.Owner(ip, cands, nil)
	for _, tc := range []struct {
		name      string
		preferred []string
		want      string
	}{
		{"no preference: the hash decides", nil, hrw},
		{"the first preferred node wins", []string{"node-c", "node-b"}, "node-c"},
		{"a preferred node that is not a candidate is skipped", []string{"node-x", "node-b", "node-a"}, "node-b"},
		{"no preferred node is a candidate: the hash decides", []string{"node-x", "node-y"}, hrw},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got, ok := election.Owner(ip, cands, tc.preferred); !ok || got != tc.want {
				t.Errorf("Owner = %q, %v; want %q", got, ok, tc.want)
			}
		})
	}
}

// The weights are part of the protocol between speakers of different versions
// and architectures: they must never change. (Checked against Python:
// sha256(ipaddress.ip_address(ip).packed, v4 as ::ffff:a.b.c.d, + name)[:8].)
func TestWeightIsStableAcrossProcessesAndArchitectures(t *testing.T) {
	for _, tc := range []struct {
		node, ip string
		want     uint64
	}{
		{"node-a", "203.0.113.10", 0x26f59b4df18b3315},
		{"node-b", "203.0.113.10", 0x1963f11da1485b03},
		{"node-a", "2001:db8::10", 0xc54fa71b06237ba6},
	} {
		if got := election.Weight(tc.node, netip.MustParseAddr(tc.ip)); got != tc.want {
			t.Errorf("Weight(%q, %s) = %#016x; want %#016x", tc.node, tc.ip, got, tc.want)
		}
	}
}

func TestMappedAndZonedAddressesWeighAsPlainOnes(t *testing.T) {
	v4, mapped := netip.MustParseAddr("203.0.113.10"), netip.MustParseAddr("::ffff:203.0.113.10")
	if election.Weight("n", v4) != election.Weight("n", mapped) {
		t.Error("an IPv4-mapped IPv6 address weighs differently from its IPv4 address")
	}
	v6, zoned := netip.MustParseAddr("fe80::1"), netip.MustParseAddr("fe80::1%eth0")
	if election.Weight("n", v6) != election.Weight("n", zoned) {
		t.Error("a zoned address weighs differently from the same address without zone")
	}
}

var (
	nodeNameGen = rapid.StringMatching(`[a-z][a-z0-9-]{0,20}`)
	ipGen       = rapid.Custom(func(t *rapid.T) netip.Addr {
		if rapid.Bool().Draw(t, "v6") {
			var b [16]byte
			copy(b[:], rapid.SliceOfN(rapid.Byte(), 16, 16).Draw(t, "v6bytes"))
			return netip.AddrFrom16(b)
		}
		var b [4]byte
		copy(b[:], rapid.SliceOfN(rapid.Byte(), 4, 4).Draw(t, "v4bytes"))
		return netip.AddrFrom4(b)
	})
	candidatesGen = rapid.SliceOfNDistinct(nodeNameGen, 1, 12, rapid.ID[string])
)

func TestOwnerIgnoresTheOrderOfCandidates(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		ip, cands := ipGen.Draw(t, "ip"), candidatesGen.Draw(t, "candidates")
		want, _ := election.Owner(ip, cands, nil)
		perm := rapid.Permutation(cands).Draw(t, "permutation")
		if got, _ := election.Owner(ip, perm, nil); got != want {
			t.Fatalf("Owner(%v) = %q but Owner(%v) = %q", cands, want, perm, got)
		}
	})
}

func TestRemovingANonOwnerNeverMovesTheAddress(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		ip, cands := ipGen.Draw(t, "ip"), candidatesGen.Draw(t, "candidates")
		owner, _ := election.Owner(ip, cands, nil)
		gone := rapid.SampledFrom(cands).Draw(t, "removed")
		if gone == owner {
			t.Skip("removed the owner")
		}
		if got, _ := election.Owner(ip, without(cands, gone), nil); got != owner {
			t.Fatalf("removing %q moved %s from %q to %q", gone, ip, owner, got)
		}
	})
}

func TestRemovingTheOwnerMovesTheAddressToAnotherCandidate(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		ip, cands := ipGen.Draw(t, "ip"), candidatesGen.Draw(t, "candidates")
		owner, _ := election.Owner(ip, cands, nil)
		rest := without(cands, owner)
		got, ok := election.Owner(ip, rest, nil)
		if len(rest) == 0 {
			if ok {
				t.Fatalf("no candidates left, yet %q owns %s", got, ip)
			}
			return
		}
		if !ok || got == owner || !slices.Contains(cands, got) {
			t.Fatalf("after removing owner %q of %s, Owner = %q, %v; want another of %v", owner, ip, got, ok, cands)
		}
	})
}

// Over a whole pool, removing a node moves exactly the addresses it owned.
func TestRemovingANodeMovesOnlyTheAddressesItOwned(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		cands := rapid.SliceOfNDistinct(nodeNameGen, 2, 8, rapid.ID[string]).Draw(t, "candidates")
		gone := rapid.SampledFrom(cands).Draw(t, "removed")
		ip := ipGen.Draw(t, "first")
		for range 200 {
			before, _ := election.Owner(ip, cands, nil)
			after, _ := election.Owner(ip, without(cands, gone), nil)
			if (before == after) == (before == gone) {
				t.Fatalf("%s: owner %q before removing %q, %q after", ip, before, gone, after)
			}
			ip = ip.Next()
			if !ip.IsValid() {
				break
			}
		}
	})
}

func TestAddressesSpreadEvenlyOverNodes(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		nodes := rapid.SliceOfNDistinct(nodeNameGen, 3, 3, rapid.ID[string]).Draw(t, "nodes")
		// A pool is consecutive addresses; start anywhere but near the end.
		ip := ipGen.Draw(t, "first")
		if ip.Is4() {
			ip = netip.AddrFrom4([4]byte{ip.As4()[0], ip.As4()[1], 0, 0})
		} else {
			b := ip.As16()
			b[14], b[15] = 0, 0
			ip = netip.AddrFrom16(b)
		}
		const total = 3000
		count := map[string]int{}
		for range total {
			owner, _ := election.Owner(ip, nodes, nil)
			count[owner]++
			ip = ip.Next()
		}
		for _, n := range nodes {
			if share := float64(count[n]) / total; share < 0.25 || share > 0.42 {
				t.Fatalf("%q owns %.1f%% of %d addresses (%v); want 25-42%%", n, 100*share, total, count)
			}
		}
	})
}

// Services sharing an IP are elected once per IP: same IP, same candidates,
// same owner, whatever order the Services (and their candidates) come in.
func TestSharedIPNeverSplitsAcrossNodes(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		ip, cands := ipGen.Draw(t, "ip"), candidatesGen.Draw(t, "candidates")
		preferred := rapid.SliceOfDistinct(nodeNameGen, rapid.ID[string]).Draw(t, "preferred")
		owners := map[string]bool{}
		for i := range rapid.IntRange(2, 5).Draw(t, "services") {
			o, _ := election.Owner(ip, rapid.Permutation(cands).Draw(t, fmt.Sprint("candidates of service ", i)), preferred)
			owners[o] = true
		}
		if len(owners) != 1 {
			t.Fatalf("services sharing %s are owned by %v", ip, owners)
		}
	})
}

func without(s []string, x string) []string {
	return slices.DeleteFunc(slices.Clone(s), func(e string) bool { return e == x })
}

// OwnerByRanking over a Ranking of any superset of the candidates picks what
// Owner picks, so a cached ranking survives liveness changes.
func TestPropertyOwnerByRankingEqualsOwner(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		all := []string{"a", "b", "c", "d", "e", "f"}
		ip := netip.AddrFrom4([4]byte{198, 51, 100, rapid.Byte().Draw(t, "last")})
		cands := rapid.SliceOfDistinct(rapid.SampledFrom(all), func(s string) string { return s }).Draw(t, "cands")
		preferred := rapid.SliceOfDistinct(rapid.SampledFrom(all), func(s string) string { return s }).Draw(t, "preferred")
		want, wantOK := election.Owner(ip, cands, preferred)
		got, ok := election.OwnerByRanking(slices.Values(election.Ranking(ip, all)), func(n string) bool { return slices.Contains(cands, n) }, preferred)
		if got != want || ok != wantOK {
			t.Fatalf("OwnerByRanking = %q %v, Owner = %q %v", got, ok, want, wantOK)
		}
	})
}
