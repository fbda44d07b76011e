package main

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"featcache/internal/redistest"
	"featcache/internal/resp"
)

// These tests use the clients that applications and operators will not rewrite, redis-py 4.3.4 and redis-cli 7.0,
// as they are used: each feature runs against a redis-server, and against featcache in front of a second, identical
// redis-server, and what the client returns or prints (values, types, exceptions and their messages) is compared.
// What legitimately differs between two servers (client ids, addresses, ages, latency figures, the order in which
// Redis lists a hash table) is normalized in the comparison, not left out of it; what featcache's documentation
// lists as a difference is checked to be that difference.

// clientsConfig caches every key (the default policy) and allows MONITOR; the rest of commands.deny is the default.
const clientsConfig = `
policies:
  - {name: default, prefix: "", hard_ttl: 1h}
commands:
  deny: [acl, bgrewriteaof, bgsave, "client|pause", "client|unpause", "config|resetstat", "config|rewrite",
         "config|set", debug, failover, module, psync, replconf, replicaof, save, shutdown, slaveof, sync]
`

// clientsSide is one of the two endpoints an application may be pointed at: Redis itself, or featcache. redis is
// the Redis behind it, where another application reaches the same data (Redis itself for the direct side).
type clientsSide struct {
	name  string
	addr  string
	redis *redistest.Server
}

func (s clientsSide) port() string { return s.addr[strings.LastIndexByte(s.addr, ':')+1:] }

// clientsSides starts a redis-server for the direct side, and featcache in front of another one.
func clientsSides(t *testing.T) (direct, through clientsSide) {
	t.Helper()
	r1, r2 := redistest.Start(t), redistest.Start(t)
	in := startBinary(t, r2, clientsConfig)
	return clientsSide{"redis", r1.Addr(), r1}, clientsSide{"featcache", in.addr, r2}
}

// bothSides runs f for each side at once and returns their results, direct's first. f must not end the test
// (t.Fatal): it runs on goroutines of its own.
func bothSides[T any](direct, through clientsSide, f func(s clientsSide) T) (T, T) {
	var a, b T
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); a = f(direct) }()
	go func() { defer wg.Done(); b = f(through) }()
	wg.Wait()
	return a, b
}

// TestOutsideClientsRedisPy runs testdata/outside_clients.py (from_url, decode_responses, pipelines with and
// without transactions and failing commands, WATCH transactions with a concurrent writer, locks, registered
// scripts after SCRIPT FLUSH, pub/sub with listen, run_in_thread and health checks, blocking pops, scan iterators,
// CLIENT commands, INFO parsing, introspection, a shared connection pool, CLIENT KILL from a third client, a busy
// Redis against socket_timeout, SCRIPT KILL) against Redis and through featcache, and compares every line. The one
// documented difference: the database of a redis://.../1 URL is refused (docs/commands.md, Database 0 only).
func TestOutsideClientsRedisPy(t *testing.T) {
	direct, through := clientsSides(t)
	run := func(s clientsSide) []string {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, "/usr/bin/python3", "testdata/outside_clients.py", s.port(),
			strconv.Itoa(s.redis.Port()))
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Errorf("%s: outside_clients.py: %v\n%s", s.name, err, stderr.String())
		}
		return strings.Split(strings.TrimRight(string(out), "\n"), "\n")
	}
	want, got := bothSides(direct, through, run)
	documented := map[string]string{
		"from_url db1 get": `'EXC ResponseError: featcache serves database 0 only (SELECT 1 is not supported)'`,
	}
	if len(want) == 0 || want[len(want)-1] != "done" {
		t.Fatalf("the run against Redis did not finish:\n%s", strings.Join(want, "\n"))
	}
	for i := 0; i < max(len(want), len(got)); i++ {
		var w, g string
		if i < len(want) {
			w = want[i]
		}
		if i < len(got) {
			g = got[i]
		}
		name, _, _ := strings.Cut(w, ": ")
		if d, ok := documented[name]; ok {
			w = name + ": " + d
		}
		if w != g {
			t.Errorf("line %d differs\nredis:     %s\nfeatcache: %s", i+1, w, g)
		}
	}
}

// spinScript runs until SCRIPT KILL stops it.
const spinScript = "while true do end"

