package upstream

import (
	"context"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"featcache/internal/redistest"
)

// trackEvents records what a Tracker reports.
type trackEvents struct {
	mu      sync.Mutex
	keys    []string
	flushes int
	ups     []string
	losts   int
}

func (e *trackEvents) options(addr string, prefixes ...string) TrackerOptions {
	return TrackerOptions{
		Addr:     addr,
		Prefixes: prefixes,
		Timeout:  500 * time.Millisecond,
		Logger:   slog.New(slog.DiscardHandler),
		OnInvalidate: func(keys [][]byte) {
			e.mu.Lock()
			for _, k := range keys {
				e.keys = append(e.keys, string(k))
			}
			e.mu.Unlock()
		},
		OnFlush: func() { e.mu.Lock(); e.flushes++; e.mu.Unlock() },
		OnUp:    func(runID string) { e.mu.Lock(); e.ups = append(e.ups, runID); e.mu.Unlock() },
		OnLost:  func(error) { e.mu.Lock(); e.losts++; e.mu.Unlock() },
	}
}

func (e *trackEvents) snapshot() (keys []string, flushes, ups, losts int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]string(nil), e.keys...), e.flushes, len(e.ups), e.losts
}

// startTracker starts a Tracker of the server at addr for prefixes, with its events recorded, and waits until
// tracking is established.
func startTracker(t *testing.T, addr string, prefixes ...string) (*Tracker, *trackEvents) {
	ev := &trackEvents{}
	tr := StartTracker(ev.options(addr, prefixes...))
	t.Cleanup(tr.Close)
	redistest.Eventually(t, 5*time.Second, "tracking established", tr.Up)
	return tr, ev
}

func TestTrackerInvalidatesWritesUnderPrefixes(t *testing.T) {
	srv := redistest.Start(t)
	tr, ev := startTracker(t, srv.Addr(), "profile:", "cart:")
	srv.Do("SET", "profile:1", "a")
	srv.Do("SET", "other:1", "b")
	srv.Do("DEL", "cart:9") // nothing deleted: no invalidation
	srv.Do("SET", "cart:9", "x")
	// After a write's reply, a barrier guarantees its invalidation was delivered.
	if err := tr.Barrier(context.Background()); err != nil {
		t.Fatal(err)
	}
	keys, flushes, _, _ := ev.snapshot()
	if got := strings.Join(keys, ","); got != "profile:1,cart:9" {
		t.Fatalf("invalidated %q; want profile:1,cart:9", got)
	}
	if flushes != 0 {
		t.Fatalf("flushes = %d; want 0", flushes)
	}
}

