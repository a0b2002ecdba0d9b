package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netns"

	"github.com/heraldlb/herald/e2etest/lab"
)

// clientHTTP is an HTTP client whose connections start in the lab's client
// namespace; keepAlive false makes every request a new connection.
func clientHTTP(keepAlive bool, conns int) *http.Client {
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DialContext:         lab.DialContextIn(lab.ClientNetns),
		DisableKeepAlives:   !keepAlive,
		MaxIdleConnsPerHost: conns,
	}}
}

// get fetches url once from the client, on a new connection.
func get(ctx context.Context, url string) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	c := clientHTTP(false, 1)
	defer c.CloseIdleConnections()
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, err = io.Copy(io.Discard, resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("%s: %s", url, resp.Status)
	}
	return err
}

// loadResult is one run of the load generator.
type loadResult struct {
	ok, failed int
	elapsed    time.Duration
}

func (r loadResult) rate() float64 { return float64(r.ok) / r.elapsed.Seconds() }

// load sends GET / to targets (host:port, taken in turn) from the client
// namespace with conc concurrent clients for d, and counts the answers.
func load(ctx context.Context, targets []string, conc int, d time.Duration, keepAlive bool) loadResult {
	c := clientHTTP(keepAlive, conc)
	defer c.CloseIdleConnections()
	var ok, failed, next atomic.Int64
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	start := time.Now()
	var wg sync.WaitGroup
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				url := "http://" + targets[int(next.Add(1))%len(targets)] + "/"
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
				resp, err := c.Do(req)
				if err == nil {
					_, err = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				switch {
				case err == nil && resp.StatusCode == http.StatusOK:
					ok.Add(1)
				case ctx.Err() == nil:
					failed.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	return loadResult{ok: int(ok.Load()), failed: int(failed.Load()), elapsed: time.Since(start)}
}

// handshakes times n TCP handshakes from the client namespace to addr, each
// a new connection, after a few untimed ones (neighbour discovery, caches).
// The socket is made on a thread that stays in the client namespace, so
// only the connect is timed.
func handshakes(addr string, n int) ([]time.Duration, error) {
	type result struct {
		ds  []time.Duration
		err error
	}
	out := make(chan result, 1)
	go func() {
		// This thread never goes back to the machine's namespace: locked
		// when the goroutine ends, the runtime discards it.
		runtime.LockOSThread()
		h, err := netns.GetFromName(lab.ClientNetns)
		if err == nil {
			err = netns.Set(h)
			h.Close()
		}
		if err != nil {
			out <- result{err: fmt.Errorf("enter %s: %w", lab.ClientNetns, err)}
			return
		}
		d := net.Dialer{Timeout: 2 * time.Second}
		var ds []time.Duration
		for i := -3; i < n; i++ {
			start := time.Now()
			c, err := d.Dial("tcp", addr)
			took := time.Since(start)
			if err != nil {
				out <- result{err: fmt.Errorf("connect to %s: %w", addr, err)}
				return
			}
			c.Close()
			if i >= 0 {
				ds = append(ds, took)
			}
			time.Sleep(20 * time.Millisecond)
		}
		out <- result{ds: ds}
	}()
	r := <-out
	return r.ds, r.err
}
