package lab

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
)

// RealNodeBinaries are what a real node runs besides runc and the CNI
// plugins of the machine: built by `e2etest/tools/build.sh realnode`.
var RealNodeBinaries = []string{"kubelet", "containerd", "containerd-shim-runc-v2", "ctr"}

// CNIBinDir is where Debian's containernetworking-plugins puts the CNI
// plugins (bridge, host-local, loopback).
const CNIBinDir = "/usr/lib/cni"

// RealNodeConfig says how to run a real kubelet and containerd.
type RealNodeConfig struct {
	Name       string       // Node object name; also names the node's cgroups
	Netns      string       // existing network namespace the node lives in
	NodeIP     netip.Addr   // an address of Netns the kubelet reports
	PodCIDR    netip.Prefix // the subnet of the node's CNI bridge; its first address is the gateway
	Dir        string       // the node's state and logs; keep it short (shim sockets live in it)
	BinDir     string       // RealNodeBinaries
	Kubeconfig string       // the kubelet's, valid inside Netns
	// SandboxImage is the pod sandbox ("pause") image containerd runs; it
	// must be imported (ImportImage) before the first pod, as nothing is
	// pulled.
	SandboxImage string
	// Runtime is the OCI runtime binary containerd runs containers with;
	// default runc from PATH.
	Runtime string
	Log     io.Writer // progress lines; default io.Discard
}

// RealNode is a lab node with a real kubelet and containerd (containerd
// 2.x, runc from the machine, CNI bridge for pods that are not
// hostNetwork).
//
// Both run in network namespace Netns and in a mount namespace of their
// own, which a holder process keeps: what they mount (overlay rootfs,
// volumes, pod network namespaces) stays out of the machine's mount table
// and goes when the node stops. In it, /var/log and /var/lib are fresh
// tmpfs (see start), and the kernel settings the
// kubelet insists on read as it wants (see kernelDefaults): the kubelet
// changes nothing of the machine's own.
type RealNode struct {
	RealNodeConfig
	// KubeletStarted is when the kubelet was started.
	KubeletStarted time.Time
	holder         *process // the mount namespace's first process
	procs          []*process
	cgroups        []string // the node's cgroup root in each hierarchy
}

// The node's files, under Dir.
func (n *RealNode) path(p ...string) string { return filepath.Join(append([]string{n.Dir}, p...)...) }

// ContainerdSocket is the node's containerd endpoint.
func (n *RealNode) ContainerdSocket() string { return n.path("containerd.sock") }

// kernelDefaults are the values the kubelet wants of these sysctls
// (setupKernelTunables in pkg/kubelet/cm): with protectKernelDefaults it
// refuses to start on others, without it it rewrites the machine's. The
// node's mount namespace shows it files with these values instead.
var kernelDefaults = map[string]string{
	"vm/overcommit_memory":      "1",
	"vm/panic_on_oom":           "0",
	"kernel/panic":              "10",
	"kernel/panic_on_oops":      "1",
	"kernel/keys/root_maxkeys":  "1000000",
	"kernel/keys/root_maxbytes": "25000000",
}

// StartRealNode starts containerd and then the kubelet, and returns once
// containerd answers; the kubelet registers the Node on its own (see
// WaitNodeReady). On error, whatever was started is stopped again.
func StartRealNode(ctx context.Context, cfg RealNodeConfig) (*RealNode, error) {
	if cfg.Log == nil {
		cfg.Log = io.Discard
	}
	for _, b := range RealNodeBinaries {
		if _, err := os.Stat(filepath.Join(cfg.BinDir, b)); err != nil {
			return nil, fmt.Errorf("real node binary %s missing in %s: run e2etest/tools/build.sh realnode", b, cfg.BinDir)
		}
	}
	if cfg.Runtime == "" {
		cfg.Runtime = "runc"
	}
	rt, err := exec.LookPath(cfg.Runtime)
	if err != nil {
		return nil, fmt.Errorf("OCI runtime %s missing (apt-get install runc): %w", cfg.Runtime, err)
	}
	cfg.Runtime = rt
	for _, p := range []string{"bridge", "host-local", "loopback"} {
		if _, err := os.Stat(filepath.Join(CNIBinDir, p)); err != nil {
			return nil, fmt.Errorf("CNI plugin %s missing in %s: apt-get install containernetworking-plugins", p, CNIBinDir)
		}
	}
	n := &RealNode{RealNodeConfig: cfg}
	if err := n.start(ctx); err != nil {
		n.Stop()
		return nil, err
	}
	return n, nil
}

