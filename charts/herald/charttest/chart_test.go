package charttest

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// kubeVersion is passed to helm: a helm built with `go install` assumes
// Kubernetes 1.20, which the chart's kubeVersion (>=1.31) refuses.
const kubeVersion = "1.31.0"

// valueSet is one way of installing the chart, and what must hold for it on
// top of the invariants every rendering must keep.
type valueSet struct {
	name      string
	release   string
	namespace string
	set       []string
	check     func(t *testing.T, r *rendering)
}

var valueSets = []valueSet{
	{
		name: "defaults", release: "herald", namespace: "herald-system",
		check: func(t *testing.T, r *rendering) {
			for _, c := range []*corev1.Container{r.controllerContainer(t), r.speakerContainer(t)} {
				if v, ok := flags(c)["load-balancer-class"]; !ok || v != "" {
					t.Errorf("%s: --load-balancer-class=%q (set: %v), want empty: Services without a class", c.Name, v, ok)
				}
			}
			if n := len(r.all("CustomResourceDefinition")); n != len(crdFiles(t, r.root)) {
				t.Errorf("%d CRDs rendered, want the %d of config/crd/bases", n, len(crdFiles(t, r.root)))
			}
			for _, crd := range r.all("CustomResourceDefinition") {
				if crd.GetAnnotations()["helm.sh/resource-policy"] != "keep" {
					t.Errorf("CRD %s: no helm.sh/resource-policy: keep, so uninstalling would delete every pool", crd.GetName())
				}
			}
			if len(r.all("ServiceMonitor")) != 0 {
				t.Error("ServiceMonitors rendered although serviceMonitor.enabled is false")
			}
			key := r.gossipKey(t, "herald-memberlist", "secretkey")
			if len(key) != 32 {
				t.Errorf("gossip key of %d bytes, want 32", len(key))
			}
			r.checkWebhooksMatchConfig(t)
			r.checkDataplane(t, "nftables", "")
		},
	},
	{
		name: "dataplaneIptables", release: "herald", namespace: "herald-system",
		set:   []string{"dataplane.backend=iptables"},
		check: func(t *testing.T, r *rendering) { r.checkDataplane(t, "iptables", "") },
	},
	{
		name: "dataplaneIPVS", release: "herald", namespace: "herald-system",
		set:   []string{"dataplane.backend=ipvs"},
		check: func(t *testing.T, r *rendering) { r.checkDataplane(t, "ipvs", "") },
	},
	{
		name: "dataplaneViaNodePorts", release: "herald", namespace: "herald-system",
		set: []string{"dataplane.remoteTargets=nodeports"},
		check: func(t *testing.T, r *rendering) {
			if got := flags(r.speakerContainer(t))["dataplane-remote-targets"]; got != "nodeports" {
				t.Errorf("speaker --dataplane-remote-targets=%q, want nodeports", got)
			}
		},
	},
	{
		name: "dataplaneOff", release: "herald", namespace: "herald-system",
		set:   []string{"dataplane.backend=off"},
		check: func(t *testing.T, r *rendering) { r.checkDataplane(t, "off", "") },
	},
	{
		name: "ipModeOverrideVIP", release: "herald", namespace: "herald-system",
		set:   []string{"controller.ipMode=VIP"},
		check: func(t *testing.T, r *rendering) { r.checkDataplane(t, "nftables", "VIP") },
	},
	{
		name: "ipModeOverrideProxy", release: "herald", namespace: "herald-system",
		set:   []string{"dataplane.backend=off", "controller.ipMode=Proxy"},
		check: func(t *testing.T, r *rendering) { r.checkDataplane(t, "off", "Proxy") },
	},
	{
		name: "loadBalancerClass", release: "herald", namespace: "herald-system",
		set: []string{"loadBalancerClass=herald.dev/herald"},
		check: func(t *testing.T, r *rendering) {
			for _, c := range []*corev1.Container{r.controllerContainer(t), r.speakerContainer(t)} {
				if v := flags(c)["load-balancer-class"]; v != "herald.dev/herald" {
					t.Errorf("%s: --load-balancer-class=%q, want herald.dev/herald", c.Name, v)
				}
			}
		},
	},
	{
		name: "serviceMonitor", release: "herald", namespace: "monitoring-test",
		set: []string{"serviceMonitor.enabled=true", "serviceMonitor.labels.release=prometheus"},
		check: func(t *testing.T, r *rendering) {
			sms := r.all("ServiceMonitor")
			if len(sms) != 2 {
				t.Fatalf("%d ServiceMonitors, want one per component (2)", len(sms))
			}
			for _, sm := range sms {
				if sm.GetLabels()["release"] != "prometheus" {
					t.Errorf("ServiceMonitor %s lacks serviceMonitor.labels", sm.GetName())
				}
				sel, _, _ := unstructured.NestedStringMap(sm.Object, "spec", "selector", "matchLabels")
				ns, _, _ := unstructured.NestedStringSlice(sm.Object, "spec", "namespaceSelector", "matchNames")
				if !slices.Equal(ns, []string{r.namespace}) {
					t.Errorf("ServiceMonitor %s: namespaceSelector %v, want [%s]", sm.GetName(), ns, r.namespace)
				}
				eps, _, _ := unstructured.NestedSlice(sm.Object, "spec", "endpoints")
				if len(eps) != 1 {
					t.Fatalf("ServiceMonitor %s: %d endpoints, want 1", sm.GetName(), len(eps))
				}
				port, _ := eps[0].(map[string]any)["port"].(string)
				var matched []string
				for _, u := range r.all("Service") {
					if labels.SelectorFromSet(sel).Matches(labels.Set(u.GetLabels())) {
						matched = append(matched, u.GetName())
						svc := into[corev1.Service](t, u)
						if !slices.ContainsFunc(svc.Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == port }) {
							t.Errorf("ServiceMonitor %s scrapes port %q, which Service %s lacks", sm.GetName(), port, svc.Name)
						}
					}
				}
				if len(matched) != 1 {
					t.Errorf("ServiceMonitor %s selects Services %v, want exactly one metrics Service", sm.GetName(), matched)
				}
			}
		},
	},
	{
		name: "rbacOff", release: "herald", namespace: "herald-system",
		set: []string{"rbac.create=false"},
		check: func(t *testing.T, r *rendering) {
			for _, kind := range []string{"ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"} {
				if n := len(r.all(kind)); n != 0 {
					t.Errorf("%d %ss rendered with rbac.create=false", n, kind)
				}
			}
			if n := len(r.all("ServiceAccount")); n != 2 {
				t.Errorf("%d ServiceAccounts, want 2: rbac.create=false must not drop them", n)
			}
		},
	},
	{
		// Every name derives from the release; the flags must follow.
		name: "otherReleaseAndNamespace", release: "edge", namespace: "lb-system",
		set: []string{"controller.replicas=2", "speaker.gossip.port=17946", "webhook.port=10443", "controller.healthPort=17473", "speaker.healthPort=17475"},
		check: func(t *testing.T, r *rendering) {
			if r.find("ValidatingWebhookConfiguration", "", "edge-herald-validating-webhook") == nil {
				t.Error("no ValidatingWebhookConfiguration edge-herald-validating-webhook: names do not follow the release")
			}
			dep := into[appsv1.Deployment](t, r.one(t, "Deployment"))
			if dep.Spec.Replicas == nil || *dep.Spec.Replicas != 2 {
				t.Errorf("controller replicas %s, want 2", show(dep.Spec.Replicas))
			}
			if flags(r.controllerContainer(t))["leader-elect"] != "true" {
				t.Error("two controller replicas without --leader-elect=true")
			}
			if flags(r.speakerContainer(t))["gossip-port"] != "17946" {
				t.Error("speaker.gossip.port not passed as --gossip-port")
			}
		},
	},
	{
		name: "minimal", release: "herald", namespace: "kube-lb",
		set: []string{
			"crds.install=false", "metrics.enabled=false", "speaker.gossip.enabled=false",
			"controller.serviceAccount.create=false", "controller.serviceAccount.name=lb-controller",
		},
		check: func(t *testing.T, r *rendering) {
			if n := len(r.all("CustomResourceDefinition")); n != 0 {
				t.Errorf("%d CRDs rendered with crds.install=false", n)
			}
			if r.find("Secret", r.namespace, "herald-memberlist") != nil {
				t.Error("gossip Secret rendered with speaker.gossip.enabled=false")
			}
			if n := len(r.all("Service")); n != 1 {
				t.Errorf("%d Services, want only the webhook's with metrics.enabled=false", n)
			}
			c, s := flags(r.controllerContainer(t)), flags(r.speakerContainer(t))
			if c["metrics-bind-address"] != "0" || s["metrics-bind-address"] != "0" {
				t.Errorf("metrics off but --metrics-bind-address controller %q, speaker %q; want 0", c["metrics-bind-address"], s["metrics-bind-address"])
			}
			if v, ok := s["gossip-address"]; !ok || v != "" {
				t.Errorf("gossip off but --gossip-address=%q (set: %v); want it set empty, overriding $HOST_IP", v, ok)
			}
			if r.find("ServiceAccount", r.namespace, "lb-controller") != nil {
				t.Error("ServiceAccount lb-controller rendered although controller.serviceAccount.create=false")
			}
			if sa := r.controllerPod(t).ServiceAccountName; sa != "lb-controller" {
				t.Errorf("controller runs as %q, want lb-controller", sa)
			}
		},
	},
}

