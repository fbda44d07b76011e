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
	monitorUntil(t, mon, "the stream shows the SET and the INCR", func(f string) bool {
		stream = append(stream, f)
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
	monitorUntil(t, mon, "CLIENT INFO of the monitoring client", func(f string) bool {
		return strings.HasPrefix(f, "$") && strings.Contains(f, " flags=O ")
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
	monitorUntil(t, mon, "+RESET", func(f string) bool {
		return f == "+RESET\r\n"
	})
	expectDo(t, other, "+OK\r\n", "SET", "mon:after", "1")
	expectDo(t, mon, "$1\r\n1\r\n", "GET", "mon:after")
	redistest.Eventually(t, 5*time.Second, "the monitoring connection is closed in Redis", func() bool {
		return !strings.Contains(string(rc.Do("CLIENT", "LIST")), " flags=O ")
	})
}

// TestMonitorRESP3: a RESP3 client's MONITOR session answers as Redis's does for a RESP3 client: +OK, the stream as
// status lines (Redis 7.0 does not push them), featcache's own commands answered in RESP3 (CLIENT INFO verbatim).
func TestMonitorRESP3(t *testing.T) {
	p := startProxy(t, "commands: {deny: []}\n"+defaultTestConfig)
	mon := p.dial()
	if got := string(mon.Do("HELLO", "3")); !strings.HasPrefix(got, "%7\r\n") {
		t.Fatalf("HELLO 3: %q", got)
	}
	expectDo(t, mon, "+OK\r\n", "MONITOR")
	other := p.dial()
	expectDo(t, other, "+OK\r\n", "SET", "mon3:k", "v1")
	monitorUntil(t, mon, "the stream shows the SET", func(f string) bool {
		return strings.HasPrefix(f, "+") && strings.Contains(f, `"SET" "mon3:k" "v1"`)
	})
	writeRaw(t, mon, encodePipeline([]string{"CLIENT", "INFO"}))
	monitorUntil(t, mon, "CLIENT INFO of the monitoring client, verbatim", func(f string) bool {
		return strings.HasPrefix(f, "=") && strings.Contains(f, "\r\ntxt:id=") &&
			strings.Contains(f, " flags=O ") && strings.HasSuffix(f, " resp=3\n\r\n")
	})
	writeRaw(t, mon, encodePipeline([]string{"CLIENT", "LIST"}))
	monitorUntil(t, mon, "CLIENT LIST, verbatim, one line per client", func(f string) bool {
		return strings.HasPrefix(f, "=") && strings.Count(f, "\nid=") == 1 &&
			strings.Contains(f, " flags=O ") && strings.Contains(f, " resp=2\n")
	})
	writeRaw(t, mon, encodePipeline([]string{"RESET"}))
	monitorUntil(t, mon, "+RESET", func(f string) bool {
		return f == "+RESET\r\n"
	})
	expectDo(t, mon, "$-1\r\n", "GET", "mon3:none") // RESP2 again after RESET
}

// monitorUntil reads mon's frames until match accepts one, and fails the test if none does within 5s.
func monitorUntil(t *testing.T, mon *redistest.Conn, what string, match func(frame string) bool) {
	t.Helper()
	redistest.Eventually(t, 5*time.Second, what, func() bool {
		f, err := mon.ReadTimeout(100 * time.Millisecond)
		return err == nil && match(string(f))
	})
}
