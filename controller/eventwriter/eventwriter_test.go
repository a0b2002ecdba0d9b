package eventwriter

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/heraldlb/herald/api/v1alpha1"
	heraldscheme "github.com/heraldlb/herald/internal/scheme"
)

func newWriter(t *testing.T) (*Writer, client.Client) {
	t.Helper()
	s := heraldscheme.New()
	c := fake.NewClientBuilder().WithScheme(s).Build()
	w := New(c, s, "herald-controller")
	w.now = func() time.Time { return time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC) }
	return w, c
}

func TestEventsAreWrittenAsKubectlDescribeShowsThem(t *testing.T) {
	w, c := newWriter(t)
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web", UID: "u-1"}}
	pool := &v1alpha1.IPAddressPool{ObjectMeta: metav1.ObjectMeta{Name: "lan", UID: "u-2"}}
	w.Eventf(svc, nil, corev1.EventTypeNormal, "IPAllocated", "Allocate", "assigned %s from pool %s", "198.51.100.10", "lan")
	w.Eventf(pool, nil, corev1.EventTypeWarning, "ConfigRefused", "Validate", "%s", strings.Repeat("x", 2000))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = w.Start(ctx) }()

	var got []eventsv1.Event
	for deadline := time.Now().Add(5 * time.Second); len(got) < 2 && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		var shop, def eventsv1.EventList
		if err := c.List(ctx, &shop, client.InNamespace("shop")); err != nil {
			t.Fatal(err)
		}
		if err := c.List(ctx, &def, client.InNamespace("default")); err != nil {
			t.Fatal(err)
		}
		got = append(shop.Items, def.Items...)
	}
	if len(got) != 2 {
		t.Fatalf("%d events written, want 2", len(got))
	}
	e := got[0]
	if e.Regarding.Kind != "Service" || e.Regarding.Name != "web" || e.Regarding.UID != "u-1" || e.Type != corev1.EventTypeNormal ||
		e.Reason != "IPAllocated" || e.Action != "Allocate" || e.Note != "assigned 198.51.100.10 from pool lan" ||
		e.ReportingController != "herald-controller" || e.ReportingInstance == "" || e.EventTime.IsZero() {
		t.Errorf("Service event %+v", e)
	}
	p := got[1]
	if p.Regarding.Kind != "IPAddressPool" || p.Namespace != "default" || len(p.Note) != noteMax || !strings.HasSuffix(p.Note, "...") {
		t.Errorf("pool event: kind %s namespace %s note of %d bytes; want IPAddressPool, default, truncated to %d", p.Regarding.Kind, p.Namespace, len(p.Note), noteMax)
	}
}

func TestAFullQueueDropsInsteadOfBlocking(t *testing.T) {
	w, _ := newWriter(t) // not started: nothing drains the queue
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web"}}
	done := make(chan struct{})
	go func() {
		for range queueLen + 10 {
			w.Eventf(svc, nil, corev1.EventTypeNormal, "IPAllocated", "Allocate", "assigned")
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Eventf blocked on a full queue")
	}
	if len(w.queue) != queueLen {
		t.Errorf("queue holds %d, want %d", len(w.queue), queueLen)
	}
}
