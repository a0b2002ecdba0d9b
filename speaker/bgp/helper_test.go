package bgp

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/go-logr/logr/funcr"
	"github.com/heraldlb/herald/internal/netnstest"
	api "github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	"github.com/osrg/gobgp/v4/pkg/packet/bgp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/expfmt"
)

// The tests run the Output in a process of its own inside the speaker's
// network namespace: GoBGP dials, listens and sends BFD from goroutines it
// starts itself, on whatever OS thread the runtime picks, so switching one
// locked thread into a namespace (as speaker/layer2's tests do for sockets
// they open themselves) would let GoBGP's sockets open in the machine's own
// namespace. A whole process inside the namespace cannot leak.
//
// The test binary is that process when HB_BGP_SPEAKER is set: it reads one
// JSON command per line on stdin and answers one JSON line on stdout.

const helperEnv = "HB_BGP_SPEAKER"

type command struct {
	Op       string
	Sessions []Session `json:",omitempty"`
	Routes   []Route   `json:",omitempty"`
}

type reply struct {
	Err     string      `json:",omitempty"`
	State   []PeerState `json:",omitempty"`
	RIB     *ribView    `json:",omitempty"`
	Metrics string      `json:",omitempty"`
}

// ribView is what GoBGP holds: the global RIB (what could be announced or
// installed) and, per peer, what the peer sent.
type ribView struct {
	Global []string
	AdjIn  map[string][]string
}

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) == "1" {
		os.Exit(speakerProcess(os.Stdin, os.Stdout))
	}
	cleanLeftovers()
	os.Exit(m.Run())
}

func speakerProcess(in io.Reader, out io.Writer) int {
	log := funcr.New(func(prefix, args string) {
		fmt.Fprintf(os.Stderr, "%s %s %s\n", time.Now().Format("15:04:05.000"), prefix, args)
	}, funcr.Options{Verbosity: 1})
	reg := prometheus.NewPedanticRegistry()
	o := New(log, Options{Registerer: reg})
	enc := json.NewEncoder(out)
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for sc.Scan() {
		var c command
		var r reply
		if err := json.Unmarshal(sc.Bytes(), &c); err != nil {
			r.Err = err.Error()
		} else {
			switch c.Op {
			case "sessions":
				r.Err = errString(o.SetSessions(c.Sessions))
			case "routes":
				r.Err = errString(o.SetRoutes(c.Routes))
			case "state":
				r.State = o.State()
			case "rib":
				r.RIB = o.ribView()
			case "metrics":
				b, err := testutil.CollectAndFormat(reg, expfmt.TypeTextPlain, "herald_speaker_bgp_session_up", "herald_speaker_bgp_prefixes_advertised", "herald_speaker_bgp_updates_sent_total", "herald_speaker_bgp_session_flaps_total", "herald_speaker_bgp_bfd_up")
				r.Metrics, r.Err = string(b), errString(err)
			case "detach":
				o.Detach()
				_ = enc.Encode(r)
				return 0
			case "close":
				r.Err = errString(o.Close())
				_ = enc.Encode(r)
				return 0
			default:
				r.Err = "unknown op " + c.Op
			}
		}
		if err := enc.Encode(r); err != nil {
			return 1
		}
	}
	_ = o.Close()
	return 0
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func (o *Output) ribView() *ribView {
	o.mu.Lock()
	defer o.mu.Unlock()
	v := &ribView{AdjIn: map[string][]string{}}
	if o.srv == nil {
		return v
	}
	for _, f := range []bgp.Family{bgp.RF_IPv4_UC, bgp.RF_IPv6_UC} {
		_ = o.srv.ListPath(apiutil.ListPathRequest{TableType: api.TableType_TABLE_TYPE_GLOBAL, Family: f}, func(p bgp.NLRI, _ []*apiutil.Path) {
			v.Global = append(v.Global, p.String())
		})
		for _, s := range o.running {
			_ = o.srv.ListPath(apiutil.ListPathRequest{TableType: api.TableType_TABLE_TYPE_ADJ_IN, Name: s.PeerAddress.String(), Family: f, EnableFiltered: true}, func(p bgp.NLRI, _ []*apiutil.Path) {
				v.AdjIn[s.Name] = append(v.AdjIn[s.Name], p.String())
			})
		}
	}
	return v
}

// speaker drives an Output running in a namespace.
type speaker struct {
	t      *testing.T
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	dec    *json.Decoder
	mu     sync.Mutex
	logs   *netnstest.LockedBuffer
	closed bool
}

// startSpeaker starts the Output's process in namespace ns; it is closed
// (routes withdrawn, sessions closed) when the test ends, if not before.
func startSpeaker(t *testing.T, ns string) *speaker {
	t.Helper()
	cmd := exec.Command("ip", "netns", "exec", ns, os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"=1")
	// The process dies with the test binary, crash or not.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	s := &speaker{t: t, cmd: cmd, stdin: stdin, dec: json.NewDecoder(stdout), logs: &netnstest.LockedBuffer{}}
	cmd.Stderr = s.logs
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting the speaker process in %s: %v", ns, err)
	}
	t.Cleanup(func() {
		s.close()
		if t.Failed() {
			t.Logf("speaker log:\n%s", s.logs.String())
		}
	})
	return s
}

