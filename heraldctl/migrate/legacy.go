package migrate

import (
	"encoding/json"
	"fmt"
	"maps"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

// ParseConfigMap reads the YAML of the "config" key of MetalLB's legacy
// ConfigMap. Fields MetalLB does not have are returned as findings (paths
// in the YAML); YAML that does not have the config's shape is an error.
func ParseConfigMap(config string) (legacyConfig, []Finding, error) {
	var c legacyConfig
	var m map[string]any
	if err := yaml.Unmarshal([]byte(config), &m); err != nil {
		return c, nil, err
	}
	var fs []Finding
	for _, f := range dropUnknown(m, reflect.TypeOf(c), "") {
		fs = append(fs, Finding{Severity: Lost, Field: f, Message: "not a field of MetalLB's ConfigMap heraldctl knows; not translated"})
	}
	b, err := json.Marshal(m)
	if err == nil {
		err = json.Unmarshal(b, &c)
	}
	return c, fs, err
}

// addLegacy turns a legacy configuration into the custom resources MetalLB
// v0.13 replaced it with (so one translation serves both): a pool of
// protocol layer2 gets an L2Advertisement, a pool of protocol bgp a
// BGPAdvertisement per bgp-advertisements entry (or one with the defaults
// when it has none), each peer a BGPPeer, the bgp-communities a Community.
// Objects the ConfigMap does not name are named after what they belong to.
func (in *Input) addLegacy(where, config string) {
	c, fs, err := ParseConfigMap(config)
	for _, f := range fs {
		in.note(f.Severity, where, "config: "+f.Field, f.Message)
	}
	if err != nil {
		in.note(Lost, where, "config", "cannot read MetalLB's configuration: "+err.Error())
		return
	}
	if in.origin == nil {
		in.origin = map[string]string{}
	}
	from := func(kind, name, path string) {
		in.origin[kind+"/"+name] = fmt.Sprintf("%s %s", where, path)
	}
	meta := func(name string) metav1.ObjectMeta { return metav1.ObjectMeta{Name: name} }

	if len(c.BGPCommunities) > 0 {
		cm := mlbObject[mlbCommunitySpec]{Metadata: meta("bgp-communities")}
		for _, k := range slices.Sorted(maps.Keys(c.BGPCommunities)) {
			cm.Spec.Communities = append(cm.Spec.Communities, mlbCommunityAlias{Name: k, Value: c.BGPCommunities[k]})
		}
		in.communities = append(in.communities, cm)
		from("Community", "bgp-communities", "bgp-communities")
	}
	for i, b := range c.BFDProfiles {
		in.bfd = append(in.bfd, mlbObject[mlbBFDProfileSpec]{Metadata: meta(b.Name), Spec: mlbBFDProfileSpec{
			ReceiveInterval: b.ReceiveInterval, TransmitInterval: b.TransmitInterval, DetectMultiplier: b.DetectMultiplier,
			EchoInterval: b.EchoInterval, EchoMode: b.EchoMode, PassiveMode: b.PassiveMode, MinimumTTL: b.MinimumTTL,
		}})
		from("BFDProfile", b.Name, fmt.Sprintf("bfd-profiles[%d]", i))
	}
	for i, p := range c.Pools {
		path := fmt.Sprintf("address-pools[%d]", i)
		in.pools = append(in.pools, mlbObject[mlbPoolSpec]{Metadata: meta(p.Name), Spec: mlbPoolSpec{
			Addresses: p.Addresses, AutoAssign: p.AutoAssign, AvoidBuggyIPs: p.AvoidBuggyIPs,
		}})
		from("IPAddressPool", p.Name, path)
		switch p.Protocol {
		case "layer2":
			in.l2 = append(in.l2, mlbObject[mlbL2AdvertisementSpec]{Metadata: meta(p.Name), Spec: mlbL2AdvertisementSpec{IPAddressPools: []string{p.Name}}})
			from("L2Advertisement", p.Name, path+".protocol")
			if len(p.BGPAdvertisements) > 0 {
				in.note(Lost, where, path+".bgp-advertisements", "a layer2 pool is not announced over BGP (MetalLB ignores these too); not translated")
			}
		case "bgp":
			advs := p.BGPAdvertisements
			if len(advs) == 0 {
				advs = []legacyBGPAdvertisment{{}} // MetalLB's default: each address as a /32 or /128
			}
			for j, a := range advs {
				name := p.Name
				if j > 0 {
					name = fmt.Sprintf("%s-%d", p.Name, j+1)
				}
				spec := mlbBGPAdvertisementSpec{IPAddressPools: []string{p.Name}, AggregationLength: a.AggregationLength,
					AggregationLengthV6: a.AggregationLengthV6, Communities: a.Communities}
				if a.LocalPref != nil {
					spec.LocalPref = *a.LocalPref
				}
				in.bgpAdvs = append(in.bgpAdvs, mlbObject[mlbBGPAdvertisementSpec]{Metadata: meta(name), Spec: spec})
				from("BGPAdvertisement", name, fmt.Sprintf("%s.bgp-advertisements[%d]", path, j))
			}
		default:
			in.note(Lost, where, path+".protocol", fmt.Sprintf("protocol %q is neither layer2 nor bgp: the pool's addresses are not announced", p.Protocol))
		}
	}
	names := map[string]int{}
	for i, p := range c.Peers {
		path := fmt.Sprintf("peers[%d]", i)
		name := peerName(p.Addr, i)
		if names[name]++; names[name] > 1 {
			name = fmt.Sprintf("%s-%d", name, names[name])
		}
		spec := mlbBGPPeerSpec{MyASN: p.MyASN, ASN: p.ASN, Address: p.Addr, SrcAddress: p.SrcAddr, Port: p.Port,
			RouterID: p.RouterID, Password: p.Password, BFDProfile: p.BFDProfile, EBGPMultiHop: p.EBGPMultiHop}
		var err error
		if spec.HoldTime, err = legacyDuration(p.HoldTime); err != nil {
			in.note(Lost, where, path+".hold-time", err.Error())
		}
		if spec.KeepaliveTime, err = legacyDuration(p.KeepaliveTime); err != nil {
			in.note(Lost, where, path+".keepalive-time", err.Error())
		}
		for _, s := range p.NodeSelectors {
			ls := metav1.LabelSelector{MatchLabels: s.MatchLabels}
			for _, r := range s.MatchExpressions {
				ls.MatchExpressions = append(ls.MatchExpressions, metav1.LabelSelectorRequirement{
					Key: r.Key, Operator: metav1.LabelSelectorOperator(r.Operator), Values: r.Values})
			}
			spec.NodeSelectors = append(spec.NodeSelectors, ls)
		}
		in.peers = append(in.peers, mlbObject[mlbBGPPeerSpec]{Metadata: meta(name), Spec: spec})
		from("BGPPeer", name, path)
	}
}

// peerName names the BGPPeer of a legacy peer, which has no name, after its
// address: peer-198-51-100-1, peer-2001-db8--1.
func peerName(addr string, i int) string {
	a, err := netip.ParseAddr(strings.TrimSpace(addr))
	if err != nil || a.Zone() != "" {
		return fmt.Sprintf("peer-%d", i+1)
	}
	s := strings.NewReplacer(".", "-", ":", "-").Replace(a.String())
	return "peer-" + strings.Trim(s, "-")
}

func legacyDuration(s string) (*metav1.Duration, error) {
	if s == "" {
		return nil, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return nil, fmt.Errorf("%q is not a duration (MetalLB refuses it too); not translated", s)
	}
	return &metav1.Duration{Duration: d}, nil
}
