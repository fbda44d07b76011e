package main

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"

	"featcache/internal/redistest"
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
