package bgprouter

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
)

// KernelRoute is the kernel's route for a prefix in a namespace's main
// table.
type KernelRoute struct {
	Prefix netip.Prefix
	// Protocol is who installed it: "bgp" (FRR's zebra), "bird", "kernel", ...
	Protocol string
	// NextHops are its gateways, sorted: several for an ECMP route.
	NextHops []netip.Addr
	// Devices are the links it leaves through, one per next hop.
	Devices []string
}

type ipRoute struct {
	Dst      string `json:"dst"`
	Protocol string `json:"protocol"`
	Gateway  string `json:"gateway"`
	Dev      string `json:"dev"`
	Nexthops []struct {
		Gateway string `json:"gateway"`
		Dev     string `json:"dev"`
	} `json:"nexthops"`
}

// KernelRouteIn returns the route for exactly prefix in namespace netns's
// main table (`ip -j route show PREFIX`), or nil when there is none.
func KernelRouteIn(ctx context.Context, netns string, prefix netip.Prefix) (*KernelRoute, error) {
	fam := "-4"
	if prefix.Addr().Is6() {
		fam = "-6"
	}
	out, err := command(ctx, "ip", "-n", netns, "-j", fam, "route", "show", "exact", prefix.String())
	if err != nil {
		return nil, err
	}
	return parseKernelRoute(prefix, out)
}

func parseKernelRoute(prefix netip.Prefix, out string) (*KernelRoute, error) {
	var rs []ipRoute
	if err := json.Unmarshal([]byte(out), &rs); err != nil {
		return nil, fmt.Errorf("kernel route %s: %w: %s", prefix, err, out)
	}
	for _, r := range rs {
		// ip prints a host route's dst without its length.
		dst, err := netip.ParsePrefix(r.Dst)
		if err != nil {
			a, err2 := netip.ParseAddr(r.Dst)
			if err2 != nil {
				continue
			}
			dst = netip.PrefixFrom(a, a.BitLen())
		}
		if dst != prefix {
			continue
		}
		kr := &KernelRoute{Prefix: prefix, Protocol: r.Protocol}
		add := func(gw, dev string) error {
			if gw != "" {
				a, err := netip.ParseAddr(gw)
				if err != nil {
					return fmt.Errorf("kernel route %s: gateway %q: %w", prefix, gw, err)
				}
				kr.NextHops = append(kr.NextHops, a)
			}
			if dev != "" {
				kr.Devices = append(kr.Devices, dev)
			}
			return nil
		}
		if err := add(r.Gateway, r.Dev); err != nil {
			return nil, err
		}
		for _, nh := range r.Nexthops {
			if err := add(nh.Gateway, nh.Dev); err != nil {
				return nil, err
			}
		}
		slices.SortFunc(kr.NextHops, func(a, b netip.Addr) int { return a.Compare(b) })
		return kr, nil
	}
	return nil, nil
}
