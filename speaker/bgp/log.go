package bgp

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"

	"github.com/go-logr/logr"
)

// gobgpLog passes GoBGP's slog records to the speaker's logr logger (its
// warnings and errors at V(0), its info at V(2), its debug nowhere) and
// keeps, per peer address, the last reason GoBGP gave for not reaching the
// peer: GoBGP logs a failed dial only at debug level and keeps no record of
// it a caller could read, yet it is what a person needs when a session
// stays down (unreachable peer, refused connection, TCP MD5 mismatch).
type gobgpLog struct {
	log   logr.Logger
	attrs []slog.Attr
	last  *lastErrors
}

type lastErrors struct {
	mu sync.Mutex
	m  map[string]string // peer address -> last failure
}

func (l *lastErrors) set(peer, msg string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.m[peer] = msg
}

func (l *lastErrors) get(peer string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.m[peer]
}

func (l *lastErrors) clear(peer string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.m, peer)
}

func newGobgpLog(log logr.Logger) (*slog.Logger, *lastErrors) {
	last := &lastErrors{m: map[string]string{}}
	return slog.New(&gobgpLog{log: log, last: last}), last
}

func (h *gobgpLog) Enabled(context.Context, slog.Level) bool { return true }

func (h *gobgpLog) Handle(_ context.Context, r slog.Record) error {
	var peer, errText string
	var code, subcode int64 = -1, -1
	collect := func(a slog.Attr) bool {
		switch a.Key {
		case "Key":
			peer = a.Value.String()
		case "Error", "Err":
			errText = a.Value.String()
		case "Code":
			code = a.Value.Int64()
		case "Subcode":
			subcode = a.Value.Int64()
		}
		return true
	}
	for _, a := range h.attrs {
		collect(a)
	}
	r.Attrs(collect)
	switch {
	case peer != "" && errText != "" && (r.Message == "failed to connect" || r.Level >= slog.LevelWarn):
		h.last.set(peer, r.Message+": "+errText)
	case peer != "" && code >= 0 && (r.Message == "sent notification" || r.Message == "received notification"):
		// GoBGP refuses an OPEN before its FSM leaves Active, so neither
		// its peer state nor its events carry why: only this log does.
		h.last.set(peer, notificationReason(r.Message == "sent notification", code, subcode))
	}
	if r.Level < slog.LevelInfo || (r.Message == "failed to stop BGP server" && strings.Contains(errText, "not running")) {
		return nil // Stop after StopBgp (Detach) says so; nothing is wrong
	}
	kv := make([]any, 0, 2*(len(h.attrs)+r.NumAttrs()))
	for _, a := range h.attrs {
		kv = append(kv, a.Key, a.Value.Any())
	}
	r.Attrs(func(a slog.Attr) bool {
		kv = append(kv, a.Key, a.Value.Any())
		return true
	})
	if r.Level >= slog.LevelWarn {
		h.log.Info("gobgp: "+r.Message, kv...)
	} else {
		h.log.V(2).Info("gobgp: "+r.Message, kv...)
	}
	return nil
}

func (h *gobgpLog) WithAttrs(attrs []slog.Attr) slog.Handler {
	c := *h
	c.attrs = append(append([]slog.Attr(nil), h.attrs...), attrs...)
	return &c
}

// WithGroup flattens groups: GoBGP does not use them.
func (h *gobgpLog) WithGroup(string) slog.Handler { return h }

// notificationReason says in words what a NOTIFICATION (RFC 4271 4.5 and
// 6, RFC 4486 for Cease) means for the session, sent or received.
func notificationReason(sent bool, code, subcode int64) string {
	who := "the router refused the session"
	if sent {
		who = "this node refused the session"
	}
	what := map[[2]int64]string{
		{2, 1}: "unsupported BGP version",
		{2, 2}: "bad peer AS: the AS in the OPEN message is not the one configured (check peerASN against the router's AS, and the router's neighbour AS against myASN)",
		{2, 3}: "bad BGP identifier (a router ID clash or an invalid one)",
		{2, 4}: "unsupported optional parameter",
		{2, 6}: "unacceptable hold time",
		{2, 7}: "unsupported capability",
		{6, 1}: "Cease: maximum number of prefixes reached",
		{6, 2}: "Cease: administrative shutdown",
		{6, 3}: "Cease: peer de-configured",
		{6, 4}: "Cease: administrative reset",
		{6, 5}: "Cease: connection rejected (the router does not accept this node as a neighbour)",
		{6, 6}: "Cease: other configuration change",
		{6, 7}: "Cease: connection collision resolution",
		{6, 8}: "Cease: out of resources",
	}[[2]int64{code, subcode}]
	if what == "" {
		what = map[int64]string{1: "message header error", 2: "OPEN message error", 3: "UPDATE message error", 4: "hold timer expired", 5: "finite state machine error", 6: "Cease"}[code]
	}
	return fmt.Sprintf("%s with a NOTIFICATION (code %d, subcode %d): %s", who, code, subcode, what)
}
