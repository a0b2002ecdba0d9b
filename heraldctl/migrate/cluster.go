package migrate

import (
	"context"
	"encoding/json"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
)

// clusterResources are what ReadCluster lists, in MetalLB's namespace: the
// version MetalLB serves each kind in (BGPPeer in v1beta2, else v1beta1).
var clusterResources = []schema.GroupVersionResource{
	{Group: "metallb.io", Version: "v1beta1", Resource: "ipaddresspools"},
	{Group: "metallb.io", Version: "v1beta1", Resource: "l2advertisements"},
	{Group: "metallb.io", Version: "v1beta1", Resource: "bgpadvertisements"},
	{Group: "metallb.io", Version: "v1beta1", Resource: "bfdprofiles"},
	{Group: "metallb.io", Version: "v1beta1", Resource: "communities"},
	{Group: "metallb.io", Version: "v1beta2", Resource: "bgppeers"},
}

// ReadCluster reads MetalLB's configuration from a cluster: its custom
// resources in namespace (where MetalLB reads them) and its legacy
// ConfigMap "config" there. Kinds the cluster does not serve (MetalLB
// before v0.13 has no CRDs) and a missing ConfigMap are skipped. Secrets
// are never read.
func ReadCluster(ctx context.Context, c dynamic.Interface, namespace string) (*Input, error) {
	in := &Input{}
	for _, gvr := range clusterResources {
		list, err := c.Resource(gvr).Namespace(namespace).List(ctx, metav1.ListOptions{})
		switch {
		case apierrors.IsNotFound(err) || meta.IsNoMatchError(err):
			continue
		case err != nil:
			return nil, fmt.Errorf("listing %s in %s: %w", gvr.GroupResource(), namespace, err)
		}
		for _, item := range list.Items {
			in.addDoc(fmt.Sprintf("cluster %s", gvr.GroupResource()), item.Object)
		}
	}
	cm, err := c.Resource(schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}).Namespace(namespace).Get(ctx, "config", metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
	case err != nil:
		return nil, fmt.Errorf("reading ConfigMap %s/config: %w", namespace, err)
	default:
		// Through JSON, as a file would come, so numbers decode alike.
		b, err := json.Marshal(cm.Object)
		if err != nil {
			return nil, err
		}
		if err := in.AddYAML("cluster", b); err != nil {
			return nil, err
		}
	}
	return in, nil
}