func TestChartRendersSafely(t *testing.T) {
	c := setup(t)
	for _, vs := range valueSets {
		t.Run(vs.name, func(t *testing.T) {
			t.Parallel()
			r, err := c.template(vs.release, vs.namespace, vs.set...)
			if err != nil {
				t.Fatal(err)
			}
			t.Run("NoRBACWildcards", r.checkNoWildcards)
			t.Run("SecretsOnlyInReleaseNamespace", r.checkSecretsOnlyInNamespace)
			t.Run("BindingsResolve", r.checkBindings)
			t.Run("ServiceAccountsExist", r.checkServiceAccounts)
			t.Run("SpeakerHasOnlyNetAdminAndNetRaw", r.checkSpeaker)
			t.Run("ControllerNonRootReadOnly", r.checkController)
			t.Run("WebhookFailsClosed", r.checkWebhook)
			t.Run("ServicesSelectPods", r.checkServices)
			t.Run("NoKeysInChart", r.checkNoKeys)
			t.Run("NamespacedObjectsInReleaseNamespace", r.checkNamespaces)
			t.Run("Values", func(t *testing.T) { vs.check(t, r) })
		})
	}
}

func TestHelmLint(t *testing.T) {
	c := setup(t)
	for _, vs := range valueSets {
		t.Run(vs.name, func(t *testing.T) {
			t.Parallel()
			args := []string{"lint", "--strict", "--kube-version", kubeVersion, "--namespace", vs.namespace, c.chartDir()}
			for _, s := range vs.set {
				args = append(args, "--set", s)
			}
			if out, err := c.run(args...); err != nil {
				t.Fatalf("helm %s: %v\n%s", strings.Join(args, " "), err, out)
			}
		})
	}
}

