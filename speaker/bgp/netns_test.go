package bgp

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/heraldlb/herald/internal/bgprouter"
	"github.com/heraldlb/herald/internal/netnstest"
)

// Every namespace and temporary directory the tests create is named
// hb-bgp-<pid>-<test>-<role>, so a later run can tell leftovers of a run
// that crashed (its pid is gone) from those of a run still going.
const leftoverPrefix = "hb-bgp-"

// cleanLeftovers removes what a crashed run left: its routers' processes,
// its directories and its namespaces.
func cleanLeftovers() { netnstest.CleanLeftovers(leftoverPrefix, bgprouter.KillLeftovers) }

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
	t.Cleanup(func() {
		bgprouter.KillLeftovers(tp.dir)
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
