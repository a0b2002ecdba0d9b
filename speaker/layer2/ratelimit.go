package layer2

import (
	"container/list"
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"time"
)

// ReplyLimits bound the ARP replies and neighbour advertisements the
// Announcer sends in answer to requests, so a flood of requests (one host
// gone mad, or forged senders) costs a bounded amount of CPU and of LAN:
// each requester gets Rate replies per second after a first Burst, and all
// requesters together TotalRate after TotalBurst, across both families and
// every interface. A rate of 0 leaves that limit off. Unsolicited
// announcements are never limited: a takeover must reach every neighbour.
type ReplyLimits struct {
	Rate       float64 // replies per second to one requester
	Burst      int
	TotalRate  float64 // replies per second to all requesters together
	TotalBurst int
}

// DefaultReplyLimits answer a host resolving a thousand addresses at once
// (a router after a restart: a burst of 1,000, then 1,000/s) while a flood
// gets at most 10,000 replies/s in all. The burst is not 10,000: measured in
// the lab, a flooding host spending so large a burst keeps an IPv6
// speaker answering it (some 2,500 advertisements/s on a loaded 2-core
// machine) for seconds, and other hosts' solicitations are dropped
// meanwhile; see the README's Floods.
func DefaultReplyLimits() ReplyLimits {
	return ReplyLimits{Rate: 1000, Burst: 1000, TotalRate: 10000, TotalBurst: 20000}
}

// Validate says what is wrong with l, naming the field.
func (l ReplyLimits) Validate() error {
	return l.ValidateNamed("rate", "burst", "total rate", "total burst")
}

// ValidateNamed is Validate with other names for the fields, such as the
// flags that set them.
func (l ReplyLimits) ValidateNamed(rateName, burstName, totalRateName, totalBurstName string) error {
	var errs []error
	check := func(rateName string, rate float64, burstName string, burst int) {
		switch {
		case math.IsNaN(rate) || rate < 0 || rate > 1e9:
			errs = append(errs, fmt.Errorf("%s %g: want 0 (no limit) to 1e9 replies per second", rateName, rate))
		case rate > 0 && burst < 1:
			errs = append(errs, fmt.Errorf("%s %d: want at least 1 (with %s %g, nothing could ever be answered)", burstName, burst, rateName, rate))
		}
	}
	check(rateName, l.Rate, burstName, l.Burst)
	check(totalRateName, l.TotalRate, totalBurstName, l.TotalBurst)
	return errors.Join(errs...)
}

// Why a reply was not sent: the label reason of
// herald_speaker_layer2_replies_limited_total.
const (
	limitedRequester = "requester" // this requester's own budget is spent
	limitedTotal     = "total"     // all requesters' budget is spent
	limitedTable     = "table"     // the table of requesters is full of busy ones
)

// requester identifies who asked: the sender's MAC address for ARP and for a
// solicitation that carries one, else the source address.
type requester struct {
	mac [6]byte
	ip  netip.Addr
}

func requesterOf(mac net.HardwareAddr, ip netip.Addr) requester {
	if len(mac) == 6 {
		return requester{mac: [6]byte(mac)}
	}
	return requester{ip: ip}
}

// maxRequesters bounds the table of requesters a flood from forged senders
// can grow.
const maxRequesters = 4096

// gcra is a token bucket in the form of the generic cell rate algorithm
// (ITU-T I.371): one integer, the theoretical arrival time, instead of a
// count of tokens and a time, so that the bound is exact in integer
// nanoseconds. interval is the time one reply costs, rounded up, so over any
// span t at most t/interval+burst <= rate*t+burst replies are allowed.
type gcra struct {
	interval  time.Duration // 0: no limit
	tolerance time.Duration // (burst-1) * interval
}

func newGCRA(rate float64, burst int) gcra {
	if rate <= 0 {
		return gcra{}
	}
	iv := time.Duration(math.Ceil(float64(time.Second) / rate))
	return gcra{interval: iv, tolerance: time.Duration(burst-1) * iv}
}

// admits reports whether a reply fits at now, and the arrival time to
// store if it is sent.
func (g gcra) admits(tat, now time.Duration) (time.Duration, bool) {
	if g.interval == 0 {
		return tat, true
	}
	tat = max(tat, now)
	if tat-now > g.tolerance {
		return 0, false
	}
	return tat + g.interval, true
}

// replyLimiter decides, request by request, whether to reply. It is pure:
// the caller passes the time (on a monotonic clock) and serialises calls.
type replyLimiter struct {
	each, total gcra
	totalTAT    time.Duration
	max         int
	table       map[requester]*list.Element // of *requesterState
	lru         *list.List                  // least recently seen first
}

type requesterState struct {
	who requester
	tat time.Duration
}

func newReplyLimiter(l ReplyLimits, maxEntries int) *replyLimiter {
	return &replyLimiter{
		each: newGCRA(l.Rate, l.Burst), total: newGCRA(l.TotalRate, l.TotalBurst),
		max: maxEntries, table: map[requester]*list.Element{}, lru: list.New(),
	}
}

// allow reports whether who may be answered at now, charging the reply to
// its budget and the total one if so, and otherwise why not.
//
// A requester's state is forgotten only once its bucket is full again, when
// forgetting it changes nothing; a new requester that finds the table full
// of requesters still refilling is refused (reason "table"). So however
// many senders a flood forges, no requester ever gets more than its bound,
// and the table never holds more than max.
func (r *replyLimiter) allow(who requester, now time.Duration) (ok bool, reason string) {
	if r.each.interval == 0 && r.total.interval == 0 {
		return true, ""
	}
	var st *requesterState
	if r.each.interval != 0 {
		if e := r.table[who]; e != nil {
			r.lru.MoveToBack(e)
			st = e.Value.(*requesterState)
		} else {
			if r.lru.Len() >= r.max {
				e := r.lru.Front()
				old := e.Value.(*requesterState)
				if old.tat > now {
					return false, limitedTable
				}
				delete(r.table, old.who)
				r.lru.Remove(e)
			}
			st = &requesterState{who: who}
			r.table[who] = r.lru.PushBack(st)
		}
	}
	var eachTAT time.Duration
	if st != nil {
		if eachTAT, ok = r.each.admits(st.tat, now); !ok {
			return false, limitedRequester
		}
	}
	totalTAT, ok := r.total.admits(r.totalTAT, now)
	if !ok {
		return false, limitedTotal
	}
	r.totalTAT = totalTAT
	if st != nil {
		st.tat = eachTAT
	}
	return true, ""
}

// len is how many requesters the table holds.
func (r *replyLimiter) len() int { return r.lru.Len() }
