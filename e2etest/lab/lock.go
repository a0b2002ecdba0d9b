package lab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"
	"time"
)

// lockPath is machine-wide: the lab's namespace names are too, so two labs
// (say a test run and a benchmark, from different checkouts) must not overlap.
const lockPath = "/run/herald-lab.lock"

// ErrBusy is the error of Up while another lab holds the machine; callers
// that can wait retry on errors.Is(err, ErrBusy).
var ErrBusy = errors.New("another lab is running on this machine")

// lockMachine takes the machine-wide lab lock, or says who holds it. The
// kernel drops the lock when its holder dies, so a crashed lab never blocks
// the next one.
func lockMachine(dir string) (*os.File, error) {
	f, err := os.OpenFile(lockPath, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	how := syscall.LOCK_EX | syscall.LOCK_NB
	if os.Getenv("HERALD_LAB_WAIT") != "" {
		// Queue behind the lab that holds the machine instead of failing.
		how = syscall.LOCK_EX
	}
	if err := syscall.Flock(int(f.Fd()), how); err != nil {
		holder, _ := os.ReadFile(lockPath)
		f.Close()
		return nil, fmt.Errorf("%w (%s); stop it first (make lab-down in its checkout)", ErrBusy, strings.TrimSpace(string(holder)))
	}
	_ = f.Truncate(0)
	_, _ = fmt.Fprintf(f, "pid %d, state in %s\n", os.Getpid(), dir)
	return f, nil
}

// UpWaiting is Up that, while another lab holds the machine, retries every
// 3 s for up to wait, telling say each time.
func UpWaiting(ctx context.Context, cfg Config, wait time.Duration, say func(error)) (*Lab, error) {
	deadline := time.Now().Add(wait)
	for {
		l, err := Up(ctx, cfg)
		if !errors.Is(err, ErrBusy) || time.Now().After(deadline) {
			return l, err
		}
		say(err)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(3 * time.Second):
		}
	}
}
