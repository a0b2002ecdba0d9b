package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/heraldlb/herald/api/v1alpha1"
	"github.com/heraldlb/herald/internal/model"
	heraldscheme "github.com/heraldlb/herald/internal/scheme"
)

func testScheme(t testing.TB) *runtime.Scheme {
	t.Helper()
	return heraldscheme.New()
}

// meta gives objects an age, in seconds after an arbitrary epoch: the model
// keeps the older of two conflicting objects.
func meta(name string, age int) metav1.ObjectMeta {
	return metav1.ObjectMeta{Name: name, CreationTimestamp: metav1.NewTime(time.Unix(int64(1_700_000_000+age), 0))}
}

func pool(name string, age int, addrs ...string) *v1alpha1.IPAddressPool {
	return &v1alpha1.IPAddressPool{ObjectMeta: meta(name, age), Spec: v1alpha1.IPAddressPoolSpec{Addresses: addrs}}
}

func peer(name string, age int, addr, bfd string) *v1alpha1.BGPPeer {
	return &v1alpha1.BGPPeer{ObjectMeta: meta(name, age), Spec: v1alpha1.BGPPeerSpec{MyASN: 64512, PeerASN: 64513, PeerAddress: addr, BFDProfile: bfd}}
}

func bfdProfile(name string) *v1alpha1.BFDProfile {
	return &v1alpha1.BFDProfile{ObjectMeta: meta(name, 0)}
}

func l2(name string, pools ...string) *v1alpha1.L2Advertisement {
	return &v1alpha1.L2Advertisement{ObjectMeta: meta(name, 0), Spec: v1alpha1.L2AdvertisementSpec{IPAddressPools: pools}}
}

func bgpAdv(name string, peers ...string) *v1alpha1.BGPAdvertisement {
	return &v1alpha1.BGPAdvertisement{ObjectMeta: meta(name, 0), Spec: v1alpha1.BGPAdvertisementSpec{Peers: peers}}
}

func ptrTo[T any](v T) *T { return &v }

// edited returns adv with its spec changed by edit.
func edited(adv *v1alpha1.BGPAdvertisement, edit func(*v1alpha1.BGPAdvertisementSpec)) *v1alpha1.BGPAdvertisement {
	edit(&adv.Spec)
	return adv
}

func relabel(o client.Object, labels map[string]string) client.Object {
	o = o.DeepCopyObject().(client.Object)
	o.SetLabels(labels)
	return o
}

// kindOf is the admission kind of a Herald object, as the API server sends it.
func kindOf(t testing.TB, o client.Object) metav1.GroupVersionKind {
	t.Helper()
	gvks, _, err := testScheme(t).ObjectKinds(o)
	if err != nil {
		t.Fatal(err)
	}
	return metav1.GroupVersionKind{Group: gvks[0].Group, Version: gvks[0].Version, Kind: gvks[0].Kind}
}