// TestChartRefusesUnsafeValues: combinations that would break Herald are
// refused at install time, with a message that says why.
func TestChartRefusesUnsafeValues(t *testing.T) {
	c := setup(t)
	for _, tc := range []struct {
		set  []string
		want string
	}{
		{[]string{"controller.replicas=2", "controller.leaderElection.enabled=false"}, "needs controller.leaderElection.enabled"},
		{[]string{"speaker.terminationGracePeriodSeconds=5"}, "must exceed speaker.handoverTimeout"},
		{[]string{"speaker.handoverTimeout=10s"}, "must exceed speaker.handoverTimeout"},
		{[]string{"webhook.failurePolicy=Sometimes"}, "failurePolicy"},
		{[]string{"dataplane.backend=ebpf"}, "backend"},
		{[]string{"controller.ipMode=vip"}, "ipMode"},
		{[]string{"serviceMonitor.enabled=true", "metrics.enabled=false"}, "serviceMonitor.enabled needs metrics.enabled"},
		{[]string{"speaker.gossip.secret.create=false"}, "needs speaker.gossip.secret.name"},
		{[]string{"controller.image.digest=latest"}, "digest"},
		{[]string{"speaker.layer2Replies.burst=0"}, "burst"},
		{[]string{"speaker.layer2Replies.totalRate=-1"}, "totalRate"},
	} {
		t.Run(strings.Join(tc.set, ","), func(t *testing.T) {
			t.Parallel()
			_, err := c.template("herald", "herald-system", tc.set...)
			if err == nil {
				t.Fatalf("rendered; want a refusal mentioning %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("refused with %v; want a message mentioning %q", err, tc.want)
			}
		})
	}
}

// TestControllerMemoryLimitReachesTheGoRuntime: the controller's container
// limit reaches the controller (HERALD_MEMORY_LIMIT, from the downward API,
// so it follows whatever limit is set), which sets GOMEMLIMIT to 90% of it;
// without a limit there is nothing to pass.
func TestControllerMemoryLimitReachesTheGoRuntime(t *testing.T) {
	c := setup(t)
	for _, tc := range []struct {
		set  []string
		want bool
	}{
		{nil, true},
		{[]string{"controller.resources.limits.memory=96Mi"}, true},
		{[]string{"controller.resources.limits=null"}, false},
	} {
		t.Run(strings.Join(append([]string{"defaults"}, tc.set...), ","), func(t *testing.T) {
			t.Parallel()
			r, err := c.template("herald", "herald-system", tc.set...)
			if err != nil {
				t.Fatal(err)
			}
			ctr := r.controllerContainer(t)
			i := slices.IndexFunc(ctr.Env, func(e corev1.EnvVar) bool { return e.Name == "HERALD_MEMORY_LIMIT" })
			switch {
			case !tc.want && i >= 0:
				t.Errorf("HERALD_MEMORY_LIMIT %+v with no memory limit", ctr.Env[i])
			case !tc.want:
			case i < 0:
				t.Fatalf("controller lacks env HERALD_MEMORY_LIMIT; its limit is %v", ctr.Resources.Limits.Memory())
			default:
				ref := ctr.Env[i].ValueFrom
				if ref == nil || ref.ResourceFieldRef == nil || ref.ResourceFieldRef.Resource != "limits.memory" ||
					(ref.ResourceFieldRef.ContainerName != "" && ref.ResourceFieldRef.ContainerName != ctr.Name) {
					t.Errorf("HERALD_MEMORY_LIMIT from %+v, want the controller container's limits.memory", ref)
				}
			}
		})
	}
}

// TestLayer2ReplyLimitsReachTheSpeaker: the values set the speaker's
// --layer2-reply-* flags, written as the flags parse them (a burst of a
// million as 1000000, not Helm's float 1e+06, which --layer2-reply-burst, an
// integer, would refuse).
func TestLayer2ReplyLimitsReachTheSpeaker(t *testing.T) {
	c := setup(t)
	for _, tc := range []struct {
		set  []string
		want map[string]string
	}{
		{nil, map[string]string{"layer2-reply-rate": "1000", "layer2-reply-burst": "1000", "layer2-reply-total-rate": "10000", "layer2-reply-total-burst": "20000"}},
		{[]string{"speaker.layer2Replies.rate=0.5", "speaker.layer2Replies.burst=1000000", "speaker.layer2Replies.totalRate=0", "speaker.layer2Replies.totalBurst=3000000"},
			map[string]string{"layer2-reply-rate": "0.5", "layer2-reply-burst": "1000000", "layer2-reply-total-rate": "0", "layer2-reply-total-burst": "3000000"}},
	} {
		t.Run(strings.Join(append([]string{"defaults"}, tc.set...), ","), func(t *testing.T) {
			t.Parallel()
			r, err := c.template("herald", "herald-system", tc.set...)
			if err != nil {
				t.Fatal(err)
			}
			f := flags(r.speakerContainer(t))
			for k, v := range tc.want {
				if f[k] != v {
					t.Errorf("--%s=%q, want %q", k, f[k], v)
				}
			}
		})
	}
}

// TestGossipKeyIsMadePerInstall: the gossip key is random (so it is no key
// written into the chart). Keeping it across upgrades needs a cluster
// (lookup) and is the lab's to prove.
func TestGossipKeyIsMadePerInstall(t *testing.T) {
	c := setup(t)
	var keys [][]byte
	for range 2 {
		r, err := c.template("herald", "herald-system")
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, r.gossipKey(t, "herald-memberlist", "secretkey"))
	}
	if bytes.Equal(keys[0], keys[1]) {
		t.Fatal("two renderings made the same gossip key: it is hard-coded")
	}
}

// TestChartCRDsAreTheGeneratedOnes: the chart's copy of the CRDs is
// config/crd/bases, byte for byte (hack/render-manifests.sh copies them).
func TestChartCRDsAreTheGeneratedOnes(t *testing.T) {
	root := repoRoot(t)
	bases := crdFiles(t, root)
	copies, err := filepath.Glob(filepath.Join(root, "charts/herald/files/crds/*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	names := func(paths []string) []string {
		var n []string
		for _, p := range paths {
			n = append(n, filepath.Base(p))
		}
		return n
	}
	if !slices.Equal(names(bases), names(copies)) {
		t.Fatalf("chart CRDs %v, config/crd/bases %v: run hack/render-manifests.sh", names(copies), names(bases))
	}
	for i := range bases {
		a, errA := os.ReadFile(bases[i])
		b, errB := os.ReadFile(copies[i])
		if err := errors.Join(errA, errB); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(a, b) {
			t.Errorf("charts/herald/files/crds/%s differs from config/crd/bases: run hack/render-manifests.sh", filepath.Base(bases[i]))
		}
	}
}

// TestPlainManifestsAreFresh: config/herald.yaml is what the chart renders.
func TestPlainManifestsAreFresh(t *testing.T) {
	c := setup(t)
	cmd := exec.Command(filepath.Join(c.root, "hack/render-manifests.sh"), "--check")
	cmd.Dir = c.root
	cmd.Env = append(os.Environ(), "HELM="+c.helm)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("hack/render-manifests.sh --check: %v\n%s", err, out)
	}
}

// --- the invariants every rendering keeps -----------------------------------

func (r *rendering) rules(t *testing.T) (cluster, namespaced map[string][]rbacv1.PolicyRule) {
	cluster, namespaced = map[string][]rbacv1.PolicyRule{}, map[string][]rbacv1.PolicyRule{}
	for _, u := range r.all("ClusterRole") {
		cluster[u.GetName()] = into[rbacv1.ClusterRole](t, u).Rules
	}
	for _, u := range r.all("Role") {
		namespaced[u.GetNamespace()+"/"+u.GetName()] = into[rbacv1.Role](t, u).Rules
	}
	return cluster, namespaced
}

func (r *rendering) checkNoWildcards(t *testing.T) {
	cluster, namespaced := r.rules(t)
	for name, rules := range mergeMaps(cluster, namespaced) {
		for i, rule := range rules {
			for field, values := range map[string][]string{
				"apiGroups": rule.APIGroups, "resources": rule.Resources, "verbs": rule.Verbs,
				"resourceNames": rule.ResourceNames, "nonResourceURLs": rule.NonResourceURLs,
			} {
				for _, v := range values {
					if strings.Contains(v, "*") {
						t.Errorf("%s rule %d: wildcard %q in %s", name, i, v, field)
					}
				}
			}
			if len(rule.APIGroups) == 0 || len(rule.Resources) == 0 || len(rule.Verbs) == 0 {
				t.Errorf("%s rule %d: empty apiGroups, resources or verbs: %+v", name, i, rule)
			}
		}
	}
	for _, u := range r.all("ClusterRole") {
		if into[rbacv1.ClusterRole](t, u).AggregationRule != nil {
			t.Errorf("ClusterRole %s aggregates other roles: its permissions are not what the chart says", u.GetName())
		}
	}
}

