package migrate

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The MetalLB types below hold only what heraldctl reads, with MetalLB's JSON
// names: metallb.io/v1beta1 IPAddressPool, L2Advertisement, BGPAdvertisement,
// BFDProfile, Community and BGPPeer, metallb.io/v1beta2 BGPPeer, and the
// legacy ConfigMap (metallb-system/config, key "config") of MetalLB before
// v0.13. A field MetalLB has that is not here is reported as unknown, never
// dropped silently (see dropUnknown).

// mlbObject is the envelope of every MetalLB custom resource.
type mlbObject[S any] struct {
	APIVersion string            `json:"apiVersion"`
	Kind       string            `json:"kind"`
	Metadata   metav1.ObjectMeta `json:"metadata"`
	Spec       S                 `json:"spec"`
	// Status is read only so that it is not reported as unknown.
	Status map[string]any `json:"status,omitempty"`
}

type mlbPoolSpec struct {
	Addresses         []string              `json:"addresses"`
	AutoAssign        *bool                 `json:"autoAssign,omitempty"`
	AvoidBuggyIPs     bool                  `json:"avoidBuggyIPs,omitempty"`
	ServiceAllocation *mlbServiceAllocation `json:"serviceAllocation,omitempty"`
}

type mlbServiceAllocation struct {
	Priority           int                    `json:"priority,omitempty"`
	Namespaces         []string               `json:"namespaces,omitempty"`
	NamespaceSelectors []metav1.LabelSelector `json:"namespaceSelectors,omitempty"`
	ServiceSelectors   []metav1.LabelSelector `json:"serviceSelectors,omitempty"`
}

type mlbL2AdvertisementSpec struct {
	IPAddressPools         []string                   `json:"ipAddressPools,omitempty"`
	IPAddressPoolSelectors []metav1.LabelSelector     `json:"ipAddressPoolSelectors,omitempty"`
	NodeSelectors          []metav1.LabelSelector     `json:"nodeSelectors,omitempty"`
	Interfaces             []string                   `json:"interfaces,omitempty"`
	ServiceSelectors       []metav1.LabelSelector     `json:"serviceSelectors,omitempty"`
	PreferredNodeSelectors []mlbPreferredNodeSelector `json:"preferredNodeSelectors,omitempty"`
}

type mlbPreferredNodeSelector struct {
	Weight     int32                `json:"weight"`
	Preference metav1.LabelSelector `json:"preference"`
}

type mlbBGPAdvertisementSpec struct {
	AggregationLength      *int32                 `json:"aggregationLength,omitempty"`
	AggregationLengthV6    *int32                 `json:"aggregationLengthV6,omitempty"`
	LocalPref              uint32                 `json:"localPref,omitempty"`
	Communities            []string               `json:"communities,omitempty"`
	IPAddressPools         []string               `json:"ipAddressPools,omitempty"`
	IPAddressPoolSelectors []metav1.LabelSelector `json:"ipAddressPoolSelectors,omitempty"`
	NodeSelectors          []metav1.LabelSelector `json:"nodeSelectors,omitempty"`
	Peers                  []string               `json:"peers,omitempty"`
	ServiceSelectors       []metav1.LabelSelector `json:"serviceSelectors,omitempty"`
}

type mlbBFDProfileSpec struct {
	ReceiveInterval  *uint32 `json:"receiveInterval,omitempty"`
	TransmitInterval *uint32 `json:"transmitInterval,omitempty"`
	DetectMultiplier *uint32 `json:"detectMultiplier,omitempty"`
	EchoInterval     *uint32 `json:"echoInterval,omitempty"`
	EchoMode         *bool   `json:"echoMode,omitempty"`
	PassiveMode      *bool   `json:"passiveMode,omitempty"`
	MinimumTTL       *uint32 `json:"minimumTtl,omitempty"`
}

type mlbCommunitySpec struct {
	Communities []mlbCommunityAlias `json:"communities,omitempty"`
}

