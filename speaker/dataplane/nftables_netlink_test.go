package dataplane

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/types"

	"github.com/heraldlb/herald/internal/netnstest"
)

// netlinkBase is a table with something of every kind the netlink path
// meets: both families, the three protocols and schedulers, masqueraded
// and local destinations, virtual services without destinations, and one
// with affinity that stays as it is.
func netlinkBase() RuleSet {
	vs := func(ip string, proto Protocol, port uint16, sched Scheduler, masq bool, dests ...Destination) VirtualService {
		return VirtualService{
			Key:     Key{IP: netip.MustParseAddr(ip), Protocol: proto, Port: port},
			Service: types.NamespacedName{Namespace: "ns", Name: fmt.Sprintf("svc-%d", port)}, PortName: "p",
			Destinations: dests, Masquerade: masq, Scheduler: sched,
		}
	}
	d := func(addr string, port uint16) Destination {
		return Destination{Addr: netip.MustParseAddr(addr), Port: port}
	}
	sticky := vs("198.51.100.70", TCP, 90, Random, true, d("203.0.113.11", 8080), d("203.0.113.21", 30090))
	sticky.Affinity = 3 * time.Hour
	rs := RuleSet{Services: []VirtualService{
		vs("198.51.100.65", TCP, 80, Random, true, d("203.0.113.11", 8080), d("203.0.113.21", 30080), d("203.0.113.22", 30080)),
		vs("198.51.100.65", UDP, 53, RoundRobin, false, d("203.0.113.11", 5353), d("203.0.113.12", 5353)),
		vs("198.51.100.66", SCTP, 70, SourceHash, true, d("203.0.113.11", 7070), d("203.0.113.21", 30070), d("203.0.113.22", 30070)),
		vs("198.51.100.67", TCP, 81, Random, false),
		vs("198.51.100.68", TCP, 82, Random, true, d("203.0.113.21", 30082)),
		sticky,
		vs("2001:db8:100::1", TCP, 80, SourceHash, false, d("2001:db8:2::11", 8080), d("2001:db8:2::21", 30080)),
		vs("2001:db8:100::2", UDP, 83, RoundRobin, true, d("2001:db8:2::11", 8083), d("2001:db8:2::21", 30083), d("2001:db8:2::22", 30083)),
		vs("2001:db8:100::3", TCP, 84, Random, false),
	}}
	slices.SortFunc(rs.Services, func(a, b VirtualService) int { return a.Key.Compare(b.Key) })
	return rs
}

// edit is netlinkBase changed by fn on a copy.
func edit(fn func(s []VirtualService) []VirtualService) RuleSet {
	rs := netlinkBase()
	for i := range rs.Services {
		rs.Services[i].Destinations = slices.Clone(rs.Services[i].Destinations)
	}
	rs.Services = fn(rs.Services)
	slices.SortFunc(rs.Services, func(a, b VirtualService) int { return a.Key.Compare(b.Key) })
	return rs
}

func find(s []VirtualService, ip string, port uint16) *VirtualService {
	for i := range s {
		if s[i].IP == netip.MustParseAddr(ip) && s[i].Port == port {
			return &s[i]
		}
	}
	panic("no " + ip)
}

