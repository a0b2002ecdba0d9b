package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// DynamicASN says how to accept a peer's AS number without naming it.
// +kubebuilder:validation:Enum=internal;external
type DynamicASN string

const (
	// DynamicASNInternal accepts a peer in our own AS (iBGP).
	DynamicASNInternal DynamicASN = "internal"
	// DynamicASNExternal accepts a peer in any other AS (eBGP).
	DynamicASNExternal DynamicASN = "external"
)

// BGPPeerSpec describes a BGP session the speakers open to a router.
//
// +kubebuilder:validation:XValidation:rule="has(self.peerASN) != has(self.dynamicASN)",message="peerASN and dynamicASN: set exactly one of them",fieldPath=".peerASN"
// +kubebuilder:validation:XValidation:rule="!has(self.sourceAddress) || !isIP(self.sourceAddress) || !isIP(self.peerAddress) || ip(self.sourceAddress).family() == ip(self.peerAddress).family()",message="sourceAddress must be of the same address family as peerAddress",fieldPath=".sourceAddress"
// +kubebuilder:validation:XValidation:rule="!has(self.holdTime) || !has(self.keepaliveTime) || !self.holdTime.matches('^([0-9]+([.][0-9]+)?(ns|us|ms|s|m|h))+$|^0$') || !self.keepaliveTime.matches('^([0-9]+([.][0-9]+)?(ns|us|ms|s|m|h))+$|^0$') || (duration(self.holdTime) == duration('0s') ? duration(self.keepaliveTime) == duration('0s') : duration(self.keepaliveTime) > duration('0s') && duration(self.keepaliveTime) < duration(self.holdTime))",message="keepaliveTime must be more than 0 and less than holdTime (and 0 when holdTime is 0)",fieldPath=".keepaliveTime"
// +kubebuilder:validation:XValidation:rule="!has(self.ebgpMultiHop) || !self.ebgpMultiHop || (has(self.dynamicASN) ? self.dynamicASN == 'external' : !has(self.peerASN) || self.peerASN != self.myASN)",message="ebgpMultiHop applies to eBGP sessions only (peerASN different from myASN, or dynamicASN external)",fieldPath=".ebgpMultiHop"
type BGPPeerSpec struct {
	// myASN is the AS number the speakers use for this session (1 to 4294967295).
	// +required
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=4294967295
	// +kubebuilder:validation:Format=int64
	MyASN uint32 `json:"myASN"`

	// peerASN is the AS number the peer must have (1 to 4294967295). Set either
	// peerASN or dynamicASN.
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=4294967295
	// +kubebuilder:validation:Format=int64
	PeerASN uint32 `json:"peerASN,omitempty"`

	// dynamicASN accepts the peer's AS number from its OPEN message instead of
	// naming it: "internal" for a peer in myASN, "external" for any other AS. Set
	// either peerASN or dynamicASN.
	// +optional
	DynamicASN DynamicASN `json:"dynamicASN,omitempty"`

	// peerAddress is the IPv4 or IPv6 address of the peer.
	// +required
	// +kubebuilder:validation:MinLength=2
	// +kubebuilder:validation:MaxLength=45
	// +kubebuilder:validation:XValidation:rule="isIP(self)",messageExpression="'peerAddress: ' + self + ' is not an IP address'"
	PeerAddress string `json:"peerAddress"`

	// peerPort is the peer's TCP port.
	// +optional
	// +kubebuilder:default=179
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	PeerPort int32 `json:"peerPort,omitempty"`

	// sourceAddress is the local address sessions are opened from; it must be an
	// address of the node, of the same family as peerAddress. Empty lets the
	// kernel choose.
	// +optional
	// +kubebuilder:validation:MinLength=2
	// +kubebuilder:validation:MaxLength=45
	// +kubebuilder:validation:XValidation:rule="isIP(self)",messageExpression="'sourceAddress: ' + self + ' is not an IP address'"
	SourceAddress string `json:"sourceAddress,omitempty"`

	// routerID is the BGP identifier, a 32-bit number written as an IPv4 address
	// (RFC 6286), also for IPv6 sessions. Empty uses the node's IPv4 address.
	// +optional
	// +kubebuilder:validation:MinLength=7
	// +kubebuilder:validation:MaxLength=15
	// +kubebuilder:validation:XValidation:rule="isIP(self) && ip(self).family() == 4",messageExpression="'routerID: ' + self + ' is not an IPv4 address (the BGP identifier is written as one, also for IPv6 sessions)'"
	RouterID string `json:"routerID,omitempty"`

	// holdTime is the BGP hold time proposed to the peer: 0 (never time out, send
	// no keepalives) or a whole number of seconds from 3s to 65535s (RFC 4271,
	// section 4.2).
	// +optional
	// +kubebuilder:default="90s"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="self.matches('^([0-9]+([.][0-9]+)?(ns|us|ms|s|m|h))+$|^0$')",messageExpression="'holdTime: ' + self + ' is not a duration such as 90s or 1m30s'"
	// +kubebuilder:validation:XValidation:rule="!self.matches('^([0-9]+([.][0-9]+)?(ns|us|ms|s|m|h))+$|^0$') || duration(self) == duration('0s') || (duration(self) >= duration('3s') && duration(self) <= duration('65535s') && duration(self).getMilliseconds() % 1000 == 0)",messageExpression="'holdTime: ' + self + ' is out of range: use 0 or a whole number of seconds from 3s to 65535s'"
	HoldTime *metav1.Duration `json:"holdTime,omitempty"`

	// keepaliveTime is the interval between KEEPALIVE messages: a whole number of
	// seconds less than holdTime, or 0 when holdTime is 0. Empty means a third of
	// holdTime.
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="self.matches('^([0-9]+([.][0-9]+)?(ns|us|ms|s|m|h))+$|^0$')",messageExpression="'keepaliveTime: ' + self + ' is not a duration such as 30s'"
	// +kubebuilder:validation:XValidation:rule="!self.matches('^([0-9]+([.][0-9]+)?(ns|us|ms|s|m|h))+$|^0$') || duration(self) == duration('0s') || (duration(self) >= duration('1s') && duration(self) <= duration('65535s') && duration(self).getMilliseconds() % 1000 == 0)",messageExpression="'keepaliveTime: ' + self + ' is out of range: use 0 or a whole number of seconds from 1s to 65535s'"
	KeepaliveTime *metav1.Duration `json:"keepaliveTime,omitempty"`

	// connectTime is how long to wait between attempts to open the session: a
	// whole number of seconds from 1s to 65535s. Empty means 120s.
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="self.matches('^([0-9]+([.][0-9]+)?(ns|us|ms|s|m|h))+$|^0$')",messageExpression="'connectTime: ' + self + ' is not a duration such as 10s'"
	// +kubebuilder:validation:XValidation:rule="!self.matches('^([0-9]+([.][0-9]+)?(ns|us|ms|s|m|h))+$|^0$') || (duration(self) >= duration('1s') && duration(self) <= duration('65535s') && duration(self).getMilliseconds() % 1000 == 0)",messageExpression="'connectTime: ' + self + ' is out of range: use a whole number of seconds from 1s to 65535s'"
	ConnectTime *metav1.Duration `json:"connectTime,omitempty"`

	// ebgpMultiHop allows an eBGP peer that is more than one hop away.
	// +optional
	EBGPMultiHop bool `json:"ebgpMultiHop,omitempty"`

	// passwordSecret names the Secret, in Herald's own namespace, that holds the
	// TCP MD5 password of the session (RFC 2385). There is deliberately no field
	// for a password in the BGPPeer itself: an object anyone with read access to
	// BGPPeers can read is no place for one.
	// +optional
	PasswordSecret *SecretKeyReference `json:"passwordSecret,omitempty"`

	// bfdProfile names the BFDProfile to run BFD with on this session. Empty runs
	// no BFD.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	BFDProfile string `json:"bfdProfile,omitempty"`

	// gracefulRestart enables BGP graceful restart (RFC 4724), so the peer keeps
	// the routes while a speaker restarts.
	// +optional
	GracefulRestart bool `json:"gracefulRestart,omitempty"`

	// nodeSelectors limits the nodes that open this session to those whose labels
	// match any of these selectors. Empty means every node with a speaker.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=16
	NodeSelectors []metav1.LabelSelector `json:"nodeSelectors,omitempty"`

	// vrf is the Linux VRF device the session runs in. Empty means the default
	// VRF.
	// +optional
	// +kubebuilder:validation:MaxLength=15
	// +kubebuilder:validation:XValidation:rule="self != '.' && self != '..' && !self.matches('[[:space:]/:]')",messageExpression="'vrf: ' + self + ' is not a Linux interface name (at most 15 characters, no slash, colon or white space; not . or ..)'"
	VRF string `json:"vrf,omitempty"`
}

