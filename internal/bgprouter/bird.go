package bgprouter

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"time"
)

// BIRD is BIRD 2 in one network namespace. Its `protocol kernel` (if the
// configuration has one) writes routes into that namespace's kernel.
type BIRD struct {
	Options
	sock   string
	daemon *daemon
}

// StartBIRD starts bird with opts.Config as its bird.conf and returns once
// birdc reaches it. The configuration is checked first (bird -p), so a
// mistake is reported with BIRD's words.
func StartBIRD(ctx context.Context, opts Options) (*BIRD, error) {
	if err := opts.defaults(); err != nil {
		return nil, err
	}
	b := &BIRD{Options: opts, sock: filepath.Join(opts.Dir, "bird.ctl")}
	conf := b.confPath()
	if err := os.WriteFile(conf, []byte(opts.Config), 0o644); err != nil {
		return nil, err
	}
	if out, err := exec.CommandContext(ctx, "bird", "-p", "-c", conf).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("BIRD configuration %s: %v: %s", conf, err, strings.TrimSpace(string(out)))
	}
	birdPath, err := exec.LookPath("bird")
	if err != nil {
		return nil, err
	}
	// -f: in the foreground, so it stays our child and dies with us.
	d, err := startDaemon(b.Netns, b.LogDir, birdPath, "-f", "-c", conf, "-s", b.sock, "-P", filepath.Join(b.Dir, "bird.pid"))
	if err != nil {
		return nil, err
	}
	b.daemon = d
	err = waitUntil(ctx, "birdc to reach BIRD", []*daemon{d}, func() (bool, string) {
		out, err := b.Birdc(ctx, "show", "status")
		return err == nil && strings.Contains(out, "Daemon is up"), out
	})
	if err != nil {
		b.Stop()
		return nil, fmt.Errorf("BIRD in %s: %w", b.Netns, err)
	}
	return b, nil
}

func (b *BIRD) confPath() string { return filepath.Join(b.Dir, "bird.conf") }

// Stop stops BIRD (SIGTERM, then SIGKILL after 5 s).
func (b *BIRD) Stop() {
	if b.daemon != nil {
		b.daemon.stop(5 * time.Second)
	}
}

// Birdc runs one BIRD command (its words as arguments) and returns what
// birdc printed. "Network not found" is an answer, not an error.
func (b *BIRD) Birdc(ctx context.Context, args ...string) (string, error) {
	out, err := command(ctx, "birdc", append([]string{"-s", b.sock}, args...)...)
	if err != nil && strings.Contains(out, "Network not found") {
		return out, nil
	}
	return out, err
}

// Configure makes conf BIRD's whole configuration (`birdc configure`):
// protocols whose configuration did not change keep running, and keep
// their sessions.
func (b *BIRD) Configure(ctx context.Context, conf string) error {
	if err := os.WriteFile(b.confPath(), []byte(conf), 0o644); err != nil {
		return err
	}
	out, err := b.Birdc(ctx, "configure")
	if err != nil {
		return fmt.Errorf("BIRD in %s: configure: %w", b.Netns, err)
	}
	if !strings.Contains(out, "Reconfigured") && !strings.Contains(out, "Reconfiguration in progress") {
		return fmt.Errorf("BIRD in %s: configure: %s", b.Netns, strings.TrimSpace(out))
	}
	return nil
}

// Route returns BIRD's BGP route for exactly prefix (every path, in the
// order BIRD prints them, the best first), or nil when BIRD has none.
func (b *BIRD) Route(ctx context.Context, prefix netip.Prefix) (*Route, error) {
	out, err := b.Birdc(ctx, "show", "route", "all", "for", prefix.String())
	if err != nil {
		return nil, err
	}
	r, protos, err := parseBIRDRoute(prefix, out)
	if err != nil || r == nil {
		return nil, err
	}
	ns, err := b.Neighbors(ctx)
	if err != nil {
		return nil, err
	}
	for i, proto := range protos {
		for _, n := range ns {
			if n.Name == proto {
				r.Paths[i].From = n.Address
			}
		}
	}
	return r, nil
}