func grantsSecrets(rule rbacv1.PolicyRule) bool {
	return slices.Contains(rule.APIGroups, "") && slices.ContainsFunc(rule.Resources, func(res string) bool {
		return res == "secrets" || strings.HasPrefix(res, "secrets/")
	})
}

func (r *rendering) checkSecretsOnlyInNamespace(t *testing.T) {
	cluster, namespaced := r.rules(t)
	for name, rules := range cluster {
		for i, rule := range rules {
			if grantsSecrets(rule) {
				t.Errorf("ClusterRole %s rule %d grants %v on Secrets: cluster-wide Secret access", name, i, rule.Verbs)
			}
		}
	}
	for name, rules := range namespaced {
		for _, rule := range rules {
			if grantsSecrets(rule) && !strings.HasPrefix(name, r.namespace+"/") {
				t.Errorf("Role %s grants Secrets outside the release namespace %s", name, r.namespace)
			}
		}
	}
	// A ClusterRole bound by a RoleBinding would be fine, but then the
	// ClusterRole above would grant Secrets; so nothing else to check.
}

func (r *rendering) checkBindings(t *testing.T) {
	type binding struct {
		name, ns string
		ref      rbacv1.RoleRef
		subjects []rbacv1.Subject
	}
	var bs []binding
	for _, u := range r.all("ClusterRoleBinding") {
		b := into[rbacv1.ClusterRoleBinding](t, u)
		bs = append(bs, binding{b.Name, "", b.RoleRef, b.Subjects})
	}
	for _, u := range r.all("RoleBinding") {
		b := into[rbacv1.RoleBinding](t, u)
		bs = append(bs, binding{b.Name, b.Namespace, b.RoleRef, b.Subjects})
	}
	used := r.podServiceAccounts(t)
	for _, b := range bs {
		if r.find(b.ref.Kind, b.ns, b.ref.Name) == nil {
			t.Errorf("binding %s refers to %s %s, which the chart does not render", b.name, b.ref.Kind, b.ref.Name)
		}
		if b.ns == "" && b.ref.Kind != "ClusterRole" {
			t.Errorf("ClusterRoleBinding %s refers to a %s", b.name, b.ref.Kind)
		}
		for _, s := range b.subjects {
			if s.Kind != "ServiceAccount" || s.Namespace != r.namespace || !slices.Contains(used, s.Name) {
				t.Errorf("binding %s grants to %s %s/%s, which is not one of the pods' ServiceAccounts %v in %s", b.name, s.Kind, s.Namespace, s.Name, used, r.namespace)
			}
		}
	}
}

func (r *rendering) podServiceAccounts(t *testing.T) []string {
	return []string{r.controllerPod(t).ServiceAccountName, r.speakerPod(t).ServiceAccountName}
}

func (r *rendering) checkServiceAccounts(t *testing.T) {
	created := map[string]bool{}
	for _, u := range r.all("ServiceAccount") {
		created[u.GetName()] = true
	}
	pods := map[string]*corev1.PodSpec{"controller": r.controllerPod(t), "speaker": r.speakerPod(t)}
	for component, pod := range pods {
		if pod.ServiceAccountName == "" || pod.ServiceAccountName == "default" {
			t.Errorf("%s runs as the namespace's default ServiceAccount", component)
			continue
		}
		if !created[pod.ServiceAccountName] && r.value(component+".serviceAccount.create") != "false" {
			t.Errorf("%s runs as ServiceAccount %s, which the chart does not create", component, pod.ServiceAccountName)
		}
	}
	if pods["controller"].ServiceAccountName == pods["speaker"].ServiceAccountName {
		t.Error("controller and speaker share a ServiceAccount: each must hold only its own permissions")
	}
}

func (r *rendering) checkSpeaker(t *testing.T) {
	pod, c := r.speakerPod(t), r.speakerContainer(t)
	ds := into[appsv1.DaemonSet](t, r.one(t, "DaemonSet"))
	sc := c.SecurityContext
	if sc == nil || sc.Capabilities == nil {
		t.Fatal("speaker container has no capabilities set")
	}
	var add []string
	for _, c := range sc.Capabilities.Add {
		add = append(add, string(c))
	}
	slices.Sort(add)
	if !slices.Equal(add, []string{"NET_ADMIN", "NET_RAW"}) {
		t.Errorf("speaker adds capabilities %v, want exactly [NET_ADMIN NET_RAW]", add)
	}
	if !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
		t.Errorf("speaker drops %v, want [ALL]", sc.Capabilities.Drop)
	}
	if sc.Privileged != nil && *sc.Privileged {
		t.Error("speaker is privileged")
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Error("speaker allows privilege escalation")
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Error("speaker's root file system is writable")
	}
	if !seccompRuntimeDefault(pod.SecurityContext, sc) {
		t.Error("speaker has no RuntimeDefault seccomp profile")
	}
	if !pod.HostNetwork || pod.DNSPolicy != corev1.DNSClusterFirstWithHostNet {
		t.Errorf("speaker hostNetwork %v dnsPolicy %q, want true and ClusterFirstWithHostNet", pod.HostNetwork, pod.DNSPolicy)
	}
	if pod.HostPID || pod.HostIPC {
		t.Error("speaker shares the host's PID or IPC namespace")
	}
	// The one host path: the xtables lock, which iptables-restore takes so
	// that the speaker's rule writes never interleave with kube-proxy's.
	var hostPaths []string
	for _, v := range pod.Volumes {
		if v.HostPath == nil {
			continue
		}
		hostPaths = append(hostPaths, v.HostPath.Path)
		if v.HostPath.Path != "/run/xtables.lock" || v.HostPath.Type == nil || *v.HostPath.Type != corev1.HostPathFileOrCreate {
			t.Errorf("speaker mounts host path %s (type %s); want only /run/xtables.lock, FileOrCreate", v.HostPath.Path, show(v.HostPath.Type))
			continue
		}
		if !slices.ContainsFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool {
			return m.Name == v.Name && m.MountPath == "/run/xtables.lock" && m.SubPath == ""
		}) {
			t.Errorf("host path /run/xtables.lock is not mounted at /run/xtables.lock: iptables would lock a file of its own")
		}
	}
	if !slices.Equal(hostPaths, []string{"/run/xtables.lock"}) {
		t.Errorf("speaker host paths %v, want exactly [/run/xtables.lock]", hostPaths)
	}
	wantEnv := map[string]string{"NODE_NAME": "spec.nodeName", "HOST_IP": "status.hostIP", "HERALD_NAMESPACE": "metadata.namespace"}
	for _, e := range c.Env {
		if want, ok := wantEnv[e.Name]; ok {
			if e.ValueFrom == nil || e.ValueFrom.FieldRef == nil || e.ValueFrom.FieldRef.FieldPath != want {
				t.Errorf("speaker env %s not from the downward API field %s", e.Name, want)
			}
			delete(wantEnv, e.Name)
		}
	}
	if len(wantEnv) != 0 {
		t.Errorf("speaker lacks env %v", slices.Sorted(maps.Keys(wantEnv)))
	}
	// The speaker stops at most --handover-timeout + 5s after SIGTERM.
	f := flags(c)
	handover, err := parseSeconds(f["handover-timeout"])
	if err != nil {
		t.Fatalf("--handover-timeout: %v", err)
	}
	if g := pod.TerminationGracePeriodSeconds; g == nil || float64(*g) <= handover+5 {
		t.Errorf("speaker terminationGracePeriodSeconds %s, want more than handover %gs + 5s", show(g), handover)
	}
	if s := ds.Spec.UpdateStrategy; s.Type != appsv1.RollingUpdateDaemonSetStrategyType || s.RollingUpdate == nil ||
		s.RollingUpdate.MaxUnavailable == nil || s.RollingUpdate.MaxUnavailable.String() != "1" {
		t.Errorf("speaker update strategy %+v, want RollingUpdate with maxUnavailable 1", s)
	}
	if r.value("speaker.tolerations") == "" && !slices.ContainsFunc(pod.Tolerations, func(t corev1.Toleration) bool {
		return t.Key == "" && t.Operator == corev1.TolerationOpExists && t.Effect == ""
	}) {
		t.Errorf("speaker tolerations %+v do not tolerate every taint: some nodes would run no speaker", pod.Tolerations)
	}
	checkProbes(t, "speaker", c, f["health-probe-bind-address"])
	if f["gossip-address"] != "" {
		if f["gossip-address"] != "$(HOST_IP)" {
			t.Errorf("--gossip-address=%s, want $(HOST_IP)", f["gossip-address"])
		}
		if r.value("speaker.gossip.secret.create") != "false" && r.find("Secret", r.namespace, f["gossip-secret"]) == nil {
			t.Errorf("--gossip-secret=%s, which the chart does not create", f["gossip-secret"])
		}
	}
	if f["node-name"] != "$(NODE_NAME)" {
		t.Errorf("--node-name=%q, want $(NODE_NAME)", f["node-name"])
	}
}

