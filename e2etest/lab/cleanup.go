package lab

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// nsPrefix marks every network namespace the lab creates, so a later run can
// find and remove the leftovers of a crashed one without touching anything else.
const nsPrefix = "hl-"

// labNamespaces lists the network namespaces that belong to a lab.
func labNamespaces() ([]string, error) {
	entries, err := os.ReadDir("/run/netns")
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), nsPrefix) {
			out = append(out, e.Name())
		}
	}
	return out, nil
}

// pidsIn lists the processes whose network namespace is ns.
func pidsIn(ns string) []int {
	out, _ := exec.Command("ip", "netns", "pids", ns).Output()
	var pids []int
	for _, f := range strings.Fields(string(out)) {
		if pid, err := strconv.Atoi(f); err == nil && pid != os.Getpid() {
			pids = append(pids, pid)
		}
	}
	return pids
}

// Leftovers describes what a lab left behind: it is empty after a clean tear-down.
type Leftovers struct {
	Namespaces []string // network namespaces named hl-*
	Processes  []string // "pid cmdline" of recorded processes still alive
}

func (l Leftovers) Empty() bool { return len(l.Namespaces) == 0 && len(l.Processes) == 0 }

func (l Leftovers) String() string {
	return fmt.Sprintf("namespaces %v, processes %v", l.Namespaces, l.Processes)
}

// FindLeftovers reports lab namespaces, and processes that are recorded in dir
// or run a binary from binDir, other than this one.
func FindLeftovers(dir, binDir string) (Leftovers, error) {
	var l Leftovers
	ns, err := labNamespaces()
	if err != nil {
		return l, err
	}
	l.Namespaces = ns
	seen := map[int]bool{}
	for _, pid := range recordedPIDs(dir) {
		if cmd, ok := alive(pid); ok && pid != os.Getpid() {
			seen[pid] = true
			l.Processes = append(l.Processes, fmt.Sprintf("%d %s", pid, cmd))
		}
	}
	procs, _ := os.ReadDir("/proc")
	for _, e := range procs {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || seen[pid] || pid == os.Getpid() {
			continue
		}
		if cmd, ok := alive(pid); ok && binDir != "" && strings.Contains(cmd, binDir+"/") {
			l.Processes = append(l.Processes, fmt.Sprintf("%d %s", pid, cmd))
		}
	}
	return l, nil
}

// RepoDir finds the repository root from the working directory, so tests in
// any package agree on where the lab's state and binaries live.
func RepoDir() (string, error) {
	d, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(d, "e2etest", "tools", "build.sh")); err == nil {
			return d, nil
		}
		parent := filepath.Dir(d)
		if parent == d {
			return "", errors.New("not inside the herald repository")
		}
		d = parent
	}
}

// DefaultConfig is the lab tests and tools use: state in $LAB_DIR, else
// <repo>/.lab, with the binaries in its bin folder.
func DefaultConfig() (Config, error) {
	dir := os.Getenv("LAB_DIR")
	if dir == "" {
		repo, err := RepoDir()
		if err != nil {
			return Config{}, err
		}
		dir = filepath.Join(repo, ".lab")
	}
	return Config{Dir: dir, BinDir: filepath.Join(dir, "bin")}, nil
}

// Running reports the pid of a lab started by `lab up` that is still running
// with its state in dir, or 0.
func Running(dir string) int {
	b, err := os.ReadFile(filepath.Join(dir, "ready"))
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid == os.Getpid() {
		return 0
	}
	if _, ok := alive(pid); !ok {
		return 0
	}
	return pid
}

