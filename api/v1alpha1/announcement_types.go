package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// AnnouncementSpec says which node announces a Service's addresses, how, and
// where. Each speaker writes only the Announcements of its own node, named
// <service>-<node>, so speakers never contend for one object.
type AnnouncementSpec struct {
	// service is the name of the announced Service, in the Announcement's namespace.
	Service string `json:"service"`
	// ips are the Service's addresses this node announces.
	// +listType=atomic
	IPs []string `json:"ips"`
	// mode is layer2 (the node answers ARP/NDP) or bgp (the node advertises routes).
	// +kubebuilder:validation:Enum=layer2;bgp
	Mode string `json:"mode"`
	// node is the announcing node.
	Node string `json:"node"`
	// interfaces are the node's interfaces that answer ARP/NDP (layer2).
	// +optional
	// +listType=atomic
	Interfaces []string `json:"interfaces,omitempty"`
	// peers are the BGP peers the routes go to (bgp).
	// +optional
	// +listType=atomic
	Peers []string `json:"peers,omitempty"`
}

// Announcement is written by the speaker that announces a Service's addresses,
// so "which node answers for 203.0.113.10, on which interface?" is one
// command: kubectl get announcements -A.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Namespaced,shortName=ann,categories=herald
// +kubebuilder:printcolumn:name="Service",type=string,JSONPath=`.spec.service`
// +kubebuilder:printcolumn:name="IPs",type=string,JSONPath=`.spec.ips`
// +kubebuilder:printcolumn:name="Mode",type=string,JSONPath=`.spec.mode`
// +kubebuilder:printcolumn:name="Node",type=string,JSONPath=`.spec.node`
// +kubebuilder:printcolumn:name="Interfaces",type=string,JSONPath=`.spec.interfaces`
// +kubebuilder:printcolumn:name="Peers",type=string,JSONPath=`.spec.peers`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type Announcement struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec AnnouncementSpec `json:"spec"`
}

// AnnouncementList is a list of Announcements.
//
// +kubebuilder:object:root=true
type AnnouncementList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Announcement `json:"items"`
}

func init() {
	SchemeBuilder.Register(&Announcement{}, &AnnouncementList{})
}
