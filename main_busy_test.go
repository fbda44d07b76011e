package main

import (
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"featcache/internal/redistest"
)

// TestBinarySurvivesBusyRedis is the process-level guard against a panic on any goroutine (one in a library's
// background reader cannot be recovered and ends the process): the featcache binary runs in front of a Redis with
// a low busy-reply-threshold through ten cycles of a Lua loop straight on Redis (then SCRIPT KILL) and ten of a
// looping function (FCALL, then FUNCTION KILL), with its tracking connection killed just before the loop in every
// other cycle, so that tracking is set up again while Redis answers -BUSY, under client traffic. The process is
// alive at the end, never restarted, and its output holds no panic; a serve_stale key is answered from memory in
// every cycle, and writes and invalidations work after each.
func TestBinarySurvivesBusyRedis(t *testing.T) {
	redis := redistest.Start(t, "--busy-reply-threshold", "100")
	redis.Do("SET", "s:1", "one")
	redis.Do("SET", "u:1", "uncached")
	if got := string(redis.Do("FUNCTION", "LOAD", "#!lua name=busylib\nredis.register_function('busy', function() while true do end end)")); got != "$7\r\nbusylib\r\n" {
		t.Fatalf("FUNCTION LOAD: %q", got)
	}
	in := startBinary(t, redis, `
shutdown_delay: 0s
upstream: {timeout: 300ms}
policies:
  - {name: stale, prefix: "s:", soft_ttl: 1h, hard_ttl: 1h, jitter: 0, on_upstream_error: serve_stale, max_stale: 1h}
`)
	pid := in.cmd.Process.Pid
	c := redistest.Dial(t, in.addr)
	if got := string(c.Do("GET", "s:1")); got != "$3\r\none\r\n" {
		t.Fatalf("GET s:1: %q", got)
	}
	storedFresh(t, c, "s:1")

	// Client traffic through featcache for the whole run.
	var served, duringBusy atomic.Int64
	var busy atomic.Bool
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := 0; i < 3; i++ {
		tc := redistest.Dial(t, in.addr)
		wg.Add(1)
		go func() {
			defer wg.Done()
			cmds := [][]string{{"GET", "s:1"}, {"SET", "u:t" + strconv.Itoa(i), "x"}, {"GET", "u:1"}, {"MGET", "s:1", "u:1"}}
			for k := 0; ; k++ {
				select {
				case <-stop:
					return
				default:
				}
				was := busy.Load()
				if err := tc.Send(cmds[k%len(cmds)]...); err != nil {
					return
				}
				if _, err := tc.ReadTimeout(10 * time.Second); err != nil {
					return // the checks below say why
				}
				served.Add(1)
				if was && busy.Load() {
					duringBusy.Add(1)
				}
			}
		}()
	}

	trackingID := func() string {
		for _, line := range strings.Split(string(redis.Do("CLIENT", "LIST")), "\n") {
			if strings.Contains(line, " name=featcache-tracking ") && strings.Contains(line, " flags=t") {
				id, _, _ := strings.Cut(strings.TrimPrefix(line, "id="), " ")
				return id
			}
		}
		return ""
	}
	const cycles = 10
	for cycle := 0; cycle < 2*cycles; cycle++ {
		loop, kill := []string{"EVAL", "while true do end", "0"}, []string{"SCRIPT", "KILL"}
		if cycle >= cycles {
			loop, kill = []string{"FCALL", "busy", "0"}, []string{"FUNCTION", "KILL"}
		}
		looper := redis.Dial()
		if cycle%2 == 1 {
			if id := trackingID(); id != "" {
				looper.Send("CLIENT", "KILL", "ID", id)
			}
		}
		looper.Send(loop...)
		redistest.Eventually(t, 10*time.Second, "Redis busy", func() bool {
			return strings.HasPrefix(string(redis.Do("GET", "x")), "-BUSY ")
		})
		busy.Store(true)
		before := duringBusy.Load()
		redistest.Eventually(t, 10*time.Second, "traffic served while Redis is busy", func() bool {
			return duringBusy.Load() >= before+20
		})
		start := time.Now()
		if got := string(c.Do("GET", "s:1")); got != "$3\r\none\r\n" {
			t.Errorf("cycle %d: GET s:1 while Redis is busy: %q; want the value from memory", cycle, got)
		}
		if took := time.Since(start); took > 2*time.Second {
			t.Errorf("cycle %d: GET s:1 while Redis is busy took %v", cycle, took)
		}
		busy.Store(false)
		redistest.Eventually(t, 10*time.Second, strings.Join(kill, " "), func() bool {
			return string(redis.Do(kill...)) == "+OK\r\n"
		})
		redistest.Eventually(t, 10*time.Second, "Redis free", func() bool { return string(redis.Do("PING")) == "+PONG\r\n" })
		v := "v" + strconv.Itoa(cycle)
		if got := string(c.Do("SET", "s:w", v)); got != "+OK\r\n" {
			t.Fatalf("cycle %d: SET through featcache: %q", cycle, got)
		}
		redis.Do("SET", "s:1", v)
		redistest.Eventually(t, 10*time.Second, "the direct write's invalidation applied", func() bool {
			return string(c.Do("GET", "s:1")) == "$"+strconv.Itoa(len(v))+"\r\n"+v+"\r\n"
		})
		redis.Do("SET", "s:1", "one")
		redistest.Eventually(t, 10*time.Second, "s:1 back", func() bool { return string(c.Do("GET", "s:1")) == "$3\r\none\r\n" })
		// Stored, not only answered: a fill that an invalidation overtook is served but not stored (and drops the
		// entry), and a key with no entry can only get Redis's BUSY in the next cycle.
		storedFresh(t, c, "s:1")
		select {
		case <-in.exited:
			t.Fatalf("cycle %d: featcache exited: %v\n%s", cycle, in.exitErr, in.log.String())
		default:
		}
	}
	close(stop)
	wg.Wait()

	select {
	case <-in.exited:
		t.Fatalf("featcache exited: %v", in.exitErr)
	default:
	}
	if in.cmd.Process.Pid != pid || in.status("/healthz") != http.StatusOK {
		t.Fatal("featcache is not the process started, alive")
	}
	if out := in.log.String(); strings.Contains(out, "panic") {
		t.Fatalf("the output holds a panic:\n%s", out)
	}
	t.Logf("%d script and %d function cycles, tracking killed before every other one; requests served: %d, "+
		"%d of them while Redis was busy; restarts: 0", cycles, cycles, served.Load(), duringBusy.Load())
}

// storedFresh waits until featcache holds key's value fresh in memory, reading it until a read stores it.
func storedFresh(t *testing.T, c *redistest.Conn, key string) {
	t.Helper()
	redistest.Eventually(t, 10*time.Second, key+" stored", func() bool {
		c.Do("GET", key)
		return strings.Contains(string(c.Do("CACHE", "EXPLAIN", key)), "state:fresh")
	})
}
