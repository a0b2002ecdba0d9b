package migrate

import (
	"cmp"
	"fmt"
	"io"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/yaml"

	"github.com/heraldlb/herald/api/v1alpha1"
)

// Severity says how much a finding matters to a migration.
type Severity int

const (
	// Note: translated without loss; said for the record.
	Note Severity = iota
	// Action: translated, but something must be done by hand for it to
	// work (a Secret to copy into Herald's namespace, say).
	Action
	// Lost: not translated, or translated with a different behaviour,
	// because Herald has no equivalent or refuses it.
	Lost
)

func (s Severity) String() string {
	switch s {
	case Note:
		return "NOTE"
	case Action:
		return "ACTION"
	}
	return "LOST"
}

// Finding is one line of the report: which MetalLB object and field, and
// why it is not translated as it was, with what to do instead.
type Finding struct {
	Severity Severity
	Object   string // "BGPPeer metallb-system/peer-a", as MetalLB names it
	Field    string // MetalLB's field, "spec.password"; empty for the whole object
	Message  string
}

func (f Finding) String() string {
	where := f.Object
	if f.Field != "" {
		where += ": " + f.Field
	}
	return fmt.Sprintf("%-6s %s: %s", f.Severity, where, f.Message)
}

// Result is a translation: Herald's objects, and the findings.
type Result struct {
	Pools             []v1alpha1.IPAddressPool
	L2Advertisements  []v1alpha1.L2Advertisement
	BGPPeers          []v1alpha1.BGPPeer
	BGPAdvertisements []v1alpha1.BGPAdvertisement
	BFDProfiles       []v1alpha1.BFDProfile
	Findings          []Finding
}

// Complete reports whether everything was translated with nothing left to
// do by hand: no finding is Lost or Action. --check exits non-zero
// otherwise.
func (r *Result) Complete() bool {
	return !slices.ContainsFunc(r.Findings, func(f Finding) bool { return f.Severity != Note })
}

// objects are the translated objects in the order they are applied: what
// others refer to first.
func (r *Result) objects() []runtime.Object {
	var out []runtime.Object
	for i := range r.BFDProfiles {
		out = append(out, &r.BFDProfiles[i])
	}
	for i := range r.Pools {
		out = append(out, &r.Pools[i])
	}
	for i := range r.BGPPeers {
		out = append(out, &r.BGPPeers[i])
	}
	for i := range r.L2Advertisements {
		out = append(out, &r.L2Advertisements[i])
	}
	for i := range r.BGPAdvertisements {
		out = append(out, &r.BGPAdvertisements[i])
	}
	return out
}

// WriteYAML writes the objects as one multi-document YAML stream, ready for
// kubectl apply -f: no status, no server-set metadata.
func (r *Result) WriteYAML(w io.Writer) error {
	for _, o := range r.objects() {
		u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(o)
		if err != nil {
			return err
		}
		delete(u, "status")
		unstructured.RemoveNestedField(u, "metadata", "creationTimestamp")
		b, err := yaml.Marshal(u)
		if err != nil {
			return err
		}
		if _, err := fmt.Fprintf(w, "---\n%s", b); err != nil {
			return err
		}
	}
	return nil
}

// WriteReport writes the findings, the most serious first, and a summary
// line.
func (r *Result) WriteReport(w io.Writer) error {
	fs := slices.Clone(r.Findings)
	slices.SortStableFunc(fs, func(a, b Finding) int { return cmp.Compare(b.Severity, a.Severity) })
	var b strings.Builder
	count := map[Severity]int{}
	for _, f := range fs {
		fmt.Fprintln(&b, f)
		count[f.Severity]++
	}
	fmt.Fprintf(&b, "heraldctl migrate: %d objects written; %d not translated (LOST), %d to do by hand (ACTION), %d notes\n",
		len(r.objects()), count[Lost], count[Action], count[Note])
	_, err := io.WriteString(w, b.String())
	return err
}