func (n *RealNode) start(ctx context.Context) error {
	for _, d := range []string{"logs", "sysctl", "cni/net.d", "cni/ipam", "kubelet", "pod-logs"} {
		if err := os.MkdirAll(n.path(d), 0o755); err != nil {
			return err
		}
	}
	if err := n.makeCgroupRoot(); err != nil {
		return err
	}
	// The holder: a new mount namespace, slave to the machine's so mounts
	// made there still show, joined to the node's network namespace; it
	// overlays what the kubelet must not see of the machine, then sleeps.
	// The kubelet and the CNI plugins write some fixed paths whatever
	// their configuration says (/var/log/containers, the device plugin
	// socket in /var/lib/kubelet/device-plugins, libcni's cache in
	// /var/lib/cni): fresh tmpfs there keep two nodes apart and the machine
	// clean.
	script := []string{"set -e", "mount -t tmpfs -o mode=0755 lab-varlog /var/log", "mount -t tmpfs -o mode=0755 lab-varlib /var/lib"}
	keys := make([]string, 0, len(kernelDefaults))
	for k := range kernelDefaults {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		f := n.path("sysctl", strings.ReplaceAll(k, "/", "."))
		if err := os.WriteFile(f, []byte(kernelDefaults[k]+"\n"), 0o644); err != nil {
			return err
		}
		script = append(script, fmt.Sprintf("mount --bind %s /proc/sys/%s", f, k))
	}
	script = append(script, "exec sleep infinity")
	holder, err := startProcess(context.Background(), "holder", "", n.path("logs", "holder.log"),
		"unshare", "--mount", "--propagation", "slave",
		"nsenter", "--net=/run/netns/"+n.Netns,
		"sh", "-c", strings.Join(script, "\n"))
	if err != nil {
		return err
	}
	n.holder = holder
	// The holder is ready once its mount namespace differs from ours and
	// /var/log in it is the tmpfs.
	if err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 10*time.Second, true, func(context.Context) (bool, error) {
		if holder.exited() {
			log, _ := os.ReadFile(n.path("logs", "holder.log"))
			return false, fmt.Errorf("node %s: mount namespace holder exited: %v: %s", n.Name, holder.err, log)
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/mounts", holder.cmd.Process.Pid))
		return err == nil && strings.Contains(string(b), "lab-varlog"), nil
	}); err != nil {
		return fmt.Errorf("node %s: mount namespace: %w", n.Name, err)
	}

	if err := n.writeConfigs(); err != nil {
		return err
	}
	start := time.Now()
	if _, err := n.spawn("containerd", filepath.Join(n.BinDir, "containerd"), "--config", n.path("containerd.toml")); err != nil {
		return err
	}
	if err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 60*time.Second, true, func(ctx context.Context) (bool, error) {
		if err := n.exited(); err != nil {
			return false, err
		}
		return n.ctr(ctx, "version") == nil, nil
	}); err != nil {
		return fmt.Errorf("node %s: containerd not answering: %w (log: %s)", n.Name, err, n.path("logs", "containerd.log"))
	}
	fmt.Fprintf(n.Log, "realnode %s: containerd answering after %.1fs\n", n.Name, time.Since(start).Seconds())
	n.KubeletStarted = time.Now()
	_, err = n.spawn("kubelet", filepath.Join(n.BinDir, "kubelet"),
		"--config", n.path("kubelet.yaml"),
		"--kubeconfig", n.Kubeconfig,
		"--hostname-override", n.Name,
		"--node-ip", n.NodeIP.String(),
		"--root-dir", n.path("kubelet"),
		"--cert-dir", n.path("kubelet", "pki"),
		"--v=2",
	)
	return err
}

// spawn starts a process in the node's namespaces.
func (n *RealNode) spawn(name string, argv ...string) (*process, error) {
	pid := strconv.Itoa(n.holder.cmd.Process.Pid)
	argv = append([]string{"nsenter", "--target", pid, "--mount", "--net", "--"}, argv...)
	p, err := startProcess(context.Background(), name, "", n.path("logs", name+".log"), argv...)
	if err != nil {
		return nil, err
	}
	n.procs = append(n.procs, p)
	return p, nil
}

