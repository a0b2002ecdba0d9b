package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// BGPSessionSpec names one BGP session: a node's session to one BGPPeer.
type BGPSessionSpec struct {
	// node runs the session.
	Node string `json:"node"`
	// peer is the BGPPeer.
	Peer string `json:"peer"`
	// peerAddress is the router's address.
	// +optional
	PeerAddress string `json:"peerAddress,omitempty"`
}

// BGPSessionStatus is the session as the node's speaker last saw it.
type BGPSessionStatus struct {
	// state is the BGP state (RFC 4271 8.2.2): Idle, Connect, Active,
	// OpenSent, OpenConfirm or Established; or Blocked when the session
	// cannot run as configured (see reason).
	// +optional
	State string `json:"state,omitempty"`
	// establishedSince is when the session last became Established (its
	// uptime); unset while it is not.
	// +optional
	EstablishedSince *metav1.Time `json:"establishedSince,omitempty"`
	// peerASN is the AS the router announced (Established only).
	// +optional
	PeerASN uint32 `json:"peerASN,omitempty"`
	// bfd is the BFD session's state (Up, Down, Init, AdminDown); empty
	// without a bfdProfile.
	// +optional
	BFD string `json:"bfd,omitempty"`
	// prefixesAdvertised counts the prefixes announced to the router.
	// +optional
	PrefixesAdvertised int32 `json:"prefixesAdvertised,omitempty"`
	// prefixes lists them, up to 64.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=64
	Prefixes []string `json:"prefixes,omitempty"`
	// flaps counts the times the session left Established since the speaker
	// started.
	// +optional
	Flaps int64 `json:"flaps,omitempty"`
	// reason says why the session is not Established, when known.
	// +optional
	Reason string `json:"reason,omitempty"`
	// warnings are settings of the BGPPeer the speaker cannot honour as
	// written.
	// +optional
	// +listType=atomic
	Warnings []string `json:"warnings,omitempty"`
}

// BGPSession is written by the speaker of a node for each of its BGP
// sessions, so "is node-2 peering with the router, since when, with BFD, and
// what does it announce?" is one command: kubectl get bgpsessions.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,shortName=bgps,categories=herald
// +kubebuilder:printcolumn:name="Node",type=string,JSONPath=`.spec.node`
// +kubebuilder:printcolumn:name="Peer",type=string,JSONPath=`.spec.peer`
// +kubebuilder:printcolumn:name="Address",type=string,JSONPath=`.spec.peerAddress`
// +kubebuilder:printcolumn:name="State",type=string,JSONPath=`.status.state`
// +kubebuilder:printcolumn:name="BFD",type=string,JSONPath=`.status.bfd`
// +kubebuilder:printcolumn:name="Prefixes",type=integer,JSONPath=`.status.prefixesAdvertised`
// +kubebuilder:printcolumn:name="Up",type=date,JSONPath=`.status.establishedSince`
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.reason`
type BGPSession struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec BGPSessionSpec `json:"spec"`
	// +optional
	Status BGPSessionStatus `json:"status,omitempty"`
}

// BGPSessionList is a list of BGPSessions.
//
// +kubebuilder:object:root=true
type BGPSessionList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []BGPSession `json:"items"`
}

func init() {
	SchemeBuilder.Register(&BGPSession{}, &BGPSessionList{})
}