func (s *speaker) do(c command) reply {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		s.t.Fatalf("speaker closed")
	}
	b, _ := json.Marshal(c)
	if _, err := s.stdin.Write(append(b, '\n')); err != nil {
		s.t.Fatalf("speaker %s: %v\nlog:\n%s", c.Op, err, s.logs.String())
	}
	var r reply
	if err := s.dec.Decode(&r); err != nil {
		s.t.Fatalf("speaker %s: reading the answer: %v\nlog:\n%s", c.Op, err, s.logs.String())
	}
	return r
}

func (s *speaker) setSessions(ss ...Session) {
	s.t.Helper()
	if r := s.do(command{Op: "sessions", Sessions: ss}); r.Err != "" {
		s.t.Fatalf("SetSessions: %s", r.Err)
	}
}

func (s *speaker) setRoutes(rs ...Route) {
	s.t.Helper()
	if r := s.do(command{Op: "routes", Routes: rs}); r.Err != "" {
		s.t.Fatalf("SetRoutes: %s", r.Err)
	}
}

func (s *speaker) state(name string) PeerState {
	s.t.Helper()
	for _, p := range s.do(command{Op: "state"}).State {
		if p.Name == name {
			return p
		}
	}
	s.t.Fatalf("State has no session %s", name)
	return PeerState{}
}

// waitState waits until the session's state satisfies ok.
func (s *speaker) waitState(name string, timeout time.Duration, what string, ok func(PeerState) bool) PeerState {
	s.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		st := s.state(name)
		if ok(st) {
			return st
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("session %s: %s not reached within %v; state %+v", name, what, timeout, st)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (s *speaker) waitEstablished(name string, timeout time.Duration) PeerState {
	s.t.Helper()
	return s.waitState(name, timeout, "Established", func(p PeerState) bool { return p.State == StateEstablished })
}

// detach stops the speaker without withdrawing (Output.Detach), as a
// speaker that restarts.
func (s *speaker) detach() {
	s.t.Helper()
	s.do(command{Op: "detach"})
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	_ = s.stdin.Close()
	s.checkExit(s.cmd.Wait())
}

func (s *speaker) close() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.mu.Unlock()
	r := s.do(command{Op: "close"})
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	if r.Err != "" {
		s.t.Errorf("Close: %s", r.Err)
	}
	_ = s.stdin.Close()
	done := make(chan error, 1)
	go func() { done <- s.cmd.Wait() }()
	select {
	case err := <-done:
		s.checkExit(err)
	case <-time.After(10 * time.Second):
		_ = s.cmd.Process.Kill()
		<-done
		s.t.Errorf("speaker process did not exit after Close")
	}
}

// checkExit fails the test when the speaker process failed, notably when
// the race detector (the test binary is the speaker) found a race there.
func (s *speaker) checkExit(err error) {
	if err != nil || strings.Contains(s.logs.String(), "DATA RACE") {
		s.t.Errorf("speaker process: %v (exit status 66 is the race detector's)", err)
	}
}