func (r *rendering) checkController(t *testing.T) {
	pod, c := r.controllerPod(t), r.controllerContainer(t)
	psc, sc := pod.SecurityContext, c.SecurityContext
	if sc == nil {
		t.Fatal("controller container has no securityContext")
	}
	nonRoot := func(s *bool) bool { return s != nil && *s }
	if !nonRoot(sc.RunAsNonRoot) && (psc == nil || !nonRoot(psc.RunAsNonRoot)) {
		t.Error("controller may run as root: runAsNonRoot not set")
	}
	uid := sc.RunAsUser
	if uid == nil && psc != nil {
		uid = psc.RunAsUser
	}
	if uid == nil || *uid != 65532 {
		t.Errorf("controller runAsUser %s, want 65532", show(uid))
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Error("controller's root file system is writable")
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Error("controller allows privilege escalation")
	}
	if sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) != 0 {
		t.Errorf("controller capabilities %+v, want drop [ALL] and nothing added", sc.Capabilities)
	}
	if !seccompRuntimeDefault(psc, sc) {
		t.Error("controller has no RuntimeDefault seccomp profile")
	}
	if pod.HostNetwork {
		t.Error("controller on the host network")
	}
	f := flags(c)
	checkProbes(t, "controller", c, f["health-probe-bind-address"])
	// The cert rotator writes into --webhook-cert-dir: an emptyDir.
	certDir := f["webhook-cert-dir"]
	var vol string
	for _, m := range c.VolumeMounts {
		if m.MountPath == certDir {
			vol = m.Name
		}
	}
	if !slices.ContainsFunc(pod.Volumes, func(v corev1.Volume) bool { return v.Name == vol && v.EmptyDir != nil }) {
		t.Errorf("--webhook-cert-dir=%s is not an emptyDir mount: the rotator could not write the cert on a read-only root", certDir)
	}
	if !slices.ContainsFunc(c.Env, func(e corev1.EnvVar) bool {
		return e.Name == "HERALD_NAMESPACE" && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "metadata.namespace"
	}) {
		t.Error("controller lacks env HERALD_NAMESPACE from metadata.namespace")
	}
	if f["enable-cert-rotation"] != "true" {
		t.Errorf("--enable-cert-rotation=%q: nothing else puts a cert in place", f["enable-cert-rotation"])
	}
	if !slices.ContainsFunc(c.Ports, func(p corev1.ContainerPort) bool {
		return p.Name == "webhook" && strconv.Itoa(int(p.ContainerPort)) == f["webhook-port"]
	}) {
		t.Errorf("no container port named webhook on --webhook-port=%s", f["webhook-port"])
	}
	// What the flags name exists, and RBAC lets the rotator write just that.
	if r.find("Service", r.namespace, f["webhook-service-name"]) == nil {
		t.Errorf("--webhook-service-name=%s: no such Service", f["webhook-service-name"])
	}
	if r.find("Secret", r.namespace, f["webhook-secret-name"]) == nil {
		t.Errorf("--webhook-secret-name=%s: no such Secret, so helm uninstall would leave the controller's behind", f["webhook-secret-name"])
	}
	if r.find("ValidatingWebhookConfiguration", "", f["webhook-config-name"]) == nil {
		t.Errorf("--webhook-config-name=%s: no such ValidatingWebhookConfiguration", f["webhook-config-name"])
	}
	if r.value("rbac.create") == "false" {
		return
	}
	cluster, namespaced := r.rules(t)
	allowed := func(rules []rbacv1.PolicyRule, group, resource, verb, name string) bool {
		return slices.ContainsFunc(rules, func(rule rbacv1.PolicyRule) bool {
			return slices.Contains(rule.APIGroups, group) && slices.Contains(rule.Resources, resource) && slices.Contains(rule.Verbs, verb) &&
				(len(rule.ResourceNames) == 0 || slices.Contains(rule.ResourceNames, name))
		})
	}
	ctrlName := r.controller(t).GetName()
	if !allowed(cluster[ctrlName], "admissionregistration.k8s.io", "validatingwebhookconfigurations", "update", f["webhook-config-name"]) {
		t.Errorf("ClusterRole %s does not let the rotator update %s", ctrlName, f["webhook-config-name"])
	}
	if allowed(cluster[ctrlName], "admissionregistration.k8s.io", "validatingwebhookconfigurations", "update", "someone-elses-webhook") {
		t.Errorf("ClusterRole %s lets the controller update any webhook configuration", ctrlName)
	}
	role := namespaced[r.namespace+"/"+ctrlName]
	if !allowed(role, "", "secrets", "update", f["webhook-secret-name"]) || !allowed(role, "", "secrets", "create", f["webhook-secret-name"]) {
		t.Errorf("Role %s does not let the rotator create and update Secret %s", ctrlName, f["webhook-secret-name"])
	}
	if allowed(role, "", "secrets", "update", "someone-elses-secret") || allowed(role, "", "secrets", "delete", f["webhook-secret-name"]) {
		t.Errorf("Role %s lets the controller change other Secrets, or delete", ctrlName)
	}
	// kube-proxy's ConfigMap, for the strictARP check: read, and nothing else
	// in kube-system.
	kp := namespaced["kube-system/"+ctrlName+"-kube-proxy-config"]
	for _, verb := range []string{"get", "list", "watch"} {
		if !allowed(kp, "", "configmaps", verb, "kube-proxy") {
			t.Errorf("the controller cannot %s ConfigMap kube-system/kube-proxy", verb)
		}
	}
	for _, rule := range kp {
		if !slices.Equal(rule.Resources, []string{"configmaps"}) || !slices.Equal(rule.ResourceNames, []string{"kube-proxy"}) ||
			slices.ContainsFunc(rule.Verbs, func(v string) bool { return v != "get" && v != "list" && v != "watch" }) {
			t.Errorf("Role kube-system/%s-kube-proxy-config grants more than reading ConfigMap kube-proxy: %+v", ctrlName, rule)
		}
	}
}

