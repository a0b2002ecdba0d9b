package status

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"

	"github.com/heraldlb/herald/api/v1alpha1"
	"github.com/heraldlb/herald/speaker/bgp"
)

// A session's object follows its state and is written only when that
// changes; an outage is evented once, with its reason, and the recovery once.
func TestSessionsWriteOnChangeAndEventEachOutageOnce(t *testing.T) {
	ctx := context.Background()
	c := newFake(t, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "a", UID: "uid-a"}}, &v1alpha1.BGPPeer{ObjectMeta: metav1.ObjectMeta{Name: "tor"}})
	rec := events.NewFakeRecorder(10)
	s := NewSessions(c, c, rec, "a", logr.Discard())
	addr := netip.MustParseAddr("198.51.100.1")
	down := bgp.PeerState{Name: "tor", PeerAddress: addr, State: "Active", Reason: "dial tcp 198.51.100.1:179: i/o timeout"}
	get := func() *v1alpha1.BGPSession {
		var o v1alpha1.BGPSession
		if err := c.Get(ctx, types.NamespacedName{Name: SessionName("tor", "a")}, &o); err != nil {
			t.Fatal(err)
		}
		return &o
	}
	for range 3 {
		if err := s.Sync(ctx, []bgp.PeerState{down}); err != nil {
			t.Fatal(err)
		}
	}
	o := get()
	if o.Status.State != "Active" || o.Status.Reason != down.Reason || o.Spec.PeerAddress != "198.51.100.1" || len(o.OwnerReferences) != 1 {
		t.Fatalf("BGPSession %+v", o)
	}
	rv := o.ResourceVersion
	if got := drain(rec); len(got) != 1 || got[0] != "Warning SessionDown node a: BGP session to 198.51.100.1 is Active: "+down.Reason {
		t.Fatalf("events %q: want one SessionDown", got)
	}
	up := bgp.PeerState{Name: "tor", PeerAddress: addr, State: bgp.StateEstablished, Since: time.Now(), PeerASN: 64512, BFD: "Up",
		Advertised: []netip.Prefix{netip.MustParsePrefix("203.0.113.10/32")}}
	for range 2 {
		if err := s.Sync(ctx, []bgp.PeerState{up}); err != nil {
			t.Fatal(err)
		}
	}
	o = get()
	if o.Status.State != bgp.StateEstablished || o.Status.PrefixesAdvertised != 1 || o.Status.EstablishedSince == nil || o.Status.Reason != "" || o.ResourceVersion == rv {
		t.Fatalf("BGPSession after establishing: %+v", o)
	}
	if got := drain(rec); len(got) != 1 || got[0] != "Normal SessionEstablished node a: BGP session to 198.51.100.1 established (peer AS 64512)" {
		t.Fatalf("events %q: want one SessionEstablished", got)
	}
	rv = o.ResourceVersion
	if err := s.Sync(ctx, []bgp.PeerState{up}); err != nil {
		t.Fatal(err)
	}
	if get().ResourceVersion != rv {
		t.Errorf("an unchanged session was written again")
	}
	if err := s.Sync(ctx, nil); err != nil {
		t.Fatal(err)
	}
	var list v1alpha1.BGPSessionList
	if err := c.List(ctx, &list); err != nil || len(list.Items) != 0 {
		t.Fatalf("BGPSessions left after the peer went: %v %v", list.Items, err)
	}
}

func drain(rec *events.FakeRecorder) []string {
	var out []string
	for {
		select {
		case e := <-rec.Events:
			out = append(out, e)
		default:
			return out
		}
	}
}
