package lab

import (
	"context"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// Namespaces outside the nodes.
const (
	LANNetns    = nsPrefix + "lan"
	ClientNetns = nsPrefix + "client"
)

// lanParent is the link in the LAN namespace that the hosts' macvlans hang
// from. The hosts get macvlan interfaces in bridge mode rather than veth ends,
// so a node's LAN interface looks like a NIC, not like a pod's veth.
const lanParent = "lan0"

// buildNetwork creates the LAN, the nodes with their pod bridges and routes,
// the client, and with Config.Routers the routers' namespaces. Each host's MAC is fixed (02:00:00:00:01:NN) so tests and
// people can tell from a neighbour table which host answered.
func (l *Lab) buildNetwork() error {
	if err := run("ip", "netns", "add", LANNetns); err != nil {
		return err
	}
	if err := ipBatch(LANNetns,
		"link set lo up",
		"link add "+lanParent+" type veth peer name lan1",
		"link set "+lanParent+" up",
		"link set lan1 up",
	); err != nil {
		return err
	}
	for _, n := range l.Nodes {
		if err := l.addHost(n.Netns, n.MAC, n.IPv4.String(), n.IPv6.String()); err != nil {
			return err
		}
		// keep_addr_on_down: a link flap (SetNodeLink) must not cost the node
		// its IPv6 address, as it would not on a configured server.
		if n.SpeakerOnly {
			if err := sysctl(n.Netns, "net.ipv6.conf.eth0.keep_addr_on_down", "1"); err != nil {
				return err
			}
			if rs := l.routerRoutes(); len(rs) > 0 {
				if err := ipBatch(n.Netns, rs...); err != nil {
					return err
				}
			}
			continue
		}
		lines := append([]string{
			fmt.Sprintf("link add cbr0 address %s type bridge", n.BridgeMAC),
			"link set cbr0 up",
			fmt.Sprintf("addr add %s/%d dev cbr0", podGateway(n.PodCIDRv4), n.PodCIDRv4.Bits()),
			fmt.Sprintf("addr add %s/%d dev cbr0 nodad", podGateway(n.PodCIDRv6), n.PodCIDRv6.Bits()),
		}, l.podRoutes(n)...)
		lines = append(lines, l.routerRoutes()...)
		if err := ipBatch(n.Netns, lines...); err != nil {
			return err
		}
		for _, kv := range [][2]string{{"net.ipv4.ip_forward", "1"}, {"net.ipv6.conf.all.forwarding", "1"}, {"net.ipv6.conf.eth0.keep_addr_on_down", "1"}} {
			if err := sysctl(n.Netns, kv[0], kv[1]); err != nil {
				return err
			}
		}
	}
	if err := l.addHost(ClientNetns, ClientMAC, ClientIPv4, ClientIPv6); err != nil {
		return err
	}
	if l.Routers {
		return l.buildRouterNetwork()
	}
	return nil
}

// podRoutes are node n's routes to the other pod nodes' pod CIDRs, over
// the LAN; speaker-only nodes have none.
func (l *Lab) podRoutes(n Node) []string {
	var lines []string
	if n.SpeakerOnly {
		return nil
	}
	for _, o := range l.PodNodes() {
		if o.Index != n.Index {
			lines = append(lines,
				fmt.Sprintf("route replace %s via %s", o.PodCIDRv4, o.IPv4),
				fmt.Sprintf("route replace %s via %s", o.PodCIDRv6, o.IPv6))
		}
	}
	return lines
}

// SetNodeLink takes a node's LAN link down, as a dead NIC or a pulled cable
// would, or brings it back up. The kernel drops the routes over a link that
// goes down; bringing it up restores them as the node had them.
func (l *Lab) SetNodeLink(node string, up bool) error {
	for _, n := range l.Nodes {
		if n.Name != node {
			continue
		}
		if !up {
			return ipBatch(n.Netns, "link set eth0 down")
		}
		return ipBatch(n.Netns, append(append([]string{"link set eth0 up"}, l.podRoutes(n)...), l.routerRoutes()...)...)
	}
	return fmt.Errorf("no lab node %q", node)
}

// SetNodeAPI cuts a node off from the API server, or restores its way
// there. Node namespaces reach the API server through the lab's forwarder
// (127.0.0.1:6443 inside the node), which a LAN cut alone leaves working:
// with the API cut too, the node is as dead to the cluster as a powered-off
// one (its speaker can renew nothing). Cutting closes the node's open
// connections and refuses new ones.
func (l *Lab) SetNodeAPI(node string, reachable bool) error {
	f, ok := l.nodeForwarder[node]
	if !ok {
		return fmt.Errorf("no lab node %q", node)
	}
	f.setBlocked(!reachable)
	return nil
}

// SetNodeDead takes a node off the LAN and away from the API server
// (dead=true), and stops its kubelet heartbeats, or brings all back, LAN
// first.
func (l *Lab) SetNodeDead(node string, dead bool) error {
	l.SetNodeHeartbeat(node, !dead)
	if dead {
		if err := l.SetNodeAPI(node, false); err != nil {
			return err
		}
		return l.SetNodeLink(node, false)
	}
	if err := l.SetNodeLink(node, true); err != nil {
		return err
	}
	return l.SetNodeAPI(node, true)
}

// addHost creates namespace ns with a macvlan eth0 on the LAN.
func (l *Lab) addHost(ns, mac, ipv4, ipv6 string) error {
	if err := run("ip", "netns", "add", ns); err != nil {
		return err
	}
	tmp := "mv" + ns[len(nsPrefix):]
	if len(tmp) > 15 {
		tmp = tmp[:15]
	}
	if err := ipBatch(LANNetns,
		fmt.Sprintf("link add %s link %s address %s type macvlan mode bridge", tmp, lanParent, mac),
		fmt.Sprintf("link set %s netns %s", tmp, ns),
	); err != nil {
		return err
	}
	return ipBatch(ns,
		"link set lo up",
		fmt.Sprintf("link set %s name eth0", tmp),
		"link set eth0 up",
		fmt.Sprintf("addr add %s/25 dev eth0", ipv4),
		fmt.Sprintf("addr add %s/64 dev eth0 nodad", ipv6),
	)
}

// forwarder accepts TCP connections on a listener inside a namespace and
// relays each to an address in the machine's namespace. Node namespaces reach
// the API server through it, so nothing of the lab listens on the machine's
// own interfaces.
type forwarder struct {
	ln     net.Listener
	target string
	wg     sync.WaitGroup

	mu      sync.Mutex
	blocked bool
	conns   map[net.Conn]bool // open connections, both ends
}

func listenIn(ns, addr string) (net.Listener, error) {
	var ln net.Listener
	err := inNetns(ns, func() error {
		var err error
		ln, err = net.Listen("tcp", addr)
		return err
	})
	return ln, err
}

func startForwarder(ns, listen, target string) (*forwarder, error) {
	ln, err := listenIn(ns, listen)
	if err != nil {
		return nil, fmt.Errorf("forwarder in %s: %w", ns, err)
	}
	f := &forwarder{ln: ln, target: target, conns: map[net.Conn]bool{}}
	f.wg.Add(1)
	go f.serve()
	return f, nil
}

// track records an open connection; it reports false (and closes c) while
// the forwarder is blocked.
func (f *forwarder) track(c net.Conn) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.blocked {
		c.Close()
		return false
	}
	f.conns[c] = true
	return true
}

