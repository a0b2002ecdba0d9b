package benchkit

import (
	"strings"
	"testing"
)

func TestReportPrintsTableAndBenchLines(t *testing.T) {
	r := &Report{Prefix: "test", Title: "figures"}
	r.Note("3 nodes")
	r.Add("full_sync", 1234.5, "ms", "from the metric")
	r.Skip("ipvs", "no IPVS here")
	var b strings.Builder
	r.Print(&b)
	out := b.String()
	for _, want := range []string{"setup: 3 nodes", "bench: full_sync 1234.5 ms\n", "skip: ipvs: no IPVS here", "skipped: no IPVS here"} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q in\n%s", want, out)
		}
	}
	if strings.Contains(out, "bench: ipvs") {
		t.Errorf("a skipped figure printed as a bench line:\n%s", out)
	}
	if v, ok := r.Value("full_sync"); !ok || v != 1234.5 {
		t.Errorf("Value(full_sync) = %v, %v", v, ok)
	}
	if _, ok := r.Value("ipvs"); ok {
		t.Error("Value of a skipped figure")
	}
}

func TestMedianAndTrim(t *testing.T) {
	for _, c := range []struct {
		in   []float64
		want float64
	}{{nil, 0}, {[]float64{3}, 3}, {[]float64{5, 1, 3}, 3}, {[]float64{4, 1, 3, 2}, 2.5}} {
		if got := Median(c.in); got != c.want {
			t.Errorf("Median(%v) = %v, want %v", c.in, got, c.want)
		}
	}
	for in, want := range map[float64]string{1: "1", 1.5: "1.5", 0.12345: "0.123", 100: "100"} {
		if got := Trim(in); got != want {
			t.Errorf("Trim(%v) = %q, want %q", in, got, want)
		}
	}
}
