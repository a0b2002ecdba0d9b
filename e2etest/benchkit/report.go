// Package benchkit is what the lab's bench commands share: a report of
// figures printed as a table and as `bench: NAME VALUE UNIT` lines (what
// tools read), and small helpers for measuring.
package benchkit

import (
	"context"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"
)

// Figure is one measured value, or a skipped one (Skipped, How says why).
type Figure struct {
	Name    string
	Value   float64
	Unit    string
	How     string
	Skipped bool
}

// Report collects a bench's figures. Each is also logged to stderr with
// Prefix as it comes.
type Report struct {
	Prefix  string // "dpbench"
	Title   string // the table's first column header
	notes   []string
	figures []Figure
}

// Note is a line about the setup, printed before the figures.
func (r *Report) Note(s string) {
	fmt.Fprintf(os.Stderr, "%s: %s\n", r.Prefix, s)
	r.notes = append(r.notes, s)
}

func (r *Report) Add(name string, value float64, unit, how string) {
	fmt.Fprintf(os.Stderr, "%s: %s = %s %s (%s)\n", r.Prefix, name, Trim(value), unit, how)
	r.figures = append(r.figures, Figure{Name: name, Value: value, Unit: unit, How: how})
}

// Skip says why a figure was not measured.
func (r *Report) Skip(name, why string) {
	fmt.Fprintf(os.Stderr, "%s: %s skipped: %s\n", r.Prefix, name, why)
	r.figures = append(r.figures, Figure{Name: name, How: why, Skipped: true})
}

// Value is the measured figure called name.
func (r *Report) Value(name string) (float64, bool) {
	for _, f := range r.figures {
		if f.Name == name && !f.Skipped {
			return f.Value, true
		}
	}
	return 0, false
}

// Print writes the notes, the table and the bench lines to w.
func (r *Report) Print(w io.Writer) {
	if len(r.figures) == 0 {
		return
	}
	width := len(r.Title)
	for _, f := range r.figures {
		width = max(width, len(f.Name))
	}
	row := func(a, b, c, d string) { fmt.Fprintf(w, "%-*s %12s  %-8s %s\n", width, a, b, c, d) }
	fmt.Fprintln(w)
	for _, n := range r.notes {
		fmt.Fprintln(w, "setup:", n)
	}
	row(r.Title, "value", "unit", "how")
	for _, f := range r.figures {
		if f.Skipped {
			row(f.Name, "-", "", "skipped: "+f.How)
			continue
		}
		row(f.Name, Trim(f.Value), f.Unit, f.How)
	}
	fmt.Fprintln(w)
	for _, f := range r.figures {
		if f.Skipped {
			// Not a bench line: tools read those as NAME VALUE UNIT.
			fmt.Fprintf(w, "skip: %s: %s\n", f.Name, f.How)
			continue
		}
		fmt.Fprintf(w, "bench: %s %s %s\n", f.Name, Trim(f.Value), f.Unit)
	}
}

// Trim formats v with at most 3 decimals and no trailing zeros.
func Trim(v float64) string {
	s := fmt.Sprintf("%.3f", v)
	return strings.TrimRight(strings.TrimRight(s, "0"), ".")
}

// Median of v; 0 for none.
func Median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// WaitFor polls cond every interval until it holds, timeout passes or ctx
// ends.
func WaitFor(ctx context.Context, timeout, every time.Duration, cond func() bool) error {
	for deadline := time.Now().Add(timeout); ; time.Sleep(every) {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if cond() {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %s", timeout)
		}
	}
}
