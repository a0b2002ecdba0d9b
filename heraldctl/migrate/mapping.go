package migrate

import (
	"fmt"
	"io"
	"strings"
)

// FieldMapping is one row of the table of every MetalLB field and where
// heraldctl migrate puts it (TestEveryMetalLBFieldIsInTheTable keeps it
// complete against the MetalLB types heraldctl reads).
type FieldMapping struct {
	MetalLB string // "IPAddressPool spec.addresses"; legacy ConfigMap rows start with "ConfigMap"
	Herald  string // "IPAddressPool spec.addresses", or "none"
	Note    string
}

// Fields is the table.
var Fields = []FieldMapping{
	{"IPAddressPool metadata.name", "IPAddressPool metadata.name", "kept; Herald's kinds are cluster-scoped, so metadata.namespace is dropped (a name used twice is LOST)"},
	{"IPAddressPool metadata.labels", "IPAddressPool metadata.labels", "kept: advertisements select pools by them"},
	{"IPAddressPool spec.addresses", "IPAddressPool spec.addresses", "CIDRs written as their network address (MetalLB ignores host bits, Herald refuses them), ranges as a-b; addresses not in ascending order are LOST (MetalLB allocates in listed order, Herald lowest first)"},
	{"IPAddressPool spec.autoAssign", "IPAddressPool spec.autoAssign", "same meaning, same default (true)"},
	{"IPAddressPool spec.avoidBuggyIPs", "IPAddressPool spec.avoidBuggyIPs", "same meaning: IPv4 addresses ending in .0 or .255 are skipped"},
	{"IPAddressPool spec.serviceAllocation", "IPAddressPool spec.serviceAllocation", "kept, field by field below; present means the pool is tried before pools without it, only for the Services it selects, in both"},
	{"IPAddressPool spec.serviceAllocation.priority", "IPAddressPool spec.serviceAllocation.priority", "same order (lower first); MetalLB's unset (0) means last, written as 2147483647 because Herald's 0 means first"},
	{"IPAddressPool spec.serviceAllocation.namespaces", "IPAddressPool spec.serviceAllocation.namespaces", "kept; with namespaceSelectors too it becomes one more namespaceSelector on kubernetes.io/metadata.name (MetalLB allows listed OR selected, Herald listed AND selected)"},
	{"IPAddressPool spec.serviceAllocation.namespaceSelectors", "IPAddressPool spec.serviceAllocation.namespaceSelectors", "kept"},
	{"IPAddressPool spec.serviceAllocation.serviceSelectors", "IPAddressPool spec.serviceAllocation.serviceSelectors", "kept"},

	{"L2Advertisement metadata.name", "L2Advertisement metadata.name", "kept"},
	{"L2Advertisement metadata.labels", "L2Advertisement metadata.labels", "kept"},
	{"L2Advertisement spec.ipAddressPools", "L2Advertisement spec.ipAddressPools", "kept; neither pools nor selectors means every pool in both"},
	{"L2Advertisement spec.ipAddressPoolSelectors", "L2Advertisement spec.ipAddressPoolSelectors", "kept"},
	{"L2Advertisement spec.nodeSelectors", "L2Advertisement spec.nodeSelectors", "kept"},
	{"L2Advertisement spec.interfaces", "L2Advertisement spec.interfaces", "kept"},
	{"L2Advertisement spec.serviceSelectors", "L2Advertisement spec.serviceSelectors", "kept"},
	{"L2Advertisement spec.preferredNodeSelectors", "none", "LOST: Herald's spec.preferredNodes lists node names in order; list the nodes the weighted selectors pick, heaviest first"},
	{"L2Advertisement spec.preferredNodeSelectors.weight", "none", "see preferredNodeSelectors"},
	{"L2Advertisement spec.preferredNodeSelectors.preference", "none", "see preferredNodeSelectors"},

	{"BGPAdvertisement metadata.name", "BGPAdvertisement metadata.name", "kept (an eBGP part split off for localPref gets -ebgp appended)"},
	{"BGPAdvertisement metadata.labels", "BGPAdvertisement metadata.labels", "kept"},
	{"BGPAdvertisement spec.aggregationLength", "BGPAdvertisement spec.aggregationLength", "kept; a length Herald's model refuses (shorter than a pool's most specific prefix) leaves the advertisement LOST"},
	{"BGPAdvertisement spec.aggregationLengthV6", "BGPAdvertisement spec.aggregationLengthV6", "kept, as aggregationLength"},
	{"BGPAdvertisement spec.localPref", "BGPAdvertisement spec.localPref", "kept (0, MetalLB's unset, is left out); for named eBGP peers, which never get LOCAL_PREF, it is left out of a separate <name>-ebgp advertisement, as Herald refuses it there"},
	{"BGPAdvertisement spec.communities", "BGPAdvertisement spec.communities", "values kept; names of Community aliases are replaced by their values"},
	{"BGPAdvertisement spec.ipAddressPools", "BGPAdvertisement spec.ipAddressPools", "kept"},
	{"BGPAdvertisement spec.ipAddressPoolSelectors", "BGPAdvertisement spec.ipAddressPoolSelectors", "kept"},
	{"BGPAdvertisement spec.nodeSelectors", "BGPAdvertisement spec.nodeSelectors", "kept"},
	{"BGPAdvertisement spec.peers", "BGPAdvertisement spec.peers", "kept (BGPPeer names are kept)"},
	{"BGPAdvertisement spec.serviceSelectors", "BGPAdvertisement spec.serviceSelectors", "kept"},

	{"BFDProfile metadata.name", "BFDProfile metadata.name", "kept"},
	{"BFDProfile metadata.labels", "BFDProfile metadata.labels", "kept"},
	{"BFDProfile spec.receiveInterval", "BFDProfile spec.receiveInterval", "same unit (ms), range and default"},
	{"BFDProfile spec.transmitInterval", "BFDProfile spec.transmitInterval", "same unit (ms), range and default"},
	{"BFDProfile spec.detectMultiplier", "BFDProfile spec.detectMultiplier", "same range and default"},
	{"BFDProfile spec.echoInterval", "BFDProfile spec.echoInterval", "same unit (ms), range and default"},
	{"BFDProfile spec.echoMode", "BFDProfile spec.echoMode", "same"},
	{"BFDProfile spec.passiveMode", "BFDProfile spec.passiveMode", "same"},
	{"BFDProfile spec.minimumTtl", "BFDProfile spec.minimumTtl", "same range and default"},

	{"Community metadata.name", "none", "Herald has no Community kind; nothing refers to it by name"},
	{"Community metadata.labels", "none", "as metadata.name"},
	{"Community spec.communities", "none", "each alias's value is written into the BGPAdvertisements that name it"},
	{"Community spec.communities.name", "none", "replaced by its value where used"},
	{"Community spec.communities.value", "BGPAdvertisement spec.communities", "standard (a:b) and large (large:a:b:c) values, as Herald writes them"},

	{"BGPPeer metadata.name", "BGPPeer metadata.name", "kept"},
	{"BGPPeer metadata.labels", "BGPPeer metadata.labels", "kept"},
	{"BGPPeer spec.myASN", "BGPPeer spec.myASN", "kept"},
	{"BGPPeer spec.peerASN", "BGPPeer spec.peerASN", "kept"},
	{"BGPPeer spec.dynamicASN", "BGPPeer spec.dynamicASN", "v1beta2; same values (internal, external)"},
	{"BGPPeer spec.peerAddress", "BGPPeer spec.peerAddress", "kept"},
	{"BGPPeer spec.interface", "none", "v1beta2; LOST: Herald peers with an address, not over an interface (unnumbered BGP): give the router an address and set peerAddress"},
	{"BGPPeer spec.sourceAddress", "BGPPeer spec.sourceAddress", "kept"},
	{"BGPPeer spec.peerPort", "BGPPeer spec.peerPort", "kept; same default (179)"},
	{"BGPPeer spec.holdTime", "BGPPeer spec.holdTime", "whole seconds; unset with keepaliveTime set is written as 3 x keepaliveTime (MetalLB's rule; Herald's default is 90s); 0 is LOST (the embedded GoBGP needs a hold time)"},
	{"BGPPeer spec.keepaliveTime", "BGPPeer spec.keepaliveTime", "whole seconds; must be less than holdTime in Herald (MetalLB allows equal: LOST, a third of holdTime is used)"},
	{"BGPPeer spec.connectTime", "BGPPeer spec.connectTime", "v1beta2; whole seconds, same range"},
	{"BGPPeer spec.routerID", "BGPPeer spec.routerID", "kept; must be IPv4 (RFC 6286) in Herald"},
	{"BGPPeer spec.nodeSelectors", "BGPPeer spec.nodeSelectors", "kept (v1beta1's own selector type has LabelSelector's fields)"},
	{"BGPPeer spec.password", "BGPPeer spec.passwordSecret", "never copied: refers to Secret <peer>-bgp-password (key password) in Herald's namespace, to be created by hand (ACTION)"},
	{"BGPPeer spec.passwordSecret", "BGPPeer spec.passwordSecret", "v1beta2; same Secret name, key password; Herald reads it in its own namespace: copy it there by hand (ACTION); heraldctl never reads Secrets"},
	{"BGPPeer spec.passwordSecret.name", "BGPPeer spec.passwordSecret.name", "kept"},
	{"BGPPeer spec.passwordSecret.namespace", "none", "Herald reads Secrets in its own namespace only; see passwordSecret"},
	{"BGPPeer spec.bfdProfile", "BGPPeer spec.bfdProfile", "kept"},
	{"BGPPeer spec.enableGracefulRestart", "BGPPeer spec.gracefulRestart", "v1beta2; same meaning (RFC 4724)"},
	{"BGPPeer spec.ebgpMultiHop", "BGPPeer spec.ebgpMultiHop", "kept; left out for dynamicASN internal (iBGP), where it has no effect and Herald refuses it"},
	{"BGPPeer spec.vrf", "BGPPeer spec.vrf", "v1beta2; kept, but LOST: Herald reports sessions in a VRF as Blocked (not supported yet)"},
	{"BGPPeer spec.disableMP", "none", "v1beta2, deprecated; LOST: Herald always negotiates both families on one session"},
	{"BGPPeer spec.dualStackAddressFamily", "none", "v1beta2; Herald always does this (both families on every session); nothing to set"},
	{"BGPPeer spec.localASN", "none", "v1beta2, FRR only; LOST: Herald has no local-as"},

	{"ConfigMap data.config", "all of the above", "MetalLB before v0.13; read as the custom resources MetalLB v0.13 replaced it with, then as above"},
	{"ConfigMap address-pools", "IPAddressPool", "one each, plus its advertisements (see protocol)"},
	{"ConfigMap address-pools.name", "IPAddressPool metadata.name", "kept; also names the pool's L2Advertisement or first BGPAdvertisement"},
	{"ConfigMap address-pools.protocol", "L2Advertisement / BGPAdvertisement", "layer2: an L2Advertisement named after the pool; bgp: a BGPAdvertisement per bgp-advertisements entry (<pool>, <pool>-2, ...), or one with the defaults when there is none"},
	{"ConfigMap address-pools.addresses", "IPAddressPool spec.addresses", "as spec.addresses"},
	{"ConfigMap address-pools.avoid-buggy-ips", "IPAddressPool spec.avoidBuggyIPs", "same"},
	{"ConfigMap address-pools.auto-assign", "IPAddressPool spec.autoAssign", "same"},
	{"ConfigMap address-pools.bgp-advertisements", "BGPAdvertisement", "one each, naming the pool in spec.ipAddressPools"},
	{"ConfigMap address-pools.bgp-advertisements.aggregation-length", "BGPAdvertisement spec.aggregationLength", "as aggregationLength"},
	{"ConfigMap address-pools.bgp-advertisements.aggregation-length-v6", "BGPAdvertisement spec.aggregationLengthV6", "as aggregationLengthV6"},
	{"ConfigMap address-pools.bgp-advertisements.localpref", "BGPAdvertisement spec.localPref", "as localPref"},
	{"ConfigMap address-pools.bgp-advertisements.communities", "BGPAdvertisement spec.communities", "as communities; names from bgp-communities replaced by values"},
	{"ConfigMap peers", "BGPPeer", "one each, named peer-<address> (peer-198-51-100-1)"},
	{"ConfigMap peers.my-asn", "BGPPeer spec.myASN", "kept"},
	{"ConfigMap peers.peer-asn", "BGPPeer spec.peerASN", "kept"},
	{"ConfigMap peers.peer-address", "BGPPeer spec.peerAddress", "kept"},
	{"ConfigMap peers.source-address", "BGPPeer spec.sourceAddress", "kept"},
	{"ConfigMap peers.peer-port", "BGPPeer spec.peerPort", "kept"},
	{"ConfigMap peers.hold-time", "BGPPeer spec.holdTime", "as holdTime"},
	{"ConfigMap peers.keepalive-time", "BGPPeer spec.keepaliveTime", "as keepaliveTime"},
	{"ConfigMap peers.router-id", "BGPPeer spec.routerID", "as routerID"},
	{"ConfigMap peers.node-selectors", "BGPPeer spec.nodeSelectors", "match-labels and match-expressions become matchLabels and matchExpressions"},
	{"ConfigMap peers.node-selectors.match-labels", "BGPPeer spec.nodeSelectors.matchLabels", "kept"},
	{"ConfigMap peers.node-selectors.match-expressions", "BGPPeer spec.nodeSelectors.matchExpressions", "kept"},
	{"ConfigMap peers.node-selectors.match-expressions.key", "BGPPeer spec.nodeSelectors.matchExpressions.key", "kept"},
	{"ConfigMap peers.node-selectors.match-expressions.operator", "BGPPeer spec.nodeSelectors.matchExpressions.operator", "kept"},
	{"ConfigMap peers.node-selectors.match-expressions.values", "BGPPeer spec.nodeSelectors.matchExpressions.values", "kept"},
	{"ConfigMap peers.password", "BGPPeer spec.passwordSecret", "as password (ACTION: create the Secret)"},
	{"ConfigMap peers.bfd-profile", "BGPPeer spec.bfdProfile", "kept"},
	{"ConfigMap peers.ebgp-multihop", "BGPPeer spec.ebgpMultiHop", "kept"},
	{"ConfigMap bgp-communities", "BGPAdvertisement spec.communities", "aliases replaced by their values where used"},
	{"ConfigMap bfd-profiles", "BFDProfile", "one each"},
	{"ConfigMap bfd-profiles.name", "BFDProfile metadata.name", "kept"},
	{"ConfigMap bfd-profiles.receive-interval", "BFDProfile spec.receiveInterval", "same"},
	{"ConfigMap bfd-profiles.transmit-interval", "BFDProfile spec.transmitInterval", "same"},
	{"ConfigMap bfd-profiles.detect-multiplier", "BFDProfile spec.detectMultiplier", "same"},
	{"ConfigMap bfd-profiles.echo-interval", "BFDProfile spec.echoInterval", "same"},
	{"ConfigMap bfd-profiles.echo-mode", "BFDProfile spec.echoMode", "same"},
	{"ConfigMap bfd-profiles.passive-mode", "BFDProfile spec.passiveMode", "same"},
	{"ConfigMap bfd-profiles.minimum-ttl", "BFDProfile spec.minimumTtl", "same"},
}

// WriteFieldTable writes Fields as a Markdown table.
func WriteFieldTable(w io.Writer) error {
	var b strings.Builder
	b.WriteString("| MetalLB | Herald | how |\n| --- | --- | --- |\n")
	for _, f := range Fields {
		herald := f.Herald
		if herald != "none" {
			herald = "`" + herald + "`"
		}
		fmt.Fprintf(&b, "| `%s` | %s | %s |\n", f.MetalLB, herald, f.Note)
	}
	_, err := io.WriteString(w, b.String())
	return err
}
