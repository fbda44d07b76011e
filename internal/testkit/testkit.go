// Package testkit holds the pieces featcache's tests share that are not about starting Redis (that is
// internal/redistest): reading featcache's admin HTTP endpoints, writing configuration and password files,
// argument lists in the forms the packages take, and the background loops of load tests.
package testkit

import (
	"io"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// HTTPTimeout bounds one Get: long enough for a heap profile of a loaded process, short enough that a hung
// endpoint fails the test rather than the test binary's timeout.
const HTTPTimeout = 30 * time.Second

// Get fetches url and returns the status code and the whole body; a transport error fails the test.
func Get(tb testing.TB, url string) (int, string) {
	tb.Helper()
	c := http.Client{Timeout: HTTPTimeout}
	resp, err := c.Get(url)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatal(err)
	}
	return resp.StatusCode, string(body)
}

// WriteFile writes text to the file name in dir (mode 0600: it may hold a password) and returns its path; an error
// fails the test.
func WriteFile(tb testing.TB, dir, name, text string) string {
	tb.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		tb.Fatal(err)
	}
	return path
}

// Args returns args as the byte slices a command line is held in ([][]byte), for tests of code that takes one.
func Args(args ...string) [][]byte {
	out := make([][]byte, len(args))
	for i, a := range args {
		out[i] = []byte(a)
	}
	return out
}

// Line is lines[i], or "" past the end: for comparing two transcripts line by line when one is shorter.
func Line(lines []string, i int) string {
	if i < len(lines) {
		return lines[i]
	}
	return ""
}
