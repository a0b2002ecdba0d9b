package bgprouter

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"
)

// Options say where a router runs and with what.
type Options struct {
	// Netns is the network namespace the daemons run in.
	Netns string
	// Dir holds the configuration, control sockets and pid files. It is
	// made if missing, and made writable by all: FRR's daemons drop to
	// user frr.
	Dir string
	// LogDir holds the daemons' logs; Dir when empty.
	LogDir string
	// Config is the configuration the router starts with: frr.conf syntax
	// for FRR, bird.conf syntax for BIRD.
	Config string
}

func (o *Options) defaults() error {
	if o.Netns == "" || o.Dir == "" {
		return fmt.Errorf("router options: Netns and Dir are required (got %q, %q)", o.Netns, o.Dir)
	}
	if o.LogDir == "" {
		o.LogDir = o.Dir
	}
	return prepareDir(o.Dir, o.LogDir)
}

// FRR is FRR's zebra, bgpd and bfdd in one network namespace. Zebra
// installs the routes bgpd selects (with ECMP, what `maximum-paths`
// allows) into that namespace's kernel.
type FRR struct {
	Options
	daemons []*daemon
	applied atomic.Int64 // numbers the files Apply writes
}

// StartFRR starts zebra, bgpd and bfdd with opts.Config as their frr.conf
// and returns once vtysh reaches bgpd. On error, whatever started is stopped.
func StartFRR(ctx context.Context, opts Options) (*FRR, error) {
	if err := opts.defaults(); err != nil {
		return nil, err
	}
	f := &FRR{Options: opts}
	conf := filepath.Join(f.Dir, "frr.conf")
	if err := os.WriteFile(conf, []byte(opts.Config), 0o644); err != nil {
		return nil, err
	}
	for _, name := range []string{"zebra", "bgpd", "bfdd"} {
		// The daemons open their logs as user frr: the files must exist
		// and be theirs to write wherever LogDir is.
		if err := openLog(filepath.Join(f.LogDir, name+".log")); err != nil {
			return nil, err
		}
		argv := []string{filepath.Join(FRRDaemons, name), "-f", conf, "--vty_socket", f.Dir,
			"-z", filepath.Join(f.Dir, "zserv.api"), "-i", filepath.Join(f.Dir, name+".pid"),
			"--log", "file:" + filepath.Join(f.LogDir, name+".log")}
		switch name {
		case "bfdd":
			argv = append(argv, "--bfdctl", filepath.Join(f.Dir, "bfdd.sock"))
		case "bgpd":
			argv = append(argv, "-p", "179")
		}
		d, err := startDaemon(f.Netns, f.LogDir, argv...)
		if err != nil {
			f.Stop()
			return nil, err
		}
		f.daemons = append(f.daemons, d)
		if name == "zebra" {
			// bgpd and bfdd connect to zebra's socket once, at start.
			err = waitUntil(ctx, "zebra's socket", f.daemons, func() (bool, string) {
				_, err := os.Stat(filepath.Join(f.Dir, "zserv.api"))
				return err == nil, fmt.Sprint(err)
			})
			if err != nil {
				f.Stop()
				return nil, fmt.Errorf("FRR in %s: %w", f.Netns, err)
			}
		}
	}
	err := waitUntil(ctx, "vtysh to reach bgpd and bfdd", f.daemons, func() (bool, string) {
		out, err := f.Vtysh(ctx, "show bgp summary json", "show bfd peers json")
		return err == nil && strings.Contains(out, "{") && !strings.Contains(out, "is not running"), out
	})
	if err != nil {
		f.Stop()
		return nil, fmt.Errorf("FRR in %s: %w", f.Netns, err)
	}
	return f, nil
}

func openLog(path string) error {
	lf, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o666)
	if err != nil {
		return err
	}
	lf.Close()
	return os.Chmod(path, 0o666)
}

// Stop stops the daemons (SIGTERM, then SIGKILL after 5 s).
func (f *FRR) Stop() {
	for i := len(f.daemons) - 1; i >= 0; i-- {
		f.daemons[i].stop(5 * time.Second)
	}
}

