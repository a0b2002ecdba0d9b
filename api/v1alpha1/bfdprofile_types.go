package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// BFDProfileSpec holds the BFD (RFC 5880) parameters of the sessions that use the
// profile. Intervals are in milliseconds.
type BFDProfileSpec struct {
	// receiveInterval is the minimum interval, in milliseconds, at which this
	// system can receive control packets.
	// +optional
	// +kubebuilder:default=300
	// +kubebuilder:validation:Minimum=10
	// +kubebuilder:validation:Maximum=60000
	ReceiveInterval *int32 `json:"receiveInterval,omitempty"`

	// transmitInterval is the minimum interval, in milliseconds, at which this
	// system sends control packets.
	// +optional
	// +kubebuilder:default=300
	// +kubebuilder:validation:Minimum=10
	// +kubebuilder:validation:Maximum=60000
	TransmitInterval *int32 `json:"transmitInterval,omitempty"`

	// detectMultiplier is how many control packets may be missed before the
	// session is declared down.
	// +optional
	// +kubebuilder:default=3
	// +kubebuilder:validation:Minimum=2
	// +kubebuilder:validation:Maximum=255
	DetectMultiplier *int32 `json:"detectMultiplier,omitempty"`

	// echoInterval is the minimum interval, in milliseconds, at which this system
	// sends echo packets, when echoMode is on.
	// +optional
	// +kubebuilder:default=50
	// +kubebuilder:validation:Minimum=10
	// +kubebuilder:validation:Maximum=60000
	EchoInterval *int32 `json:"echoInterval,omitempty"`

	// echoMode turns on BFD echo: the peer loops echo packets back, which
	// detects forwarding failures faster.
	// +optional
	EchoMode bool `json:"echoMode,omitempty"`

	// passiveMode waits for the peer to start the session instead of starting it.
	// +optional
	PassiveMode bool `json:"passiveMode,omitempty"`

	// minimumTtl is the lowest TTL accepted on incoming control packets of
	// multi-hop sessions (1 to 254).
	// +optional
	// +kubebuilder:default=254
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=254
	MinimumTTL *int32 `json:"minimumTtl,omitempty"`
}

// BFDProfileStatus reports whether the profile is in force.
type BFDProfileStatus struct {
	// conditions: Accepted is False, with a reason and message, when the profile
	// cannot be used as written.
	// +optional
	// +listType=map
	// +listMapKey=type
	// +patchStrategy=merge
	// +patchMergeKey=type
	// +kubebuilder:validation:MaxItems=16
	Conditions []metav1.Condition `json:"conditions,omitempty" patchStrategy:"merge" patchMergeKey:"type"`
}

// BFDProfile is a set of BFD parameters BGPPeers refer to by name.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,categories=herald
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="Receive",type=integer,JSONPath=`.spec.receiveInterval`
// +kubebuilder:printcolumn:name="Transmit",type=integer,JSONPath=`.spec.transmitInterval`
// +kubebuilder:printcolumn:name="Multiplier",type=integer,JSONPath=`.spec.detectMultiplier`
// +kubebuilder:printcolumn:name="Echo",type=boolean,JSONPath=`.spec.echoMode`,priority=1
// +kubebuilder:printcolumn:name="Passive",type=boolean,JSONPath=`.spec.passiveMode`,priority=1
// +kubebuilder:printcolumn:name="Accepted",type=string,JSONPath=`.status.conditions[?(@.type=="Accepted")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type BFDProfile struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec holds the BFD parameters. Every field has a default, and spec itself
	// defaults to empty so the defaults apply when it is left out.
	// +optional
	// +kubebuilder:default={}
	Spec BFDProfileSpec `json:"spec,omitempty"`

	// +optional
	Status BFDProfileStatus `json:"status,omitempty"`
}

// BFDProfileList is a list of BFDProfiles.
//
// +kubebuilder:object:root=true
type BFDProfileList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []BFDProfile `json:"items"`
}

func init() {
	SchemeBuilder.Register(&BFDProfile{}, &BFDProfileList{})
}