// A route's first line: "PREFIX  unicast [PROTO TIME] * (PREF) [ASPATH]";
// its other paths have blanks where PREFIX was. The "*" marks the best.
var birdRouteLine = regexp.MustCompile(`^(\S*)\s+\w+ \[(\S+)[^\]]*\]( \*)?`)

// parseBIRDRoute parses `show route all for PREFIX`; it returns the paths
// of exactly prefix and, for each, the protocol that learned it.
func parseBIRDRoute(prefix netip.Prefix, out string) (*Route, []string, error) {
	r := &Route{Prefix: prefix}
	var protos []string
	var cur *Path
	ours := false
	for _, line := range strings.Split(out, "\n") {
		if m := birdRouteLine.FindStringSubmatch(line); m != nil && !strings.HasPrefix(line, "\t") {
			if m[1] != "" {
				p, err := netip.ParsePrefix(m[1])
				ours = err == nil && p == prefix
			}
			cur = nil
			if !ours {
				continue
			}
			r.Paths = append(r.Paths, Path{Best: m[3] != ""})
			protos = append(protos, m[2])
			cur = &r.Paths[len(r.Paths)-1]
			continue
		}
		if cur == nil {
			continue
		}
		key, val, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok {
			continue
		}
		val = strings.TrimSpace(val)
		switch key {
		case "BGP.next_hop":
			for _, w := range strings.Fields(val) {
				a, err := netip.ParseAddr(w)
				if err != nil {
					return nil, nil, fmt.Errorf("BIRD's route %s: next hop %q: %w", prefix, w, err)
				}
				cur.NextHops = append(cur.NextHops, a)
			}
		case "BGP.as_path":
			cur.ASPath = val
		case "BGP.local_pref":
			v, err := parseUint32(val)
			if err != nil {
				return nil, nil, fmt.Errorf("BIRD's route %s: local_pref: %w", prefix, err)
			}
			cur.LocalPref = &v
		case "BGP.community":
			cur.Communities = birdTuples(val)
		case "BGP.large_community":
			cur.LargeCommunities = birdTuples(val)
		}
	}
	if len(r.Paths) == 0 {
		return nil, nil, nil
	}
	return r, protos, nil
}

// birdTuples turns "(64513,100) (65535,65281)" or "(64513, 1, 2)" into
// "64513:100", "65535:65281", "64513:1:2".
func birdTuples(s string) []string {
	var out []string
	for _, t := range strings.Split(s, "(")[1:] {
		t, _, _ = strings.Cut(t, ")")
		parts := strings.Split(t, ",")
		for i := range parts {
			parts[i] = strings.TrimSpace(parts[i])
		}
		out = append(out, strings.Join(parts, ":"))
	}
	return out
}

// Protocol is one line of `birdc show protocols`.
type Protocol struct {
	Name, Proto, Table string
	// State is "up", "start", "down", ...
	State string
	// Since is when the protocol entered State.
	Since time.Time
	// Info is BIRD's note: "Established", "Active", "Passive", ...
	Info string
}

// Protocols returns BIRD's protocols.
func (b *BIRD) Protocols(ctx context.Context) ([]Protocol, error) {
	out, err := b.Birdc(ctx, "show", "protocols")
	if err != nil {
		return nil, err
	}
	return parseBIRDProtocols(out, time.Now())
}

// Neighbors returns BIRD's BGP sessions (protocols with a neighbour
// address: one per neighbour of a `neighbor range` once it connects, not
// the range's own), sorted by address.
func (b *BIRD) Neighbors(ctx context.Context) ([]Neighbor, error) {
	out, err := b.Birdc(ctx, "show", "protocols", "all")
	if err != nil {
		return nil, err
	}
	return parseBIRDNeighbors(out, time.Now())
}