// rawObject is an object as the API server embeds it in a review: JSON with
// apiVersion and kind.
func rawObject(t testing.TB, o client.Object) json.RawMessage {
	t.Helper()
	if o == nil {
		return nil
	}
	o = o.DeepCopyObject().(client.Object)
	gvk := kindOf(t, o)
	o.GetObjectKind().SetGroupVersionKind(v1alpha1.GroupVersion.WithKind(gvk.Kind))
	b, err := json.Marshal(o)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// reviewJSON builds the AdmissionReview the API server would POST.
func reviewJSON(t testing.TB, op admissionv1.Operation, kind metav1.GroupVersionKind, name string, object, old json.RawMessage) []byte {
	t.Helper()
	req := map[string]any{
		"uid":       "6d5a3c3e-4a54-4cf3-a3c4-2d2a2f4bce01",
		"kind":      kind,
		"resource":  map[string]string{"group": kind.Group, "version": kind.Version, "resource": strings.ToLower(kind.Kind) + "s"},
		"name":      name,
		"operation": op,
		"userInfo":  map[string]any{"username": "kubernetes-admin"},
	}
	if object != nil {
		req["object"] = object
	}
	if old != nil {
		req["oldObject"] = old
	}
	b, err := json.Marshal(map[string]any{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": req})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// post sends body to the webhook at path, the way the API server does, and
// returns the review's response. The HTTP status is always 200: a refusal
// or an error is in the review.
func post(t testing.TB, h http.Handler, path, contentType string, body []byte) *admissionv1.AdmissionResponse {
	t.Helper()
	var r io.Reader = http.NoBody
	if body != nil {
		r = bytes.NewReader(body)
	}
	req := httptest.NewRequest(http.MethodPost, path, r)
	req.Header.Set("Content-Type", contentType)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		t.Fatalf("HTTP status %d, want 200 with the answer in the review: %s", rec.Code, rec.Body)
	}
	var review admissionv1.AdmissionReview
	if err := json.Unmarshal(rec.Body.Bytes(), &review); err != nil {
		t.Fatalf("the answer is not an AdmissionReview: %v: %s", err, rec.Body)
	}
	if review.Response == nil {
		t.Fatalf("the review has no response: %s", rec.Body)
	}
	return review.Response
}

// mux serves the webhook's handlers over a fake client holding existing.
func mux(t testing.TB, existing ...client.Object) *http.ServeMux {
	t.Helper()
	s := testScheme(t)
	c := fake.NewClientBuilder().WithScheme(s).WithObjects(existing...).Build()
	m := http.NewServeMux()
	for path, h := range handlers(c, s) {
		m.Handle(path, h)
	}
	return m
}

func pathOf(t testing.TB, o client.Object) string {
	t.Helper()
	k := kindOf(t, o)
	for _, kk := range kinds {
		if kk.name == k.Kind {
			return kk.path()
		}
	}
	t.Fatalf("no path for %s", k.Kind)
	return ""
}

func TestCrossObjectRules(t *testing.T) {
	for _, tc := range []struct {
		name     string
		existing []client.Object
		op       admissionv1.Operation
		object   client.Object
		old      client.Object // for updates and deletes
		// allowed, and otherwise every want substring in the message
		allowed bool
		want    []string
		// every substring must appear in one of the warnings
		warnings []string
	}{
		{
			name:     "a pool overlapping another is refused, naming its field and the other pool",
			existing: []client.Object{pool("lan", 1, "198.51.100.0/24")},
			op:       admissionv1.Create,
			object:   pool("guest", 2, "203.0.113.0/28", "198.51.100.128/25"),
			want:     []string{"spec.addresses[1]", "198.51.100.128/25", "pool lan's spec.addresses[0]"},
		},
		{
			name: "a pool holding ClusterIPs of a ServiceCIDR is refused, naming the ServiceCIDR",
			existing: []client.Object{&networkingv1.ServiceCIDR{ObjectMeta: metav1.ObjectMeta{Name: "kubernetes"},
				Spec: networkingv1.ServiceCIDRSpec{CIDRs: []string{"10.96.0.0/16", "fd00:10:96::/112"}}}},
			op:     admissionv1.Create,
			object: pool("clusterips", 2, "198.51.100.0/28", "fd00:10:96::100-fd00:10:96::1ff"),
			want:   []string{"spec.addresses[1]", "fd00:10:96::100/120 overlaps ServiceCIDR kubernetes (fd00:10:96::/112)"},
		},
		{
			name: "a pool holding a node's address is refused, naming the node",
			existing: []client.Object{&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "worker-1"},
				Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeHostName, Address: "worker-1"}, {Type: corev1.NodeInternalIP, Address: "198.51.100.11"}}}}},
			op:     admissionv1.Create,
			object: pool("lan", 2, "198.51.100.0/27"),
			want:   []string{"spec.addresses[0]", "198.51.100.0/27 overlaps node worker-1's InternalIP (198.51.100.11)"},
		},
		{
			name:     "a pool is refused even when it is older than the pool it overlaps",
			existing: []client.Object{pool("lan", 5, "198.51.100.0/24")},
			op:       admissionv1.Create,
			object:   pool("old-looking", 1, "198.51.100.7"),
			want:     []string{"spec.addresses[0]", "pool lan's"},
		},
		{
			name:     "growing a pool into another's range is refused",
			existing: []client.Object{pool("lan", 1, "198.51.100.0/25"), pool("dmz", 2, "198.51.100.128/25")},
			op:       admissionv1.Update,
			object:   pool("lan", 1, "198.51.100.0/24"),
			old:      pool("lan", 1, "198.51.100.0/25"),
			want:     []string{"spec.addresses[0]", "198.51.100.0/24", "pool dmz's spec.addresses[0]"},
		},
		{
			name:     "growing a pool within free space is allowed",
			existing: []client.Object{pool("lan", 1, "198.51.100.0/26"), pool("dmz", 2, "198.51.100.128/25")},
			op:       admissionv1.Update,
			object:   pool("lan", 1, "198.51.100.0/25"),
			old:      pool("lan", 1, "198.51.100.0/26"),
			allowed:  true,
		},
		{
			name:     "a pool disjoint from the others is allowed",
			existing: []client.Object{pool("lan", 1, "198.51.100.0/24")},
			op:       admissionv1.Create,
			object:   pool("v6", 2, "203.0.113.0/24", "2001:db8::/120"),
			allowed:  true,
		},
		{
			name:   "a pool overlapping itself is refused",
			op:     admissionv1.Create,
			object: pool("lan", 1, "198.51.100.0/24", "198.51.100.10-198.51.100.20"),
			want:   []string{"spec.addresses[1]", "its own spec.addresses[0]"},
		},
		{
			name:     "an update that leaves a refused pool's spec alone is allowed, with a warning",
			existing: []client.Object{pool("lan", 1, "198.51.100.0/24"), pool("late", 2, "198.51.100.10")},
			op:       admissionv1.Update,
			object:   relabel(pool("late", 2, "198.51.100.10"), map[string]string{"team": "a"}),
			old:      pool("late", 2, "198.51.100.10"),
			allowed:  true,
			warnings: []string{"not in force", "pool lan's"},
		},
		{
			name:     "deleting an object is never refused",
			existing: []client.Object{pool("lan", 1, "198.51.100.0/24"), pool("late", 2, "198.51.100.10")},
			op:       admissionv1.Delete,
			old:      pool("late", 2, "198.51.100.10"),
			allowed:  true,
		},
		{
			name:     "a peer repeating another's address and port is refused",
			existing: []client.Object{peer("r1", 1, "198.51.100.1", "")},
			op:       admissionv1.Create,
			object:   peer("r1-again", 2, "198.51.100.1", ""),
			want:     []string{"spec.peerAddress", "BGPPeer r1 already peers with 198.51.100.1 port 179"},
		},
		{
			name:     "a peer at another address is allowed",
			existing: []client.Object{peer("r1", 1, "198.51.100.1", "")},
			op:       admissionv1.Create,
			object:   peer("r2", 2, "2001:db8:1::1", ""),
			allowed:  true,
		},
		{
			name:   "a peer naming an unknown BFD profile is refused",
			op:     admissionv1.Create,
			object: peer("r1", 1, "198.51.100.1", "slow"),
			want:   []string{"spec.bfdProfile", `BFDProfile "slow" does not exist`},
		},
		{
			name:     "a peer naming an existing BFD profile is allowed",
			existing: []client.Object{bfdProfile("fast")},
			op:       admissionv1.Create,
			object:   peer("r1", 1, "198.51.100.1", "fast"),
			allowed:  true,
		},
		{
			name:    "a BFD profile is allowed",
			op:      admissionv1.Create,
			object:  bfdProfile("fast"),
			allowed: true,
		},
		{
			name:     "an L2Advertisement naming a missing pool is allowed with a warning",
			existing: []client.Object{pool("lan", 1, "198.51.100.0/24")},
			op:       admissionv1.Create,
			object:   l2("lan-and-ghost", "lan", "ghost"),
			allowed:  true,
			warnings: []string{"spec.ipAddressPools", `"ghost"`},
		},
		{
			name:     "an L2Advertisement naming existing pools is allowed without warnings",
			existing: []client.Object{pool("lan", 1, "198.51.100.0/24")},
			op:       admissionv1.Create,
			object:   l2("lan", "lan"),
			allowed:  true,
		},
		{
			name:     "a BGPAdvertisement naming a missing peer is allowed with a warning",
			existing: []client.Object{peer("r1", 1, "198.51.100.1", "")},
			op:       admissionv1.Update,
			object:   bgpAdv("to-routers", "r1", "r9"),
			old:      bgpAdv("to-routers", "r1"),
			allowed:  true,
			warnings: []string{"spec.peers", `"r9"`},
		},
		{
			name:     "a BGPAdvertisement aggregating wider than a pool's CIDR is refused, naming the field, the pool and the CIDR",
			existing: []client.Object{pool("lan", 1, "198.51.100.64/27")},
			op:       admissionv1.Create,
			object: edited(bgpAdv("lan"), func(s *v1alpha1.BGPAdvertisementSpec) {
				s.IPAddressPools = []string{"lan"}
				s.AggregationLength = ptrTo[int32](24)
			}),
			want: []string{`spec.aggregationLength 24 is shorter than pool "lan"'s 198.51.100.64/27`, "use at least 27"},
		},
		{
			name:     "narrowing a pool below an advertisement's aggregation length is allowed, with a warning naming the advertisement",
			existing: []client.Object{pool("lan", 1, "198.51.100.64/27"), edited(bgpAdv("lan"), func(s *v1alpha1.BGPAdvertisementSpec) { s.AggregationLength = ptrTo[int32](27) })},
			op:       admissionv1.Update,
			object:   pool("lan", 1, "198.51.100.64/28"),
			old:      pool("lan", 1, "198.51.100.64/27"),
			allowed:  true,
			warnings: []string{"BGPAdvertisement lan is refused with this IPAddressPool", "spec.aggregationLength 27"},
		},
		{
			name:     "a BGPAdvertisement setting localPref for an eBGP peer it names is refused, naming the field and the peer",
			existing: []client.Object{peer("r1", 1, "198.51.100.1", "")},
			op:       admissionv1.Create,
			object:   edited(bgpAdv("to-r1", "r1"), func(s *v1alpha1.BGPAdvertisementSpec) { s.LocalPref = ptrTo[uint32](200) }),
			want:     []string{"spec.localPref", `BGPPeer "r1", an eBGP peer (AS 64512 to AS 64513)`},
		},
		{
			name:     "a BGPAdvertisement setting localPref for every peer, one of them eBGP, is allowed with a warning",
			existing: []client.Object{peer("r1", 1, "198.51.100.1", "")},
			op:       admissionv1.Create,
			object:   edited(bgpAdv("everyone"), func(s *v1alpha1.BGPAdvertisementSpec) { s.LocalPref = ptrTo[uint32](200) }),
			allowed:  true,
			warnings: []string{"spec.localPref: eBGP peers do not get LOCAL_PREF", `BGPPeer "r1"`},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			typed := tc.object
			if typed == nil {
				typed = tc.old
			}
			kind := kindOf(t, typed)
			body := reviewJSON(t, tc.op, kind, typed.GetName(), rawObject(t, tc.object), rawObject(t, tc.old))
			resp := post(t, mux(t, tc.existing...), pathOf(t, typed), "application/json", body)

			if resp.UID != types.UID("6d5a3c3e-4a54-4cf3-a3c4-2d2a2f4bce01") {
				t.Errorf("response UID %q does not answer the request", resp.UID)
			}
			if resp.Allowed != tc.allowed {
				t.Fatalf("allowed = %v, want %v (result %+v)", resp.Allowed, tc.allowed, resp.Result)
			}
			if !tc.allowed {
				if resp.Result == nil || resp.Result.Code != http.StatusForbidden || resp.Result.Reason != metav1.StatusReasonForbidden {
					t.Errorf("a refusal should be 403 Forbidden, as admission.Denied gives: %+v", resp.Result)
				}
				for _, w := range tc.want {
					if resp.Result == nil || !strings.Contains(resp.Result.Message, w) {
						t.Errorf("message %q lacks %q", resp.Result.Message, w)
					}
				}
			}
			joined := strings.Join(resp.Warnings, "\n")
			if len(tc.warnings) == 0 && len(resp.Warnings) > 0 {
				t.Errorf("unexpected warnings: %q", resp.Warnings)
			}
			for _, w := range tc.warnings {
				if !strings.Contains(joined, w) {
					t.Errorf("warnings %q lack %q", resp.Warnings, w)
				}
			}
		})
	}
}

