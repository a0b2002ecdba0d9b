package lab

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/vishvananda/netns"
)

// run runs a command to completion and returns its error with its output, so a
// failing `ip` call says what it was asked and what it answered.
func run(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// ipBatch runs iproute2 commands, one per line, inside network namespace ns
// ("" for the machine's own namespace) in a single process.
func ipBatch(ns string, lines ...string) error {
	args := []string{"-batch", "-"}
	if ns != "" {
		args = append([]string{"-n", ns}, args...)
	}
	cmd := exec.Command("ip", args...)
	cmd.Stdin = strings.NewReader(strings.Join(lines, "\n") + "\n")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip -n %s -batch: %w: %s\nbatch was:\n%s", ns, err, bytes.TrimSpace(out), strings.Join(lines, "\n"))
	}
	return nil
}

// sysctl writes a sysctl inside namespace ns. /proc/sys/net is per namespace,
// so this must run in ns, which `ip netns exec` arranges.
func sysctl(ns, key, value string) error {
	return run("ip", "netns", "exec", ns, "sysctl", "-qw", key+"="+value)
}

// inNetns runs fn on an OS thread that has joined namespace ns, then returns the
// thread to the original namespace. Sockets created by fn stay in ns for their
// whole life, whichever goroutine later uses them.
func inNetns(ns string, fn func() error) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		return err
	}
	defer orig.Close()
	target, err := netns.GetFromName(ns)
	if err != nil {
		return fmt.Errorf("network namespace %s: %w", ns, err)
	}
	defer target.Close()
	if err := netns.Set(target); err != nil {
		return fmt.Errorf("enter network namespace %s: %w", ns, err)
	}
	fnErr := fn()
	if err := netns.Set(orig); err != nil {
		// The thread is in the wrong namespace and must not be reused: keep it
		// locked so the runtime discards it when this goroutine exits.
		runtime.LockOSThread()
		return fmt.Errorf("return from network namespace %s: %w", ns, err)
	}
	return fnErr
}

// process is a long-running child of the lab, with its output in a log file.
type process struct {
	name    string
	ns      string
	argv    []string // as given, before any netns wrapper
	logPath string
	cmd     *exec.Cmd
	done    chan struct{}
	err     error
}

// startProcess starts argv, in namespace ns when ns is not empty, logging to
// logPath. The child is killed if the lab process dies (Pdeathsig), and its pid
// is also recorded by the caller so a crashed lab's leftovers can be found.
func startProcess(ctx context.Context, name, ns, logPath string, argv ...string) (*process, error) {
	return launch(&process{name: name, ns: ns, argv: argv, logPath: logPath}, os.O_TRUNC)
}

// launch starts p.argv as p describes; logFlag is os.O_TRUNC for a new log,
// os.O_APPEND to continue one (a restart).
func launch(p *process, logFlag int) (*process, error) {
	argv := p.argv
	if p.ns != "" {
		argv = append([]string{"ip", "netns", "exec", p.ns}, argv...)
	}
	logf, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|logFlag, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", p.name, err)
	}
	p = &process{name: p.name, ns: p.ns, argv: p.argv, logPath: p.logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	return p, nil
}

// exited reports whether the process has ended.
func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM to the process group, then SIGKILL if it has not exited
// within grace.
func (p *process) stop(grace time.Duration) {
	if p.exited() {
		return
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	}
}