// checkDataplane: dataplane.backend sets the speaker's --dataplane, and the
// controller gets no --ip-mode (auto: it follows the dataplane the speakers'
// Leases announce, so it never tells kube-proxy to leave an address that no
// speaker forwards, nor the reverse, even while a helm upgrade rolls the
// two apart) unless controller.ipMode overrides it: ipMode is then the
// override. Auto reads the speakers' Leases, which the controller's Role
// must let it list and watch.
func (r *rendering) checkDataplane(t *testing.T, backend, ipMode string) {
	t.Helper()
	if got := flags(r.speakerContainer(t))["dataplane"]; got != backend {
		t.Errorf("speaker --dataplane=%q, want %q", got, backend)
	}
	if got := flags(r.speakerContainer(t))["dataplane-remote-targets"]; got != "endpoints" {
		t.Errorf("speaker --dataplane-remote-targets=%q, want the default endpoints", got)
	}
	got, set := flags(r.controllerContainer(t))["ip-mode"]
	switch {
	case ipMode == "" && set:
		t.Errorf("controller --ip-mode=%q with dataplane.backend=%s, want no flag (auto)", got, backend)
	case ipMode != "" && got != ipMode:
		t.Errorf("controller --ip-mode=%q (set: %v) with controller.ipMode=%s, want %q", got, set, ipMode, ipMode)
	}
	if ipMode != "" || r.value("rbac.create") == "false" {
		return
	}
	_, namespaced := r.rules(t)
	role := namespaced[r.namespace+"/"+r.controller(t).GetName()]
	for _, verb := range []string{"list", "watch"} {
		if !slices.ContainsFunc(role, func(rule rbacv1.PolicyRule) bool {
			return slices.Contains(rule.APIGroups, "coordination.k8s.io") && slices.Contains(rule.Resources, "leases") &&
				slices.Contains(rule.Verbs, verb) && len(rule.ResourceNames) == 0
		}) {
			t.Errorf("the controller's Role does not let it %s the speakers' Leases, which ipMode auto follows", verb)
		}
	}
}

func checkProbes(t *testing.T, component string, c *corev1.Container, healthAddr string) {
	t.Helper()
	_, port, _ := strings.Cut(healthAddr, ":")
	for probe, want := range map[*corev1.Probe]string{c.LivenessProbe: "/healthz", c.ReadinessProbe: "/readyz"} {
		if probe == nil || probe.HTTPGet == nil || probe.HTTPGet.Path != want {
			t.Errorf("%s has no HTTP probe on %s", component, want)
			continue
		}
		p := probe.HTTPGet.Port
		if p.String() != port && !slices.ContainsFunc(c.Ports, func(cp corev1.ContainerPort) bool {
			return cp.Name == p.String() && strconv.Itoa(int(cp.ContainerPort)) == port
		}) {
			t.Errorf("%s probe %s on port %s, but --health-probe-bind-address=%s", component, want, p.String(), healthAddr)
		}
	}
}

func seccompRuntimeDefault(psc *corev1.PodSecurityContext, sc *corev1.SecurityContext) bool {
	if sc != nil && sc.SeccompProfile != nil {
		return sc.SeccompProfile.Type == corev1.SeccompProfileTypeRuntimeDefault
	}
	return psc != nil && psc.SeccompProfile != nil && psc.SeccompProfile.Type == corev1.SeccompProfileTypeRuntimeDefault
}

func (r *rendering) checkWebhook(t *testing.T) {
	vwcs := r.all("ValidatingWebhookConfiguration")
	if len(vwcs) != 1 {
		t.Fatalf("%d ValidatingWebhookConfigurations, want 1", len(vwcs))
	}
	vwc := into[admissionv1.ValidatingWebhookConfiguration](t, vwcs[0])
	if len(vwc.Webhooks) == 0 {
		t.Fatal("no webhooks")
	}
	for _, w := range vwc.Webhooks {
		if w.FailurePolicy == nil || *w.FailurePolicy != admissionv1.Fail {
			t.Errorf("webhook %s: failurePolicy %s, want Fail", w.Name, show(w.FailurePolicy))
		}
		if len(w.ClientConfig.CABundle) != 0 {
			t.Errorf("webhook %s carries a caBundle: the rotator injects it, a chart-made one would be a hard-coded CA", w.Name)
		}
		if w.SideEffects == nil || *w.SideEffects != admissionv1.SideEffectClassNone {
			t.Errorf("webhook %s: sideEffects %s, want None", w.Name, show(w.SideEffects))
		}
		ref := w.ClientConfig.Service
		if ref == nil {
			t.Errorf("webhook %s is not called through a Service", w.Name)
			continue
		}
		u := r.find("Service", ref.Namespace, ref.Name)
		if ref.Namespace != r.namespace || u == nil {
			t.Errorf("webhook %s calls Service %s/%s, which the chart does not render", w.Name, ref.Namespace, ref.Name)
			continue
		}
		svc := into[corev1.Service](t, u)
		port := int32(443)
		if ref.Port != nil {
			port = *ref.Port
		}
		i := slices.IndexFunc(svc.Spec.Ports, func(p corev1.ServicePort) bool { return p.Port == port })
		if i < 0 {
			t.Errorf("webhook %s calls port %d of Service %s, which has no such port", w.Name, port, svc.Name)
			continue
		}
		if !labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(r.controller(t).Spec.Template.Labels)) {
			t.Errorf("webhook Service %s does not select the controller pods", svc.Name)
		}
		tp := svc.Spec.Ports[i].TargetPort.String()
		if !slices.ContainsFunc(r.controllerContainer(t).Ports, func(p corev1.ContainerPort) bool {
			return p.Name == tp || strconv.Itoa(int(p.ContainerPort)) == tp
		}) {
			t.Errorf("webhook Service %s targets port %s, which the controller does not serve", svc.Name, tp)
		}
	}
}

