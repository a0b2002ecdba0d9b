package migrate

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"reflect"
	"slices"
	"strings"

	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// MetalLB's API group and the versions heraldctl reads.
const (
	mlbV1beta1 = "metallb.io/v1beta1"
	mlbV1beta2 = "metallb.io/v1beta2"
)

// Input is a MetalLB configuration as read from files or from a cluster:
// custom resources of every kind, and legacy ConfigMaps. Add to it with
// AddYAML; Translate turns it into Herald's objects.
type Input struct {
	pools       []mlbObject[mlbPoolSpec]
	l2          []mlbObject[mlbL2AdvertisementSpec]
	bgpAdvs     []mlbObject[mlbBGPAdvertisementSpec]
	bfd         []mlbObject[mlbBFDProfileSpec]
	communities []mlbObject[mlbCommunitySpec]
	peers       []mlbObject[mlbBGPPeerSpec]
	// origin says where an object came from when it was not a custom
	// resource of its own (a legacy ConfigMap), by kind and name.
	origin map[string]string

	findings []Finding
}

// AddYAML reads every document of a multi-document YAML (or JSON) stream:
// MetalLB custom resources, a List of them (kubectl get -o yaml), the legacy
// ConfigMap, or the bare YAML of its "config" key. Documents that are not
// MetalLB configuration are skipped with a note; a document that is not
// YAML at all is an error. source names the stream in findings.
func (in *Input) AddYAML(source string, data []byte) error {
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	for i := 1; ; i++ {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%s: document %d: %w", source, i, err)
		}
		var m map[string]any
		if err := yaml.Unmarshal(doc, &m); err != nil {
			return fmt.Errorf("%s: document %d: %w", source, i, err)
		}
		if len(m) == 0 {
			continue // an empty document, or only comments
		}
		in.addDoc(fmt.Sprintf("%s: document %d", source, i), m)
	}
}

// addDoc sorts one decoded document by kind.
func (in *Input) addDoc(where string, m map[string]any) {
	apiVersion, _ := m["apiVersion"].(string)
	kind, _ := m["kind"].(string)
	switch {
	case kind == "" && apiVersion == "" && (m["address-pools"] != nil || m["peers"] != nil || m["bgp-communities"] != nil || m["bfd-profiles"] != nil):
		// The content of the ConfigMap's config key, saved as a file.
		b, _ := json.Marshal(m)
		in.addLegacy(where, string(b))
	case strings.HasSuffix(kind, "List") && m["items"] != nil:
		items, _ := m["items"].([]any)
		for i, it := range items {
			if im, ok := it.(map[string]any); ok {
				in.addDoc(fmt.Sprintf("%s, item %d", where, i), im)
			}
		}
	case apiVersion == "v1" && kind == "ConfigMap":
		in.addConfigMap(where, m)
	case apiVersion == "v1" && kind == "Secret":
		in.note(Note, where+": Secret "+objectName(m), "", "Secrets are never read or copied; BGPPeers refer to them by name")
	case apiVersion == mlbV1beta1 || apiVersion == mlbV1beta2:
		in.addResource(apiVersion, kind, m)
	case strings.HasPrefix(apiVersion, "metallb.io/"):
		in.note(Lost, kind+" "+objectName(m), "apiVersion", fmt.Sprintf("%s %s is not a version heraldctl reads (metallb.io/v1beta1, and v1beta2 for BGPPeer); let MetalLB convert it (kubectl get %s -o yaml serves the stored version) and translate that", apiVersion, kind, strings.ToLower(kind)+"s"))
	default:
		in.note(Note, where, "", fmt.Sprintf("%s %s %s is not MetalLB configuration; skipped", apiVersion, kind, objectName(m)))
	}
}

func objectName(m map[string]any) string {
	md, _ := m["metadata"].(map[string]any)
	name, _ := md["name"].(string)
	if ns, _ := md["namespace"].(string); ns != "" {
		return ns + "/" + name
	}
	return name
}

// addConfigMap reads MetalLB's legacy ConfigMap: its "config" key.
func (in *Input) addConfigMap(where string, m map[string]any) {
	name := "ConfigMap " + objectName(m)
	data, _ := m["data"].(map[string]any)
	config, ok := data["config"].(string)
	if !ok {
		in.note(Note, where+": "+name, "", "a ConfigMap without a config key is not MetalLB's configuration; skipped")
		return
	}
	for _, k := range slices.Sorted(maps.Keys(data)) {
		if k != "config" {
			in.note(Lost, name, "data."+k, "MetalLB reads only the config key; this key is not translated")
		}
	}
	in.addLegacy(name, config)
}