// exited returns an error naming the first of the node's processes that
// has ended.
func (n *RealNode) exited() error {
	for _, p := range append([]*process{n.holder}, n.procs...) {
		if p.exited() {
			return fmt.Errorf("node %s: %s exited: %v (log: %s)", n.Name, p.name, p.err, n.path("logs", p.name+".log"))
		}
	}
	return nil
}

// Exited is like exited, for tests that wait on the node.
func (n *RealNode) Exited() error { return n.exited() }

// ctr runs ctr against the node's containerd in its k8s.io namespace (the
// CRI's), in the node's mount namespace.
func (n *RealNode) ctr(ctx context.Context, args ...string) error {
	argv := append([]string{"--target", strconv.Itoa(n.holder.cmd.Process.Pid), "--mount", "--net", "--",
		filepath.Join(n.BinDir, "ctr"), "--address", n.ContainerdSocket(), "--namespace", "k8s.io"}, args...)
	out, err := exec.CommandContext(ctx, "nsenter", argv...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ctr %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// ImportImage imports an image archive (WriteImage) into the node's
// containerd, for the CRI: pods run it with imagePullPolicy Never.
func (n *RealNode) ImportImage(ctx context.Context, archive string) error {
	return n.ctr(ctx, "images", "import", archive)
}

// makeCgroupRoot creates the node's cgroup root (the kubelet's cgroupRoot,
// /lab-NAME) in every cgroup hierarchy, so the node's pods stay apart
// from the machine's and from other nodes', and Stop finds them.
func (n *RealNode) makeCgroupRoot() error {
	mounts, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		return err
	}
	for _, line := range strings.Split(string(mounts), "\n") {
		f := strings.Fields(line)
		if len(f) < 3 || (f[2] != "cgroup" && f[2] != "cgroup2") {
			continue
		}
		// On a v1 machine with a v2 hierarchy beside (unified), runc
		// puts the containers there too.
		d := filepath.Join(f[1], n.cgroupRoot())
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("node %s: cgroup root: %w", n.Name, err)
		}
		n.cgroups = append(n.cgroups, d)
	}
	if len(n.cgroups) == 0 {
		return fmt.Errorf("node %s: no cgroup hierarchy mounted", n.Name)
	}
	return nil
}

func (n *RealNode) cgroupRoot() string { return "/lab-" + n.Name }

