// Package kubeproxy judges kube-proxy's configuration where it gets in the
// way of layer 2 announcements: in IPVS mode, unless ipvs.strictARP is true,
// kube-proxy binds every LoadBalancer address with ipMode VIP to the dummy
// interface kube-ipvs0 of every node, and the kernel's default ARP settings
// (arp_ignore 0) make every node answer ARP for every one of them, so
// clients reach whichever node answered last instead of the one Herald
// elected. strictARP sets arp_ignore 1 and arp_announce 2, which stops that.
// See https://kubernetes.io/docs/reference/config-api/kube-proxy-config.v1alpha1/#kubeproxy-config-k8s-io-v1alpha1-KubeProxyIPVSConfiguration.
//
// Herald's dataplane writes ipMode Proxy, which kube-proxy leaves alone, so
// the problem holds only with the dataplane off.
package kubeproxy

import (
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

// Where kubeadm, and most installers that follow it, keep kube-proxy's
// configuration: a KubeProxyConfiguration in the ConfigMap's key
// config.conf. Clusters without it (k3s, or kube-proxy configured by flags)
// give Herald nothing to judge.
const (
	ConfigMapNamespace = "kube-system"
	ConfigMapName      = "kube-proxy"
	ConfigKey          = "config.conf"
)

// Reasons of a Finding.
const (
	// ReasonStrictARPDisabled: IPVS mode without strictARP, dataplane off.
	ReasonStrictARPDisabled = "StrictARPDisabled"
	// ReasonConfigUnreadable: the ConfigMap exists but its configuration
	// cannot be read, so Herald cannot tell.
	ReasonConfigUnreadable = "KubeProxyConfigUnreadable"
	// ReasonStrictARPResolved names the event when a finding goes away
	// (strictARP set, kube-proxy out of IPVS mode, or the dataplane on).
	ReasonStrictARPResolved = "StrictARPResolved"
)

// The fix, as a person would type it.
const fix = "run `kubectl edit configmap -n kube-system kube-proxy`, set ipvs.strictARP: true in config.conf and restart kube-proxy " +
	"(`kubectl rollout restart daemonset -n kube-system kube-proxy`), or turn Herald's dataplane on (chart value dataplane.backend)"

// Finding is what Herald has to say about kube-proxy's ARP behaviour: the
// zero value (Status "") when nothing, else a condition's status, reason and
// message. Status is False when every node answers ARP for Herald's
// addresses, Unknown when Herald cannot tell.
type Finding struct {
	Status  metav1.ConditionStatus
	Reason  string
	Message string
}

// Problem reports whether there is something to say.
func (f Finding) Problem() bool { return f.Status != "" }

// config is the part of a KubeProxyConfiguration read here.
type config struct {
	Kind string `json:"kind"`
	Mode string `json:"mode"`
	IPVS struct {
		StrictARP *bool `json:"strictARP"`
	} `json:"ipvs"`
}

// CheckStrictARP judges kube-proxy's ConfigMap (nil when it does not exist)
// for a controller whose dataplane is on or off.
func CheckStrictARP(cm *corev1.ConfigMap, dataplane bool) Finding {
	if dataplane || cm == nil {
		return Finding{}
	}
	where := fmt.Sprintf("ConfigMap %s/%s", cm.Namespace, cm.Name)
	raw, ok := cm.Data[ConfigKey]
	if !ok {
		return unreadable(fmt.Sprintf("%s has no key %s", where, ConfigKey))
	}
	var c config
	// Fields not read here are ignored (a KubeProxyConfiguration has
	// dozens); a broken document or a mistyped field (strictARP: "yes")
	// is an error, as kube-proxy itself would refuse it.
	if err := yaml.Unmarshal([]byte(raw), &c); err != nil {
		return unreadable(fmt.Sprintf("%s, key %s, is not valid YAML: %v", where, ConfigKey, err))
	}
	if c.Kind != "" && c.Kind != "KubeProxyConfiguration" {
		return unreadable(fmt.Sprintf("%s, key %s, holds a %s, not a KubeProxyConfiguration", where, ConfigKey, c.Kind))
	}
	// kube-proxy's mode names are lower case; "" is its default, iptables
	// (nftables and kernelspace never bind addresses to kube-ipvs0).
	if !strings.EqualFold(strings.TrimSpace(c.Mode), "ipvs") {
		return Finding{}
	}
	if c.IPVS.StrictARP != nil && *c.IPVS.StrictARP {
		return Finding{}
	}
	setting := "ipvs.strictARP is false"
	if c.IPVS.StrictARP == nil {
		setting = "ipvs.strictARP is not set (false)"
	}
	return Finding{
		Status: metav1.ConditionFalse,
		Reason: ReasonStrictARPDisabled,
		Message: fmt.Sprintf("kube-proxy runs in IPVS mode and %s (%s), and Herald's dataplane is off: every node answers ARP "+
			"for every LoadBalancer address on kube-ipvs0, so traffic reaches whichever node answered last, not the one Herald announces. To fix it, %s",
			setting, where, fix),
	}
}

func unreadable(what string) Finding {
	return Finding{
		Status: metav1.ConditionUnknown,
		Reason: ReasonConfigUnreadable,
		Message: "cannot tell whether kube-proxy answers ARP for Herald's addresses on every node: " + what +
			". If kube-proxy runs in IPVS mode, make sure ipvs.strictARP is true",
	}
}
