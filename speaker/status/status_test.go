package status

import (
	"context"
	"net/netip"
	"reflect"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/heraldlb/herald/api/v1alpha1"
	heraldscheme "github.com/heraldlb/herald/internal/scheme"
	"github.com/heraldlb/herald/speaker/state"
)

func newFake(t *testing.T, objs ...client.Object) client.Client {
	t.Helper()
	scheme := heraldscheme.New()
	return fake.NewClientBuilder().WithScheme(scheme).WithObjects(objs...).Build()
}

func svc(name string) *corev1.Service {
	return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name, UID: types.UID("uid-" + name)}}
}

func announcement(svc, node string, ips ...string) *v1alpha1.Announcement {
	return &v1alpha1.Announcement{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: AnnouncementName(svc, node, ModeLayer2), Labels: map[string]string{state.LabelNode: node, state.LabelService: svc}},
		Spec:       v1alpha1.AnnouncementSpec{Service: svc, Mode: ModeLayer2, Node: node, IPs: ips},
	}
}

func ips(c client.Client, t *testing.T) map[string][]string {
	t.Helper()
	var list v1alpha1.AnnouncementList
	if err := c.List(context.Background(), &list); err != nil {
		t.Fatal(err)
	}
	out := map[string][]string{}
	for _, a := range list.Items {
		out[a.Name] = a.Spec.IPs
	}
	return out
}

// After a restart, the Announcements this node wrote for Services it no
// longer announces are removed; those it still announces stay.
func TestPruneRemovesLeftoversOnly(t *testing.T) {
	c := newFake(t, svc("web"), svc("old"), announcement("web", "a", "198.51.100.70"), announcement("old", "a", "198.51.100.71"), announcement("old", "b", "198.51.100.71"))
	r := NewReporter(c, c, events.NewFakeRecorder(10), "a", logr.Discard())
	r.Set(types.NamespacedName{Namespace: "ns", Name: "web"}, &Announcement{IPs: []netip.Addr{netip.MustParseAddr("198.51.100.70")}})
	if err := r.Prune(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go r.Run(ctx, 1)
	want := map[string][]string{"web.a": {"198.51.100.70"}, "old.b": {"198.51.100.71"}}
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if reflect.DeepEqual(ips(c, t), want) {
			return
		}
	}
	t.Errorf("Announcements %v, want %v (another node's kept, this node's leftover gone)", ips(c, t), want)
}

// An Announcement the API has but the cache does not show yet (written a
// moment ago) is updated, not skipped.
func TestAnnouncementNotYetCachedIsUpdated(t *testing.T) {
	api := newFake(t, svc("web"), announcement("web", "a", "198.51.100.70"))
	cache := newFake(t, svc("web"))
	r := NewReporter(api, cache, events.NewFakeRecorder(10), "a", logr.Discard())
	svc := types.NamespacedName{Namespace: "ns", Name: "web"}
	r.Set(svc, &Announcement{IPs: []netip.Addr{netip.MustParseAddr("198.51.100.70"), netip.MustParseAddr("198.51.100.72")}})
	if err := r.sync(context.Background(), key{svc, ModeLayer2}); err != nil {
		t.Fatal(err)
	}
	if got, want := ips(api, t), map[string][]string{"web.a": {"198.51.100.70", "198.51.100.72"}}; !reflect.DeepEqual(got, want) {
		t.Errorf("Announcements %v, want %v", got, want)
	}
}

// Setting nothing for a Service that had nothing costs nothing; a takeover
// records one event naming the node, addresses and interfaces.
func TestTakeoverEventAndNoOpClears(t *testing.T) {
	c := newFake(t, svc("web"))
	rec := events.NewFakeRecorder(10)
	r := NewReporter(c, c, rec, "a", logr.Discard())
	r.Set(types.NamespacedName{Namespace: "ns", Name: "never"}, nil)
	if r.queue.Len() != 0 {
		t.Errorf("clearing a Service never set queued a write")
	}
	svc := types.NamespacedName{Namespace: "ns", Name: "web"}
	ip := netip.MustParseAddr("198.51.100.70")
	r.Set(svc, &Announcement{IPs: []netip.Addr{ip}, Interfaces: []string{"eth0"}, Taken: []netip.Addr{ip}, Live: []string{"a"}})
	if err := r.sync(context.Background(), key{svc, ModeLayer2}); err != nil {
		t.Fatal(err)
	}
	select {
	case e := <-rec.Events:
		if want := "Normal Announcing a announces 198.51.100.70 on eth0 (layer2)"; e != want {
			t.Errorf("event %q, want %q", e, want)
		}
	default:
		t.Error("no Announcing event on a takeover")
	}
	if err := r.sync(context.Background(), key{svc, ModeLayer2}); err != nil {
		t.Fatal(err)
	}
	select {
	case e := <-rec.Events:
		t.Errorf("a second sync without a takeover recorded %q", e)
	default:
	}
}

// A Service announced both ways from one node has one Announcement per mode,
// and withdrawing one mode leaves the other.
func TestLayer2AndBGPAnnouncementsAreSeparate(t *testing.T) {
	c := newFake(t, svc("web"))
	r := NewReporter(c, c, events.NewFakeRecorder(10), "a", logr.Discard())
	web := types.NamespacedName{Namespace: "ns", Name: "web"}
	ip := netip.MustParseAddr("198.51.100.70")
	r.Set(web, &Announcement{IPs: []netip.Addr{ip}, Interfaces: []string{"eth0"}})
	r.SetBGP(web, &Announcement{IPs: []netip.Addr{ip}, Peers: []string{"tor-a", "tor-b"}})
	for _, m := range []string{ModeLayer2, ModeBGP} {
		if err := r.sync(context.Background(), key{web, m}); err != nil {
			t.Fatal(err)
		}
	}
	var a v1alpha1.Announcement
	if err := c.Get(context.Background(), types.NamespacedName{Namespace: "ns", Name: "web.a.bgp"}, &a); err != nil {
		t.Fatal(err)
	}
	if a.Spec.Mode != ModeBGP || !reflect.DeepEqual(a.Spec.Peers, []string{"tor-a", "tor-b"}) || len(a.Spec.Interfaces) != 0 {
		t.Errorf("BGP Announcement %+v", a.Spec)
	}
	r.SetBGP(web, nil)
	if err := r.sync(context.Background(), key{web, ModeBGP}); err != nil {
		t.Fatal(err)
	}
	if got, want := ips(c, t), map[string][]string{"web.a": {"198.51.100.70"}}; !reflect.DeepEqual(got, want) {
		t.Errorf("Announcements %v, want %v", got, want)
	}
}
