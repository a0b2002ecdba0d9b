package benchkit

import (
	"context"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// CreateAll creates the objects build(i) returns for i in [0, n) with
// workers concurrent clients (Create each), printing progress to log every
// 1,000 and at the end.
func CreateAll(ctx context.Context, c client.Client, what string, n, workers int, log io.Writer, build func(i int) []client.Object) error {
	start := time.Now()
	var done atomic.Int64
	err := ForEach(ctx, n, workers, func(i int) error {
		for _, o := range build(i) {
			if err := Create(ctx, c, o, log); err != nil {
				return fmt.Errorf("create %s %s: %w", what, o.GetName(), err)
			}
		}
		if d := done.Add(1); d%1000 == 0 {
			fmt.Fprintf(log, "%d/%d %s created in %.0fs (%.1f/s)\n", d, n, what, time.Since(start).Seconds(), float64(d)/time.Since(start).Seconds())
		}
		return nil
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(log, "%d %s created in %.1fs\n", n, what, time.Since(start).Seconds())
	return ctx.Err()
}

// ForEach calls fn for i in [0, n) from workers goroutines. A worker stops
// at its first error, the others at ctx's end or when i runs out; the
// first error is returned.
func ForEach(ctx context.Context, n, workers int, fn func(i int) error) error {
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for range workers {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				if err := fn(i); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// Create creates o, again (up to 10 times, 2 s apart) after any error the
// object itself did not cause: a loaded API server times out, throttles,
// or resets a stream (HTTP/2 INTERNAL_ERROR) now and then, and an hour's
// benchmark must not die of one. AlreadyExists after such a retry means
// the failed-looking create landed.
func Create(ctx context.Context, c client.Client, o client.Object, log io.Writer) error {
	var err error
	for try := range 10 {
		err = c.Create(ctx, o)
		switch {
		case err == nil:
			return nil
		case apierrors.IsAlreadyExists(err) && try > 0:
			return nil
		case apierrors.IsAlreadyExists(err), apierrors.IsInvalid(err), apierrors.IsForbidden(err),
			apierrors.IsNotFound(err), apierrors.IsBadRequest(err), ctx.Err() != nil:
			return err
		}
		fmt.Fprintf(log, "create %s: %v; again in 2s\n", o.GetName(), err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(2 * time.Second):
		}
		o.SetResourceVersion("")
	}
	return err
}

// Prefixed writes to w with prefix before each write (progress lines).
func Prefixed(w io.Writer, prefix string) io.Writer { return prefixWriter{w, prefix} }

type prefixWriter struct {
	w      io.Writer
	prefix string
}

func (p prefixWriter) Write(b []byte) (int, error) {
	if _, err := io.WriteString(p.w, p.prefix); err != nil {
		return 0, err
	}
	return p.w.Write(b)
}
