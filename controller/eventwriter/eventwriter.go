// Package eventwriter records Kubernetes Events (events.k8s.io/v1) for the
// controller without keeping them.
//
// client-go's events broadcaster keeps every event it sends for at least six
// minutes, to fold repeats into a series. Herald's controller records an
// event only when an outcome changes, so it has no repeats to fold, and at
// 10,000 Services that cache alone held about 12 MiB after a cold start.
// Writer sends each event once, through a bounded queue drained by its own
// workers, so recording never waits on the API server (status off the
// deciding path), and drops what does not fit, as the broadcaster does.
package eventwriter

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/reference"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

// queueLen bounds the events waiting to be written, and workers is how many
// are written at once: a cold start assigns some 300 Services a second, each
// with an event, and the API server answers an event create in tens of
// milliseconds under that load. The bench counts event writes per Service
// (event_writes_per_service) to catch drops.
const (
	queueLen = 4096
	workers  = 16
)

// noteMax is the API server's limit on an event's note.
const noteMax = 1024

var dropped = prometheus.NewCounter(prometheus.CounterOpts{
	Name: "herald_controller_events_dropped_total",
	Help: "Events not recorded because the queue was full or the API server refused them.",
})

func init() { metrics.Registry.MustRegister(dropped) }

// Writer records events. Its Eventf has the signature of client-go's
// events.EventRecorder, so it replaces one. Start it (it is a
// manager.Runnable) to have the events written.
type Writer struct {
	client     client.Client
	scheme     *runtime.Scheme
	controller string // reportingController
	instance   string // reportingInstance
	workers    int
	queue      chan *eventsv1.Event
	now        func() time.Time
}

// New returns a Writer that creates events with c, naming controller as
// their reporting controller.
func New(c client.Client, scheme *runtime.Scheme, controller string) *Writer {
	host, _ := os.Hostname()
	return &Writer{
		client: c, scheme: scheme, controller: controller, instance: controller + "-" + host,
		workers: workers, queue: make(chan *eventsv1.Event, queueLen), now: time.Now,
	}
}

// Eventf queues an event about regarding; related may be nil. It never
// blocks: when the queue is full the event is dropped and counted.
func (w *Writer) Eventf(regarding, related runtime.Object, eventtype, reason, action, note string, args ...any) {
	ref, err := reference.GetReference(w.scheme, regarding)
	if err != nil {
		dropped.Inc()
		return
	}
	now := w.now()
	e := &eventsv1.Event{
		ObjectMeta: metav1.ObjectMeta{
			// The name scheme of client-go's recorder: unique per object and time.
			Name:      fmt.Sprintf("%s.%x", ref.Name, now.UnixNano()),
			Namespace: ref.Namespace,
		},
		EventTime:           metav1.NewMicroTime(now),
		ReportingController: w.controller,
		ReportingInstance:   w.instance,
		Action:              action,
		Reason:              reason,
		Regarding:           *ref,
		Note:                truncate(fmt.Sprintf(note, args...)),
		Type:                eventtype,
	}
	if e.Namespace == "" {
		e.Namespace = metav1.NamespaceDefault // cluster-scoped objects' events live here
	}
	if related != nil {
		if rel, err := reference.GetReference(w.scheme, related); err == nil {
			e.Related = rel
		}
	}
	select {
	case w.queue <- e:
	default:
		dropped.Inc()
	}
}

func truncate(s string) string {
	if len(s) <= noteMax {
		return s
	}
	return s[:noteMax-3] + "..."
}

// Start writes queued events until ctx ends.
func (w *Writer) Start(ctx context.Context) error {
	done := make(chan struct{})
	for range w.workers {
		go func() {
			defer func() { done <- struct{}{} }()
			for {
				select {
				case <-ctx.Done():
					return
				case e := <-w.queue:
					if err := w.client.Create(ctx, e); err != nil {
						dropped.Inc()
						log.FromContext(ctx).V(1).Info("event not recorded", "regarding", e.Regarding.Namespace+"/"+e.Regarding.Name, "reason", e.Reason, "error", err.Error())
					}
				}
			}
		}()
	}
	for range w.workers {
		<-done
	}
	return nil
}

// NeedLeaderElection is false: events of a standby replica (none today)
// would be as true as the leader's.
func (w *Writer) NeedLeaderElection() bool { return false }
