package kubeproxy

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func configMap(conf string) *corev1.ConfigMap {
	return &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Namespace: ConfigMapNamespace, Name: ConfigMapName},
		Data:       map[string]string{ConfigKey: conf},
	}
}

// kubeadm writes config.conf like this (trimmed).
const kubeadmHead = `apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
bindAddress: 0.0.0.0
clusterCIDR: 10.244.0.0/16
iptables:
  masqueradeAll: false
  syncPeriod: 0s
`

func TestStrictARPVerdict(t *testing.T) {
	for _, tc := range []struct {
		name      string
		cm        *corev1.ConfigMap
		dataplane bool
		status    metav1.ConditionStatus // "": nothing to say
		reason    string
		mentions  []string // in the message
	}{
		{name: "no ConfigMap", cm: nil},
		{name: "no ConfigMap, dataplane on", cm: nil, dataplane: true},
		{name: "iptables", cm: configMap(kubeadmHead + "mode: iptables\n")},
		{name: "nftables", cm: configMap(kubeadmHead + "mode: nftables\n")},
		{name: "default mode is iptables", cm: configMap(kubeadmHead + "mode: \"\"\n")},
		{name: "mode absent is iptables", cm: configMap(kubeadmHead)},
		{name: "iptables with strictARP false is fine", cm: configMap(kubeadmHead + "mode: iptables\nipvs:\n  strictARP: false\n")},
		{name: "ipvs strictARP true", cm: configMap(kubeadmHead + "mode: ipvs\nipvs:\n  strictARP: true\n  scheduler: rr\n")},
		{
			name: "ipvs strictARP false", cm: configMap(kubeadmHead + "mode: ipvs\nipvs:\n  strictARP: false\n"),
			status: metav1.ConditionFalse, reason: ReasonStrictARPDisabled,
			mentions: []string{"ipvs.strictARP is false", "kube-ipvs0", "kubectl edit configmap -n kube-system kube-proxy", "strictARP: true", "dataplane.backend"},
		},
		{
			name: "ipvs strictARP missing", cm: configMap(kubeadmHead + "mode: ipvs\nipvs:\n  scheduler: rr\n"),
			status: metav1.ConditionFalse, reason: ReasonStrictARPDisabled,
			mentions: []string{"ipvs.strictARP is not set", "kubectl edit configmap -n kube-system kube-proxy"},
		},
		{
			name: "ipvs without an ipvs section", cm: configMap(kubeadmHead + "mode: ipvs\n"),
			status: metav1.ConditionFalse, reason: ReasonStrictARPDisabled,
		},
		{
			name: "IPVS in capitals", cm: configMap(kubeadmHead + "mode: IPVS\n"),
			status: metav1.ConditionFalse, reason: ReasonStrictARPDisabled,
		},
		{name: "ipvs strictARP false, dataplane on", cm: configMap(kubeadmHead + "mode: ipvs\nipvs:\n  strictARP: false\n"), dataplane: true},
		{name: "malformed, dataplane on", cm: configMap("mode: [ipvs"), dataplane: true},
		{
			name: "malformed YAML", cm: configMap("mode: [ipvs\n"),
			status: metav1.ConditionUnknown, reason: ReasonConfigUnreadable,
			mentions: []string{"kube-system/kube-proxy", "config.conf", "not valid YAML", "strictARP is true"},
		},
		{
			name: "mistyped strictARP", cm: configMap(kubeadmHead + "mode: ipvs\nipvs:\n  strictARP: \"yes\"\n"),
			status: metav1.ConditionUnknown, reason: ReasonConfigUnreadable, mentions: []string{"not valid YAML"},
		},
		{
			name: "no config.conf", cm: &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "kube-system", Name: "kube-proxy"}, Data: map[string]string{"kubeconfig.conf": "x"}},
			status: metav1.ConditionUnknown, reason: ReasonConfigUnreadable, mentions: []string{"has no key config.conf"},
		},
		{
			name: "another kind", cm: configMap("kind: KubeletConfiguration\nmode: ipvs\n"),
			status: metav1.ConditionUnknown, reason: ReasonConfigUnreadable, mentions: []string{"KubeletConfiguration"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := CheckStrictARP(tc.cm, tc.dataplane)
			if f.Status != tc.status || f.Reason != tc.reason {
				t.Fatalf("got %q %q (%s), want %q %q", f.Status, f.Reason, f.Message, tc.status, tc.reason)
			}
			if f.Problem() != (tc.status != "") {
				t.Errorf("Problem() = %v with status %q", f.Problem(), f.Status)
			}
			if tc.status != "" && f.Message == "" {
				t.Error("no message")
			}
			for _, m := range tc.mentions {
				if !strings.Contains(f.Message, m) {
					t.Errorf("message %q does not mention %q", f.Message, m)
				}
			}
		})
	}
}
