// Command labpod is the only program in the images a lab node with a real
// kubelet runs, built static so an image needs no base (see lab.WriteImage):
//
//	labpod pause        the pod sandbox's process: sleeps until SIGTERM or
//	                    SIGINT and reaps orphans, as registry.k8s.io/pause does
//	labpod serve ADDR   an HTTP server: /healthz answers ok, anything else
//	                    answers the pod's hostname
package main

import (
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: labpod pause | labpod serve ADDR")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "pause":
		pause()
	case "serve":
		addr := ":8080"
		if len(os.Args) > 2 {
			addr = os.Args[2]
		}
		serve(addr)
	default:
		fmt.Fprintf(os.Stderr, "labpod: unknown mode %q\n", os.Args[1])
		os.Exit(2)
	}
}

// pause waits for a signal to end, reaping the children that other
// containers of the pod leave to it (it is PID 1 of the pod's PID namespace
// when the pod shares one).
func pause() {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	for s := range sigs {
		if s != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			pid, err := syscall.Wait4(-1, nil, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}

func serve(addr string) {
	host, _ := os.Hostname()
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, host) })
	srv := &http.Server{Addr: addr, Handler: mux}
	go func() {
		sigs := make(chan os.Signal, 1)
		signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
		<-sigs
		srv.Close()
	}()
	if err := srv.ListenAndServe(); err != nil && err != http.ErrServerClosed {
		fmt.Fprintln(os.Stderr, "labpod:", err)
		os.Exit(1)
	}
}
