// Package ipvsvm proves the ipvs dataplane backend against a real IPVS: its
// test boots a Debian kernel under QEMU (this machine's kernel has no IPVS;
// see internal/qemutest) with this package's own test binary as the guest
// program, which builds a node, a client and three backends in network
// namespaces, programs IPVS through the backend's Sync, and checks what a
// user would: which backend answers an HTTP GET to the VIP, for each
// scheduler, with affinity, and with which source address.
//
// The package has no code outside its tests.
package ipvsvm