// Clean removes everything a lab (possibly crashed) left behind: processes in
// lab namespaces, recorded control-plane processes, and the namespaces
// themselves with their links. It never touches a namespace or process that
// is not the lab's.
func Clean(dir string) error {
	nss, err := labNamespaces()
	if err != nil {
		return err
	}
	for _, ns := range nss {
		for _, pid := range pidsIn(ns) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	for _, pid := range recordedPIDs(dir) {
		if _, ok := alive(pid); ok && pid != os.Getpid() {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	// State files go too; logs stay for a post-mortem until the next run.
	for _, f := range stateFiles {
		_ = os.RemoveAll(filepath.Join(dir, f))
	}
	// Deleting a namespace destroys its veth ends and with them their peers.
	var errs []string
	for _, ns := range nss {
		if err := run("ip", "netns", "delete", ns); err != nil {
			errs = append(errs, err.Error())
		}
	}
	// Killed processes may take a moment to release their ports.
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		l, _ := FindLeftovers(dir, "")
		if l.Empty() {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if len(errs) > 0 {
		return fmt.Errorf("clean lab: %s", strings.Join(errs, "; "))
	}
	return nil
}

// stateFiles are what a lab writes in its directory besides bin/ and logs/.
var stateFiles = []string{"pids", "etcd", "pki", "kubeconfigs", "kubeconfig", "tokens.csv", "ready", "routers"}

// recordPID notes a control-plane process so that a later run can kill it if
// this one crashes. The command line is stored with it, so a recycled pid is
// never mistaken for the lab's.
func recordPID(dir string, pid int) error {
	d := filepath.Join(dir, "pids")
	if err := os.MkdirAll(d, 0o755); err != nil {
		return err
	}
	cmd, _ := alive(pid)
	return os.WriteFile(filepath.Join(d, strconv.Itoa(pid)), []byte(cmd), 0o644)
}

func recordedPIDs(dir string) []int {
	entries, _ := os.ReadDir(filepath.Join(dir, "pids"))
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		want, _ := os.ReadFile(filepath.Join(dir, "pids", e.Name()))
		if got, ok := alive(pid); ok && got == string(want) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// alive returns the command line of pid if it is running (and not a zombie).
func alive(pid int) (string, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || len(b) == 0 {
		return "", false
	}
	return string(bytes.ReplaceAll(bytes.TrimRight(b, "\x00"), []byte{0}, []byte{' '})), true
}

// checkHostRanges refuses to start when a lab range overlaps an address or a
// route of the machine's own namespace: the lab must never shadow real networks.
func checkHostRanges() error {
	var found []string
	for _, fam := range []string{"-4", "-6"} {
		for _, what := range [][]string{{"-o", "addr", "show"}, {"route", "show", "table", "all"}} {
			out, err := exec.Command("ip", append([]string{fam}, what...)...).Output()
			if err != nil {
				return fmt.Errorf("ip %s %v: %w", fam, what, err)
			}
			found = append(found, prefixesIn(string(out))...)
		}
	}
	return overlapsLab(found)
}

// overlapsLab returns an error naming the first lab range that overlaps one of
// the machine's addresses or routes (default routes excepted).
func overlapsLab(hostPrefixes []string) error {
	for _, r := range labRanges {
		lab := netip.MustParsePrefix(r)
		for _, f := range hostPrefixes {
			p, err := netip.ParsePrefix(f)
			if err != nil {
				a, err2 := netip.ParseAddr(f)
				if err2 != nil {
					continue
				}
				p = netip.PrefixFrom(a, a.BitLen())
			}
			if p.Bits() == 0 {
				continue // a default route overlaps everything and is no conflict
			}
			if p.Overlaps(lab) {
				return fmt.Errorf("lab range %s overlaps %s in this machine's own network namespace; the lab would shadow it, so it will not start", lab, p)
			}
		}
	}
	return nil
}

// prefixesIn picks the address-looking words out of `ip addr` / `ip route` output.
func prefixesIn(out string) []string {
	var res []string
	for _, w := range strings.Fields(out) {
		if strings.ContainsAny(w, ".:") && (strings.Contains(w, "/") || strings.Count(w, ".") == 3 || strings.Count(w, ":") >= 2) {
			if _, err := netip.ParsePrefix(w); err == nil {
				res = append(res, w)
			} else if _, err := netip.ParseAddr(w); err == nil {
				res = append(res, w)
			}
		}
	}
	return res
}
