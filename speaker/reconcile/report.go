package reconcile

import (
	"context"
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/heraldlb/herald/api/v1alpha1"
)

// labelNode marks the Announcements a speaker wrote, so it finds (and
// removes) exactly its own; labelService names their Service.
const (
	labelNode    = "herald.dev/node"
	labelService = "herald.dev/service"
)

// Event reasons of the speaker.
const (
	reasonAnnouncing     = "Announcing"
	reasonAnnounceFailed = "AnnounceFailed"
)

// report brings this node's Announcement objects in line with what it
// announces, with an event on the Service when this node takes an address over.
func (s *Speaker) report(ctx context.Context, in *inputs, prev, want map[netip.Addr]ownership) {
	type svcAnn struct {
		ips        []netip.Addr
		interfaces []string
	}
	bySvc := map[string]*svcAnn{}
	for ip, o := range want {
		for _, key := range o.services {
			a := bySvc[key]
			if a == nil {
				a = &svcAnn{}
				bySvc[key] = a
			}
			a.ips = append(a.ips, ip)
			for _, i := range o.interfaces {
				if !slices.Contains(a.interfaces, i) {
					a.interfaces = append(a.interfaces, i)
				}
			}
		}
	}
	svcs := map[string]*corev1.Service{}
	for i := range in.services {
		svcs[in.services[i].Namespace+"/"+in.services[i].Name] = &in.services[i]
	}
	keep := map[types.NamespacedName]bool{}
	for key, a := range bySvc {
		svc := svcs[key]
		if svc == nil {
			continue
		}
		slices.SortFunc(a.ips, netip.Addr.Compare)
		slices.Sort(a.interfaces)
		name := announcementName(svc.Name, s.opts.NodeName)
		keep[types.NamespacedName{Namespace: svc.Namespace, Name: name}] = true
		spec := v1alpha1.AnnouncementSpec{Service: svc.Name, Mode: "layer2", Node: s.opts.NodeName, Interfaces: a.interfaces}
		for _, ip := range a.ips {
			spec.IPs = append(spec.IPs, ip.String())
		}
		if err := s.writeAnnouncement(ctx, svc, name, spec); err != nil && ctx.Err() == nil {
			s.log.Error(err, "writing Announcement", "service", key)
		}
		s.deleteStaleAnnouncements(ctx, svc, in.live)
		var taken []netip.Addr
		for _, ip := range a.ips {
			if _, had := prev[ip]; !had {
				taken = append(taken, ip)
			}
		}
		if len(taken) > 0 {
			s.recorder.Eventf(svc, nil, corev1.EventTypeNormal, reasonAnnouncing, "Announce",
				"%s announces %s on %s (layer2)", s.opts.NodeName, joinIPs(taken), strings.Join(a.interfaces, ", "))
		}
	}
	s.deleteAnnouncements(ctx, keep)
}

// announcementName is <service>.<node>: unambiguous, because a Service name
// (a DNS label) has no dot. A node name is at most 253 characters, so a long
// one is cut to fit an object name.
func announcementName(svc, node string) string {
	n := svc + "." + node
	if len(n) > 253 {
		n = n[:253]
	}
	return strings.TrimRight(n, "-.")
}

func (s *Speaker) writeAnnouncement(ctx context.Context, svc *corev1.Service, name string, spec v1alpha1.AnnouncementSpec) error {
	var cur v1alpha1.Announcement
	err := s.client.Get(ctx, types.NamespacedName{Namespace: svc.Namespace, Name: name}, &cur)
	if apierrors.IsNotFound(err) {
		yes := true
		a := &v1alpha1.Announcement{
			ObjectMeta: metav1.ObjectMeta{
				Namespace: svc.Namespace, Name: name,
				Labels: map[string]string{labelNode: s.opts.NodeName, labelService: svc.Name},
				// Deleted with its Service by the garbage collector.
				OwnerReferences: []metav1.OwnerReference{{APIVersion: "v1", Kind: "Service", Name: svc.Name, UID: svc.UID, BlockOwnerDeletion: &yes}},
			},
			Spec: spec,
		}
		return client.IgnoreAlreadyExists(s.client.Create(ctx, a))
	}
	if err != nil {
		return err
	}
	if apiequality.Semantic.DeepEqual(cur.Spec, spec) {
		return nil
	}
	cur.Spec = spec
	return s.client.Update(ctx, &cur)
}

// deleteAnnouncements removes this node's Announcements not in keep (all of
// them when keep is nil).
func (s *Speaker) deleteAnnouncements(ctx context.Context, keep map[types.NamespacedName]bool) {
	var list v1alpha1.AnnouncementList
	if err := s.client.List(ctx, &list, client.MatchingLabels{labelNode: s.opts.NodeName}); err != nil {
		s.log.Error(err, "listing this node's Announcements")
		return
	}
	for i := range list.Items {
		a := &list.Items[i]
		if keep[types.NamespacedName{Namespace: a.Namespace, Name: a.Name}] {
			continue
		}
		if err := client.IgnoreNotFound(s.client.Delete(ctx, a)); err != nil {
			s.log.Error(err, "deleting Announcement", "announcement", a.Namespace+"/"+a.Name)
		}
	}
}

// reportOrphans tells, on the Service, when an address has no node that can
// announce it, and why that usually is. Every speaker computes the same
// orphans; only the first live speaker by name reports, and only on change.
func (s *Speaker) reportOrphans(in *inputs, orphans map[netip.Addr][]*corev1.Service) {
	if len(in.live) == 0 || in.live[0] != s.opts.NodeName {
		s.orphans = map[netip.Addr]bool{}
		return
	}
	now := map[netip.Addr]bool{}
	for ip, svcs := range orphans {
		now[ip] = true
		if s.orphans[ip] {
			continue
		}
		for _, svc := range svcs {
			why := "no live speaker runs on a node that matches the L2Advertisement's nodeSelectors and has an interface in the address's subnet (or one of its interfaces)"
			if svc.Spec.ExternalTrafficPolicy == corev1.ServiceExternalTrafficPolicyLocal {
				why += ", and externalTrafficPolicy Local needs such a node with a ready endpoint"
			}
			s.recorder.Eventf(svc, nil, corev1.EventTypeWarning, reasonAnnounceFailed, "Announce", "no node can announce %s: %s", ip, why)
		}
	}
	s.orphans = now
}

// deleteStaleAnnouncements removes layer-2 Announcements of svc written by
// speakers that are no longer live: a node that died could not remove its
// own, and in layer 2 the address has one owner, this node.
func (s *Speaker) deleteStaleAnnouncements(ctx context.Context, svc *corev1.Service, live []string) {
	var list v1alpha1.AnnouncementList
	if err := s.client.List(ctx, &list, client.InNamespace(svc.Namespace), client.MatchingLabels{labelService: svc.Name}); err != nil {
		return
	}
	for i := range list.Items {
		a := &list.Items[i]
		if a.Spec.Mode != "layer2" || a.Spec.Node == s.opts.NodeName || slices.Contains(live, a.Spec.Node) {
			continue
		}
		if err := client.IgnoreNotFound(s.client.Delete(ctx, a)); err != nil {
			s.log.Error(err, "deleting a dead node's Announcement", "announcement", a.Namespace+"/"+a.Name)
		}
	}
}
