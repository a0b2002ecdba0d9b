package e2etest

// Speakers in the lab: one process per node namespace (as a hostNetwork
// DaemonSet pod would run), reaching the API server through the node's
// local forwarder, gossiping on the node's LAN address.

import (
	"context"
	"crypto/rand"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/heraldlb/herald/e2etest/lab"
)

// speakers run on every lab node, by node name.
var speakers = map[string]*process{}

// createGossipSecret makes the Secret the speakers' gossip is encrypted with.
func createGossipSecret() error {
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return err
	}
	return crClient.Create(context.Background(), &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: heraldNamespace, Name: "herald-memberlist"},
		Data:       map[string][]byte{"secretkey": key},
	})
}

// startSpeaker runs the speaker of node n and waits until it is ready.
func startSpeaker(n lab.Node) (*process, error) {
	kc, err := theLab.NodeKubeconfig("speaker", lab.AdminToken)
	if err != nil {
		return nil, err
	}
	logf, err := os.OpenFile(filepath.Join(theLab.Dir, "logs", "herald-speaker-"+n.Name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command("ip", "netns", "exec", n.Netns, filepath.Join(binDir, "speaker"),
		"--kubeconfig", kc,
		"--node-name", n.Name,
		"--namespace", heraldNamespace,
		"--gossip-address", n.IPv4.String(),
		"--metrics-bind-address", "127.0.0.1:7474",
		"--health-probe-bind-address", "127.0.0.1:7475",
		"--lease-duration", "6s",
	)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &process{cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); logf.Close(); close(p.done) }()
	hc := &http.Client{Timeout: time.Second, Transport: &http.Transport{DialContext: lab.DialContextIn(n.Netns)}}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-p.done:
			return nil, fmt.Errorf("speaker on %s exited at start; see %s", n.Name, logf.Name())
		default:
		}
		if resp, err := hc.Get("http://127.0.0.1:7475/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return p, nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	p.kill()
	return nil, fmt.Errorf("speaker on %s not ready after 30s; see %s", n.Name, logf.Name())
}

// startSpeakers runs a speaker on every lab node.
func startSpeakers() error {
	for _, n := range theLab.Nodes {
		p, err := startSpeaker(n)
		if err != nil {
			return err
		}
		speakers[n.Name] = p
	}
	return nil
}

func stopSpeakers() {
	for _, p := range speakers {
		p.stop()
	}
}