// Vtysh runs the commands (each as a -c) and returns what vtysh printed.
func (f *FRR) Vtysh(ctx context.Context, cmds ...string) (string, error) {
	args := []string{"--vty_socket", f.Dir}
	for _, c := range cmds {
		args = append(args, "-c", c)
	}
	return command(ctx, "vtysh", args...)
}

// Apply adds configuration to the running one, as `vtysh -f` does: conf is
// in frr.conf syntax, applied line by line in configuration mode; what it
// does not mention stays as it is (so neighbours it leaves alone keep
// their sessions).
func (f *FRR) Apply(ctx context.Context, conf string) error {
	path := filepath.Join(f.Dir, fmt.Sprintf("apply-%d.conf", f.applied.Add(1)))
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		return err
	}
	out, err := command(ctx, "vtysh", "--vty_socket", f.Dir, "-f", path)
	if err != nil {
		return fmt.Errorf("FRR in %s: applying %s: %w", f.Netns, path, err)
	}
	// vtysh -f reports a line it refused and goes on; say so.
	if i := strings.Index(out, "% "); i >= 0 {
		return fmt.Errorf("FRR in %s: applying %s: %s", f.Netns, path, strings.TrimSpace(out[i:]))
	}
	return nil
}

// Replace makes conf the whole routing configuration: every BGP instance,
// the BFD configuration, route maps, prefix lists and community lists go,
// then conf is applied. Sessions are reset.
func (f *FRR) Replace(ctx context.Context, conf string) error {
	running, err := f.Vtysh(ctx, "show running-config")
	if err != nil {
		return err
	}
	var remove []string
	for _, line := range strings.Split(running, "\n") {
		fields := strings.Fields(line)
		if len(line) == 0 || line[0] == ' ' || len(fields) == 0 {
			continue
		}
		switch {
		case fields[0] == "router" && len(fields) >= 3 && fields[1] == "bgp":
			remove = append(remove, "no "+strings.Join(fields[:3], " "))
		case line == "bfd":
			remove = append(remove, "no bfd")
		case fields[0] == "route-map" && len(fields) >= 2:
			remove = append(remove, "no route-map "+fields[1])
		case (fields[0] == "ip" || fields[0] == "ipv6") && len(fields) >= 3 && fields[1] == "prefix-list":
			remove = append(remove, "no "+strings.Join(fields[:3], " "))
		case fields[0] == "bgp" && len(fields) >= 4 && strings.HasSuffix(fields[1], "community-list"):
			remove = append(remove, "no "+strings.Join(fields[:4], " "))
		}
	}
	// The default BGP instance goes last: FRR refuses to delete it while
	// VRF instances exist.
	for i, r := range remove {
		if strings.HasPrefix(r, "no router bgp") && !strings.Contains(r, " vrf ") && i != len(remove)-1 {
			remove = append(append(remove[:i:i], remove[i+1:]...), r)
			break
		}
	}
	if len(remove) > 0 {
		if err := f.Apply(ctx, strings.Join(remove, "\n")+"\n"); err != nil {
			return err
		}
	}
	return f.Apply(ctx, conf)
}

// frrRoute is `show bgp <family> unicast <prefix> json`.
type frrRoute struct {
	Prefix string `json:"prefix"`
	Paths  []struct {
		Valid     bool `json:"valid"`
		Stale     bool `json:"stale"`
		Multipath bool `json:"multipath"`
		Bestpath  *struct {
			Overall bool `json:"overall"`
		} `json:"bestpath"`
		Community *struct {
			String string `json:"string"`
		} `json:"community"`
		LargeCommunity *struct {
			String string `json:"string"`
		} `json:"largeCommunity"`
		LocPrf   *uint32 `json:"locPrf"`
		Nexthops []struct {
			IP string `json:"ip"`
		} `json:"nexthops"`
		ASPath struct {
			String string `json:"string"`
		} `json:"aspath"`
		Peer struct {
			PeerID string `json:"peerId"`
		} `json:"peer"`
	} `json:"paths"`
}