func TestGarbageGetsAnErrorResponseNotAPanic(t *testing.T) {
	poolKind := kindOf(t, pool("x", 0))
	poolPath := pathOf(t, pool("x", 0))
	serviceKind := metav1.GroupVersionKind{Version: "v1", Kind: "Service"}
	m := mux(t, pool("lan", 1, "198.51.100.0/24"))

	for _, tc := range []struct {
		name, contentType string
		body              []byte
		want              string
	}{
		{"a body that is not JSON", "application/json", []byte(`{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionRevi`), ""},
		{"no body", "application/json", nil, "request body is empty"},
		{"an empty body", "application/json", []byte{}, "unknown operation"},
		{"an empty review", "application/json", []byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{}}`), "unknown operation"},
		{"a body that is not JSON by its content type", "text/plain", reviewJSON(t, admissionv1.Create, poolKind, "x", rawObject(t, pool("x", 0, "203.0.113.0/24")), nil), "expected application/json"},
		{"a review without an object", "application/json", reviewJSON(t, admissionv1.Create, poolKind, "x", nil, nil), "no content"},
		{"an object whose spec has the wrong types", "application/json",
			reviewJSON(t, admissionv1.Create, poolKind, "x", json.RawMessage(`{"apiVersion":"herald.dev/v1alpha1","kind":"IPAddressPool","metadata":{"name":"x"},"spec":{"addresses":"198.51.100.0/24"}}`), nil), "decoding IPAddressPool"},
		{"an object of another kind than the request says", "application/json",
			reviewJSON(t, admissionv1.Create, poolKind, "r1", rawObject(t, peer("r1", 0, "198.51.100.1", "")), nil), "decoding IPAddressPool"},
		{"an object without a name", "application/json",
			reviewJSON(t, admissionv1.Create, poolKind, "", json.RawMessage(`{"apiVersion":"herald.dev/v1alpha1","kind":"IPAddressPool","spec":{"addresses":["203.0.113.0/24"]}}`), nil), "no name"},
		{"a JSON null object", "application/json",
			reviewJSON(t, admissionv1.Create, poolKind, "x", json.RawMessage(`null`), nil), ""},
		{"an update whose old object is garbage", "application/json",
			reviewJSON(t, admissionv1.Update, poolKind, "lan", rawObject(t, pool("lan", 1, "198.51.100.0/24")), json.RawMessage(`{"kind":7}`)), "old object"},
		{"a kind that is not Herald's", "application/json",
			reviewJSON(t, admissionv1.Create, serviceKind, "nginx", json.RawMessage(`{"apiVersion":"v1","kind":"Service","metadata":{"name":"nginx"}}`), nil), "not /v1, Kind=Service"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp := post(t, m, poolPath, tc.contentType, tc.body)
			if resp.Allowed {
				t.Fatal("garbage was allowed")
			}
			if resp.Result == nil || resp.Result.Code < 400 || resp.Result.Code >= 500 {
				t.Fatalf("want a 4xx error in the review, got %+v", resp.Result)
			}
			if !strings.Contains(resp.Result.Message, tc.want) {
				t.Errorf("message %q lacks %q", resp.Result.Message, tc.want)
			}
		})
	}
}

// FuzzHandlerNeverPanics feeds arbitrary objects and old objects to the
// handler itself (not through admission.Webhook, whose panic recovery would
// hide a panic) for every kind. `go test` runs the seeds; `go test
// -fuzz=FuzzHandlerNeverPanics` explores further.
func FuzzHandlerNeverPanics(f *testing.F) {
	f.Add(uint8(0), []byte(`{"apiVersion":"herald.dev/v1alpha1","kind":"IPAddressPool","metadata":{"name":"a"},"spec":{"addresses":["198.51.100.0/25"]}}`), []byte(nil))
	f.Add(uint8(0), []byte(`{"apiVersion":"herald.dev/v1alpha1","kind":"IPAddressPool","metadata":{"name":"a"},"spec":{"addresses":["banana","::/0","1.2.3.4-1.2.3.0"]}}`), []byte(`{}`))
	f.Add(uint8(2), []byte(`{"apiVersion":"herald.dev/v1alpha1","kind":"BGPPeer","metadata":{"name":"p"},"spec":{"peerAddress":"","nodeSelectors":[{"matchExpressions":[{"key":"","operator":"Sometimes"}]}]}}`), []byte(nil))
	f.Add(uint8(1), []byte(`{"apiVersion":"herald.dev/v1alpha1","kind":"L2Advertisement","metadata":{"name":"l"},"spec":{"ipAddressPoolSelectors":[{"matchLabels":{"":""}}]}}`), []byte(`null`))
	f.Add(uint8(3), []byte(`[]`), []byte(`"x"`))
	f.Add(uint8(4), []byte(`{"kind":"BFDProfile","apiVersion":"herald.dev/v1alpha1","metadata":{"name":"b"},"spec":{"receiveInterval":-1}}`), []byte(nil))

	s := testScheme(f)
	c := fake.NewClientBuilder().WithScheme(s).WithObjects(pool("lan", 1, "198.51.100.0/24"), peer("r1", 1, "198.51.100.1", ""), bfdProfile("fast")).Build()
	v := &validator{reader: c, decoder: admission.NewDecoder(s)}
	f.Fuzz(func(t *testing.T, k uint8, object, old []byte) {
		kind := kinds[int(k)%len(kinds)].name
		for _, op := range []admissionv1.Operation{admissionv1.Create, admissionv1.Update} {
			req := admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{
				Kind:      metav1.GroupVersionKind{Group: "herald.dev", Version: "v1alpha1", Kind: kind},
				Operation: op,
				Name:      "fuzzed",
			}}
			req.Object.Raw, req.OldObject.Raw = object, old
			resp := v.Handle(context.Background(), req)
			if !resp.Allowed && resp.Result == nil {
				t.Fatalf("%s %s: refused without a reason", op, kind)
			}
		}
	})
}

// The model must judge every kind the webhook registers; a kind added to one
// and not the other would otherwise be waved through or refused without a
// reason.
func TestEveryKindHasAVerdict(t *testing.T) {
	in := model.Input{
		Pools:             []v1alpha1.IPAddressPool{*pool("p", 0, "198.51.100.0/24")},
		L2Advertisements:  []v1alpha1.L2Advertisement{*l2("l")},
		BGPPeers:          []v1alpha1.BGPPeer{*peer("r", 0, "198.51.100.1", "")},
		BGPAdvertisements: []v1alpha1.BGPAdvertisement{*bgpAdv("b")},
		BFDProfiles:       []v1alpha1.BFDProfile{*bfdProfile("f")},
	}
	verdicts := model.Build(in).Verdicts
	names := map[string]string{model.KindIPAddressPool: "p", model.KindL2Advertisement: "l", model.KindBGPPeer: "r", model.KindBGPAdvertisement: "b", model.KindBFDProfile: "f"}
	for _, k := range kinds {
		if _, ok := verdicts[model.Ref{Kind: k.name, Name: names[k.name]}]; !ok {
			t.Errorf("no verdict for %s", k.name)
		}
	}
}
