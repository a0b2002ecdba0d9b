package membership

import (
	"errors"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
)

// Why a packet or a stream that reached the gossip port was refused: the
// values of the reason label of herald_speaker_gossip_refused_packets_total.
const (
	// refusedDecrypt: it carries Herald's label but does not authenticate
	// under this speaker's key: a speaker with another gossip key, a
	// memberlist without a key (its packets, in clear, cannot authenticate
	// either), or forged bytes.
	refusedDecrypt = "decrypt"
	// refusedUnencrypted: a state sync or join (TCP) in clear, from a
	// memberlist without a key.
	refusedUnencrypted = "unencrypted"
	// refusedLabel: no label, or another one: another memberlist cluster on
	// this port (MetalLB's, say), or stray bytes.
	refusedLabel = "label"
	// refusedMalformed: empty, truncated or undecodable.
	refusedMalformed = "malformed"
)

// refusedLogEvery bounds the log: one line per reason per interval, however
// many packets a flood or a misconfigured peer sends; the counter has the
// exact numbers.
const refusedLogEvery = 30 * time.Second

// refusedSendersLogged bounds the senders one log line names.
const refusedSendersLogged = 8

// refusals counts what memberlist refuses and logs it, rate-limited. It learns
// of refusals from memberlist's log lines: memberlist drops a packet it
// cannot authenticate or decode with one log line naming the sender, and
// exposes it in no other way (its go-metrics count bytes received, not
// packets refused).
type refusals struct {
	counter *prometheus.CounterVec
	log     logr.Logger
	now     func() time.Time

	mu       sync.Mutex
	byReason map[string]*refusalWindow
}

// refusalWindow is what a reason saw since its last log line.
type refusalWindow struct {
	logged  time.Time // zero: never
	count   int
	senders []string // distinct, at most refusedSendersLogged
	detail  string   // memberlist's words for the latest one
}

func newRefusals(log logr.Logger, reg prometheus.Registerer) *refusals {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "herald_speaker_gossip_refused_packets_total",
		Help: "Packets (UDP) and streams (TCP) refused on the gossip port, by reason: decrypt (they do not authenticate under this speaker's key: a speaker with another gossip key or none, or forged), unencrypted (a join or state sync in clear: a memberlist without a key), label (not Herald's gossip: another memberlist cluster on this port, or stray bytes), malformed (empty, truncated or undecodable). The log names the senders.",
	}, []string{"reason"})
	c = registerCounters(reg, log, c, "herald_speaker_gossip_refused_packets_total", refusedDecrypt, refusedUnencrypted, refusedLabel, refusedMalformed)
	return &refusals{counter: c, log: log, now: time.Now, byReason: map[string]*refusalWindow{}}
}

// registerCounters exports c with every value of its one label at 0 from
// the start, and returns the counter to count with: a speaker restarting
// its gossip in one process shares the one registered first. reg nil:
// nothing is exported.
func registerCounters(reg prometheus.Registerer, log logr.Logger, c *prometheus.CounterVec, name string, values ...string) *prometheus.CounterVec {
	for _, v := range values {
		c.WithLabelValues(v)
	}
	if reg == nil {
		return c
	}
	var are prometheus.AlreadyRegisteredError
	if err := reg.Register(c); errors.As(err, &are) {
		if existing, ok := are.ExistingCollector.(*prometheus.CounterVec); ok {
			return existing
		}
	} else if err != nil {
		log.Error(err, "registering a metric; it is not exported", "metric", name)
	}
	return c
}

