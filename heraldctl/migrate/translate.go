package migrate

import (
	"cmp"
	"fmt"
	"maps"
	"math"
	"net/netip"
	"slices"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/heraldlb/herald/api/v1alpha1"
	"github.com/heraldlb/herald/internal/community"
	"github.com/heraldlb/herald/internal/iprange"
	"github.com/heraldlb/herald/internal/model"
)

// Options tune a translation.
type Options struct {
	// HeraldNamespace is the namespace Herald runs in, where BGP password
	// Secrets must be; it appears in the report's instructions.
	HeraldNamespace string
}

// LastPriority is the serviceAllocation.priority a MetalLB pool with a
// serviceAllocation but no priority gets: MetalLB tries such pools after
// every pool with a priority, Herald tries lower numbers first.
const LastPriority = math.MaxInt32

// Translate turns MetalLB's configuration into Herald's objects. It is a
// pure function of in: names are kept, each MetalLB field goes to Herald's
// field of the same meaning, and whatever cannot is a finding. The result is
// judged by Herald's own configuration model (the one the webhook uses):
// an object Herald would refuse is left out, with a finding saying why.
func Translate(in *Input, opt Options) *Result {
	if opt.HeraldNamespace == "" {
		opt.HeraldNamespace = "herald-system"
	}
	t := &translation{in: in, opt: opt, res: &Result{}, communities: map[string]string{}}
	t.res.Findings = slices.Clone(in.findings)
	for _, c := range in.communities {
		for _, a := range c.Spec.Communities {
			t.communities[a.Name] = a.Value
		}
		t.note(Note, "Community", c.Metadata, "", "Herald has no Community kind: its aliases are written out as values in each BGPAdvertisement that uses them")
	}
	for _, o := range in.bfd {
		t.bfd(o)
	}
	for _, o := range in.pools {
		t.pool(o)
	}
	for _, o := range in.peers {
		t.peer(o)
	}
	for _, o := range in.l2 {
		t.l2(o)
	}
	for _, o := range in.bgpAdvs {
		t.bgpAdv(o)
	}
	t.autoAssignOrder()
	t.judge()
	sortByName(t.res.BFDProfiles, func(o *v1alpha1.BFDProfile) string { return o.Name })
	sortByName(t.res.Pools, func(o *v1alpha1.IPAddressPool) string { return o.Name })
	sortByName(t.res.BGPPeers, func(o *v1alpha1.BGPPeer) string { return o.Name })
	sortByName(t.res.L2Advertisements, func(o *v1alpha1.L2Advertisement) string { return o.Name })
	sortByName(t.res.BGPAdvertisements, func(o *v1alpha1.BGPAdvertisement) string { return o.Name })
	return t.res
}

func sortByName[T any](s []T, name func(*T) string) {
	slices.SortStableFunc(s, func(a, b T) int { return cmp.Compare(name(&a), name(&b)) })
}

type translation struct {
	in          *Input
	opt         Options
	res         *Result
	communities map[string]string // Community aliases: name -> value
	names       map[string]bool   // kind/name taken
}

// ref names a MetalLB object in findings, with where a legacy ConfigMap
// held it.
func (t *translation) ref(kind string, md metav1.ObjectMeta) string {
	name := md.Name
	if md.Namespace != "" {
		name = md.Namespace + "/" + md.Name
	}
	if o := t.in.origin[kind+"/"+md.Name]; o != "" && md.Namespace == "" {
		return fmt.Sprintf("%s %s (from %s)", kind, name, o)
	}
	return kind + " " + name
}

func (t *translation) note(s Severity, kind string, md metav1.ObjectMeta, field, format string, args ...any) {
	t.res.Findings = append(t.res.Findings, Finding{Severity: s, Object: t.ref(kind, md), Field: field, Message: fmt.Sprintf(format, args...)})
}