// checkServices: every Service selects Herald's pods and targets a port they
// declare.
func (r *rendering) checkServices(t *testing.T) {
	pods := []*corev1.PodTemplateSpec{&r.controller(t).Spec.Template, &into[appsv1.DaemonSet](t, r.one(t, "DaemonSet")).Spec.Template}
	for _, u := range r.all("Service") {
		svc := into[corev1.Service](t, u)
		var pod *corev1.PodTemplateSpec
		for _, p := range pods {
			if len(svc.Spec.Selector) > 0 && labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(p.Labels)) {
				if pod != nil {
					t.Errorf("Service %s selects both the controller and the speaker", svc.Name)
				}
				pod = p
			}
		}
		if pod == nil {
			t.Errorf("Service %s selects no Herald pod", svc.Name)
			continue
		}
		for _, sp := range svc.Spec.Ports {
			tp := sp.TargetPort.String()
			if !slices.ContainsFunc(pod.Spec.Containers[0].Ports, func(p corev1.ContainerPort) bool {
				return p.Name == tp || strconv.Itoa(int(p.ContainerPort)) == tp
			}) {
				t.Errorf("Service %s port %s targets %s, which its pods do not declare", svc.Name, sp.Name, tp)
			}
		}
	}
}

func (r *rendering) checkNoKeys(t *testing.T) {
	if strings.Contains(r.raw, "PRIVATE KEY") || strings.Contains(r.raw, "BEGIN CERTIFICATE") {
		t.Error("the rendering carries a key or a certificate: TLS material must be made at run time")
	}
	for _, u := range r.all("Secret") {
		switch u.GetName() {
		case r.value("gossipSecretName"): // random per install, see TestGossipKeyIsMadePerInstall
		case r.fullname() + "-webhook-cert":
			if data, _, _ := unstructured.NestedMap(u.Object, "data"); len(data) != 0 {
				t.Errorf("the webhook cert Secret %s carries data: the rotator makes the CA and cert at run time", u.GetName())
			}
			if _, ok := u.Object["stringData"]; ok {
				t.Errorf("the webhook cert Secret %s carries stringData", u.GetName())
			}
		default:
			t.Errorf("the chart renders Secret %s: only the gossip key and the (empty) webhook cert Secret are expected", u.GetName())
		}
	}
}

func (r *rendering) checkNamespaces(t *testing.T) {
	clusterScoped := []string{"CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding", "ValidatingWebhookConfiguration", "Namespace"}
	for _, u := range r.objs {
		if slices.Contains(clusterScoped, u.GetKind()) {
			if u.GetNamespace() != "" {
				t.Errorf("cluster-scoped %s %s has namespace %s", u.GetKind(), u.GetName(), u.GetNamespace())
			}
		} else if u.GetNamespace() == "kube-system" && (u.GetKind() == "Role" || u.GetKind() == "RoleBinding") &&
			u.GetName() == r.controller(t).GetName()+"-kube-proxy-config" {
			// The one exception: reading kube-proxy's ConfigMap (checkController).
		} else if u.GetNamespace() != r.namespace {
			t.Errorf("%s %s in namespace %q, want the release namespace %s", u.GetKind(), u.GetName(), u.GetNamespace(), r.namespace)
		}
	}
}

// checkWebhooksMatchConfig: the chart's webhook configuration is
// config/webhook/manifests.yaml (the lab's and the handler tests' copy), but
// for labels.
func (r *rendering) checkWebhooksMatchConfig(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(r.root, "config/webhook/manifests.yaml"))
	if err != nil {
		t.Fatalf("config/webhook/manifests.yaml: %v", err)
	}
	var want admissionv1.ValidatingWebhookConfiguration
	if err := yaml.UnmarshalStrict(data, &want); err != nil {
		t.Fatalf("config/webhook/manifests.yaml: %v", err)
	}
	got := into[admissionv1.ValidatingWebhookConfiguration](t, r.one(t, "ValidatingWebhookConfiguration"))
	if got.Name != want.Name {
		t.Errorf("chart's webhook configuration is named %s, config/webhook's %s", got.Name, want.Name)
	}
	g, _ := yaml.Marshal(got.Webhooks)
	w, _ := yaml.Marshal(want.Webhooks)
	if !bytes.Equal(g, w) {
		t.Errorf("the chart's webhooks differ from config/webhook/manifests.yaml:\nchart:\n%s\nconfig/webhook:\n%s", g, w)
	}
}

// --- rendering ----------------------------------------------------------------

type chart struct{ root, helm string }

func setup(t *testing.T) chart {
	t.Helper()
	root := repoRoot(t)
	helm := os.Getenv("HELM")
	if helm == "" {
		helm = filepath.Join(root, "bin", "helm")
	}
	if _, err := exec.LookPath(helm); err != nil {
		t.Fatalf("helm not found (%v): run make helm, or set HELM", err)
	}
	return chart{root: root, helm: helm}
}

func (c chart) chartDir() string { return filepath.Join(c.root, "charts", "herald") }

