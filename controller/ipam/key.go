package ipam

import "cmp"

// Key names the Service an assignment belongs to. It has the fields of
// Kubernetes' types.NamespacedName, so the two convert into each other
// without this package importing Kubernetes.
type Key struct{ Namespace, Name string }

func (k Key) String() string { return k.Namespace + "/" + k.Name }

// Compare orders keys by namespace, then name.
func (k Key) Compare(o Key) int {
	if c := cmp.Compare(k.Namespace, o.Namespace); c != 0 {
		return c
	}
	return cmp.Compare(k.Name, o.Name)
}
