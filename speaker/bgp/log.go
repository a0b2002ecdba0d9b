package bgp

import (
	"context"
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
	collect := func(a slog.Attr) bool {
		switch a.Key {
		case "Key":
			peer = a.Value.String()
		case "Error", "Err":
			errText = a.Value.String()
		}
		return true
	}
	for _, a := range h.attrs {
		collect(a)
	}
	r.Attrs(collect)
	if peer != "" && errText != "" && (r.Message == "failed to connect" || r.Level >= slog.LevelWarn) {
		h.last.set(peer, r.Message+": "+errText)
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