// meta checks the name is one Kubernetes accepts and that no other object of
// the kind has it (MetalLB's objects are namespaced, Herald's are not), and
// keeps the labels (pools are selected by them).
func (t *translation) meta(kind string, md metav1.ObjectMeta) (metav1.ObjectMeta, bool) {
	if errs := validation.IsDNS1123Subdomain(md.Name); len(errs) > 0 {
		t.note(Lost, kind, md, "metadata.name", "%q is not a name Kubernetes accepts (%s); not translated: rename it in MetalLB's configuration first", md.Name, strings.Join(errs, "; "))
		return metav1.ObjectMeta{}, false
	}
	if t.names == nil {
		t.names = map[string]bool{}
	}
	if t.names[kind+"/"+md.Name] {
		t.note(Lost, kind, md, "metadata.name", "Herald's %s objects are cluster-wide and another one is already named %q; not translated", kind, md.Name)
		return metav1.ObjectMeta{}, false
	}
	t.names[kind+"/"+md.Name] = true
	return metav1.ObjectMeta{Name: md.Name, Labels: md.Labels}, true
}

func typeMeta(kind string) metav1.TypeMeta {
	return metav1.TypeMeta{APIVersion: v1alpha1.GroupVersion.String(), Kind: kind}
}

func (t *translation) bfd(o mlbObject[mlbBFDProfileSpec]) {
	md, ok := t.meta("BFDProfile", o.Metadata)
	if !ok {
		return
	}
	s := o.Spec
	out := v1alpha1.BFDProfile{TypeMeta: typeMeta("BFDProfile"), ObjectMeta: md}
	in := func(field string, v *uint32, lo, hi uint32) *int32 {
		if v == nil {
			return nil
		}
		if *v < lo || *v > hi {
			t.note(Lost, "BFDProfile", o.Metadata, "spec."+field, "%d is outside %d-%d (MetalLB refuses it too); Herald's default is used", *v, lo, hi)
			return nil
		}
		n := int32(*v)
		return &n
	}
	out.Spec.ReceiveInterval = in("receiveInterval", s.ReceiveInterval, 10, 60000)
	out.Spec.TransmitInterval = in("transmitInterval", s.TransmitInterval, 10, 60000)
	out.Spec.DetectMultiplier = in("detectMultiplier", s.DetectMultiplier, 2, 255)
	out.Spec.EchoInterval = in("echoInterval", s.EchoInterval, 10, 60000)
	out.Spec.MinimumTTL = in("minimumTtl", s.MinimumTTL, 1, 254)
	out.Spec.EchoMode = s.EchoMode != nil && *s.EchoMode
	out.Spec.PassiveMode = s.PassiveMode != nil && *s.PassiveMode
	t.res.BFDProfiles = append(t.res.BFDProfiles, out)
}

// poolAddress reads one entry of a MetalLB pool the way MetalLB does (a CIDR,
// whose host bits it ignores, or a range "a-b") and writes it the way
// Herald's CRD accepts; masked says host bits were cleared.
func poolAddress(s string) (out string, r iprange.Range, masked bool, err error) {
	t := strings.TrimSpace(s)
	if strings.Contains(t, "/") {
		p, err := netip.ParsePrefix(t)
		if err != nil {
			return "", iprange.Range{}, false, fmt.Errorf("%q is not a CIDR", s)
		}
		m := p.Masked()
		return m.String(), iprange.FromPrefix(m), m != p, nil
	}
	if r, err = iprange.Parse(t); err != nil {
		return "", r, false, err
	}
	if r.First == r.Last && !strings.Contains(t, "-") {
		return r.First.String(), r, false, nil
	}
	return r.First.String() + "-" + r.Last.String(), r, false, nil
}