// TestOutsideClientsScriptKill: an application's script loops on Redis, sent through featcache; the operator runs
// SCRIPT KILL (and, for a function, FUNCTION KILL; FUNCTION STATS while it runs) through featcache as through
// Redis. Redis answers each at once and the script's caller gets the kill's error. Before, featcache sent the kill on
// the shared connection the script itself was running for, where Redis reads nothing until the script ends: the
// kill, and every write behind it, waited forever.
func TestOutsideClientsScriptKill(t *testing.T) {
	direct, through := clientsSides(t)
	const lib = "#!lua name=spinlib\nredis.register_function{function_name='spin', " +
		"callback=function(keys, args) while true do end end, flags={'no-writes'}}"
	type replies struct{ load, stats, kill, caller, after []byte }
	run := func(s clientsSide, start []string, kill []string) (r replies) {
		s.redis.Do("CONFIG", "SET", "busy-reply-threshold", "100")
		t.Cleanup(func() {
			// Whatever happened, Redis is not left busy for what follows.
			s.redis.Do("SCRIPT", "KILL")
			s.redis.Do("FUNCTION", "KILL")
		})
		caller := redistest.Dial(t, s.addr)
		r.load = caller.Do("FUNCTION", "LOAD", "REPLACE", lib)
		if err := caller.Send(start...); err != nil {
			t.Fatal(err)
		}
		redistest.Eventually(t, 10*time.Second, s.name+": Redis busy with the script", func() bool {
			return bytes.HasPrefix(s.redis.Do("EXISTS", "probe"), []byte("-BUSY"))
		})
		op := redistest.Dial(t, s.addr)
		r.stats = clientsCall(op, "FUNCTION", "STATS")
		if i := bytes.Index(r.stats, []byte("duration_ms")); i > 0 {
			r.stats = r.stats[:i] // how long it has run differs
		}
		r.kill = clientsCall(op, kill...)
		var err error
		if r.caller, err = caller.ReadTimeout(10 * time.Second); err != nil {
			r.caller = []byte(err.Error())
		}
		r.after = op.Do("SET", "after", "1")
		return r
	}
	for _, c := range []struct{ start, kill []string }{
		{[]string{"EVAL", spinScript, "0"}, []string{"SCRIPT", "KILL"}},
		{[]string{"FCALL", "spin", "0"}, []string{"FUNCTION", "KILL"}},
	} {
		want, got := run(direct, c.start, c.kill), run(through, c.start, c.kill)
		if fmt.Sprintf("%q", want) != fmt.Sprintf("%q", got) {
			t.Errorf("%s, then %s:\nredis:     %q\nfeatcache: %q", c.start[0], strings.Join(c.kill, " "), want, got)
		}
		if !bytes.Equal(want.kill, []byte("+OK\r\n")) {
			t.Errorf("Redis answered %s with %q", strings.Join(c.kill, " "), want.kill)
		}
	}
}

// clientsCall sends one command on c and returns its reply, or the error that ended the wait for it (10 seconds
// at most) as text, so that a hang shows in the comparison rather than failing it elsewhere.
func clientsCall(c *redistest.Conn, args ...string) []byte {
	if err := c.Send(args...); err != nil {
		return []byte(err.Error())
	}
	f, err := c.ReadTimeout(10 * time.Second)
	if err != nil {
		return []byte(err.Error())
	}
	return f
}

// TestOutsideClientsKillClosesBeforeReply: CLIENT KILL from a third client, then the victim's next command. Redis
// closes the victim's connection before it answers the kill, so a client library that checks a pooled
// connection before using it (redis-py does: a readable socket is dialed again) always sees it closed and
// reconnects. featcache answered first and closed the victim a moment later: now and then redis-py sent the
// victim's next command on the dying connection and raised ConnectionError where against Redis it never does.
func TestOutsideClientsKillClosesBeforeReply(t *testing.T) {
	direct, through := clientsSides(t)
	const rounds = 30
	run := func(s clientsSide) (open []string) {
		for i := 0; i < rounds; i++ {
			for _, form := range []string{"id", "addr", "old", "type"} {
				// A few idle clients beside the victim, as a connection pool has.
				var idle []*redistest.Conn
				for range 3 {
					c := redistest.Dial(t, s.addr)
					c.Do("PING")
					idle = append(idle, c)
				}
				victim := redistest.Dial(t, s.addr)
				id := string(bytes.TrimSpace(victim.Do("CLIENT", "ID")[1:]))
				addr := victim.NetConn().LocalAddr().String()
				killer := redistest.Dial(t, s.addr)
				var reply []byte
				switch form {
				case "id":
					reply = killer.Do("CLIENT", "KILL", "ID", id)
				case "addr":
					reply = killer.Do("CLIENT", "KILL", "ADDR", addr)
				case "old":
					reply = killer.Do("CLIENT", "KILL", addr)
				case "type":
					reply = killer.Do("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
				}
				if reply[0] == '-' || string(reply) == ":0\r\n" {
					t.Fatalf("%s: CLIENT KILL %s answered %q", s.name, form, reply)
				}
				if _, closed, _ := resp.Peek(victim.NetConn()); !closed {
					open = append(open, form)
				}
				for _, c := range append(idle, victim, killer) {
					c.Close()
				}
			}
		}
		return open
	}
	want, got := run(direct), run(through)
	if len(want) > 0 {
		t.Errorf("redis: the victim's connection was still open after the reply to CLIENT KILL (%s)", want)
	}
	if len(got) > 0 {
		t.Errorf("featcache: the victim's connection was still open after the reply to CLIENT KILL in %d of %d "+
			"kills (%s); Redis closes it first", len(got), rounds*4, got)
	}
}