func (f *forwarder) untrack(c net.Conn) {
	f.mu.Lock()
	delete(f.conns, c)
	f.mu.Unlock()
	c.Close()
}

// setBlocked blocks (closing every open connection) or unblocks the forwarder.
func (f *forwarder) setBlocked(b bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.blocked = b
	if b {
		for c := range f.conns {
			c.Close()
		}
	}
}

func (f *forwarder) serve() {
	defer f.wg.Done()
	for {
		c, err := f.ln.Accept()
		if err != nil {
			return
		}
		if !f.track(c) {
			continue
		}
		go func() {
			defer f.untrack(c)
			u, err := net.DialTimeout("tcp", f.target, 5*time.Second)
			if err != nil {
				return
			}
			if !f.track(u) {
				return
			}
			defer f.untrack(u)
			done := make(chan struct{}, 2)
			go func() { _, _ = io.Copy(u, c); done <- struct{}{} }()
			go func() { _, _ = io.Copy(c, u); done <- struct{}{} }()
			<-done
		}()
	}
}

func (f *forwarder) close() { f.ln.Close(); f.setBlocked(true); f.wg.Wait() }

// DialContextIn returns a dial function whose sockets live in namespace ns,
// for HTTP clients that must reach a lab address from inside the lab.
func DialContextIn(ns string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		var c net.Conn
		err := inNetns(ns, func() error {
			var err error
			d := net.Dialer{Timeout: 5 * time.Second}
			c, err = d.DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}
}