func (t *translation) pool(o mlbObject[mlbPoolSpec]) {
	const kind = "IPAddressPool"
	md, ok := t.meta(kind, o.Metadata)
	if !ok {
		return
	}
	out := v1alpha1.IPAddressPool{TypeMeta: typeMeta(kind), ObjectMeta: md}
	var last [2]netip.Addr // per family, the end of the previous entry
	ordered := true
	for i, a := range o.Spec.Addresses {
		field := fmt.Sprintf("spec.addresses[%d]", i)
		s, r, masked, err := poolAddress(a)
		if err != nil {
			t.note(Lost, kind, o.Metadata, field, "%v (MetalLB refuses it too); not translated", err)
			continue
		}
		if masked {
			t.note(Note, kind, o.Metadata, field, "%q has bits set after the prefix length, which MetalLB ignores; written as %s, which Herald requires", a, s)
		}
		fam := 0
		if r.First.Is6() {
			fam = 1
		}
		if last[fam].IsValid() && r.First.Compare(last[fam]) <= 0 {
			ordered = false
		}
		last[fam] = r.Last
		out.Spec.Addresses = append(out.Spec.Addresses, s)
	}
	if !ordered {
		t.note(Lost, kind, o.Metadata, "spec.addresses", "not in ascending order: MetalLB hands out the addresses in the order listed, Herald the lowest free address first, so a new Service can get a different address (Services keep the ones they hold); list them in ascending order in MetalLB first to keep the order")
	}
	if len(out.Spec.Addresses) == 0 {
		t.note(Lost, kind, o.Metadata, "spec.addresses", "no address could be translated; the pool is not written")
		return
	}
	if len(out.Spec.Addresses) > 64 {
		t.note(Lost, kind, o.Metadata, "spec.addresses", "%d entries; Herald takes at most 64 per pool: merge adjacent ranges or split the pool", len(out.Spec.Addresses))
		return
	}
	out.Spec.AutoAssign = o.Spec.AutoAssign
	out.Spec.AvoidBuggyIPs = o.Spec.AvoidBuggyIPs
	if sa := o.Spec.ServiceAllocation; sa != nil {
		h := &v1alpha1.ServiceAllocation{
			Priority:           int32(min(max(sa.Priority, 0), LastPriority)),
			Namespaces:         sa.Namespaces,
			NamespaceSelectors: sa.NamespaceSelectors,
			ServiceSelectors:   sa.ServiceSelectors,
		}
		if sa.Priority <= 0 {
			h.Priority = LastPriority
			t.note(Note, kind, o.Metadata, "spec.serviceAllocation.priority", "unset (0): MetalLB tries the pool after the pools with a priority, Herald tries lower numbers first, so it is written as %d", LastPriority)
		}
		if len(sa.Namespaces) > 0 && len(sa.NamespaceSelectors) > 0 {
			// MetalLB allows the namespaces listed and those selected;
			// Herald requires both. The name label the API server puts
			// on every namespace turns the list into one more selector.
			h.NamespaceSelectors = append(slices.Clone(sa.NamespaceSelectors), metav1.LabelSelector{
				MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "kubernetes.io/metadata.name", Operator: metav1.LabelSelectorOpIn, Values: sa.Namespaces}},
			})
			h.Namespaces = nil
			t.note(Note, kind, o.Metadata, "spec.serviceAllocation.namespaces", "MetalLB allows a namespace listed here or matching namespaceSelectors, Herald one in both; written as one more namespaceSelector on kubernetes.io/metadata.name")
		}
		out.Spec.ServiceAllocation = h
	}
	t.res.Pools = append(t.res.Pools, out)
}

// autoAssignOrder notes what MetalLB leaves to chance: pools without a
// serviceAllocation are tried in Go map order, Herald tries them by name.
func (t *translation) autoAssignOrder() {
	var names []string
	for _, p := range t.res.Pools {
		if p.Spec.ServiceAllocation == nil && (p.Spec.AutoAssign == nil || *p.Spec.AutoAssign) {
			names = append(names, p.Name)
		}
	}
	if len(names) > 1 {
		t.res.Findings = append(t.res.Findings, Finding{Severity: Note, Object: "IPAddressPools " + strings.Join(names, ", "),
			Message: "MetalLB tries pools without serviceAllocation in no fixed order; Herald tries them by name. Give them serviceAllocation.priority to choose"})
	}
}

