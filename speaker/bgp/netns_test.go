package bgp

import (
	"bytes"
	"fmt"
	"github.com/heraldlb/herald/internal/netnstest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Every namespace and temporary directory the tests create is named
// hb-bgp-<pid>-<test>-<role>, so a later run can tell leftovers of a run
// that crashed (its pid is gone) from those of a run still going.
const leftoverPrefix = "hb-bgp-"

var leftoverName = regexp.MustCompile(`^hb-bgp-([0-9]+)-`)

// pidAlive reports whether a process runs under pid; a zombie (killed, not
// yet reaped) does not count.
func pidAlive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the command name, which is in parentheses.
	i := bytes.LastIndexByte(b, ')')
	return i < 0 || i+2 >= len(b) || b[i+2] != 'Z'
}

// cleanLeftovers removes what a crashed run left: its routers' processes
// (found through their pid files, and killed only if their command line
// names that run's directory), its directories and its namespaces.
func cleanLeftovers() {
	if os.Geteuid() != 0 {
		return
	}
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), leftoverPrefix+"*"))
	for _, dir := range dirs {
		m := leftoverName.FindStringSubmatch(filepath.Base(dir))
		if m == nil {
			continue
		}
		if pid, _ := strconv.Atoi(m[1]); pidAlive(pid) {
			continue
		}
		killDaemons(dir)
		_ = os.RemoveAll(dir)
	}
	out, _ := exec.Command("ip", "netns", "list").Output()
	for _, line := range strings.Split(string(out), "\n") {
		name, _, _ := strings.Cut(line, " ")
		m := leftoverName.FindStringSubmatch(name)
		if m == nil {
			continue
		}
		if pid, _ := strconv.Atoi(m[1]); pidAlive(pid) {
			continue
		}
		_ = exec.Command("ip", "netns", "delete", name).Run()
	}
}

// killDaemons kills the processes whose pid files are in dir, if their
// command line mentions dir (a pid may have been reused since).
func killDaemons(dir string) {
	pids, _ := filepath.Glob(filepath.Join(dir, "*.pid"))
	for _, f := range pids {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || pid <= 1 {
			continue
		}
		cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err == nil && bytes.Contains(cmdline, []byte(dir)) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// requireLab skips the test unless it runs as root with the named tools.
func requireLab(t *testing.T, tools ...string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: builds network namespaces and runs routers in them")
	}
	for _, tool := range append([]string{"ip"}, tools...) {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s (Debian packages: iproute2, frr, bird2)", tool)
		}
	}
}

// The tests' link: the speaker's eth0 and the router's eth0 are ports of a
// bridge in a third namespace, like two hosts on a switch. Cutting the
// speaker's link (its eth0 down) leaves the router's carrier up, as when a
// node dies: only BGP's hold timer or BFD can tell.
const (
	speakerV4 = "198.51.100.1"
	routerV4  = "198.51.100.2"
	speakerV6 = "2001:db8:1::1"
	routerV6  = "2001:db8:1::2"
	speakerAS = 64513
	routerAS  = 64512
)

type topo struct {
	t                 *testing.T
	base              string
	speaker, lan, rtr string // namespaces
	dir               string // the routers' files
}

var safeName = regexp.MustCompile(`[^a-z0-9]+`)

func newTopo(t *testing.T) *topo {
	t.Helper()
	short := safeName.ReplaceAllString(strings.ToLower(strings.TrimPrefix(t.Name(), "Test")), "")
	if len(short) > 20 {
		short = short[:20]
	}
	tp := &topo{t: t, base: fmt.Sprintf("%s%d-%s", leftoverPrefix, os.Getpid(), short)}
	tp.speaker, tp.lan, tp.rtr = tp.base+"-s", tp.base+"-l", tp.base+"-r"
	var err error
	tp.dir = filepath.Join(os.TempDir(), tp.base)
	if err = os.MkdirAll(tp.dir, 0o777); err != nil {
		t.Fatal(err)
	}
	// FRR's daemons drop to user frr and write their sockets here.
	if err := os.Chmod(tp.dir, 0o777); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		killDaemons(tp.dir)
		for _, ns := range []string{tp.speaker, tp.lan, tp.rtr} {
			_ = exec.Command("ip", "netns", "delete", ns).Run()
		}
		_ = os.RemoveAll(tp.dir)
	})
	for _, ns := range []string{tp.speaker, tp.lan, tp.rtr} {
		netnstest.Run(t, "ip", "netns", "add", ns)
		netnstest.Run(t, "ip", "-n", ns, "link", "set", "lo", "up")
	}
	for _, ns := range []string{tp.speaker, tp.rtr} {
		for _, kv := range []string{"net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0"} {
			netnstest.Run(t, "ip", "netns", "exec", ns, "sysctl", "-qw", kv)
		}
	}
	netnstest.IPBatch(t, tp.lan,
		"link add br0 type bridge",
		"link set br0 up",
		"link add ps type veth peer name eth0 netns "+tp.speaker,
		"link add pr type veth peer name eth0 netns "+tp.rtr,
		"link set ps master br0",
		"link set pr master br0",
		"link set ps up",
		"link set pr up",
	)
	netnstest.IPBatch(t, tp.speaker, "link set eth0 up", "addr add "+speakerV4+"/24 dev eth0", "addr add "+speakerV6+"/64 dev eth0")
	netnstest.IPBatch(t, tp.rtr, "link set eth0 up", "addr add "+routerV4+"/24 dev eth0", "addr add "+routerV6+"/64 dev eth0")
	return tp
}

// cutSpeakerLink takes the speaker's eth0 down.
func (tp *topo) cutSpeakerLink() { netnstest.IPBatch(tp.t, tp.speaker, "link set eth0 down") }

func (tp *topo) daemon(ns, pidFile string, argv ...string) {
	tp.t.Helper()
	logf, err := os.Create(filepath.Join(tp.dir, filepath.Base(argv[0])+".out"))
	if err != nil {
		tp.t.Fatal(err)
	}
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns}, argv...)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		tp.t.Fatalf("starting %s: %v", argv[0], err)
	}
	// The pid file lets a later run kill it should this one crash.
	if pidFile != "" {
		_ = os.WriteFile(filepath.Join(tp.dir, filepath.Base(argv[0])+".test.pid"), []byte(strconv.Itoa(cmd.Process.Pid)), 0o644)
	}
	tp.t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_, _ = cmd.Process.Wait()
		_ = logf.Close()
	})
}

func waitFor(t *testing.T, timeout time.Duration, what string, ok func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		done, detail := ok()
		if done {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v: %s", what, timeout, detail)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