// addResource decodes one MetalLB custom resource.
func (in *Input) addResource(apiVersion, kind string, m map[string]any) {
	ref := kind + " " + objectName(m)
	switch {
	case kind == "IPAddressPool" && apiVersion == mlbV1beta1:
		decodeResource(in, ref, m, &in.pools)
	case kind == "L2Advertisement" && apiVersion == mlbV1beta1:
		decodeResource(in, ref, m, &in.l2)
	case kind == "BGPAdvertisement" && apiVersion == mlbV1beta1:
		decodeResource(in, ref, m, &in.bgpAdvs)
	case kind == "BFDProfile" && apiVersion == mlbV1beta1:
		decodeResource(in, ref, m, &in.bfd)
	case kind == "Community" && apiVersion == mlbV1beta1:
		decodeResource(in, ref, m, &in.communities)
	case kind == "BGPPeer":
		if apiVersion == mlbV1beta1 {
			spec, _ := m["spec"].(map[string]any)
			for _, f := range v1beta2Only {
				if _, has := spec[f]; has {
					in.note(Lost, ref, "spec."+f, "not a field of metallb.io/v1beta1 BGPPeer (MetalLB ignores it there); not translated")
					delete(spec, f)
				}
			}
		}
		ok := decodeResource(in, ref, m, &in.peers)
		if ok && apiVersion == mlbV1beta1 {
			// v1beta1's timers are not pointers: zero means unset.
			p := &in.peers[len(in.peers)-1].Spec
			if p.HoldTime != nil && p.HoldTime.Duration == 0 {
				p.HoldTime = nil
			}
			if p.KeepaliveTime != nil && p.KeepaliveTime.Duration == 0 {
				p.KeepaliveTime = nil
			}
		}
	case kind == "AddressPool":
		in.note(Lost, ref, "", "AddressPool is the kind MetalLB v0.13 deprecated; let MetalLB convert it to an IPAddressPool and advertisements (or write them), then translate those")
	case kind == "ServiceL2Status" || kind == "ServiceBGPStatus" || kind == "ConfigurationState":
		in.note(Note, ref, "", kind+" is status MetalLB reports, not configuration; Herald reports its own (Announcement, BGPSession)")
	default:
		in.note(Lost, ref, "kind", fmt.Sprintf("%s %s is not a kind heraldctl translates", apiVersion, kind))
	}
}

// decodeResource appends the object in m to list, after reporting and
// dropping every field the MetalLB type does not have.
func decodeResource[S any](in *Input, ref string, m map[string]any, list *[]mlbObject[S]) bool {
	var o mlbObject[S]
	for _, f := range dropUnknown(m, reflect.TypeOf(o), "") {
		in.note(Lost, ref, f, "not a MetalLB field heraldctl knows; not translated")
	}
	b, err := json.Marshal(m)
	if err != nil {
		in.note(Lost, ref, "", "cannot read: "+err.Error())
		return false
	}
	if err := json.Unmarshal(b, &o); err != nil {
		in.note(Lost, ref, "", "cannot read: "+err.Error())
		return false
	}
	if o.Metadata.Name == "" {
		in.note(Lost, ref, "metadata.name", "the object has no name; skipped")
		return false
	}
	*list = append(*list, o)
	return true
}

// dropUnknown removes from v (a decoded JSON value) the keys type t does
// not have, and returns their paths. Decoding what is left then reads what
// MetalLB reads: its YAML decoder matches keys exactly, where Go's JSON
// decoder would also take "Addresses" for "addresses". metadata and status
// are not checked (heraldctl keeps only name, namespace and labels).
func dropUnknown(v any, t reflect.Type, path string) []string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	var out []string
	switch t.Kind() {
	case reflect.Struct:
		m, ok := v.(map[string]any)
		if !ok {
			return nil // a type with its own JSON form (metav1.Duration)
		}
		fields := map[string]reflect.Type{}
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if name == "" {
				continue
			}
			fields[name] = f.Type
		}
		for _, k := range slices.Sorted(maps.Keys(m)) {
			p := k
			if path != "" {
				p = path + "." + k
			}
			ft, known := fields[k]
			switch {
			case !known:
				out = append(out, p)
				delete(m, k)
			case path == "" && (k == "metadata" || k == "status"):
			default:
				out = append(out, dropUnknown(m[k], ft, p)...)
			}
		}
	case reflect.Slice:
		l, _ := v.([]any)
		for i, e := range l {
			out = append(out, dropUnknown(e, t.Elem(), fmt.Sprintf("%s[%d]", path, i))...)
		}
	}
	return out
}

func (in *Input) note(s Severity, object, field, msg string) {
	in.findings = append(in.findings, Finding{Severity: s, Object: object, Field: field, Message: msg})
}