func (t *translation) l2(o mlbObject[mlbL2AdvertisementSpec]) {
	const kind = "L2Advertisement"
	md, ok := t.meta(kind, o.Metadata)
	if !ok {
		return
	}
	s := o.Spec
	out := v1alpha1.L2Advertisement{TypeMeta: typeMeta(kind), ObjectMeta: md, Spec: v1alpha1.L2AdvertisementSpec{
		IPAddressPools:         s.IPAddressPools,
		IPAddressPoolSelectors: s.IPAddressPoolSelectors,
		NodeSelectors:          s.NodeSelectors,
		Interfaces:             s.Interfaces,
		ServiceSelectors:       s.ServiceSelectors,
	}}
	if len(s.PreferredNodeSelectors) > 0 {
		t.note(Lost, kind, o.Metadata, "spec.preferredNodeSelectors", "Herald prefers nodes by name, not by weighted selectors: list the nodes your selectors pick, heaviest first, in spec.preferredNodes")
	}
	t.res.L2Advertisements = append(t.res.L2Advertisements, out)
}

// community resolves a MetalLB community (an alias of a Community object or
// of bgp-communities, or a value) to a value Herald accepts.
func (t *translation) community(c string) (string, error) {
	v, alias := t.communities[c]
	if !alias {
		v = c
	}
	v = strings.TrimSpace(v)
	if _, err := community.Parse(v); err != nil {
		if !alias {
			return "", fmt.Errorf("%q is neither a community value nor the name of one defined in a Community or bgp-communities", c)
		}
		return "", fmt.Errorf("alias %q: %w", c, err)
	}
	return v, nil
}

// ibgp reports, for the BGPPeer named name, whether Herald treats its
// session as internal, and whether the peer is known at all.
func (t *translation) ibgp(name string) (internal, known bool) {
	for _, p := range t.res.BGPPeers {
		if p.Name == name {
			return p.Spec.DynamicASN == v1alpha1.DynamicASNInternal || (p.Spec.PeerASN != 0 && p.Spec.PeerASN == p.Spec.MyASN), true
		}
	}
	return false, false
}

func (t *translation) bgpAdv(o mlbObject[mlbBGPAdvertisementSpec]) {
	const kind = "BGPAdvertisement"
	md, ok := t.meta(kind, o.Metadata)
	if !ok {
		return
	}
	s := o.Spec
	out := v1alpha1.BGPAdvertisement{TypeMeta: typeMeta(kind), ObjectMeta: md, Spec: v1alpha1.BGPAdvertisementSpec{
		IPAddressPools:         s.IPAddressPools,
		IPAddressPoolSelectors: s.IPAddressPoolSelectors,
		AggregationLength:      s.AggregationLength,
		AggregationLengthV6:    s.AggregationLengthV6,
		Peers:                  s.Peers,
		NodeSelectors:          s.NodeSelectors,
		ServiceSelectors:       s.ServiceSelectors,
	}}
	for _, a := range []struct {
		field   string
		length  **int32
		maximum int32
	}{{"spec.aggregationLength", &out.Spec.AggregationLength, 32}, {"spec.aggregationLengthV6", &out.Spec.AggregationLengthV6, 128}} {
		if l := *a.length; l != nil && (*l < 0 || *l > a.maximum) {
			t.note(Lost, kind, o.Metadata, a.field, "%d is not a prefix length from 0 to %d (MetalLB refuses it too); each address is announced alone", *l, a.maximum)
			*a.length = nil
		}
	}
	if s.LocalPref != 0 {
		lp := s.LocalPref
		out.Spec.LocalPref = &lp
	}
	for i, c := range s.Communities {
		v, err := t.community(c)
		if err != nil {
			t.note(Lost, kind, o.Metadata, fmt.Sprintf("spec.communities[%d]", i), "%v; not translated", err)
			continue
		}
		if !slices.Contains(out.Spec.Communities, v) {
			out.Spec.Communities = append(out.Spec.Communities, v)
		}
	}
	if out.Spec.LocalPref != nil && len(s.Peers) > 0 {
		// MetalLB sends LOCAL_PREF to the iBGP peers named and quietly not
		// to the eBGP ones; Herald refuses an advertisement that sets it
		// for an eBGP peer it names, so those get an advertisement of
		// their own without it.
		var internal, external []string
		for _, p := range s.Peers {
			if in, known := t.ibgp(p); known && !in {
				external = append(external, p)
			} else {
				internal = append(internal, p)
			}
		}
		if len(external) > 0 {
			ext := *out.DeepCopy()
			ext.Spec.LocalPref = nil
			ext.Spec.Peers = external
			if len(internal) == 0 {
				out = ext
				t.note(Note, kind, o.Metadata, "spec.localPref", "every peer named is eBGP, which MetalLB sends no LOCAL_PREF either (RFC 4271 5.1.5); left out, as Herald refuses it for eBGP peers")
			} else {
				out.Spec.Peers = internal
				ext.Name = out.Name + "-ebgp"
				if _, free := t.meta(kind, metav1.ObjectMeta{Name: ext.Name}); !free {
					t.note(Lost, kind, o.Metadata, "spec.localPref", "the peers named mix iBGP and eBGP and the name %s for the eBGP part is taken; not translated", ext.Name)
					return
				}
				t.res.BGPAdvertisements = append(t.res.BGPAdvertisements, ext)
				t.note(Note, kind, o.Metadata, "spec.localPref", "the peers named mix iBGP (%s) and eBGP (%s); MetalLB sends LOCAL_PREF only to the iBGP ones and Herald refuses it for eBGP peers, so the eBGP peers get BGPAdvertisement %s without it",
					strings.Join(internal, ", "), strings.Join(external, ", "), ext.Name)
			}
		}
	}
	t.res.BGPAdvertisements = append(t.res.BGPAdvertisements, out)
}