func (c chart) run(args ...string) ([]byte, error) {
	cmd := exec.Command(c.helm, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("%w: %s", err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

type rendering struct {
	root, release, namespace string
	set                      map[string]string
	raw                      string
	objs                     []*unstructured.Unstructured
}

func (c chart) template(release, namespace string, set ...string) (*rendering, error) {
	args := []string{"template", release, c.chartDir(), "--namespace", namespace, "--kube-version", kubeVersion, "--include-crds"}
	r := &rendering{root: c.root, release: release, namespace: namespace, set: map[string]string{}}
	for _, s := range set {
		args = append(args, "--set", s)
		k, v, _ := strings.Cut(s, "=")
		r.set[k] = v
	}
	out, err := c.run(args...)
	if err != nil {
		return nil, fmt.Errorf("helm template %s: %w", strings.Join(set, " "), err)
	}
	r.raw = string(out)
	reader := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(out)))
	for {
		doc, err := reader.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
		var obj map[string]any
		if err := yaml.Unmarshal(doc, &obj); err != nil {
			return nil, fmt.Errorf("rendered YAML does not parse: %w\n%s", err, doc)
		}
		if len(obj) == 0 {
			continue
		}
		r.objs = append(r.objs, &unstructured.Unstructured{Object: obj})
	}
	return r, nil
}

// value is a value set with --set, or a name derived from the values the
// checks need; "" when not set.
func (r *rendering) value(key string) string {
	if key == "gossipSecretName" {
		if v, ok := r.set["speaker.gossip.secret.name"]; ok {
			return v
		}
		return r.fullname() + "-memberlist"
	}
	return r.set[key]
}

func (r *rendering) fullname() string {
	if strings.Contains(r.release, "herald") {
		return r.release
	}
	return r.release + "-herald"
}

func (r *rendering) all(kind string) []*unstructured.Unstructured {
	var out []*unstructured.Unstructured
	for _, u := range r.objs {
		if u.GetKind() == kind {
			out = append(out, u)
		}
	}
	return out
}

func (r *rendering) find(kind, namespace, name string) *unstructured.Unstructured {
	for _, u := range r.all(kind) {
		if u.GetNamespace() == namespace && u.GetName() == name {
			return u
		}
	}
	return nil
}

func (r *rendering) one(t *testing.T, kind string) *unstructured.Unstructured {
	t.Helper()
	all := r.all(kind)
	if len(all) != 1 {
		t.Fatalf("%d %ss rendered, want 1", len(all), kind)
	}
	return all[0]
}

func (r *rendering) controller(t *testing.T) *appsv1.Deployment {
	return into[appsv1.Deployment](t, r.one(t, "Deployment"))
}

func (r *rendering) controllerPod(t *testing.T) *corev1.PodSpec {
	return &r.controller(t).Spec.Template.Spec
}

func (r *rendering) speakerPod(t *testing.T) *corev1.PodSpec {
	return &into[appsv1.DaemonSet](t, r.one(t, "DaemonSet")).Spec.Template.Spec
}

func (r *rendering) controllerContainer(t *testing.T) *corev1.Container {
	return onlyContainer(t, "controller", r.controllerPod(t))
}

func (r *rendering) speakerContainer(t *testing.T) *corev1.Container {
	return onlyContainer(t, "speaker", r.speakerPod(t))
}

func onlyContainer(t *testing.T, component string, pod *corev1.PodSpec) *corev1.Container {
	t.Helper()
	if len(pod.Containers) != 1 || len(pod.InitContainers) != 0 {
		t.Fatalf("%s pod has %d containers and %d init containers, want exactly one container", component, len(pod.Containers), len(pod.InitContainers))
	}
	return &pod.Containers[0]
}

// gossipKey is the decoded gossip key of the rendered Secret.
func (r *rendering) gossipKey(t *testing.T, name, key string) []byte {
	t.Helper()
	u := r.find("Secret", r.namespace, name)
	if u == nil {
		t.Fatalf("no gossip Secret %s", name)
	}
	enc, _, _ := unstructured.NestedString(u.Object, "data", key)
	b, err := base64.StdEncoding.DecodeString(enc)
	if err != nil {
		t.Fatalf("gossip Secret %s key %s: %v", name, key, err)
	}
	return b
}

// flags are a container's --name=value arguments.
func flags(c *corev1.Container) map[string]string {
	f := map[string]string{}
	for _, a := range append(slices.Clone(c.Command), c.Args...) {
		if k, v, ok := strings.Cut(strings.TrimPrefix(a, "--"), "="); ok && strings.HasPrefix(a, "--") {
			f[k] = v
		}
	}
	return f
}

func into[T any](t *testing.T, u *unstructured.Unstructured) *T {
	t.Helper()
	var v T
	if err := runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(u.Object, &v, true); err != nil {
		t.Fatalf("%s %s does not convert to %T: %v", u.GetKind(), u.GetName(), v, err)
	}
	return &v
}

// show prints what a pointer points to, or "unset".
func show[T any](p *T) string {
	if p == nil {
		return "unset"
	}
	return fmt.Sprint(*p)
}

func parseSeconds(s string) (float64, error) {
	if !strings.HasSuffix(s, "s") {
		return 0, fmt.Errorf("%q: want a duration in seconds such as 3s", s)
	}
	return strconv.ParseFloat(strings.TrimSuffix(s, "s"), 64)
}

func mergeMaps[V any](ms ...map[string]V) map[string]V {
	out := map[string]V{}
	for _, m := range ms {
		maps.Copy(out, m)
	}
	return out
}

func crdFiles(t *testing.T, root string) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(root, "config/crd/bases/*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no CRDs in config/crd/bases (%v)", err)
	}
	return files
}

func repoRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if data, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && bytes.Contains(data, []byte("module github.com/heraldlb/herald\n")) {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("repository root (go.mod of github.com/heraldlb/herald) not found")
		}
		dir = parent
	}
}

// TestREADMEDocumentsEveryValue: each value of values.yaml has a row in the
// README's table (a map value such as resources may be documented as a
// whole), and each row names a value that exists.
func TestREADMEDocumentsEveryValue(t *testing.T) {
	root := repoRoot(t)
	data, err := os.ReadFile(filepath.Join(root, "charts/herald/values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var values map[string]any
	if err := yaml.Unmarshal(data, &values); err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile(filepath.Join(root, "charts/herald/README.md"))
	if err != nil {
		t.Fatal(err)
	}
	documented := map[string]bool{}
	for _, line := range strings.Split(string(readme), "\n") {
		if rest, ok := strings.CutPrefix(line, "| `"); ok {
			if key, _, ok := strings.Cut(rest, "`"); ok {
				documented[key] = true
			}
		}
	}
	exists := map[string]bool{}
	var walk func(prefix string, v any)
	walk = func(prefix string, v any) {
		exists[prefix] = true
		if documented[prefix] {
			return
		}
		m, ok := v.(map[string]any)
		if !ok || len(m) == 0 {
			t.Errorf("value %s is not in the README's table", prefix)
			return
		}
		for k, sub := range m {
			walk(strings.TrimPrefix(prefix+"."+k, "."), sub)
		}
	}
	for k, v := range values {
		walk(k, v)
	}
	for key := range documented {
		if !exists[key] {
			t.Errorf("the README documents %s, which values.yaml does not have", key)
		}
	}
}
