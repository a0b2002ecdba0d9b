package layer2

import (
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"pgregory.net/rapid"
)

func mac(i int) requester {
	return requesterOf(net.HardwareAddr{2, 0, 0, byte(i >> 16), byte(i >> 8), byte(i)}, netip.Addr{})
}

func TestReplyLimiterAnswersABurstThenTheRate(t *testing.T) {
	r := newReplyLimiter(ReplyLimits{Rate: 10, Burst: 5}, 16)
	a := mac(1)
	for i := range 5 {
		if ok, why := r.allow(a, 0); !ok {
			t.Fatalf("request %d of the burst refused (%s)", i+1, why)
		}
	}
	if ok, why := r.allow(a, 0); ok || why != limitedRequester {
		t.Fatalf("6th request at once: allowed %v (%s), want refused for the requester", ok, why)
	}
	// 10/s: one more every 100 ms.
	if ok, _ := r.allow(a, 99*time.Millisecond); ok {
		t.Error("allowed 99 ms later, want only after 100 ms")
	}
	if ok, _ := r.allow(a, 100*time.Millisecond); !ok {
		t.Error("refused 100 ms later, want allowed")
	}
	// Another requester has a budget of its own.
	if ok, _ := r.allow(mac(2), 100*time.Millisecond); !ok {
		t.Error("a second requester refused while the first is limited")
	}
}

func TestReplyLimiterTotalBoundsManyRequesters(t *testing.T) {
	r := newReplyLimiter(ReplyLimits{Rate: 1000, Burst: 10, TotalRate: 100, TotalBurst: 20}, 1000)
	n := 0
	for i := range 500 {
		if ok, why := r.allow(mac(i), 0); ok {
			n++
		} else if why != limitedTotal {
			t.Fatalf("requester %d refused for %q, want total", i, why)
		}
	}
	if n != 20 {
		t.Errorf("%d of 500 requesters answered at once, want the total burst 20", n)
	}
	if ok, _ := r.allow(mac(1000), 10*time.Millisecond); !ok {
		t.Error("refused 10 ms later, when the total rate 100/s has refilled one")
	}
}

func TestReplyLimiterForgetsOnlyIdleRequesters(t *testing.T) {
	r := newReplyLimiter(ReplyLimits{Rate: 10, Burst: 2}, 2)
	r.allow(mac(1), 0)
	r.allow(mac(2), 0)
	// Both still refilling (100 ms per reply): a third does not fit, and
	// forgetting one would give it a fresh burst.
	if ok, why := r.allow(mac(3), 50*time.Millisecond); ok || why != limitedTable {
		t.Errorf("third requester with a full table of busy ones: allowed %v (%s), want refused for the table", ok, why)
	}
	if ok, _ := r.allow(mac(3), 100*time.Millisecond); !ok {
		t.Error("third requester refused once the oldest is idle again")
	}
	if r.len() != 2 {
		t.Errorf("table holds %d, want its bound 2", r.len())
	}
}

func TestReplyLimiterWithoutLimitsAllowsEverythingAndKeepsNoTable(t *testing.T) {
	r := newReplyLimiter(ReplyLimits{}, 4)
	for i := range 100 {
		if ok, _ := r.allow(mac(i), 0); !ok {
			t.Fatal("refused with no limits")
		}
	}
	if r.len() != 0 {
		t.Errorf("table holds %d with no per-requester limit, want 0", r.len())
	}
}

func TestReplyLimitsValidate(t *testing.T) {
	for _, c := range []struct {
		l    ReplyLimits
		want string // "" valid
	}{
		{DefaultReplyLimits(), ""},
		{ReplyLimits{}, ""},
		{ReplyLimits{Rate: 0.5, Burst: 1}, ""},
		{ReplyLimits{Rate: -1, Burst: 1}, "rate -1"},
		{ReplyLimits{Rate: 10, Burst: 0}, "burst 0: want at least 1"},
		{ReplyLimits{TotalRate: 10}, "total burst 0"},
		{ReplyLimits{TotalRate: 2e9, TotalBurst: 1}, "total rate 2e+09"},
	} {
		err := c.l.Validate()
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%+v: %v, want valid", c.l, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%+v: %v, want an error with %q", c.l, err, c.want)
		}
	}
}

// Over any interval, one requester gets at most rate*t+burst replies, all
// together at most totalRate*t+totalBurst, and the table stays within its
// bound, whatever the mix of requesters and times.
func TestReplyLimiterNeverExceedsItsBounds(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		l := ReplyLimits{
			Rate:       float64(rapid.IntRange(1, 2000).Draw(t, "rate")),
			Burst:      rapid.IntRange(1, 50).Draw(t, "burst"),
			TotalRate:  float64(rapid.IntRange(0, 5000).Draw(t, "totalRate")),
			TotalBurst: rapid.IntRange(1, 100).Draw(t, "totalBurst"),
		}
		size := rapid.IntRange(1, 8).Draw(t, "table")
		r := newReplyLimiter(l, size)
		type reply struct {
			who int
			at  time.Duration
		}
		var sent []reply
		now := time.Duration(0)
		for range rapid.IntRange(1, 400).Draw(t, "requests") {
			now += time.Duration(rapid.IntRange(0, 5_000_000).Draw(t, "gap ns"))
			who := rapid.IntRange(0, 12).Draw(t, "requester")
			if ok, _ := r.allow(mac(who), now); ok {
				sent = append(sent, reply{who, now})
			}
			if r.len() > size {
				t.Fatalf("table holds %d, bound %d", r.len(), size)
			}
		}
		bound := func(rate float64, burst int, span time.Duration) float64 {
			return rate*span.Seconds() + float64(burst)
		}
		for i := range sent {
			perWho := map[int]int{}
			for j := i; j < len(sent); j++ {
				perWho[sent[j].who]++
				span := sent[j].at - sent[i].at
				if w := sent[j].who; w == sent[i].who && float64(perWho[w]) > bound(l.Rate, l.Burst, span)+1e-9 {
					t.Fatalf("requester %d got %d replies in %s, bound %.3f", w, perWho[w], span, bound(l.Rate, l.Burst, span))
				}
				if l.TotalRate > 0 && float64(j-i+1) > bound(l.TotalRate, l.TotalBurst, span)+1e-9 {
					t.Fatalf("%d replies in %s in all, bound %.3f", j-i+1, span, bound(l.TotalRate, l.TotalBurst, span))
				}
			}
		}
	})
}
