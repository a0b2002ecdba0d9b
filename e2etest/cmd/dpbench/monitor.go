package main

import (
	"bufio"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"time"
)

// chainMonitor runs `nft monitor new` in a namespace and records when each
// new chain and rule was announced. The kernel announces a
// transaction's objects when it commits, so this is when a rule set change
// took effect, with no polling delay; iptables-nft's chains (this
// machine's iptables) are nf_tables chains and show up as well.
type chainMonitor struct {
	cmd  *exec.Cmd
	mu   sync.Mutex
	seen []seenLine
	done chan struct{}
}

type seenLine struct {
	at   time.Time
	line string
}

func startChainMonitor(netns string) (*chainMonitor, error) {
	// stdbuf: nft's stdout is a pipe, which libc would buffer.
	cmd := exec.Command("ip", "netns", "exec", netns, "stdbuf", "-oL", "nft", "monitor", "new")
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("nft monitor in %s: %w", netns, err)
	}
	m := &chainMonitor{cmd: cmd, done: make(chan struct{})}
	go func() {
		defer close(m.done)
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			at := time.Now()
			m.mu.Lock()
			m.seen = append(m.seen, seenLine{at, sc.Text()})
			m.mu.Unlock()
		}
	}()
	time.Sleep(500 * time.Millisecond) // subscribed before anything is timed
	return m, nil
}

// created returns when a new object (a chain, or a rule: nftables puts a
// destination in a rule of the service's chain, iptables in a chain of its
// own) whose line contains name was announced after since.
func (m *chainMonitor) created(name string, since time.Time) (time.Time, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, s := range m.seen {
		if !s.at.Before(since) && strings.Contains(s.line, name) {
			return s.at, true
		}
	}
	return time.Time{}, false
}

// forget drops what was recorded so far.
func (m *chainMonitor) forget() {
	m.mu.Lock()
	m.seen = nil
	m.mu.Unlock()
}

func (m *chainMonitor) stop() {
	_ = m.cmd.Process.Kill()
	<-m.done
	_ = m.cmd.Wait()
}
