package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// IPAddressPoolSpec says which addresses Services may get and which Services may
// get them.
type IPAddressPoolSpec struct {
	// How the addresses rules work, for whoever edits them. Kubernetes CEL has
	// isIP, isCIDR, ip, cidr, family, masked, containsIP and containsCIDR, but no
	// ordering of addresses and no let-binding, and the cost estimator cannot
	// bound the size of join results, of string(int) or of a list literal indexed
	// by a variable (the CRD is then refused as over budget). So: "[x].all(a, ...)"
	// binds a name to a string at known cost; IPv4 ends compare as 32-bit
	// integers; IPv6 ends a and b compare by finding the prefix length p at which
	// they first differ (a's /p contains b) and failing when that bit is 1 in a
	// and 0 in b, tested by whether each one's /p+1 contains the network address
	// of a's /p. The literal table of "/p /p+1" strings stands in for arithmetic
	// on p. The estimated worst case is about 104,000 per entry (about 11,000 at
	// run time), which is why the list is capped at 64 entries: the API server
	// refuses a rule estimated above 10,000,000.

	// addresses are the addresses of the pool, IPv4 and IPv6 alike. Each entry is
	// a CIDR ("203.0.113.0/24", "2001:db8::/120"), an inclusive range of one family
	// ("203.0.113.10-203.0.113.20"; spaces around the dash are allowed), or a
	// single address ("203.0.113.7"). A CIDR must be written as its network
	// address (no bits set after the prefix length). Entries of one pool must not
	// overlap each other or another pool; the webhook checks that.
	// +required
	// +listType=set
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=100
	// +kubebuilder:validation:items:XValidation:rule="isCIDR(self) || isIP(self) || (self.split('-').size() == 2 && isIP(self.split('-')[0].trim()) && isIP(self.split('-')[1].trim()))",messageExpression="'addresses: ' + self + ' is not a CIDR (203.0.113.0/24), a range (203.0.113.10-203.0.113.20) or a single IP address'"
	// +kubebuilder:validation:items:XValidation:rule="!isCIDR(self) || cidr(self) == cidr(self).masked()",messageExpression="'addresses: CIDR ' + self + ' has bits set after the prefix length; write the network address of the prefix'"
	// +kubebuilder:validation:items:XValidation:rule="self.split('-').size() != 2 || [self.split('-')[0].trim()].all(a, [self.split('-')[1].trim()].all(b, !isIP(a) || !isIP(b) || ip(a).family() == ip(b).family()))",messageExpression="'addresses: range ' + self + ' mixes IPv4 and IPv6; write one range per family'"
	// +kubebuilder:validation:items:XValidation:rule="self.split('-').size() != 2 || [self.split('-')[0].trim()].all(a, [self.split('-')[1].trim()].all(b, !isIP(a) || !isIP(b) || ip(a).family() != ip(b).family() || (ip(a).family() == 4 ? int(a.split('.')[0]) * 16777216 + int(a.split('.')[1]) * 65536 + int(a.split('.')[2]) * 256 + int(a.split('.')[3]) <= int(b.split('.')[0]) * 16777216 + int(b.split('.')[1]) * 65536 + int(b.split('.')[2]) * 256 + int(b.split('.')[3]) : !['/0 /1','/1 /2','/2 /3','/3 /4','/4 /5','/5 /6','/6 /7','/7 /8','/8 /9','/9 /10','/10 /11','/11 /12','/12 /13','/13 /14','/14 /15','/15 /16','/16 /17','/17 /18','/18 /19','/19 /20','/20 /21','/21 /22','/22 /23','/23 /24','/24 /25','/25 /26','/26 /27','/27 /28','/28 /29','/29 /30','/30 /31','/31 /32','/32 /33','/33 /34','/34 /35','/35 /36','/36 /37','/37 /38','/38 /39','/39 /40','/40 /41','/41 /42','/42 /43','/43 /44','/44 /45','/45 /46','/46 /47','/47 /48','/48 /49','/49 /50','/50 /51','/51 /52','/52 /53','/53 /54','/54 /55','/55 /56','/56 /57','/57 /58','/58 /59','/59 /60','/60 /61','/61 /62','/62 /63','/63 /64','/64 /65','/65 /66','/66 /67','/67 /68','/68 /69','/69 /70','/70 /71','/71 /72','/72 /73','/73 /74','/74 /75','/75 /76','/76 /77','/77 /78','/78 /79','/79 /80','/80 /81','/81 /82','/82 /83','/83 /84','/84 /85','/85 /86','/86 /87','/87 /88','/88 /89','/89 /90','/90 /91','/91 /92','/92 /93','/93 /94','/94 /95','/95 /96','/96 /97','/97 /98','/98 /99','/99 /100','/100 /101','/101 /102','/102 /103','/103 /104','/104 /105','/105 /106','/106 /107','/107 /108','/108 /109','/109 /110','/110 /111','/111 /112','/112 /113','/113 /114','/114 /115','/115 /116','/116 /117','/117 /118','/118 /119','/119 /120','/120 /121','/121 /122','/122 /123','/123 /124','/124 /125','/125 /126','/126 /127','/127 /128'].exists(s, [cidr(a + s.split(' ')[0])].all(n, n.containsIP(b) && !cidr(a + s.split(' ')[1]).containsIP(n.masked().ip()) && cidr(b + s.split(' ')[1]).containsIP(n.masked().ip()))))))",messageExpression="'addresses: range ' + self + ' is reversed; write the lower address first'"
	Addresses []string `json:"addresses"`

	// autoAssign lets the controller hand out this pool's addresses to Services
	// that do not ask for a pool or an address. With false, only Services that
	// name the pool (annotation herald.dev/address-pool) or ask for one of its
	// addresses get one.
	// +optional
	// +kubebuilder:default=true
	AutoAssign *bool `json:"autoAssign,omitempty"`

	// avoidBuggyIPs skips the IPv4 addresses ending in .0 and .255, which some
	// old or broken clients and routers drop.
	// +optional
	AvoidBuggyIPs bool `json:"avoidBuggyIPs,omitempty"`

	// serviceAllocation limits which Services may get addresses from the pool and
	// orders the pools a Service may use.
	// +optional
	ServiceAllocation *ServiceAllocation `json:"serviceAllocation,omitempty"`
}

