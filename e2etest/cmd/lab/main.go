// Command lab runs Herald's lab: a real Kubernetes control plane and network
// namespaces as nodes on one machine (see package lab).
//
//	lab up      build the lab and keep it up until SIGINT/SIGTERM
//	lab demo    build the lab, run the demo, keep it up (ONESHOT=1: exit after the demo)
//	lab down    stop a lab started by `lab up` and remove its leftovers
//	lab exec NS CMD...  run a command in a lab namespace (client, node-1, lan, ...)
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/heraldlb/herald/e2etest/herald"
	"github.com/heraldlb/herald/e2etest/lab"
)

func main() {
	fs := flag.NewFlagSet("lab", flag.ExitOnError)
	dir := fs.String("dir", envOr("LAB_DIR", ".lab"), "lab state directory")
	nodes := fs.Int("nodes", envInt("NODES", 3), "number of lab nodes with kube-proxy and pods")
	speakerNodes := fs.Int("speaker-nodes", envInt("SPEAKER_NODES", 0), "number of speaker-only lab nodes (a speaker and a Node object; no kube-proxy, no pods)")
	proxy := fs.String("proxy-mode", envOr("PROXY_MODE", "iptables"), "kube-proxy mode: iptables, nftables or none")
	oneshot := fs.Bool("oneshot", os.Getenv("ONESHOT") == "1", "demo: exit after the demo instead of staying up")
	routers := fs.Bool("routers", os.Getenv("ROUTERS") == "1", "add BGP routers to the LAN: FRR (hl-frr, AS 64512) and BIRD (hl-bird, AS 64513), and a client behind FRR (hl-client-bgp)")
	withHerald := fs.Bool("herald", os.Getenv("HERALD") != "0", "install Herald from the chart (HERALD=0: a bare lab)")
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: lab up|demo|down|exec NS CMD... [flags]")
		os.Exit(2)
	}
	verb := os.Args[1]
	_ = fs.Parse(os.Args[2:])
	abs, err := filepath.Abs(*dir)
	if err != nil {
		fail(err)
	}
	cfg := lab.Config{Dir: abs, Nodes: *nodes, SpeakerNodes: *speakerNodes, ProxyMode: *proxy, Routers: *routers, Log: os.Stderr}
	switch verb {
	case "up":
		err = up(cfg, *withHerald, func(*lab.Lab) error { return nil }, false)
	case "demo":
		err = up(cfg, true, demo, *oneshot)
	case "down":
		err = down(abs)
	case "exec":
		err = execIn(fs.Args())
	default:
		err = fmt.Errorf("unknown verb %q: want up, demo, down or exec", verb)
	}
	if err != nil {
		fail(err)
	}
}

func up(cfg lab.Config, withHerald bool, then func(*lab.Lab) error, oneshot bool) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	start := time.Now()
	l, err := lab.Up(ctx, cfg)
	if err != nil {
		return err
	}
	defer l.Down()
	if withHerald {
		h, err := herald.Install(ctx, l, func(f string, a ...any) { fmt.Fprintf(os.Stderr, f+"\n", a...) })
		if err != nil {
			return err
		}
		defer h.Stop()
	}
	ready := filepath.Join(cfg.Dir, "ready")
	defer os.Remove(ready)
	fmt.Fprintf(os.Stderr, "lab: up in %.1fs: %d nodes, kube-proxy %s\n", time.Since(start).Seconds(), len(l.Nodes), cfg.ProxyMode)
	if err := then(l); err != nil {
		return err
	}
	if oneshot {
		return nil
	}
	if err := os.WriteFile(ready, []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		return err
	}
	printNext(l)
	<-ctx.Done()
	fmt.Fprintln(os.Stderr, "lab: tearing down")
	return nil
}

func printNext(l *lab.Lab) {
	fmt.Printf(`
The lab is up. Try:
  export KUBECONFIG=%s PATH=%s:$PATH
  kubectl get nodes -o wide
  kubectl get ipaddresspools                  # usage of each pool
  kubectl get svc -A                          # EXTERNAL-IP of LoadBalancer Services
  kubectl get announcements -A                # which node answers for which IP, on which interface
  make lab-exec NS=client CMD='curl -s http://<EXTERNAL-IP>/'
  ip netns exec %s bash                   # a shell on the LAN's client host
Stop it with Ctrl-C (or make lab-down).
`, l.Kubeconfig, l.BinDir, lab.ClientNetns)
}

// down signals a running `lab up` to tear down and waits; when none is
// running it removes a crashed lab's leftovers.
func down(dir string) error {
	if pid := lab.Running(dir); pid != 0 && syscall.Kill(pid, syscall.SIGTERM) == nil {
		for i := 0; i < 300 && syscall.Kill(pid, 0) == nil; i++ {
			time.Sleep(100 * time.Millisecond)
		}
	}
	if err := lab.Clean(dir); err != nil {
		return err
	}
	l, err := lab.FindLeftovers(dir, filepath.Join(dir, "bin"))
	if err != nil {
		return err
	}
	if !l.Empty() {
		return fmt.Errorf("leftovers remain: %s", l)
	}
	return nil
}

func execIn(args []string) error {
	if len(args) < 2 {
		return errors.New("usage: lab exec NS CMD...  (NS: client, lan, node-1, ...)")
	}
	ns := args[0]
	if !strings.HasPrefix(ns, "hl-") {
		ns = "hl-" + ns
	}
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns}, args[1:]...)...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	return cmd.Run()
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func envInt(k string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(k)); err == nil {
		return v
	}
	return def
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "lab:", err)
	os.Exit(1)
}