type mlbCommunityAlias struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// mlbBGPPeerSpec is metallb.io/v1beta2's BGPPeer spec; v1beta1's fields are
// a subset of it with the same names and meanings (v1beta1 has no
// dynamicASN, interface, connectTime, passwordSecret, enableGracefulRestart,
// vrf, disableMP, dualStackAddressFamily nor localASN), so one type reads
// both and apiVersion says which fields the version may have.
type mlbBGPPeerSpec struct {
	MyASN                  uint32                 `json:"myASN"`
	ASN                    uint32                 `json:"peerASN,omitempty"`
	DynamicASN             string                 `json:"dynamicASN,omitempty"`
	Address                string                 `json:"peerAddress,omitempty"`
	Interface              string                 `json:"interface,omitempty"`
	SrcAddress             string                 `json:"sourceAddress,omitempty"`
	Port                   uint16                 `json:"peerPort,omitempty"`
	HoldTime               *metav1.Duration       `json:"holdTime,omitempty"`
	KeepaliveTime          *metav1.Duration       `json:"keepaliveTime,omitempty"`
	ConnectTime            *metav1.Duration       `json:"connectTime,omitempty"`
	RouterID               string                 `json:"routerID,omitempty"`
	NodeSelectors          []metav1.LabelSelector `json:"nodeSelectors,omitempty"`
	Password               string                 `json:"password,omitempty"`
	PasswordSecret         *mlbSecretReference    `json:"passwordSecret,omitempty"`
	BFDProfile             string                 `json:"bfdProfile,omitempty"`
	EnableGracefulRestart  bool                   `json:"enableGracefulRestart,omitempty"`
	EBGPMultiHop           bool                   `json:"ebgpMultiHop,omitempty"`
	VRFName                string                 `json:"vrf,omitempty"`
	DisableMP              bool                   `json:"disableMP,omitempty"`
	DualStackAddressFamily bool                   `json:"dualStackAddressFamily,omitempty"`
	LocalASN               uint32                 `json:"localASN,omitempty"`
}

// v1beta2Only are the BGPPeer fields metallb.io/v1beta1 does not have.
var v1beta2Only = []string{"dynamicASN", "interface", "connectTime", "passwordSecret", "enableGracefulRestart", "vrf", "disableMP", "dualStackAddressFamily", "localASN"}

type mlbSecretReference struct {
	Name      string `json:"name,omitempty"`
	Namespace string `json:"namespace,omitempty"`
}

// legacyConfig is the YAML in the "config" key of MetalLB's ConfigMap
// (MetalLB v0.12 and before).
type legacyConfig struct {
	Peers          []legacyPeer      `json:"peers,omitempty"`
	BGPCommunities map[string]string `json:"bgp-communities,omitempty"`
	Pools          []legacyPool      `json:"address-pools,omitempty"`
	BFDProfiles    []legacyBFD       `json:"bfd-profiles,omitempty"`
}

type legacyPeer struct {
	MyASN         uint32           `json:"my-asn,omitempty"`
	ASN           uint32           `json:"peer-asn,omitempty"`
	Addr          string           `json:"peer-address,omitempty"`
	SrcAddr       string           `json:"source-address,omitempty"`
	Port          uint16           `json:"peer-port,omitempty"`
	HoldTime      string           `json:"hold-time,omitempty"`
	KeepaliveTime string           `json:"keepalive-time,omitempty"`
	RouterID      string           `json:"router-id,omitempty"`
	NodeSelectors []legacySelector `json:"node-selectors,omitempty"`
	Password      string           `json:"password,omitempty"`
	BFDProfile    string           `json:"bfd-profile,omitempty"`
	EBGPMultiHop  bool             `json:"ebgp-multihop,omitempty"`
}

type legacySelector struct {
	MatchLabels      map[string]string    `json:"match-labels,omitempty"`
	MatchExpressions []legacyRequirements `json:"match-expressions,omitempty"`
}

type legacyRequirements struct {
	Key      string   `json:"key"`
	Operator string   `json:"operator"`
	Values   []string `json:"values,omitempty"`
}

type legacyPool struct {
	Protocol          string                  `json:"protocol"`
	Name              string                  `json:"name"`
	Addresses         []string                `json:"addresses"`
	AvoidBuggyIPs     bool                    `json:"avoid-buggy-ips,omitempty"`
	AutoAssign        *bool                   `json:"auto-assign,omitempty"`
	BGPAdvertisements []legacyBGPAdvertisment `json:"bgp-advertisements,omitempty"`
}

type legacyBGPAdvertisment struct {
	AggregationLength   *int32   `json:"aggregation-length,omitempty"`
	AggregationLengthV6 *int32   `json:"aggregation-length-v6,omitempty"`
	LocalPref           *uint32  `json:"localpref,omitempty"`
	Communities         []string `json:"communities,omitempty"`
}

type legacyBFD struct {
	Name             string  `json:"name"`
	ReceiveInterval  *uint32 `json:"receive-interval,omitempty"`
	TransmitInterval *uint32 `json:"transmit-interval,omitempty"`
	DetectMultiplier *uint32 `json:"detect-multiplier,omitempty"`
	EchoInterval     *uint32 `json:"echo-interval,omitempty"`
	EchoMode         *bool   `json:"echo-mode,omitempty"`
	PassiveMode      *bool   `json:"passive-mode,omitempty"`
	MinimumTTL       *uint32 `json:"minimum-ttl,omitempty"`
}
