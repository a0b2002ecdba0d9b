package layer2

import (
	"errors"
	"fmt"
	"runtime"

	"github.com/vishvananda/netns"
)

// inNetns runs fn on an OS thread in the Announcer's network namespace, so
// the sockets fn opens and the interfaces it looks up are that namespace's.
// Sockets stay in the namespace they were opened in whichever thread later
// uses them. fn runs on a goroutine of its own: should its thread fail to
// return to its namespace, the thread stays locked and ends with it.
func (a *Announcer) inNetns(fn func() error) error {
	if !a.ns.IsOpen() {
		return fn()
	}
	res := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			res <- fmt.Errorf("read the current network namespace: %w", err)
			return
		}
		defer orig.Close()
		if orig.Equal(a.ns) {
			res <- fn()
			runtime.UnlockOSThread()
			return
		}
		if err := netns.Set(a.ns); err != nil {
			runtime.UnlockOSThread()
			res <- fmt.Errorf("enter the announcer's network namespace: %w", err)
			return
		}
		fnErr := fn()
		if err := netns.Set(orig); err != nil {
			a.log.Error(errors.Join(fnErr, err), "returning a thread from the announcer's network namespace; the thread is discarded")
			res <- fnErr
			return // still locked: the runtime ends the thread with this goroutine
		}
		runtime.UnlockOSThread()
		res <- fnErr
	}()
	return <-res
}
