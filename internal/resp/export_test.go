package resp

import (
	"io"
	"testing"
)

// The tests that compare this package with a real redis-server (redis_test.go) are in package resp_test, because
// internal/redistest, which starts the server, imports this package. These give them the Reader's test helpers.

// Collect reads every command from rd as readerCollect does, with its checks on the Reader, and returns each
// command printed.
func Collect(tb testing.TB, rd io.Reader, lim Limits) ([]string, error) {
	tb.Helper()
	cmds, err := readerCollect(tb, rd, lim)
	out := make([]string, len(cmds))
	for i, c := range cmds {
		out[i] = c.String()
	}
	return out, err
}

var (
	Enc        = enc
	TrimForLog = trimForLog
)