// SecretKeyReference points at one key of a Secret in Herald's own namespace.
type SecretKeyReference struct {
	// name of the Secret.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	Name string `json:"name"`

	// key in the Secret's data that holds the value.
	// +optional
	// +kubebuilder:default=password
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[-._a-zA-Z0-9]+$`
	Key string `json:"key,omitempty"`
}

// BGPPeerStatus reports whether the peer configuration is in force. The state of
// each node's session is reported elsewhere, per node.
type BGPPeerStatus struct {
	// conditions: Accepted is False, with a reason and message, when the peer
	// cannot be used as written (for example it names a missing BFDProfile).
	// +optional
	// +listType=map
	// +listMapKey=type
	// +patchStrategy=merge
	// +patchMergeKey=type
	// +kubebuilder:validation:MaxItems=16
	Conditions []metav1.Condition `json:"conditions,omitempty" patchStrategy:"merge" patchMergeKey:"type"`
}

// BGPPeer is a router the speakers open BGP sessions to.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,categories=herald
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="Address",type=string,JSONPath=`.spec.peerAddress`
// +kubebuilder:printcolumn:name="My ASN",type=integer,JSONPath=`.spec.myASN`
// +kubebuilder:printcolumn:name="Peer ASN",type=integer,JSONPath=`.spec.peerASN`
// +kubebuilder:printcolumn:name="Dynamic ASN",type=string,JSONPath=`.spec.dynamicASN`,priority=1
// +kubebuilder:printcolumn:name="BFD Profile",type=string,JSONPath=`.spec.bfdProfile`,priority=1
// +kubebuilder:printcolumn:name="Accepted",type=string,JSONPath=`.status.conditions[?(@.type=="Accepted")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type BGPPeer struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +required
	Spec BGPPeerSpec `json:"spec"`

	// +optional
	Status BGPPeerStatus `json:"status,omitempty"`
}

// BGPPeerList is a list of BGPPeers.
//
// +kubebuilder:object:root=true
type BGPPeerList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []BGPPeer `json:"items"`
}

func init() {
	SchemeBuilder.Register(&BGPPeer{}, &BGPPeerList{})
}