// seconds writes d as a whole number of seconds, as Herald's CRD requires;
// MetalLB's BGP daemons use whole seconds too.
func seconds(d time.Duration) *metav1.Duration {
	return &metav1.Duration{Duration: d.Truncate(time.Second)}
}

func (t *translation) peer(o mlbObject[mlbBGPPeerSpec]) {
	const kind = "BGPPeer"
	s := o.Spec
	if s.MyASN == 0 {
		t.note(Lost, kind, o.Metadata, "spec.myASN", "missing (MetalLB refuses it too); not translated")
		return
	}
	if s.ASN == 0 && s.DynamicASN == "" {
		t.note(Lost, kind, o.Metadata, "spec.peerASN", "neither peerASN nor dynamicASN is set (MetalLB refuses it too); not translated")
		return
	}
	addr, err := netip.ParseAddr(strings.TrimSpace(s.Address))
	if err != nil || addr.Zone() != "" {
		if s.Interface != "" {
			t.note(Lost, kind, o.Metadata, "spec.interface", "Herald peers with an address, not over an interface (unnumbered BGP); not translated: give the router an address on that link and set it as peerAddress")
		} else {
			t.note(Lost, kind, o.Metadata, "spec.peerAddress", "%q is not an IP address; not translated", s.Address)
		}
		return
	}
	md, ok := t.meta(kind, o.Metadata)
	if !ok {
		return
	}
	out := v1alpha1.BGPPeer{TypeMeta: typeMeta(kind), ObjectMeta: md, Spec: v1alpha1.BGPPeerSpec{
		MyASN:           s.MyASN,
		PeerASN:         s.ASN,
		DynamicASN:      v1alpha1.DynamicASN(s.DynamicASN),
		PeerAddress:     addr.String(),
		PeerPort:        int32(s.Port),
		NodeSelectors:   s.NodeSelectors,
		BFDProfile:      s.BFDProfile,
		GracefulRestart: s.EnableGracefulRestart,
		EBGPMultiHop:    s.EBGPMultiHop,
	}}
	if s.ASN != 0 && s.DynamicASN != "" {
		t.note(Lost, kind, o.Metadata, "spec.dynamicASN", "set together with peerASN (MetalLB refuses that); peerASN is kept")
		out.Spec.DynamicASN = ""
	}
	if s.SrcAddress != "" {
		if a, err := netip.ParseAddr(strings.TrimSpace(s.SrcAddress)); err != nil || a.Is4() != addr.Is4() {
			t.note(Lost, kind, o.Metadata, "spec.sourceAddress", "%q is not an address of peerAddress's family; not translated, the kernel picks the source", s.SrcAddress)
		} else {
			out.Spec.SourceAddress = a.String()
		}
	}
	if s.RouterID != "" {
		if a, err := netip.ParseAddr(strings.TrimSpace(s.RouterID)); err != nil || !a.Is4() {
			t.note(Lost, kind, o.Metadata, "spec.routerID", "%q is not an IPv4 address, which a BGP identifier is written as (RFC 6286); not translated, the node's IPv4 address is used", s.RouterID)
		} else {
			out.Spec.RouterID = a.String()
		}
	}
	t.timers(o, &out)
	if s.ConnectTime != nil {
		if d := s.ConnectTime.Duration.Truncate(time.Second); d >= time.Second && d <= 65535*time.Second {
			out.Spec.ConnectTime = seconds(d)
		} else {
			t.note(Lost, kind, o.Metadata, "spec.connectTime", "%s is outside 1s-65535s (MetalLB refuses it too); Herald's default (120s) is used", s.ConnectTime.Duration)
		}
	}
	if out.Spec.EBGPMultiHop && out.Spec.DynamicASN == v1alpha1.DynamicASNInternal {
		out.Spec.EBGPMultiHop = false
		t.note(Note, kind, o.Metadata, "spec.ebgpMultiHop", "the session is iBGP (dynamicASN internal), which eBGP multi-hop does not apply to; left out, as Herald refuses it there")
	}
	if s.Password != "" {
		secret := out.Name + "-bgp-password"
		out.Spec.PasswordSecret = &v1alpha1.SecretKeyReference{Name: secret, Key: "password"}
		t.note(Action, kind, o.Metadata, "spec.password", "a password is never written into a Herald object: create the Secret it now refers to, kubectl -n %s create secret generic %s --from-literal=password=... (the value MetalLB has); the session stays down until it exists", t.opt.HeraldNamespace, secret)
	}
	if ps := s.PasswordSecret; ps != nil && ps.Name != "" {
		if out.Spec.PasswordSecret != nil {
			t.note(Lost, kind, o.Metadata, "spec.passwordSecret", "set together with password (MetalLB refuses that); password is used")
		} else {
			out.Spec.PasswordSecret = &v1alpha1.SecretKeyReference{Name: ps.Name, Key: "password"}
			from := cmp.Or(ps.Namespace, o.Metadata.Namespace, "metallb-system")
			if from != t.opt.HeraldNamespace {
				t.note(Action, kind, o.Metadata, "spec.passwordSecret", "Herald reads the Secret in its own namespace: copy Secret %s/%s (key password) to %s under the same name; heraldctl never copies Secrets", from, ps.Name, t.opt.HeraldNamespace)
			}
		}
	}
	if s.VRFName != "" {
		out.Spec.VRF = s.VRFName
		t.note(Lost, kind, o.Metadata, "spec.vrf", "Herald takes vrf but does not run sessions in a VRF yet: the session is reported Blocked until it does; peer from the default VRF meanwhile")
	}
	if s.DisableMP {
		t.note(Lost, kind, o.Metadata, "spec.disableMP", "Herald always negotiates IPv4 and IPv6 on one session (RFC 4760) and sends the other family's routes when the node has a next hop for it; it cannot keep the families apart")
	}
	if s.DualStackAddressFamily {
		t.note(Note, kind, o.Metadata, "spec.dualStackAddressFamily", "Herald always negotiates both families on a session; nothing to set")
	}
	if s.LocalASN != 0 {
		t.note(Lost, kind, o.Metadata, "spec.localASN", "an FRR-only setting (local-as); Herald has none: use myASN %d, or configure the router to accept the session from AS %d", s.LocalASN, s.MyASN)
	}
	t.res.BGPPeers = append(t.res.BGPPeers, out)
}

