// Package ipvsvm proves the ipvs dataplane backend against a real IPVS: its
// test boots a Debian kernel under QEMU (this machine's kernel has no IPVS;
// see internal/qemutest) with this package's own test binary as the guest
// program, which builds a node, a client and three backends in network
// namespaces, programs IPVS through the backend's Sync, and checks what a
// user would: which backend answers an HTTP GET (or a UDP datagram) to the
// VIP, for each scheduler, with affinity, and with which source address;
// that the node stays silent to ARP and NDP for a VIP; that a restart adopts
// the kernel's services and Cleanup leaves only what is not Herald's.
//
// The package has no code outside its tests.
package ipvsvm
