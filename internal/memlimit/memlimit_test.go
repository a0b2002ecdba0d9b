package memlimit

import "testing"

func TestLimitIsNinetyPercentOfTheContainersUnlessGOMEMLIMITIsSet(t *testing.T) {
	for _, tc := range []struct {
		name   string
		env    map[string]string
		want   int64
		wantOK bool
	}{
		{"the chart's default limit, 256Mi", map[string]string{EnvLimit: "268435456"}, 241591905, true},
		{"GOMEMLIMIT wins", map[string]string{EnvLimit: "268435456", "GOMEMLIMIT": "100MiB"}, 0, false},
		{"no limit", nil, 0, false},
		{"not a number", map[string]string{EnvLimit: "256Mi"}, 0, false},
		{"zero", map[string]string{EnvLimit: "0"}, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := Limit(func(k string) string { return tc.env[k] })
			if got != tc.want || ok != tc.wantOK {
				t.Errorf("Limit = %d, %v; want %d, %v", got, ok, tc.want, tc.wantOK)
			}
		})
	}
}