func (n *RealNode) writeConfigs() error {
	containerd := fmt.Sprintf(`version = 3
root = %[1]q
state = %[2]q
# Not the machine's: nothing of this node may leak outside its directory.
disabled_plugins = ["io.containerd.internal.v1.opt", "io.containerd.nri.v1.nri", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.blockfile", "io.containerd.snapshotter.v1.erofs"]

[grpc]
  address = %[3]q
[ttrpc]
  address = %[4]q

[plugins.'io.containerd.shim.v1.manager']
  socket_dir = %[5]q

[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = %[6]q

[plugins.'io.containerd.cri.v1.runtime']
  netns_mounts_under_state_dir = true
  cdi_spec_dirs = []
  # The kubelet asks for negative oom_score_adj (-998 for sandboxes), which
  # needs CAP_SYS_RESOURCE; a sandboxed machine's root may lack it, and runc
  # then fails with "can't get final child's PID from pipe: EOF". Clamp to
  # containerd's own instead, as rootless setups do.
  restrict_oom_score_adj = true
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = [%[7]q]
    conf_dir = %[8]q
  [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
    SystemdCgroup = false
    BinaryName = %[9]q
    # runc's state: under Dir, not the machine's /run/containerd/runc.
    Root = %[10]q
`, n.path("containerd", "root"), n.path("containerd", "state"), n.ContainerdSocket(), n.ContainerdSocket()+".ttrpc",
		n.path("s"), n.SandboxImage, CNIBinDir, n.path("cni", "net.d"), n.Runtime, n.path("runc"))
	if err := os.WriteFile(n.path("containerd.toml"), []byte(containerd), 0o644); err != nil {
		return err
	}

	gw := n.PodCIDR.Addr().Next()
	cni := fmt.Sprintf(`{
  "cniVersion": "1.0.0",
  "name": "lab",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "cni0",
      "isGateway": true,
      "isDefaultGateway": true,
      "ipam": {
        "type": "host-local",
        "dataDir": %q,
        "ranges": [[{"subnet": %q, "gateway": %q}]]
      }
    },
    {"type": "loopback"}
  ]
}
`, n.path("cni", "ipam"), n.PodCIDR.String(), gw.String())
	if err := os.WriteFile(n.path("cni", "net.d", "10-lab.conflist"), []byte(cni), 0o644); err != nil {
		return err
	}

	kubelet := fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# This machine may have cgroup v1 only (kubelet 1.35+ refuses it otherwise).
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: %[1]s
containerRuntimeEndpoint: unix://%[2]s
# The node's mount namespace shows the values the kubelet wants: it must
# check them, never set them on the machine.
protectKernelDefaults: true
failSwapOn: false
podLogsDir: %[3]s
# Only on the node's namespace; the API server never calls back in the lab.
address: %[4]s
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
authorization:
  mode: AlwaysAllow
# The machine's disk is shared with everything else: never evict nor
# collect the lab's images for it.
evictionHard:
  memory.available: "1Mi"
  nodefs.available: "1%%"
  imagefs.available: "1%%"
  nodefs.inodesFree: "1%%"
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
resolvConf: ""
nodeStatusUpdateFrequency: 4s
`, n.cgroupRoot(), n.ContainerdSocket(), n.path("pod-logs"), n.NodeIP)
	return os.WriteFile(n.path("kubelet.yaml"), []byte(kubelet), 0o644)
}

// Stop ends the kubelet, containerd, the shims and every process in the
// node's cgroups, then removes the node's cgroups; Dir and its logs stay.
// Pods still on the node are killed, not drained: delete them first for a
// clean end. It is safe to call on a partly started node.
func (n *RealNode) Stop() {
	for i := len(n.procs) - 1; i >= 0; i-- {
		n.procs[i].stop(10 * time.Second)
	}
	// The shims outlive containerd by design (they daemonize); they are in
	// the holder's mount namespace. Containers are in the node's cgroups.
	if n.holder != nil {
		if mnt, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", n.holder.cmd.Process.Pid)); err == nil {
			for _, pid := range pidsWithMountNS(mnt) {
				if pid != n.holder.cmd.Process.Pid {
					_ = syscall.Kill(pid, syscall.SIGKILL)
				}
			}
		}
	}
	for range 50 {
		if n.killCgroups() == 0 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if n.holder != nil {
		n.holder.stop(5 * time.Second)
	}
	// Deepest first: a cgroup goes only once its children have.
	for _, root := range n.cgroups {
		var dirs []string
		_ = filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- {
			if err := os.Remove(dirs[i]); err != nil && !os.IsNotExist(err) {
				fmt.Fprintf(n.Log, "realnode %s: remove cgroup %s: %v\n", n.Name, dirs[i], err)
			}
		}
	}
}

// killCgroups SIGKILLs every process in the node's cgroups and returns how
// many there were.
func (n *RealNode) killCgroups() int {
	killed := 0
	for _, root := range n.cgroups {
		_ = filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
			if err != nil || d.IsDir() || d.Name() != "cgroup.procs" {
				return nil
			}
			b, _ := os.ReadFile(p)
			for _, f := range strings.Fields(string(b)) {
				if pid, err := strconv.Atoi(f); err == nil {
					_ = syscall.Kill(pid, syscall.SIGKILL)
					killed++
				}
			}
			return nil
		})
	}
	return killed
}

// pidsWithMountNS lists the processes whose mount namespace is mnt (as
// readlink /proc/PID/ns/mnt says it, "mnt:[N]").
func pidsWithMountNS(mnt string) []int {
	pids, _ := pidsWhere(func(pid int) bool {
		l, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", pid))
		return err == nil && l == mnt
	})
	return pids
}

// pidsWhere lists the machine's processes for which keep is true.
func pidsWhere(keep func(pid int) bool) ([]int, error) {
	entries, err := os.ReadDir("/proc")
	var out []int
	for _, e := range entries {
		if pid, err := strconv.Atoi(e.Name()); err == nil && keep(pid) {
			out = append(out, pid)
		}
	}
	return out, err
}
