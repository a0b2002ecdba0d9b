package lab

// Faults the chaos suite injects that the rest of the lab has no use for:
// control-plane processes stopped and started again, and a lossy LAN.

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// The lab's control-plane processes, by the names StopComponent takes.
const (
	Etcd              = "etcd"
	APIServer         = "kube-apiserver"
	ControllerManager = "kube-controller-manager"
)

func (l *Lab) proc(name string) (int, error) {
	for i, p := range l.procs {
		if p.name == name {
			return i, nil
		}
	}
	return 0, fmt.Errorf("lab: no process %q", name)
}

// StopComponent SIGKILLs one of the lab's control-plane processes, as a
// crashed or powered-off control-plane host would end it; its data stays
// (etcd's directory) for StartComponent.
func (l *Lab) StopComponent(name string) error {
	i, err := l.proc(name)
	if err != nil {
		return err
	}
	p := l.procs[i]
	if !p.exited() {
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	}
	return nil
}

// StartComponent starts a component StopComponent stopped again, with the
// same arguments and its log continued; for etcd and the API server it
// returns once the API server is ready again.
func (l *Lab) StartComponent(ctx context.Context, name string) error {
	i, err := l.proc(name)
	if err != nil {
		return err
	}
	if !l.procs[i].exited() {
		return fmt.Errorf("lab: %s is running", name)
	}
	p, err := launch(l.procs[i], os.O_APPEND)
	if err != nil {
		return err
	}
	l.procs[i] = p
	if err := recordPID(l.Dir, p.cmd.Process.Pid); err != nil {
		return err
	}
	if name == APIServer || name == Etcd {
		return l.waitAPIServer(ctx, 60*time.Second)
	}
	return nil
}

// lossTable is the nftables table SetLANLoss adds to each host.
const lossTable = "herald-lab-loss"

// SetLANLoss makes every node's and the client's LAN interface drop
// percent of the frames it receives at random (ARP and NDP included), as a
// flaky switch or cable would; 0 removes the loss. The kernel has no netem
// here: nftables' numgen random does the dropping, on the netdev ingress
// hook so it sees every frame before anything else does.
func (l *Lab) SetLANLoss(percent int) error {
	if percent < 0 || percent > 100 {
		return fmt.Errorf("lab: loss %d%% is not a percentage", percent)
	}
	hosts := []string{ClientNetns}
	for _, n := range l.Nodes {
		hosts = append(hosts, n.Netns)
	}
	for _, ns := range hosts {
		_ = exec.Command("ip", "netns", "exec", ns, "nft", "delete", "table", "netdev", lossTable).Run()
		if percent == 0 {
			continue
		}
		rules := fmt.Sprintf(`table netdev %s {
	chain in {
		type filter hook ingress device eth0 priority -500;
		numgen random mod 100 < %d drop
	}
}`, lossTable, percent)
		cmd := exec.Command("ip", "netns", "exec", ns, "nft", "-f", "-")
		cmd.Stdin = strings.NewReader(rules)
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("lab: loss on %s: %w: %s", ns, err, out)
		}
	}
	return nil
}
