// Package netnstest holds the small helpers that tests building network
// namespaces by hand share (speaker/layer2, speaker/bgp, internal/bgprouter):
// running a command that must succeed, an `ip -batch` in a namespace, a
// buffer a child process and the test can share, and the removal of what a
// crashed run left.
package netnstest

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// Run runs a command that must succeed and returns its output; a failure
// ends the test with the command and what it said.
func Run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return string(out)
}

// IPBatch runs the lines as one `ip -n ns -batch -`.
func IPBatch(t testing.TB, ns string, lines ...string) {
	t.Helper()
	cmd := exec.Command("ip", "-n", ns, "-batch", "-")
	cmd.Stdin = strings.NewReader(strings.Join(lines, "\n") + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("ip -n %s -batch: %v: %s\nbatch was:\n%s", ns, err, bytes.TrimSpace(out), strings.Join(lines, "\n"))
	}
}

// LockedBuffer is a buffer safe for a child process's output and the test's
// reads at once.
type LockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *LockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *LockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// CleanLeftovers removes what a crashed run left: the network namespaces
// and the directories under os.TempDir() named PREFIX<pid>-..., where pid
// is no longer a running process. Before a directory goes, kill(dir) may
// kill the processes it records (routers' pid files). Runs that are still
// going (their pid alive) are left alone; so is everything without root.
func CleanLeftovers(prefix string, kill func(dir string)) {
	if os.Geteuid() != 0 {
		return
	}
	name := regexp.MustCompile(`^` + regexp.QuoteMeta(prefix) + `([0-9]+)(-|$)`)
	dead := func(base string) bool {
		m := name.FindStringSubmatch(base)
		if m == nil {
			return false
		}
		pid, _ := strconv.Atoi(m[1])
		return !pidAlive(pid)
	}
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), prefix+"*"))
	for _, dir := range dirs {
		if dead(filepath.Base(dir)) {
			if kill != nil {
				kill(dir)
			}
			_ = os.RemoveAll(dir)
		}
	}
	out, _ := exec.Command("ip", "netns", "list").Output()
	for _, line := range strings.Split(string(out), "\n") {
		ns, _, _ := strings.Cut(line, " ")
		if dead(ns) {
			_ = exec.Command("ip", "netns", "delete", ns).Run()
		}
	}
}

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