// TestTrackerTellsFlushFromLoss: FLUSHALL is a null push (OnFlush, the connection stays up); CLIENT KILL of the
// tracking connection is a loss (OnLost), followed by a new session (OnUp) with the same run_id.
func TestTrackerTellsFlushFromLoss(t *testing.T) {
	srv := redistest.Start(t)
	tr, ev := startTracker(t, srv.Addr())
	srv.Do("FLUSHALL")
	if err := tr.Barrier(context.Background()); err != nil {
		t.Fatal(err)
	}
	_, flushes, ups, losts := ev.snapshot()
	if flushes != 1 || losts != 0 || ups != 1 {
		t.Fatalf("after FLUSHALL: flushes=%d losts=%d ups=%d; want 1, 0, 1", flushes, losts, ups)
	}
	srv.Do("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
	redistest.Eventually(t, 5*time.Second, "loss reported and tracking re-established", func() bool {
		_, _, ups, losts := ev.snapshot()
		return losts == 1 && ups == 2 && tr.Up()
	})
	_, flushes, _, _ = ev.snapshot()
	if flushes != 1 {
		t.Fatalf("a lost connection was reported as a flush: flushes=%d", flushes)
	}
	ev.mu.Lock()
	same := ev.ups[0] == ev.ups[1] && ev.ups[0] != ""
	ev.mu.Unlock()
	if !same {
		t.Fatalf("run_id changed across CLIENT KILL: %q", ev.ups)
	}
}

func TestTrackerRestartChangesRunID(t *testing.T) {
	srv := redistest.Start(t)
	_, ev := startTracker(t, srv.Addr())
	srv.Restart()
	redistest.Eventually(t, 10*time.Second, "tracking back after restart", func() bool {
		_, _, ups, losts := ev.snapshot()
		return losts >= 1 && ups >= 2
	})
	ev.mu.Lock()
	defer ev.mu.Unlock()
	if ev.ups[0] == ev.ups[len(ev.ups)-1] {
		t.Fatalf("run_id did not change across a restart: %q", ev.ups)
	}
}

// TestTrackerDetectsHungServer: a SIGSTOPped server stops answering the health PING; the tracker reports the loss.
func TestTrackerDetectsHungServer(t *testing.T) {
	srv := redistest.Start(t)
	_, ev := startTracker(t, srv.Addr())
	srv.Pause()
	defer srv.Resume()
	redistest.Eventually(t, 10*time.Second, "hung server reported as lost", func() bool {
		_, _, _, losts := ev.snapshot()
		return losts >= 1
	})
}

// trackingClientID returns the CLIENT ID of the connection that has tracking on (flags t).
func trackingClientID(t *testing.T, srv *redistest.Server) string {
	t.Helper()
	for _, line := range strings.Split(string(srv.Do("CLIENT", "LIST")), "\n") {
		if strings.Contains(line, " name=featcache-tracking ") && strings.Contains(line, " flags=t") {
			id, _, _ := strings.Cut(strings.TrimPrefix(line, "id="), " ")
			return id
		}
	}
	t.Fatal("no tracking connection in CLIENT LIST")
	return ""
}

// TestTrackerSessionFailsWhileBusy: the tracking connection is killed and, in the same pipeline, a script starts
// that keeps Redis busy past busy-reply-threshold, so that the next sessions are set up while Redis answers
// -BUSY. rueidis v1.0.79 panics in its reader (pipe.go:676) when a dedicated connection with an invalidation hook
// is released then; the tracker closes it instead. Five cycles: the process lives, and after SCRIPT KILL tracking
// comes back and invalidations flow.
func TestTrackerSessionFailsWhileBusy(t *testing.T) {
	srv := redistest.Start(t, "--busy-reply-threshold", "50")
	tr, ev := startTracker(t, srv.Addr(), "k:")
	for cycle := 1; cycle <= 5; cycle++ {
		id := trackingClientID(t, srv)
		c := srv.Dial()
		if err := c.Send("CLIENT", "KILL", "ID", id); err != nil {
			t.Fatal(err)
		}
		c.Loop()
		redistest.Eventually(t, 5*time.Second, "the loss reported", func() bool {
			_, _, _, losts := ev.snapshot()
			return losts == cycle
		})
		redistest.Eventually(t, 5*time.Second, "Redis busy", func() bool {
			return strings.HasPrefix(string(srv.Do("GET", "x")), "-BUSY")
		})
		time.Sleep(300 * time.Millisecond) // the busy period: the tracker tries sessions meanwhile
		if tr.Up() {
			t.Fatalf("cycle %d: tracking reported up while Redis is busy", cycle)
		}
		redistest.Eventually(t, 5*time.Second, "SCRIPT KILL", func() bool {
			return string(srv.Do("SCRIPT", "KILL")) == "+OK\r\n"
		})
		redistest.Eventually(t, 5*time.Second, "tracking back", tr.Up)
		srv.Do("SET", "k:"+strconv.Itoa(cycle), "v")
		if err := tr.Barrier(context.Background()); err != nil {
			t.Fatalf("cycle %d: barrier: %v", cycle, err)
		}
		if keys, _, _, _ := ev.snapshot(); len(keys) == 0 || keys[len(keys)-1] != "k:"+strconv.Itoa(cycle) {
			t.Fatalf("cycle %d: invalidations %q; want k:%d last", cycle, keys, cycle)
		}
	}
}

// TestTrackerBarrierWhileBusy: while another client's script keeps Redis busy, the barrier's PING is answered
// -BUSY, after every push written before it: the barrier holds, and the session stays up.
func TestTrackerBarrierWhileBusy(t *testing.T) {
	srv := redistest.Start(t, "--busy-reply-threshold", "50")
	tr, ev := startTracker(t, srv.Addr(), "k:")
	srv.Do("SET", "k:1", "v")
	script := srv.Dial()
	script.Loop()
	redistest.Eventually(t, 5*time.Second, "Redis busy", func() bool {
		return strings.HasPrefix(string(srv.Do("GET", "x")), "-BUSY")
	})
	if err := tr.Barrier(context.Background()); err != nil {
		t.Fatalf("barrier while Redis is busy: %v", err)
	}
	if keys, _, _, _ := ev.snapshot(); strings.Join(keys, ",") != "k:1" {
		t.Fatalf("invalidations %q; want k:1", keys)
	}
	redistest.Eventually(t, 5*time.Second, "SCRIPT KILL", func() bool {
		return string(srv.Do("SCRIPT", "KILL")) == "+OK\r\n"
	})
	if _, _, ups, losts := ev.snapshot(); ups != 1 || losts != 0 || !tr.Up() {
		t.Fatalf("ups=%d losts=%d up=%v; want the session kept through the busy script", ups, losts, tr.Up())
	}
}

// TestTrackerDetectsSwapDB: Redis sends no invalidation for SWAPDB; the tracker's check sees its count move and
// reports a flush within a check interval (plus the check's round trip). A statistics reset (CONFIG RESETSTAT),
// which could hide one, flushes too; a SWAPDB while tracking is down is seen when the next session starts; and
// checks that see nothing new flush nothing.
func TestTrackerDetectsSwapDB(t *testing.T) {
	srv := redistest.Start(t)
	ev := &trackEvents{}
	opt := ev.options(srv.Addr(), "k:")
	const interval = 100 * time.Millisecond
	opt.CheckInterval = interval
	tr := StartTracker(opt)
	t.Cleanup(tr.Close)
	redistest.Eventually(t, 5*time.Second, "tracking established", tr.Up)
	flushes := func() int { _, f, _, _ := ev.snapshot(); return f }
	// checks counts the tracker's INFO calls: Redis's count less this function's own earlier calls (a call is
	// counted once it has run).
	own := 0
	checks := func() int {
		n := srv.Calls("info") - own
		own++
		return n
	}
	quiet := func(phase string) {
		t.Helper()
		before, n := flushes(), checks()
		redistest.Eventually(t, 5*time.Second, "three checks", func() bool { return checks() >= n+3 })
		if got := flushes(); got != before {
			t.Fatalf("%s: %d flushes without a SWAPDB", phase, got-before)
		}
	}
	quiet("steady")

	start := time.Now()
	srv.Do("SWAPDB", "0", "1")
	redistest.Eventually(t, 5*time.Second, "SWAPDB seen", func() bool { return flushes() == 1 })
	t.Logf("SWAPDB seen after %v (check interval %v)", time.Since(start), interval)
	quiet("after SWAPDB")

	srv.Do("CONFIG", "RESETSTAT")
	own = 0
	redistest.Eventually(t, 5*time.Second, "statistics reset seen", func() bool { return flushes() == 2 })
	quiet("after CONFIG RESETSTAT")

	// Killed and swapped in one pipeline: the swap happens while no session is up.
	c := srv.Dial()
	if err := c.Send("CLIENT", "KILL", "ID", trackingClientID(t, srv)); err != nil {
		t.Fatal(err)
	}
	if err := c.Send("SWAPDB", "0", "1"); err != nil {
		t.Fatal(err)
	}
	redistest.Eventually(t, 5*time.Second, "tracking back", func() bool { _, _, ups, _ := ev.snapshot(); return ups == 2 })
	if got := flushes(); got != 3 {
		t.Fatalf("flushes = %d after a SWAPDB while tracking was down; want 3", got)
	}
	quiet("after the new session")
}

// TestTrackerBackoffResets: the tracking connection is killed again and again (CLIENT KILL straight on Redis),
// with healthy periods of a few check intervals between: every time it is re-established at once, instead of
// after a wait that doubles up to a second with each loss.
func TestTrackerBackoffResets(t *testing.T) {
	srv := redistest.Start(t)
	ev := &trackEvents{}
	var mu sync.Mutex
	var ups []time.Time
	opt := ev.options(srv.Addr(), "k:")
	const interval = 100 * time.Millisecond
	opt.CheckInterval = interval
	onUp := opt.OnUp
	opt.OnUp = func(runID string) {
		mu.Lock()
		ups = append(ups, time.Now())
		mu.Unlock()
		onUp(runID)
	}
	tr := StartTracker(opt)
	t.Cleanup(tr.Close)
	redistest.Eventually(t, 5*time.Second, "tracking established", tr.Up)
	lastUp := func() (time.Time, int) {
		mu.Lock()
		defer mu.Unlock()
		return ups[len(ups)-1], len(ups)
	}
	var took []time.Duration
	for kill := 1; kill <= 8; kill++ {
		upAt, n := lastUp()
		redistest.Eventually(t, 5*time.Second, "a healthy period", func() bool {
			return time.Since(upAt) > (stableChecks+1)*interval
		})
		killed := time.Now()
		srv.Do("CLIENT", "KILL", "ID", trackingClientID(t, srv))
		redistest.Eventually(t, 5*time.Second, "tracking back", func() bool { _, m := lastUp(); return m == n+1 })
		upAt, _ = lastUp()
		took = append(took, upAt.Sub(killed))
	}
	t.Logf("re-established after each of %d kills: %v", len(took), took)
	for i, d := range took {
		if d > maxRedial/2 {
			t.Errorf("kill %d: re-established after %v; want at once, not after a backoff growing to %v", i+1, d, maxRedial)
		}
	}
}

// TestFailureLogRepeats: a failure of the tracking connection is logged at once, the same failure again only once
// per failureRepeat (with how often it came back meanwhile), and a different one at once.
func TestFailureLogRepeats(t *testing.T) {
	var f failureLog
	t0 := time.Unix(1000, 0)
	steps := []struct {
		msg     string
		at      time.Duration
		log     bool
		repeats int
	}{
		{"NOPERM info", 0, true, 0},
		{"NOPERM info", time.Second, false, 0},
		{"NOPERM info", 2 * time.Second, false, 0},
		{"NOPERM info", failureRepeat, true, 2},
		{"NOPERM info", failureRepeat + time.Second, false, 0},
		{"connection refused", failureRepeat + 2*time.Second, true, 0},
		{"NOPERM info", failureRepeat + 3*time.Second, true, 0},
	}
	for i, s := range steps {
		repeats, log := f.due(s.msg, t0.Add(s.at))
		if log != s.log || repeats != s.repeats {
			t.Errorf("step %d (%s at %v): logged %v with %d repeats; want %v with %d", i, s.msg, s.at, log, repeats, s.log, s.repeats)
		}
	}
}
