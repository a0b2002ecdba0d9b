package layer2_test

import (
	"bufio"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr/funcr"

	"github.com/heraldlb/herald/internal/netnstest"
	"github.com/heraldlb/herald/speaker/layer2"
)

// speakerHelperEnv makes the test binary run speakerHelper instead of the
// tests: a speaker process for TestAnnouncingNeedsOnlyNetAdminAndNetRaw.
const speakerHelperEnv = "HERALD_LAYER2_SPEAKER_HELPER"

func TestMain(m *testing.M) {
	if os.Getenv(speakerHelperEnv) != "" {
		os.Exit(speakerHelper())
	}
	os.Exit(m.Run())
}

// speakerHelper announces vip4 and vip6 on eth0 of the namespace it runs in
// until its stdin closes, logging to stderr. It first prints its effective
// capabilities and then "ready".
func speakerHelper() int {
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	for _, line := range strings.Split(string(status), "\n") {
		if strings.HasPrefix(line, "CapEff:") {
			fmt.Println(line)
		}
	}
	log := funcr.New(func(prefix, args string) { fmt.Fprintln(os.Stderr, prefix, args) }, funcr.Options{Verbosity: 1})
	a := layer2.New(log, nil)
	if err := a.SetOwned(map[netip.Addr][]string{vip4: {"eth0"}, vip6: {"eth0"}}); err != nil {
		fmt.Fprintln(os.Stderr, "SetOwned:", err)
		return 1
	}
	fmt.Println("ready")
	_, _ = io.Copy(io.Discard, os.Stdin)
	if err := a.Close(); err != nil {
		fmt.Fprintln(os.Stderr, "Close:", err)
		return 1
	}
	return 0
}

// The speaker DaemonSet has NET_ADMIN and NET_RAW and nothing else (no
// CAP_SYS_ADMIN, so no setns): announcing, answering and following link
// changes must all work with just those.
func TestAnnouncingNeedsOnlyNetAdminAndNetRaw(t *testing.T) {
	t.Parallel()
	n, speaker, client := speakerAndClient(t, "arping", "ndisc6", "setpriv")
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("ip", "netns", "exec", speaker,
		"setpriv", "--bounding-set=-all,+net_admin,+net_raw", "--inh-caps=-all", "--", self)
	cmd.Env = append(os.Environ(), speakerHelperEnv+"=1")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr netnstest.LockedBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	lines := make(chan string, 16)
	go func() {
		s := bufio.NewScanner(stdout)
		for s.Scan() {
			lines <- s.Text()
		}
		close(lines)
		exited <- cmd.Wait()
	}()
	t.Cleanup(func() {
		stdin.Close()
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
		}
	})
	var capEff string
	for line := range lines {
		if c, ok := strings.CutPrefix(line, "CapEff:"); ok {
			capEff = strings.TrimSpace(c)
		}
		if line == "ready" {
			break
		}
	}
	// Bits 12 and 13: CAP_NET_ADMIN and CAP_NET_RAW.
	if capEff != "0000000000003000" {
		t.Fatalf("helper's effective capabilities are %q, want 0000000000003000 (NET_ADMIN, NET_RAW); its log:\n%s", capEff, stderr.String())
	}

	answered := func(step string) {
		t.Helper()
		var m4, m6 []string
		if _, ok := waitFor(5*time.Second, func() bool {
			m4, m6 = arping(t, client, vip4, 1), ndisc6(t, client, vip6, 1)
			return allEqual(m4, speakerMAC) && allEqual(m6, speakerMAC)
		}); !ok {
			t.Fatalf("%s: arping %v, ndisc6 %v, want the speaker %s; its log:\n%s", step, m4, m6, speakerMAC, stderr.String())
		}
	}
	answered("started")
	n.replaceEth0(speaker, "s1", speakerMAC, speakerV4, speakerV6)
	answered("after eth0 was replaced")

	stdin.Close()
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("helper exited: %v; its log:\n%s", err, stderr.String())
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("helper did not exit after its stdin closed; its log:\n%s", stderr.String())
	}
	if log := stderr.String(); strings.Contains(log, "watching links") || strings.Contains(log, "operation not permitted") {
		t.Errorf("the helper could not do everything with NET_ADMIN and NET_RAW; its log:\n%s", log)
	}
}