// A partial sync over netlink must leave the table exactly as nft leaves
// it after a full sync of the same RuleSet: the same `nft list table`, and
// the same bytecode in each chain, rule by rule.
func TestNFTablesNetlinkPartialMatchesNft(t *testing.T) {
	needRoot(t, "nft", "ip")
	ns := emptyNS(t, "nl")
	ctx := context.Background()
	for _, c := range []struct {
		name       string
		to         RuleSet
		viaNetlink bool
	}{
		{"OneLosesADestination", edit(func(s []VirtualService) []VirtualService {
			vs := find(s, "198.51.100.65", 80)
			vs.Destinations = vs.Destinations[1:]
			return s
		}), true},
		{"DestinationsMoveInBothFamilies", edit(func(s []VirtualService) []VirtualService {
			find(s, "198.51.100.66", 70).Destinations[0].Addr = netip.MustParseAddr("203.0.113.12")
			v6 := find(s, "2001:db8:100::1", 80)
			v6.Destinations = append(v6.Destinations, Destination{Addr: netip.MustParseAddr("2001:db8:2::22"), Port: 30080})
			v6.Masquerade = true
			find(s, "2001:db8:100::2", 83).Destinations[2].Port = 31083
			return s
		}), true},
		{"SchedulerChanges", edit(func(s []VirtualService) []VirtualService {
			find(s, "198.51.100.65", 53).Scheduler = SourceHash
			find(s, "198.51.100.66", 70).Scheduler = RoundRobin
			return s
		}), true},
		{"LastDestinationGoes", edit(func(s []VirtualService) []VirtualService {
			find(s, "198.51.100.68", 82).Destinations = nil
			find(s, "2001:db8:100::1", 80).Destinations = nil
			return s
		}), true},
		{"ServicesRemovedAndOneWithoutDestinationsAdded", edit(func(s []VirtualService) []VirtualService {
			s = slices.DeleteFunc(s, func(vs VirtualService) bool {
				return vs.IP == netip.MustParseAddr("198.51.100.67") || vs.IP == netip.MustParseAddr("2001:db8:100::2")
			})
			return append(s, VirtualService{Key: Key{IP: netip.MustParseAddr("198.51.100.69"), Protocol: UDP, Port: 85},
				Service: types.NamespacedName{Namespace: "ns", Name: "new"}, Scheduler: Random})
		}), true},
		// What needs a new chain or a set goes through nft.
		{"FirstDestinationNeedsAChain", edit(func(s []VirtualService) []VirtualService {
			find(s, "198.51.100.67", 81).Destinations = []Destination{{Addr: netip.MustParseAddr("203.0.113.11"), Port: 8081}}
			return s
		}), false},
		{"AffinityNeedsSets", edit(func(s []VirtualService) []VirtualService {
			vs := find(s, "198.51.100.70", 90)
			vs.Destinations = vs.Destinations[:1]
			find(s, "198.51.100.65", 80).Destinations[0].Port = 8081
			return s
		}), false},
	} {
		t.Run(c.name, func(t *testing.T) {
			var got, want string
			var partial *NFTables
			err := inNS(ns, func() error {
				b, err := NewNFTables(NFTablesOptions{})
				if err != nil {
					return err
				}
				partial = b
				if _, err := b.Sync(ctx, netlinkBase()); err != nil {
					return err
				}
				if st, err := b.Sync(ctx, c.to); err != nil || st.Full {
					return fmt.Errorf("partial sync: %+v, %v", st, err)
				}
				if got, err = nftTableListing(); err != nil {
					return err
				}
				// A restarted backend's full sync of the same RuleSet.
				b2, err := NewNFTables(NFTablesOptions{})
				if err != nil {
					return err
				}
				if _, err := b2.Sync(ctx, c.to); err != nil {
					return err
				}
				want, err = nftTableListing()
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
			if via := partial.netlinkSyncs == 1; via != c.viaNetlink {
				t.Errorf("partial sync over netlink: %v; want %v", via, c.viaNetlink)
			}
			if got != want {
				t.Errorf("after the partial sync:\n%s\nafter a full sync:\n%s", got, want)
			}
		})
	}
}

// emptyNS is a new network namespace, deleted after the test.
func emptyNS(t testing.TB, suffix string) string {
	ns := fmt.Sprintf("%s%d-%s", leftoverPrefix, os.Getpid(), suffix)
	netnstest.Run(t, "ip", "netns", "add", ns)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "delete", ns).Run() })
	return ns
}

