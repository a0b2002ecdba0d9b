package membership

import (
	"bytes"
	"strings"

	"github.com/go-logr/logr"
)

// logWriter carries memberlist's log lines ("[LEVEL] memberlist: message")
// to logr: ERR as errors, WARN at V(0), INFO at V(1), DEBUG (every failed
// probe) at V(2). A line reporting a packet or stream memberlist refused goes
// to refused instead, which counts it and logs at a bounded rate: anyone who
// can reach the gossip port can send garbage as fast as the link allows.
type logWriter struct {
	log     logr.Logger
	refused *refusals
	// suspected is told when a peer suspects this speaker and memberlist
	// refutes it; declaredDead when the peers declared it dead and
	// memberlist refutes that (either may be nil).
	suspected, declaredDead func()
}

func (w logWriter) Write(p []byte) (int, error) {
	line := bytes.TrimSpace(p)
	level := 2
	for _, l := range []struct {
		tag   string
		level int
	}{{"[ERR]", -1}, {"[WARN]", 0}, {"[INFO]", 1}, {"[DEBUG]", 2}} {
		if rest, ok := bytes.CutPrefix(line, []byte(l.tag)); ok {
			line, level = bytes.TrimSpace(rest), l.level
			break
		}
	}
	msg := string(bytes.TrimPrefix(line, []byte("memberlist: ")))
	if reason, ok := refusal(msg); ok && w.refused != nil {
		detail, from := sender(msg)
		w.refused.refuse(reason, from, detail)
		return len(p), nil
	}
	switch {
	case strings.HasPrefix(msg, "Refuting a suspect message") && w.suspected != nil:
		w.suspected()
	case strings.HasPrefix(msg, "Refuting a dead message") && w.declaredDead != nil:
		w.declaredDead()
	}
	if level < 0 {
		w.log.Error(nil, msg)
	} else {
		w.log.V(level).Info(msg)
	}
	return len(p), nil
}
