package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// L2AdvertisementSpec says which pools' addresses are announced on the LAN, from
// which nodes and on which interfaces. A node answers ARP (IPv4) or NDP (IPv6) for
// an address it owns; exactly one eligible node owns each address at a time.
type L2AdvertisementSpec struct {
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

	// nodeSelectors limits the nodes that may announce to those whose labels
	// match any of these selectors. Empty means every node with a speaker.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=16
	NodeSelectors []metav1.LabelSelector `json:"nodeSelectors,omitempty"`

	// interfaces limits the network interfaces announcements are made on (Linux
	// interface names, such as eth0 or bond0.100). Empty means the interface that
	// has an address in the same subnet as the announced address.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=32
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=15
	// +kubebuilder:validation:items:XValidation:rule="self != '.' && self != '..' && !self.matches('[[:space:]/:]')",messageExpression="'interfaces: ' + self + ' is not a Linux interface name (at most 15 characters, no slash, colon or white space; not . or ..)'"
	Interfaces []string `json:"interfaces,omitempty"`

	// serviceSelectors limits the advertisement to Services whose labels match any
	// of these selectors. Empty means every Service with an address from the
	// selected pools.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=16
	ServiceSelectors []metav1.LabelSelector `json:"serviceSelectors,omitempty"`

	// preferredNodes lists nodes, by name, in order of preference. The first
	// listed node that is a live candidate owns the address; when none is, the
	// owner is picked among all candidates as usual (a hash of node and address).
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=32
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=253
	// +kubebuilder:validation:items:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	// +kubebuilder:validation:XValidation:rule="self.all(n, self.exists_one(m, m == n))",message="preferredNodes: a node is listed more than once"
	PreferredNodes []string `json:"preferredNodes,omitempty"`
}

// ConditionKubeProxyStrictARP is present on every L2Advertisement while
// kube-proxy keeps layer 2 from working as announced: False (reason
// StrictARPDisabled) when kube-proxy runs in IPVS mode without
// ipvs.strictARP and Herald's dataplane is off, so every node answers ARP
// for every LoadBalancer address; Unknown when kube-proxy's ConfigMap
// (kube-system/kube-proxy) cannot be read. It is removed once that is fixed.
const ConditionKubeProxyStrictARP = "KubeProxyStrictARP"

// L2AdvertisementStatus reports whether the advertisement is in force.
type L2AdvertisementStatus struct {
	// conditions: Accepted is False, with a reason and message, when the
	// advertisement cannot be used as written. KubeProxyStrictARP is False
	// while kube-proxy, in IPVS mode without strictARP, makes every node
	// answer ARP for every LoadBalancer address.
	// +optional
	// +listType=map
	// +listMapKey=type
	// +patchStrategy=merge
	// +patchMergeKey=type
	// +kubebuilder:validation:MaxItems=16
	Conditions []metav1.Condition `json:"conditions,omitempty" patchStrategy:"merge" patchMergeKey:"type"`
}

// L2Advertisement announces pools' addresses on the local network by answering
// ARP and NDP for them.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,categories=herald
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="Pools",type=string,JSONPath=`.spec.ipAddressPools`
// +kubebuilder:printcolumn:name="Interfaces",type=string,JSONPath=`.spec.interfaces`
// +kubebuilder:printcolumn:name="Accepted",type=string,JSONPath=`.status.conditions[?(@.type=="Accepted")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type L2Advertisement struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +optional
	Spec L2AdvertisementSpec `json:"spec,omitempty"`

	// +optional
	Status L2AdvertisementStatus `json:"status,omitempty"`
}

// L2AdvertisementList is a list of L2Advertisements.
//
// +kubebuilder:object:root=true
type L2AdvertisementList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []L2Advertisement `json:"items"`
}

func init() {
	SchemeBuilder.Register(&L2Advertisement{}, &L2AdvertisementList{})
}