// timers translates the hold and keepalive times. MetalLB derives a missing
// one from the other (keepalive = hold/3, hold = 3 x keepalive); Herald
// derives only keepalive, so a hold time from a keepalive is written out.
func (t *translation) timers(o mlbObject[mlbBGPPeerSpec], out *v1alpha1.BGPPeer) {
	const kind = "BGPPeer"
	hold, ka := o.Spec.HoldTime, o.Spec.KeepaliveTime
	if hold == nil && ka == nil {
		return
	}
	var h, k time.Duration
	switch {
	case hold != nil && ka != nil:
		h, k = hold.Duration, ka.Duration
	case hold != nil:
		h, k = hold.Duration, hold.Duration/3
	default:
		h, k = 3*ka.Duration, ka.Duration
	}
	h = h.Truncate(time.Second)
	switch {
	case h == 0:
		t.note(Lost, kind, o.Metadata, "spec.holdTime", "0 (no keepalives): Herald's embedded GoBGP cannot run without a hold time and uses 90s")
		return
	case h < 3*time.Second || h > 65535*time.Second:
		t.note(Lost, kind, o.Metadata, "spec.holdTime", "%s is outside 3s-65535s (RFC 4271 4.2; MetalLB refuses it too); Herald's default (90s) is used", h)
		return
	}
	if hold != nil && h != hold.Duration {
		t.note(Note, kind, o.Metadata, "spec.holdTime", "%s is not a whole number of seconds; written as %s (BGP carries whole seconds)", hold.Duration, h)
	}
	out.Spec.HoldTime = seconds(h)
	if ka == nil {
		return // Herald derives a third of holdTime, as MetalLB does
	}
	k = k.Truncate(time.Second)
	if k < time.Second || k >= h {
		t.note(Lost, kind, o.Metadata, "spec.keepaliveTime", "%s is not at least 1s and less than holdTime %s, as Herald requires; a third of holdTime is used", ka.Duration, h)
		return
	}
	if hold == nil {
		t.note(Note, kind, o.Metadata, "spec.holdTime", "unset: MetalLB uses 3 x keepaliveTime, Herald 90s, so holdTime %s is written", h)
	}
	out.Spec.KeepaliveTime = seconds(k)
}

