package proxy

import (
	"strings"
	"testing"
	"time"

	"featcache/internal/redistest"
)

// TestMonitor: with MONITOR allowed (commands.deny: []), it runs on a dedicated connection of its own and streams
// what reaches Redis, from every client; the shared connections are untouched, and other clients' writes through
// them still work; RESET ends the stream.
func TestMonitor(t *testing.T) {
	p := startProxy(t, "commands: {deny: []}\n"+defaultTestConfig)
	rc := redistest.Dial(t, p.redis.Addr())
	warmShared(t, p)
	before := sharedConnections(t, rc)

	mon := p.dial()
	expectDo(t, mon, "+OK\r\n", "MONITOR")
	other := p.dial()
	expectDo(t, other, "+OK\r\n", "SET", "mon:k", "v1")
	expectDo(t, other, "$2\r\nv1\r\n", "GET", "mon:k")
	expectDo(t, other, "$2\r\nv1\r\n", "GET", "mon:k") // a cache hit: not in the stream
	expectDo(t, rc, ":1\r\n", "INCR", "mon:direct")    // another client of Redis: in the stream
	var stream []string
	redistest.Eventually(t, 5*time.Second, "the stream shows the SET and the INCR", func() bool {
		f, err := mon.ReadTimeout(100 * time.Millisecond)
		if err == nil {
			stream = append(stream, string(f))
		}
		all := strings.Join(stream, "")
		return strings.Contains(all, `"SET" "mon:k" "v1"`) && strings.Contains(all, `"INCR" "mon:direct"`)
	})
	for _, f := range stream {
		if !strings.HasPrefix(f, "+") {
			t.Errorf("MONITOR stream frame %q: want a status line", f)
		}
	}
	// featcache's own commands are answered by featcache while monitoring; the others by Redis, as for any
	// client in MONITOR.
	writeRaw(t, mon, encodePipeline([]string{"CLIENT", "INFO"}))
	redistest.Eventually(t, 5*time.Second, "CLIENT INFO of the monitoring client", func() bool {
		f, err := mon.ReadTimeout(100 * time.Millisecond)
		return err == nil && strings.HasPrefix(string(f), "$") && strings.Contains(string(f), " flags=O ")
	})
	// Other clients' SET and GET through the shared connections work while the MONITOR runs.
	for i := 0; i < 8; i++ {
		expectDo(t, other, "+OK\r\n", "SET", "mon:w", "x")
		expectDo(t, other, ":1\r\n", "EXISTS", "mon:w")
	}
	after := sharedConnections(t, rc)
	for id, state := range before {
		if after[id] != state {
			t.Errorf("featcache's upstream connection %s: %q, then %q while a client monitors", id, state, after[id])
		}
	}
	// RESET ends the stream: +RESET, then ordinary replies.
	writeRaw(t, mon, encodePipeline([]string{"RESET"}))
	redistest.Eventually(t, 5*time.Second, "+RESET", func() bool {
		f, err := mon.ReadTimeout(100 * time.Millisecond)
		return err == nil && string(f) == "+RESET\r\n"
	})
	expectDo(t, other, "+OK\r\n", "SET", "mon:after", "1")
	expectDo(t, mon, "$1\r\n1\r\n", "GET", "mon:after")
	redistest.Eventually(t, 5*time.Second, "the monitoring connection is closed in Redis", func() bool {
		return !strings.Contains(string(rc.Do("CLIENT", "LIST")), " flags=O ")
	})
}
