package lab

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"
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