// ServiceAllocation limits a pool to some Services and sets its priority among the
// pools a Service matches.
type ServiceAllocation struct {
	// priority orders the pools a Service matches: a lower number is tried first.
	// Pools without a serviceAllocation are tried after all pools with one.
	// +optional
	Priority int32 `json:"priority,omitempty"`

	// namespaces limits the pool to Services in these namespaces.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=63
	// +kubebuilder:validation:items:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Namespaces []string `json:"namespaces,omitempty"`

	// namespaceSelectors limits the pool to Services in namespaces whose labels
	// match any of these selectors.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=16
	NamespaceSelectors []metav1.LabelSelector `json:"namespaceSelectors,omitempty"`

	// serviceSelectors limits the pool to Services whose labels match any of these
	// selectors.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=16
	ServiceSelectors []metav1.LabelSelector `json:"serviceSelectors,omitempty"`
}

// ConditionAdvertised is present on an IPAddressPool in force while no
// advertisement in force selects it: False, reason NotAdvertised (its
// addresses are assigned to Services but no node announces them). It is
// removed, with a Normal event, once an advertisement selects the pool.
const ConditionAdvertised = "Advertised"

// ReasonNotAdvertised is ConditionAdvertised's reason.
const ReasonNotAdvertised = "NotAdvertised"

// IPAddressPoolStatus reports whether the pool is in force and how much of it is
// used. Counts are per address family; a family the pool has no addresses of
// counts zero.
type IPAddressPoolStatus struct {
	// conditions: Accepted is False when the pool cannot be used (for example it
	// overlaps another pool), with a reason and a message saying what to change.
	// Advertised is False while no L2Advertisement or BGPAdvertisement in force
	// selects the pool: its addresses are assigned but nothing announces them.
	// +optional
	// +listType=map
	// +listMapKey=type
	// +patchStrategy=merge
	// +patchMergeKey=type
	// +kubebuilder:validation:MaxItems=16
	Conditions []metav1.Condition `json:"conditions,omitempty" patchStrategy:"merge" patchMergeKey:"type"`

	// assignedIPv4 is the number of the pool's IPv4 addresses assigned to Services.
	// +optional
	AssignedIPv4 int64 `json:"assignedIPv4"`

	// assignedIPv6 is the number of the pool's IPv6 addresses assigned to Services.
	// +optional
	AssignedIPv6 int64 `json:"assignedIPv6"`

	// availableIPv4 is the number of the pool's IPv4 addresses still free.
	// +optional
	AvailableIPv4 int64 `json:"availableIPv4"`

	// availableIPv6 is the number of the pool's IPv6 addresses still free. An IPv6
	// pool can hold more than an int64 counts (a /64 has 2^64 addresses), so the
	// count saturates at 9223372036854775807 (AvailableSaturated).
	// +optional
	AvailableIPv6 int64 `json:"availableIPv6"`

	// assigned is assignedIPv4 + assignedIPv6, for `kubectl get`.
	// +optional
	Assigned int64 `json:"assigned"`

	// available is availableIPv4 + availableIPv6, saturating like availableIPv6,
	// for `kubectl get`.
	// +optional
	Available int64 `json:"available"`
}

// AvailableSaturated is the largest count the available fields of
// IPAddressPoolStatus report; a pool with at least this many free addresses
// reports exactly this.
const AvailableSaturated int64 = 1<<63 - 1

// IPAddressPool is a set of addresses the controller assigns to Services of type
// LoadBalancer.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,categories=herald
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="Addresses",type=string,JSONPath=`.spec.addresses`
// +kubebuilder:printcolumn:name="Assigned",type=integer,JSONPath=`.status.assigned`
// +kubebuilder:printcolumn:name="Available",type=integer,JSONPath=`.status.available`
// +kubebuilder:printcolumn:name="Accepted",type=string,JSONPath=`.status.conditions[?(@.type=="Accepted")].status`
// +kubebuilder:printcolumn:name="Auto Assign",type=boolean,JSONPath=`.spec.autoAssign`,priority=1
// +kubebuilder:printcolumn:name="Assigned IPv4",type=integer,JSONPath=`.status.assignedIPv4`,priority=1
// +kubebuilder:printcolumn:name="Available IPv4",type=integer,JSONPath=`.status.availableIPv4`,priority=1
// +kubebuilder:printcolumn:name="Assigned IPv6",type=integer,JSONPath=`.status.assignedIPv6`,priority=1
// +kubebuilder:printcolumn:name="Available IPv6",type=integer,JSONPath=`.status.availableIPv6`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type IPAddressPool struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +required
	Spec IPAddressPoolSpec `json:"spec"`

	// +optional
	Status IPAddressPoolStatus `json:"status,omitempty"`
}

// IPAddressPoolList is a list of IPAddressPools.
//
// +kubebuilder:object:root=true
type IPAddressPoolList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []IPAddressPool `json:"items"`
}

func init() {
	SchemeBuilder.Register(&IPAddressPool{}, &IPAddressPoolList{})
}