// refuse counts one refusal, and logs it unless this reason was logged less
// than refusedLogEvery ago; the next line then tells how many came since.
func (r *refusals) refuse(reason, from, detail string) {
	r.counter.WithLabelValues(reason).Inc()
	if from == "" {
		from = "unknown"
	}
	r.mu.Lock()
	w := r.byReason[reason]
	if w == nil {
		w = &refusalWindow{}
		r.byReason[reason] = w
	}
	w.count++
	if len(w.senders) < refusedSendersLogged && !slices.Contains(w.senders, from) {
		w.senders = append(w.senders, from)
	}
	w.detail = detail
	now := r.now()
	if !w.logged.IsZero() && now.Sub(w.logged) < refusedLogEvery {
		r.mu.Unlock()
		return
	}
	count, senders := w.count, w.senders
	*w = refusalWindow{logged: now}
	r.mu.Unlock()
	r.log.Info("Refused gossip: "+refusedHint[reason],
		"reason", reason, "refused", count, "from", senders, "detail", detail)
}

// refusedHint says what an operator should check, by reason.
var refusedHint = map[string]string{
	refusedDecrypt:     "it does not authenticate under this speaker's key (check that every speaker reads the same gossip Secret; otherwise the packets are forged)",
	refusedUnencrypted: "it comes in clear from a memberlist without a key",
	refusedLabel:       "it is not Herald's gossip (another memberlist cluster on this port, or stray bytes)",
	refusedMalformed:   "it is empty, truncated or undecodable",
}

// refusal tells whether memberlist's log message (its "memberlist: " prefix
// removed) reports a packet or stream it refused, and why. The patterns are
// memberlist v0.7's words (net.go, net_transport.go, label.go, security.go);
// TestEveryKindOfForgedPacketIsRefusedAndCounted pins them against the real
// library. A message this does not know is logged as before.
func refusal(msg string) (reason string, ok bool) {
	for _, p := range refusalPatterns {
		if strings.HasPrefix(msg, p.prefix) && strings.Contains(msg, p.contains) {
			return p.reason, true
		}
	}
	return "", false
}

// refusalPatterns: first match wins, so the specific before the general.
var refusalPatterns = []struct{ prefix, contains, reason string }{
	// UDP, before decryption (transport.go readPackets, net.go ingestPacket).
	{"UDP packet too short", "", refusedMalformed},
	{"cannot decode label", "", refusedMalformed},
	{"label header cannot be empty", "", refusedLabel},
	{"unexpected double packet label header", "", refusedLabel},
	{"discarding packet with unacceptable label", "", refusedLabel},
	{"Decrypt packet failed", "", refusedDecrypt},
	// TCP, before decryption (net.go handleConn, readStream).
	{"failed to receive and remove the stream label header", "label header cannot be empty", refusedLabel},
	{"failed to receive and remove the stream label header", "", refusedMalformed},
	{"unexpected double stream label header", "", refusedLabel},
	{"discarding stream with unacceptable label", "", refusedLabel},
	{"failed to receive:", "encryption is configured but remote state is not encrypted", refusedUnencrypted},
	{"failed to receive:", "no installed keys could decrypt", refusedDecrypt},
	{"failed to receive:", "unsupported encryption version", refusedDecrypt},
	{"failed to receive:", "payload is too small to decrypt", refusedDecrypt},
	{"failed to receive:", "cannot decrypt empty payload", refusedDecrypt},
	{"failed to receive:", "", refusedMalformed},
	{"Received invalid msgType", "", refusedMalformed},
	// Authenticated but undecodable: a peer with our key sent something
	// broken (net.go handleCommand and its handlers).
	{"Got invalid checksum", "", refusedMalformed},
	{"missing message type byte", "", refusedMalformed},
	{"msg type (", "not supported", refusedMalformed},
	{"Message type (", "not supported", refusedMalformed},
	{"Compound request had", "truncated messages", refusedMalformed},
	{"Failed to decode ", "", refusedMalformed},
	{"Failed to decompress payload", "", refusedMalformed},
	{"Failed to read remote state", "", refusedMalformed},
}

// sender splits memberlist's " from=ip:port" suffix off a message.
func sender(msg string) (rest, from string) {
	i := strings.LastIndex(msg, " from=")
	if i < 0 {
		return msg, ""
	}
	from = msg[i+len(" from="):]
	if from == "<unknown address>" {
		from = ""
	}
	return strings.TrimSuffix(strings.TrimSpace(msg[:i]), ":"), from
}
