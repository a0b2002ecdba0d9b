package membership

import (
	"bytes"

	"github.com/go-logr/logr"
)

// logWriter carries memberlist's log lines ("[LEVEL] memberlist: message")
// to logr: ERR as errors, WARN at V(0), INFO at V(1), DEBUG (every failed
// probe) at V(2).
type logWriter struct{ log logr.Logger }

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
	if level < 0 {
		w.log.Error(nil, msg)
	} else {
		w.log.V(level).Info(msg)
	}
	return len(p), nil
}