// judge runs Herald's configuration model over the result, as the webhook
// would when the objects are applied: a refused object is left out (it
// would fail kubectl apply) with its reason, and warnings become notes.
func (t *translation) judge() {
	in := model.Input{Pools: t.res.Pools, L2Advertisements: t.res.L2Advertisements, BGPPeers: t.res.BGPPeers,
		BGPAdvertisements: t.res.BGPAdvertisements, BFDProfiles: t.res.BFDProfiles}
	c := model.Build(in)
	refused := map[model.Ref]bool{}
	for _, ref := range sortedRefs(c.Verdicts) {
		v := c.Verdicts[ref]
		if !v.Accepted {
			refused[ref] = true
			t.res.Findings = append(t.res.Findings, Finding{Severity: Lost, Object: ref.String(),
				Message: "Herald refuses the translation: " + v.Message + "; it is not written: fix it in MetalLB's configuration or write it by hand"})
		}
		for _, w := range v.Warnings {
			t.res.Findings = append(t.res.Findings, Finding{Severity: Note, Object: ref.String(), Message: "Herald warns: " + w})
		}
	}
	out := func(kind string) func(name string) bool {
		return func(name string) bool { return refused[model.Ref{Kind: kind, Name: name}] }
	}
	t.res.Pools = slices.DeleteFunc(t.res.Pools, func(o v1alpha1.IPAddressPool) bool { return out(model.KindIPAddressPool)(o.Name) })
	t.res.L2Advertisements = slices.DeleteFunc(t.res.L2Advertisements, func(o v1alpha1.L2Advertisement) bool { return out(model.KindL2Advertisement)(o.Name) })
	t.res.BGPPeers = slices.DeleteFunc(t.res.BGPPeers, func(o v1alpha1.BGPPeer) bool { return out(model.KindBGPPeer)(o.Name) })
	t.res.BGPAdvertisements = slices.DeleteFunc(t.res.BGPAdvertisements, func(o v1alpha1.BGPAdvertisement) bool { return out(model.KindBGPAdvertisement)(o.Name) })
	t.res.BFDProfiles = slices.DeleteFunc(t.res.BFDProfiles, func(o v1alpha1.BFDProfile) bool { return out(model.KindBFDProfile)(o.Name) })
}

func sortedRefs(m map[model.Ref]model.Verdict) []model.Ref {
	return slices.SortedFunc(maps.Keys(m), func(a, b model.Ref) int { return cmp.Or(cmp.Compare(a.Kind, b.Kind), cmp.Compare(a.Name, b.Name)) })
}
