// Package bgprouter runs real BGP routers for Herald's tests and lab: FRR
// (zebra, bgpd, bfdd; driven through vtysh) and BIRD 2 (driven through
// birdc), each in a given network namespace, with its configuration,
// control sockets, pid files and logs under a given directory, never the
// machine's /etc/frr, /etc/bird or their services. It reads back what
// tests assert on, parsed: a prefix's BGP paths (next hops, communities,
// large communities, local preference), the neighbours' session state and
// uptime, and the route the namespace's kernel holds for a prefix (ECMP next
// hops included).
//
// FRR and BIRD come from Debian's packages frr and bird2 (FRR 8.4, BIRD
// 2.0.12 are what the project runs on).
package bgprouter

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// FRRDaemons is where Debian installs FRR's daemons.
const FRRDaemons = "/usr/lib/frr"

// Missing reports which of the programs a router needs are not installed
// (nil when all are): the frr package for FRR, bird2 for BIRD, iproute2 for
// both. Tests skip with it.
func Missing() []string {
	var missing []string
	for _, p := range []string{"ip", "vtysh", "bird", "birdc"} {
		if _, err := exec.LookPath(p); err != nil {
			missing = append(missing, p)
		}
	}
	for _, d := range []string{"zebra", "bgpd", "bfdd"} {
		if _, err := os.Stat(filepath.Join(FRRDaemons, d)); err != nil {
			missing = append(missing, filepath.Join(FRRDaemons, d))
		}
	}
	return missing
}

// startWait bounds how long a router may take to answer when the caller's
// context has no deadline.
const startWait = 15 * time.Second

// daemon is one router process, started as `ip netns exec NS argv...` (ip
// execs, so the pid is the daemon's). It dies with the process that started
// it (Pdeathsig), crash or not.
type daemon struct {
	name string
	cmd  *exec.Cmd
	out  *os.File
	done chan struct{}
	err  error
}

func startDaemon(netns, logDir string, argv ...string) (*daemon, error) {
	name := filepath.Base(argv[0])
	out, err := os.Create(filepath.Join(logDir, name+".out"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command("ip", append([]string{"netns", "exec", netns}, argv...)...)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		out.Close()
		return nil, fmt.Errorf("start %s in namespace %s: %w", name, netns, err)
	}
	d := &daemon{name: name, cmd: cmd, out: out, done: make(chan struct{})}
	go func() {
		d.err = cmd.Wait()
		out.Close()
		close(d.done)
	}()
	return d, nil
}

// exited returns the daemon's exit error if it has ended.
func (d *daemon) exited() (error, bool) {
	select {
	case <-d.done:
		if d.err == nil {
			return fmt.Errorf("%s exited", d.name), true
		}
		return fmt.Errorf("%s exited: %w", d.name, d.err), true
	default:
		return nil, false
	}
}

// stop sends SIGTERM, then SIGKILL after grace.
func (d *daemon) stop(grace time.Duration) {
	if _, ok := d.exited(); ok {
		return
	}
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
	case <-time.After(grace):
		_ = d.cmd.Process.Kill()
		<-d.done
	}
}

// prepareDir makes dir (and logDir) exist and writable by FRR's daemons,
// which drop to user frr after start.
func prepareDir(dir, logDir string) error {
	for _, d := range []string{dir, logDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	return os.Chmod(dir, 0o777)
}

// waitUntil polls ok every 20 ms until it holds, the context ends or one of
// the daemons exits.
func waitUntil(ctx context.Context, what string, ds []*daemon, ok func() (bool, string)) error {
	if _, has := ctx.Deadline(); !has {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, startWait)
		defer cancel()
	}
	for {
		done, detail := ok()
		if done {
			return nil
		}
		for _, d := range ds {
			if err, gone := d.exited(); gone {
				return fmt.Errorf("waiting for %s: %w", what, err)
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w (last answer: %s)", what, ctx.Err(), strings.TrimSpace(detail))
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// KillLeftovers kills the router processes whose pid files are in dir, if
// their command line still names dir (a pid may have been reused): what a
// test or lab that crashed left running.
func KillLeftovers(dir string) {
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

// Tail returns the last n bytes of a router's log file in logDir (name is
// e.g. "bgpd.log" or "bird.log"), for a failing test to print.
func Tail(logDir, name string, n int) string {
	b, err := os.ReadFile(filepath.Join(logDir, name))
	if err != nil {
		return err.Error()
	}
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// command runs name args in the machine's namespace (vtysh and birdc reach
// their daemons through unix sockets, so they need no namespace) and
// returns what it printed.
func command(ctx context.Context, name string, args ...string) (string, error) {
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return string(out), nil
}
