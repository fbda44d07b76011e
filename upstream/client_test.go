package upstream

import (
	"context"
	"log/slog"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"featcache/internal/redistest"
)

// recorder is an Invalidator that records what tracking did to it.
type recorder struct {
	mu      sync.Mutex
	keys    []string
	flushes int
	trust   []bool // every SetTrusted call, in order
}

func (r *recorder) Invalidate(keys ...[]byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, k := range keys {
		r.keys = append(r.keys, string(k))
	}
}

func (r *recorder) Flush() { r.mu.Lock(); r.flushes++; r.mu.Unlock() }

func (r *recorder) SetTrusted(t bool) { r.mu.Lock(); r.trust = append(r.trust, t); r.mu.Unlock() }

func (r *recorder) invalidated(key string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Contains(r.keys, key)
}

func (r *recorder) trusted() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.trust) > 0 && r.trust[len(r.trust)-1]
}

func newTestClient(t *testing.T, addr string, prefixes ...string) (*Client, *recorder) {
	t.Helper()
	return newLoggingClient(t, addr, slog.New(slog.DiscardHandler), prefixes...)
}

// newLoggingClient is newTestClient with the client's log going to log.
func newLoggingClient(t *testing.T, addr string, log *slog.Logger, prefixes ...string) (*Client, *recorder) {
	t.Helper()
	rec := &recorder{}
	c, err := New(Options{
		Addresses: []string{addr}, Tracking: true, Prefixes: prefixes, Cache: rec,
		Timeout: 300 * time.Millisecond, HealthInterval: 50 * time.Millisecond,
		Logger: log,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	redistest.Eventually(t, 5*time.Second, "tracking established", func() bool { _, up := c.Tracking(); return up })
	return c, rec
}

// TestClientHealth: Healthy follows the upstream through a hang (SIGSTOP) and a restart, and Reached stays true;
// each change is logged once, "upstream: down" with why and "upstream: up".
func TestClientHealth(t *testing.T) {
	srv := redistest.Start(t)
	var logs redistest.LogBuffer
	c, _ := newLoggingClient(t, srv.Addr(), slog.New(slog.NewTextHandler(&logs, nil)))
	redistest.Eventually(t, 5*time.Second, "healthy and reached", func() bool { return c.Healthy() && c.Reached() })
	up := regexp.MustCompile(`level=INFO msg="upstream: up" addr=` + regexp.QuoteMeta(srv.Addr()) + `\n`)
	// The failure is the hung server's: a round trip or a connection set-up without a reply.
	down := regexp.MustCompile(`level=WARN msg="upstream: down" addr=` + regexp.QuoteMeta(srv.Addr()) + ` err="[^"\n]*no reply within timeout"\n`)
	logged := func(line *regexp.Regexp, n int) func() bool {
		return func() bool { return len(line.FindAllString(logs.String(), -1)) == n }
	}
	redistest.Eventually(t, 5*time.Second, "up logged", logged(up, 1))

	srv.Pause()
	redistest.Eventually(t, 5*time.Second, "unhealthy while Redis hangs", func() bool { return !c.Healthy() })
	if !c.Reached() {
		t.Fatal("Reached turned false")
	}
	redistest.Eventually(t, 5*time.Second, "down logged while Redis hangs", logged(down, 1))
	srv.Resume()
	redistest.Eventually(t, 5*time.Second, "healthy after Redis resumes", c.Healthy)
	redistest.Eventually(t, 5*time.Second, "up logged after Redis resumes", logged(up, 2))
	if n := strings.Count(logs.String(), `msg="upstream: down"`); n != 1 {
		t.Fatalf("%d down lines for one hang; want 1:\n%s", n, logs.String())
	}

	srv.Kill()
	redistest.Eventually(t, 5*time.Second, "unhealthy while Redis is down", func() bool { return !c.Healthy() })
	srv.Restart()
	redistest.Eventually(t, 5*time.Second, "healthy after Redis restarts", c.Healthy)
}

// TestClientHealthBusy: a server that answers PING with an error (here BUSY, while a long script runs) is down.
func TestClientHealthBusy(t *testing.T) {
	srv := redistest.Start(t, "--busy-reply-threshold", "10")
	c, _ := newTestClient(t, srv.Addr())
	redistest.Eventually(t, 5*time.Second, "healthy", c.Healthy)
	script := redistest.Dial(t, srv.Addr())
	if err := script.Send("EVAL", "local t = redis.call('TIME') while true do local n = redis.call('TIME') if n[1] - t[1] > 1 then break end end return 1", "0"); err != nil {
		t.Fatal(err)
	}
	redistest.Eventually(t, 5*time.Second, "unhealthy while Redis answers BUSY", func() bool { return !c.Healthy() })
	if _, err := script.ReadTimeout(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	redistest.Eventually(t, 5*time.Second, "healthy once the script ends", c.Healthy)
}

// TestClientSetPrefixes: switching the BCAST prefixes, to a disjoint, an overlapping and a narrower set, never
// leaves a tracked prefix unannounced and never flips the trust of the local tier.
func TestClientSetPrefixes(t *testing.T) {
	srv := redistest.Start(t)
	c, rec := newTestClient(t, srv.Addr(), "a:")
	ctx := context.Background()
	write := func(key string) {
		t.Helper()
		srv.Do("SET", key, "v")
		if err := c.Barrier(ctx); err != nil {
			t.Fatal(err)
		}
	}
	write("b:0")
	if rec.invalidated("b:0") {
		t.Fatal("b:0 invalidated before b: was tracked")
	}
	trustCalls := func() int { rec.mu.Lock(); defer rec.mu.Unlock(); return len(rec.trust) }
	before := trustCalls()

	steps := []struct {
		prefixes    []string
		tracked     []string
		notTracked  []string
		wantPrefix  []string
		description string
	}{
		{[]string{"b:", "a:"}, []string{"a:1", "b:1"}, []string{"c:1"}, []string{"a:", "b:"}, "added a disjoint prefix"},
		{[]string{""}, []string{"a:2", "b:2", "c:2"}, nil, []string{""}, "an overlapping prefix (every key)"},
		{[]string{"b:"}, []string{"b:3"}, []string{"a:3"}, []string{"b:"}, "narrowed"},
	}
	for _, st := range steps {
		if err := c.SetPrefixes(ctx, st.prefixes); err != nil {
			t.Fatalf("%s: %v", st.description, err)
		}
		if got := c.Prefixes(); !slices.Equal(got, st.wantPrefix) {
			t.Fatalf("%s: Prefixes() = %q; want %q", st.description, got, st.wantPrefix)
		}
		for _, k := range st.tracked {
			write(k)
			if !rec.invalidated(k) {
				t.Errorf("%s: a write of %s was not announced", st.description, k)
			}
		}
		for _, k := range st.notTracked {
			write(k)
			if rec.invalidated(k) {
				t.Errorf("%s: a write of %s was announced", st.description, k)
			}
		}
	}
	rec.mu.Lock()
	calls := append([]bool(nil), rec.trust[before:]...)
	rec.mu.Unlock()
	for _, tr := range calls {
		if !tr {
			t.Fatalf("the local tier was made untrusted during a prefix switch: SetTrusted calls %v", calls)
		}
	}
	if clients := string(srv.Do("CLIENT", "LIST", "TYPE", "normal")); countSubstr(clients, "flags=t") != 1 {
		t.Fatalf("want one tracking connection after the switches, got:\n%s", clients)
	}
}

// TestClientSetPrefixesWhileDown: with Redis down the new session replaces the old one at once, and tracking with
// the new prefixes comes up with Redis.
func TestClientSetPrefixesWhileDown(t *testing.T) {
	srv := redistest.Start(t)
	c, rec := newTestClient(t, srv.Addr(), "a:")
	srv.Kill()
	redistest.Eventually(t, 5*time.Second, "tracking down", func() bool { _, up := c.Tracking(); return !up })
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := c.SetPrefixes(ctx, []string{"b:"}); err != nil {
		t.Fatalf("SetPrefixes while Redis is down: %v", err)
	}
	if rec.trusted() {
		t.Fatal("trusted while tracking is down")
	}
	srv.Restart()
	redistest.Eventually(t, 10*time.Second, "tracking back, trusted", func() bool { _, up := c.Tracking(); return up && rec.trusted() })
	srv.Do("SET", "b:1", "v")
	if err := c.Barrier(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !rec.invalidated("b:1") {
		t.Fatal("a write under the new prefix was not announced")
	}
}

func countSubstr(s, sub string) int {
	n := 0
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			n++
		}
	}
	return n
}