// nftTableListing is `nft list table inet herald` and the bytecode of
// `nft --debug=netlink list table inet herald`, in an order that only
// what is programmed decides: lines of the listing sorted (partial syncs
// change the order of chains), rules per chain in their order with their
// handles left out, elements per map sorted.
func nftTableListing() (string, error) {
	list, err := exec.Command("nft", "list", "table", "inet", "herald").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("nft list: %v: %s", err, list)
	}
	debug, err := exec.Command("nft", "--debug=netlink", "list", "table", "inet", "herald").Output()
	if err != nil {
		return "", fmt.Errorf("nft --debug=netlink list: %v", err)
	}
	blocks := map[string][]string{} // chain or @map: its rules' bytecode, or its elements
	var cur string
	for line := range strings.SplitSeq(string(debug), "\n") {
		if strings.HasPrefix(line, "table ") {
			break // the listing again
		}
		switch {
		case line == "":
		case strings.HasPrefix(line, "inet herald "):
			f := strings.Fields(line) // inet herald <chain> <handle> [<position>], or inet herald @<map>
			cur = f[2]
			if !strings.HasPrefix(cur, "@") {
				blocks[cur] = append(blocks[cur], "rule:")
			}
		default:
			blocks[cur] = append(blocks[cur], line)
		}
	}
	// One element per line: the elements' order is the kernel's.
	var lines []string
	inElements := false
	for line := range strings.SplitSeq(string(list), "\n") {
		line = strings.TrimRight(strings.TrimSpace(line), ",")
		if rest, ok := strings.CutPrefix(line, "elements = { "); ok {
			lines, line, inElements = append(lines, "elements = {"), rest, true
		}
		if rest, ok := strings.CutSuffix(line, " }"); ok && inElements {
			lines, line, inElements = append(lines, "}"), rest, false
		}
		lines = append(lines, line)
	}
	var b strings.Builder
	b.WriteString(strings.Join(sortedStrings(lines), "\n"))
	for _, name := range slices.Sorted(func(yield func(string) bool) {
		for k := range blocks {
			if !yield(k) {
				return
			}
		}
	}) {
		lines := blocks[name]
		if strings.HasPrefix(name, "@") {
			lines = sortedStrings(lines)
		}
		fmt.Fprintf(&b, "\n%s\n%s", name, strings.Join(lines, "\n"))
	}
	return b.String(), nil
}

// A netlink batch is one transaction: when part of it fails (here the
// chain of one of the two changed services was removed behind the
// backend's back), nothing of it is applied, and the next sync is full.
func TestNFTablesNetlinkPartialFailsWhole(t *testing.T) {
	needRoot(t, "nft", "ip")
	ns := emptyNS(t, "nlfail")
	ctx := context.Background()
	to := edit(func(s []VirtualService) []VirtualService {
		find(s, "198.51.100.65", 80).Destinations[0].Port = 8081
		find(s, "198.51.100.68", 82).Destinations[0].Port = 30083
		return s
	})
	chain := func(name string) (string, error) {
		out, err := exec.Command("nft", "list", "chain", "inet", "herald", name).CombinedOutput()
		if err != nil {
			return "", fmt.Errorf("nft list chain %s: %v: %s", name, err, out)
		}
		return string(out), nil
	}
	err := inNS(ns, func() error {
		b, err := NewNFTables(NFTablesOptions{})
		if err != nil {
			return err
		}
		if _, err := b.Sync(ctx, netlinkBase()); err != nil {
			return err
		}
		before, err := chain("svc-198.51.100.65-tcp-80")
		if err != nil {
			return err
		}
		rm := exec.Command("nft", "-f", "-")
		rm.Stdin = strings.NewReader("delete element inet herald services-ip4 { 198.51.100.68 . tcp . 82 }\n" +
			"flush chain inet herald svc-198.51.100.68-tcp-82\ndelete chain inet herald svc-198.51.100.68-tcp-82\n")
		if out, err := rm.CombinedOutput(); err != nil {
			return fmt.Errorf("removing a chain: %v: %s", err, out)
		}
		if st, err := b.Sync(ctx, to); err == nil || b.netlinkSyncs != 1 {
			return fmt.Errorf("partial sync over netlink (%d) without its chain: %+v, %v; want an error", b.netlinkSyncs, st, err)
		}
		if after, err := chain("svc-198.51.100.65-tcp-80"); err != nil || after != before {
			return fmt.Errorf("after the failed batch, the other service's chain:\n%s\nwas:\n%s (%v)", after, before, err)
		}
		if st, err := b.Sync(ctx, to); err != nil || !st.Full {
			return fmt.Errorf("the sync after: %+v, %v; want a full one", st, err)
		}
		got, err := nftTableListing()
		if err != nil {
			return err
		}
		b2, err := NewNFTables(NFTablesOptions{})
		if err != nil {
			return err
		}
		if _, err := b2.Sync(ctx, to); err != nil {
			return err
		}
		if want, err := nftTableListing(); err != nil || got != want {
			return fmt.Errorf("after the full sync:\n%s\nwant:\n%s (%v)", got, want, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
