// Package e2etest is Herald's end-to-end suite. It runs against the lab
// (package lab): a real API server, real kube-controller-manager and
// kube-proxy, network namespaces as nodes, and a real curl from a client host.
package e2etest

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/heraldlb/herald/e2etest/lab"
	"github.com/heraldlb/herald/internal/bgprouter"
)

// theLab is shared by every test in the package: building one takes seconds.
var theLab *lab.Lab

func TestMain(m *testing.M) {
	os.Exit(runWithLab(m))
}

func runWithLab(m *testing.M) int {
	if os.Geteuid() != 0 {
		fmt.Println("SKIP: the e2e suite needs root (network namespaces, kube-proxy); run it with sudo or in CI")
		return 0
	}
	cfg, err := lab.DefaultConfig()
	if err != nil {
		fmt.Println("e2e:", err)
		return 1
	}
	cfg.Log = os.Stderr
	// The BGP cases peer with the lab's FRR and BIRD.
	cfg.Routers = len(bgprouter.Missing()) == 0
	// The chaos cases count Herald's writes after an outage.
	cfg.AuditWrites = true
	setup := 3 * time.Minute
	if os.Getenv("HERALD_LAB_WAIT") != "" {
		// Up first queues behind another lab for as long as that one runs
		// (a benchmark: most of an hour); the deadline is for the setup.
		setup += time.Hour
	}
	ctx, cancel := context.WithTimeout(context.Background(), setup)
	defer cancel()
	start := time.Now()
	l, err := lab.Up(ctx, cfg)
	if err != nil {
		fmt.Println("e2e: lab up:", err)
		return 1
	}
	fmt.Printf("e2e: lab up in %.1fs\n", time.Since(start).Seconds())
	theLab = l
	if err := setupHerald(ctx, l); err != nil {
		fmt.Println("e2e: herald:", err)
		l.Down()
		return 1
	}
	code := m.Run()
	hd.Stop()
	l.Down()
	return code
}