func parseBIRDProtocols(out string, now time.Time) ([]Protocol, error) {
	var ps []Protocol
	header := false
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || line[0] == ' ' || line[0] == '\t' {
			continue
		}
		if f[0] == "Name" && len(f) > 1 && f[1] == "Proto" {
			header = true
			continue
		}
		if !header || len(f) < 5 {
			continue
		}
		p := Protocol{Name: f[0], Proto: f[1], Table: f[2], State: f[3]}
		rest := f[4:]
		since, n, err := birdTime(rest, now)
		if err != nil {
			return nil, fmt.Errorf("BIRD's protocol %s: %w", p.Name, err)
		}
		p.Since = since
		p.Info = strings.Join(rest[n:], " ")
		ps = append(ps, p)
	}
	return ps, nil
}

// birdTime parses the time BIRD prints at the start of words: "2024-05-01
// 12:00:01" (timeformat iso long), "12:00:01.123" or "12:00:01" (a time of
// day, today's or, when that is ahead of now, yesterday's), or a date alone
// (older than a day). It returns how many words it used.
func birdTime(words []string, now time.Time) (time.Time, int, error) {
	if len(words) >= 2 {
		for _, layout := range []string{"2006-01-02 15:04:05.999999999", "2006-01-02 15:04:05"} {
			if t, err := time.ParseInLocation(layout, words[0]+" "+words[1], time.Local); err == nil {
				return t, 2, nil
			}
		}
	}
	if len(words) == 0 {
		return time.Time{}, 0, fmt.Errorf("no time")
	}
	if t, err := time.ParseInLocation("2006-01-02", words[0], time.Local); err == nil {
		return t, 1, nil
	}
	for _, layout := range []string{"15:04:05.999999999", "15:04:05"} {
		t, err := time.ParseInLocation(layout, words[0], time.Local)
		if err != nil {
			continue
		}
		y, m, d := now.Date()
		t = time.Date(y, m, d, t.Hour(), t.Minute(), t.Second(), t.Nanosecond(), time.Local)
		if t.After(now.Add(time.Second)) {
			t = t.AddDate(0, 0, -1)
		}
		return t, 1, nil
	}
	return time.Time{}, 0, fmt.Errorf("time %q: not a time BIRD prints", words[0])
}

// parseBIRDNeighbors reads `show protocols all`: each protocol's line, then
// indented details, of which BGP ones have "BGP state", "Neighbor
// address" and "Neighbor AS".
func parseBIRDNeighbors(out string, now time.Time) ([]Neighbor, error) {
	ps, err := parseBIRDProtocols(out, now)
	if err != nil {
		return nil, err
	}
	byName := map[string]Protocol{}
	for _, p := range ps {
		byName[p.Name] = p
	}
	var ns []Neighbor
	var cur *Neighbor
	flush := func() {
		if cur != nil && cur.Address.IsValid() {
			ns = append(ns, *cur)
		}
		cur = nil
	}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if line[0] != ' ' && line[0] != '\t' {
			flush()
			if p, ok := byName[f[0]]; ok && p.Proto == "BGP" {
				cur = &Neighbor{Name: p.Name}
				if p.State == "up" && p.Info == "Established" {
					cur.Uptime = now.Sub(p.Since)
				}
			}
			continue
		}
		if cur == nil {
			continue
		}
		key, val, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok {
			continue
		}
		val = strings.TrimSpace(val)
		switch key {
		case "BGP state":
			cur.State = val
			if val == "Passive" {
				cur.State = "Active"
			}
		case "Neighbor address":
			a, err := netip.ParseAddr(strings.Fields(val + " ")[0])
			if err != nil {
				return nil, fmt.Errorf("BIRD's protocol %s: neighbour address %q: %w", cur.Name, val, err)
			}
			cur.Address = a
		case "Neighbor AS":
			v, err := parseUint32(val)
			if err != nil {
				return nil, fmt.Errorf("BIRD's protocol %s: neighbour AS: %w", cur.Name, err)
			}
			cur.RemoteAS = v
		}
	}
	flush()
	for i := range ns {
		if !ns[i].Established() {
			ns[i].Uptime = 0
		}
	}
	sortNeighbors(ns)
	return ns, nil
}