// Route returns FRR's BGP route for exactly prefix (its valid paths), or
// nil when FRR has none.
func (f *FRR) Route(ctx context.Context, prefix netip.Prefix) (*Route, error) {
	out, err := f.Vtysh(ctx, fmt.Sprintf("show bgp %s unicast %s json", familyWord(prefix), prefix))
	if err != nil {
		return nil, err
	}
	return parseFRRRoute(prefix, out)
}

func parseFRRRoute(prefix netip.Prefix, out string) (*Route, error) {
	var fr frrRoute
	if err := json.Unmarshal([]byte(out), &fr); err != nil {
		return nil, fmt.Errorf("FRR's route %s: %w: %s", prefix, err, out)
	}
	if fr.Prefix == "" {
		return nil, nil
	}
	if p, err := netip.ParsePrefix(fr.Prefix); err != nil || p != prefix {
		return nil, nil
	}
	r := &Route{Prefix: prefix}
	for _, fp := range fr.Paths {
		if !fp.Valid {
			continue
		}
		p := Path{
			Best:      fp.Bestpath != nil && fp.Bestpath.Overall,
			Multipath: fp.Multipath,
			Stale:     fp.Stale,
			LocalPref: fp.LocPrf,
			ASPath:    fp.ASPath.String,
		}
		p.From, _ = netip.ParseAddr(fp.Peer.PeerID)
		for _, nh := range fp.Nexthops {
			a, err := netip.ParseAddr(nh.IP)
			if err != nil {
				return nil, fmt.Errorf("FRR's route %s: next hop %q: %w", prefix, nh.IP, err)
			}
			p.NextHops = append(p.NextHops, a)
		}
		if fp.Community != nil {
			for _, c := range strings.Fields(fp.Community.String) {
				p.Communities = append(p.Communities, numericCommunity(c))
			}
		}
		if fp.LargeCommunity != nil {
			p.LargeCommunities = strings.Fields(fp.LargeCommunity.String)
		}
		r.Paths = append(r.Paths, p)
	}
	if len(r.Paths) == 0 {
		return nil, nil
	}
	return r, nil
}

// frrNeighbor is one entry of `show bgp neighbors json`.
type frrNeighbor struct {
	RemoteAS    uint32 `json:"remoteAs"`
	BGPState    string `json:"bgpState"`
	UpMsec      int64  `json:"bgpTimerUpMsec"`
	PeerBFDInfo *struct {
		Status string `json:"status"`
	} `json:"peerBfdInfo"`
}

// Neighbors returns FRR's BGP neighbours, sorted by address; a listen
// range's peers appear once they connect.
func (f *FRR) Neighbors(ctx context.Context) ([]Neighbor, error) {
	out, err := f.Vtysh(ctx, "show bgp neighbors json")
	if err != nil {
		return nil, err
	}
	return parseFRRNeighbors(out)
}

func parseFRRNeighbors(out string) ([]Neighbor, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal([]byte(out), &raw); err != nil {
		return nil, fmt.Errorf("FRR's neighbours: %w: %s", err, out)
	}
	var ns []Neighbor
	for name, msg := range raw {
		addr, err := netip.ParseAddr(name)
		if err != nil {
			continue // an interface-named (unnumbered) neighbour or a summary key
		}
		var fn frrNeighbor
		if err := json.Unmarshal(msg, &fn); err != nil {
			return nil, fmt.Errorf("FRR's neighbour %s: %w", name, err)
		}
		n := Neighbor{Name: name, Address: addr, RemoteAS: fn.RemoteAS, State: fn.BGPState}
		if n.Established() {
			n.Uptime = time.Duration(fn.UpMsec) * time.Millisecond
		}
		if fn.PeerBFDInfo != nil {
			n.BFD = fn.PeerBFDInfo.Status
		}
		ns = append(ns, n)
	}
	sortNeighbors(ns)
	return ns, nil
}
