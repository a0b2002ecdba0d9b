// Package netnstest holds the small helpers that tests building network
// namespaces by hand share (speaker/layer2, speaker/bgp): running a command
// that must succeed, an `ip -batch` in a namespace, and a buffer a child
// process and the test can share.
package netnstest

import (
	"bytes"
	"os/exec"
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
