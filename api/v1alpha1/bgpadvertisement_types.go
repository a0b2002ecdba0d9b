package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// BGPAdvertisementSpec says which pools' addresses are announced over BGP, to
// which peers, from which nodes and with which attributes.
type BGPAdvertisementSpec struct {
	// ipAddressPools names the pools whose addresses this advertisement
	// announces. With neither ipAddressPools nor ipAddressPoolSelectors, every
	// pool is announced.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=253
	// +kubebuilder:validation:items:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	IPAddressPools []string `json:"ipAddressPools,omitempty"`

	// ipAddressPoolSelectors selects, by their labels, more pools to announce.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=16
	IPAddressPoolSelectors []metav1.LabelSelector `json:"ipAddressPoolSelectors,omitempty"`

	// aggregationLength is the prefix length IPv4 addresses are announced with:
	// 32 (the default) announces each address, a shorter length announces the
	// covering prefix once.
	// +optional
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=32
	AggregationLength *int32 `json:"aggregationLength,omitempty"`

	// aggregationLengthV6 is the prefix length IPv6 addresses are announced with:
	// 128 (the default) announces each address.
	// +optional
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=128
	AggregationLengthV6 *int32 `json:"aggregationLengthV6,omitempty"`

	// localPref is the LOCAL_PREF attribute of the announced routes; it is sent
	// to iBGP peers only.
	// +optional
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=4294967295
	// +kubebuilder:validation:Format=int64
	LocalPref *uint32 `json:"localPref,omitempty"`

	// communities are attached to the announced routes. Each is a standard
	// community "ASN:value" with both parts from 0 to 65535 (RFC 1997), a large
	// community "large:global:local1:local2" with each part from 0 to 4294967295
	// (RFC 8092), or a well-known name: no-export (65535:65281), no-advertise
	// (65535:65282), no-export-subconfed (65535:65283), no-peer (65535:65284),
	// blackhole (65535:666), graceful-shutdown (65535:0), accept-own (65535:1),
	// llgr-stale (65535:6), no-llgr (65535:7).
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=32
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=40
	// +kubebuilder:validation:items:XValidation:rule="self in ['no-export', 'no-advertise', 'no-export-subconfed', 'no-peer', 'blackhole', 'graceful-shutdown', 'accept-own', 'llgr-stale', 'no-llgr'] || (self.matches('^[0-9]{1,5}:[0-9]{1,5}$') && int(self.split(':')[0]) <= 65535 && int(self.split(':')[1]) <= 65535) || (self.matches('^large:[0-9]{1,10}:[0-9]{1,10}:[0-9]{1,10}$') && int(self.split(':')[1]) <= 4294967295 && int(self.split(':')[2]) <= 4294967295 && int(self.split(':')[3]) <= 4294967295)",messageExpression="'communities: ' + self + ' is not a community: write ASN:value (65535:65282, each part at most 65535), large:global:local1:local2 (each part at most 4294967295) or a well-known name such as no-advertise'"
	Communities []string `json:"communities,omitempty"`

	// peers names the BGPPeers to announce to. Empty means every peer.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=253
	// +kubebuilder:validation:items:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	Peers []string `json:"peers,omitempty"`

	// nodeSelectors limits the nodes that announce to those whose labels match
	// any of these selectors. Empty means every node with a speaker.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=16
	NodeSelectors []metav1.LabelSelector `json:"nodeSelectors,omitempty"`

	// serviceSelectors limits the advertisement to Services whose labels match any
	// of these selectors. Empty means every Service with an address from the
	// selected pools.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=16
	ServiceSelectors []metav1.LabelSelector `json:"serviceSelectors,omitempty"`
}

// BGPAdvertisementStatus reports whether the advertisement is in force.
type BGPAdvertisementStatus struct {
	// conditions: Accepted is False, with a reason and message, when the
	// advertisement cannot be used as written (for example an aggregationLength
	// shorter than a selected pool's prefix).
	// +optional
	// +listType=map
	// +listMapKey=type
	// +patchStrategy=merge
	// +patchMergeKey=type
	// +kubebuilder:validation:MaxItems=16
	Conditions []metav1.Condition `json:"conditions,omitempty" patchStrategy:"merge" patchMergeKey:"type"`
}

// BGPAdvertisement announces pools' addresses to BGP peers.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,categories=herald
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="Pools",type=string,JSONPath=`.spec.ipAddressPools`
// +kubebuilder:printcolumn:name="Peers",type=string,JSONPath=`.spec.peers`
// +kubebuilder:printcolumn:name="Communities",type=string,JSONPath=`.spec.communities`,priority=1
// +kubebuilder:printcolumn:name="Accepted",type=string,JSONPath=`.status.conditions[?(@.type=="Accepted")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type BGPAdvertisement struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +optional
	Spec BGPAdvertisementSpec `json:"spec,omitempty"`

	// +optional
	Status BGPAdvertisementStatus `json:"status,omitempty"`
}

// BGPAdvertisementList is a list of BGPAdvertisements.
//
// +kubebuilder:object:root=true
type BGPAdvertisementList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []BGPAdvertisement `json:"items"`
}

func init() {
	SchemeBuilder.Register(&BGPAdvertisement{}, &BGPAdvertisementList{})
}
