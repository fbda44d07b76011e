package upstream

import (
	"context"
	"log/slog"
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

func startTracker(t *testing.T, ev *trackEvents, addr string, prefixes ...string) *Tracker {
	tr := StartTracker(ev.options(addr, prefixes...))
	t.Cleanup(tr.Close)
	redistest.Eventually(t, 5*time.Second, "tracking established", tr.Up)
	return tr
}

func TestTrackerInvalidatesWritesUnderPrefixes(t *testing.T) {
	srv := redistest.Start(t)
	ev := &trackEvents{}
	tr := startTracker(t, ev, srv.Addr(), "profile:", "cart:")
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
	ev := &trackEvents{}
	tr := startTracker(t, ev, srv.Addr())
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
	ev := &trackEvents{}
	startTracker(t, ev, srv.Addr())
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
	ev := &trackEvents{}
	startTracker(t, ev, srv.Addr())
	srv.Pause()
	defer srv.Resume()
	redistest.Eventually(t, 10*time.Second, "hung server reported as lost", func() bool {
		_, _, _, losts := ev.snapshot()
		return losts >= 1
	})
}
