package benchkit

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
)

// SaveProfile writes what a /debug/pprof endpoint serves at url to file.
func SaveProfile(c *http.Client, url, file string) error {
	resp, err := c.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	return os.WriteFile(file, body, 0o644)
}

// PprofTop is `go tool pprof -top` of one sample index of a profile file
// (the n largest entries), without the file header.
func PprofTop(file, index string, n int) (string, error) {
	out, err := exec.Command("go", "tool", "pprof", "-sample_index="+index, "-top", fmt.Sprintf("-nodecount=%d", n), file).Output()
	if err != nil {
		return "", fmt.Errorf("go tool pprof -sample_index=%s -top: %w", index, err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	for i, l := range lines {
		if strings.HasPrefix(l, "Showing nodes") {
			return strings.Join(lines[i:], "\n"), nil
		}
	}
	return string(out), nil
}
