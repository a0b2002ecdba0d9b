package community

import (
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Community
	}{
		{"0:0", Community{}},
		{"64512:7", Community{Standard: 64512<<16 | 7}},
		{"65535:65535", Community{Standard: 0xFFFFFFFF}},
		{"no-export", Community{Standard: 0xFFFFFF01}},
		{"blackhole", Community{Standard: 0xFFFF029A}},
		{"large:4294967295:0:1", Community{Large: Large{4294967295, 0, 1}, IsLarge: true}},
	} {
		got, err := Parse(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("Parse(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
	}
}

func TestParseRefusesNamingTheValue(t *testing.T) {
	for _, tc := range []struct{ in, says string }{
		{"65536:1", "both parts from 0 to 65535"},
		{"1:2:3", "both parts from 0 to 65535"},
		{"", "both parts from 0 to 65535"},
		{"No-Export", "well-known name"},
		{"large:1:2", "large:global:local1:local2"},
		{"large:1:2:4294967296", `part "4294967296" is not a number from 0 to 4294967295`},
		{"large:-1:2:3", `part "-1"`},
	} {
		_, err := Parse(tc.in)
		if err == nil || !strings.Contains(err.Error(), tc.says) || !strings.Contains(err.Error(), `"`+tc.in+`"`) {
			t.Errorf("Parse(%q): error %v, want one naming the value and saying %q", tc.in, err, tc.says)
		}
	}
}

func TestLargeCompareOrdersGlobalThenLocals(t *testing.T) {
	ordered := []Large{{0, 0, 0}, {0, 0, 1}, {0, 1, 0}, {1, 0, 0}, {1, 0, 4294967295}}
	for i, a := range ordered {
		for j, b := range ordered {
			want := 0
			if i < j {
				want = -1
			} else if i > j {
				want = 1
			}
			if got := a.Compare(b); got != want {
				t.Errorf("%v.Compare(%v) = %d, want %d", a, b, got, want)
			}
		}
	}
}
