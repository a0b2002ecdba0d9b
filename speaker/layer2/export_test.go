package layer2

// ARPRequest builds a broadcast ARP request frame for the package's
// external tests.
var ARPRequest = arpRequest
