package main

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"featcache/internal/redistest"
)

// These tests drive the featcache binary from outside, as a demanding client and as the other applications of a
// shared Redis would: every command is sent straight to Redis and through featcache, and the reply bytes compared.
// featcache must stay up and exact: wait where Redis makes everyone wait, never fail where a direct client does not,
// never serve a value Redis no longer holds.

// hostilePolicies caches k: and leaves every other key uncached.
const hostilePolicies = `
shutdown_delay: 0s
policies:
  - {name: k, prefix: "k:", soft_ttl: 1h, hard_ttl: 1h, jitter: 0}
`

// hostileSideBySide sends each command to direct and to through, one at a time, and fails the test on the first
// pair of replies that differ.
func hostileSideBySide(t *testing.T, direct, through *redistest.Conn, cmds [][]string) {
	t.Helper()
	for _, cmd := range cmds {
		want, got := direct.Do(cmd...), through.Do(cmd...)
		if !bytes.Equal(got, want) {
			t.Errorf("%q: featcache answered %q; Redis answered %q", cmd, got, want)
		}
	}
}

// hostileBulk is v as a RESP bulk string.
func hostileBulk(v string) string { return "$" + strconv.Itoa(len(v)) + "\r\n" + v + "\r\n" }

// hostileAlive fails the test if the featcache process has exited or logged a panic.
func hostileAlive(t *testing.T, in *instance) {
	t.Helper()
	select {
	case <-in.exited:
		t.Fatalf("featcache exited: %v", in.exitErr)
	default:
	}
	if logs := in.log.String(); strings.Contains(logs, "panic") || strings.Contains(logs, "fatal error") {
		t.Fatalf("featcache logged a panic:\n%s", logs)
	}
}

// infoField reads one field of an INFO reply.
func infoField(info []byte, field string) string {
	for _, line := range strings.Split(string(info), "\r\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			return v
		}
	}
	return ""
}

// TestHostileMgetOnFullRedis: a Redis at maxmemory with noeviction (how a feature store that must not lose data is
// run) refuses writes with -OOM and still answers reads, MGET included. Inside MULTI it refuses every command, so an
// MGET that featcache answers from a transaction must not get -OOM where a direct MGET gets its values. What it reads
// then is not stored as one instant's: a key deleted straight on Redis (DEL is allowed when full) is not served
// afterwards.
func TestHostileMgetOnFullRedis(t *testing.T) {
	redis := redistest.Start(t)
	for _, k := range []string{"k:1", "k:2", "k:3", "u:1"} {
		redis.Do("SET", k, "v-"+k)
	}
	in := startBinary(t, redis, hostilePolicies)
	direct, through := redis.Dial(), redistest.Dial(t, in.addr)
	if got := string(through.Do("GET", "k:1")); got != "$5\r\nv-k:1\r\n" {
		t.Fatalf("GET k:1: %q", got)
	}
	if got := string(direct.Do("CONFIG", "SET", "maxmemory", "1")); got != "+OK\r\n" {
		t.Fatalf("CONFIG SET maxmemory: %q", got)
	}
	defer direct.Do("CONFIG", "SET", "maxmemory", "0")

	hostileSideBySide(t, direct, through, [][]string{
		{"MGET", "k:1", "k:2"},               // a hit and a miss
		{"MGET", "k:2", "k:3", "k:9"},        // misses, one of a missing key
		{"MGET", "k:1", "u:1", "k:2", "k:1"}, // cached and uncached keys, one twice
		{"MGET", "u:1", "u:2"},               // no key cached
		{"GET", "k:1"},
		{"GET", "k:3"},
		{"SET", "k:1", "new"}, // -OOM, verbatim
		{"MGET", "k:1", "k:2", "k:3"},
		{"HGETALL", "k:h"},
	})

	// The same for a RESP3 client (nulls as _).
	direct3, through3 := redis.Dial(), redistest.Dial(t, in.addr)
	direct3.Do("HELLO", "3")
	through3.Do("HELLO", "3")
	hostileSideBySide(t, direct3, through3, [][]string{{"MGET", "k:3", "k:9", "k:1"}, {"MGET", "k:2", "u:1"}})

	// Nothing the MGETs read while Redis was full outlives a delete made straight on Redis.
	if got := string(direct.Do("DEL", "k:2", "k:3")); got != ":2\r\n" {
		t.Fatalf("DEL while full: %q", got)
	}
	redistest.Eventually(t, 10*time.Second, "the deletes seen through featcache", func() bool {
		return string(through.Do("MGET", "k:2", "k:3", "k:1")) == "*3\r\n$-1\r\n$-1\r\n$5\r\nv-k:1\r\n"
	})
	hostileSideBySide(t, direct, through, [][]string{{"GET", "k:2"}, {"GET", "k:3"}, {"MGET", "k:3", "k:2", "k:1"}})
	hostileAlive(t, in)
}

// TestHostileNoReplicasSideBySide: min-replicas-to-write set by another client refuses writes (NOREPLICAS) and keeps
// reads, transactions of reads included, as featcache must.
func TestHostileNoReplicasSideBySide(t *testing.T) {
	redis := redistest.Start(t)
	redis.Do("SET", "k:1", "v1")
	redis.Do("SET", "u:1", "u1")
	in := startBinary(t, redis, hostilePolicies)
	direct, through := redis.Dial(), redistest.Dial(t, in.addr)
	through.Do("GET", "k:1")
	direct.Do("CONFIG", "SET", "min-replicas-to-write", "1")
	defer direct.Do("CONFIG", "SET", "min-replicas-to-write", "0")
	hostileSideBySide(t, direct, through, [][]string{
		{"GET", "k:1"}, {"GET", "u:1"}, {"MGET", "k:1", "u:1", "k:2"}, {"SET", "k:1", "x"}, {"DEL", "u:1"},
		{"EVAL", "redis.call('SET','u:1','y') return 1", "0"}, {"EVAL", "return redis.call('GET','u:1')", "0"},
		{"MULTI"}, {"GET", "u:1"}, {"SET", "u:1", "z"}, {"EXEC"},
		{"MULTI"}, {"GET", "u:1"}, {"GET", "k:1"}, {"EXEC"},
	})
	hostileAlive(t, in)
}

// TestHostileBusyScripts: scripts and functions another application runs straight on Redis. While one loops,
// featcache's clients get Redis's own -BUSY for what must reach Redis, and SCRIPT KILL and FUNCTION KILL sent through
// featcache end the loop as they do sent straight. A script that wrote cannot be killed (UNKILLABLE, verbatim); the
// other application then stops Redis with SHUTDOWN NOSAVE, Redis comes back empty, and featcache never again serves
// the value it held before.
func TestHostileBusyScripts(t *testing.T) {
	redis := redistest.Start(t, "--busy-reply-threshold", "100")
	redis.Do("SET", "k:1", "v1")
	redis.Do("SET", "u:1", "u1")
	if got := string(redis.Do("FUNCTION", "LOAD", "#!lua name=hostile\nredis.register_function{function_name='spin', callback=function() while true do end end, flags={'no-writes'}}")); got != "$7\r\nhostile\r\n" {
		t.Fatalf("FUNCTION LOAD: %q", got)
	}
	in := startBinary(t, redis, hostilePolicies)
	through := redistest.Dial(t, in.addr)
	if got := string(through.Do("GET", "k:1")); got != "$2\r\nv1\r\n" {
		t.Fatalf("GET k:1: %q", got)
	}

	// busy starts loop on a connection of its own straight to Redis, waits until Redis answers -BUSY, runs cmds on
	// target and returns the replies, the last command's being the kill; then the loop's own reply.
	busy := func(target *redistest.Conn, loop []string, cmds [][]string) []string {
		looper := redis.Dial()
		if err := looper.Send(loop...); err != nil {
			t.Fatal(err)
		}
		probe := redis.Dial()
		redistest.Eventually(t, 10*time.Second, "Redis busy", func() bool {
			return bytes.HasPrefix(probe.Do("GET", "u:1"), []byte("-BUSY"))
		})
		var got []string
		for _, cmd := range cmds {
			got = append(got, string(target.Do(cmd...)))
		}
		reply, err := looper.ReadTimeout(10 * time.Second)
		if err != nil {
			t.Fatalf("%q: the loop's reply: %v", loop, err)
		}
		return append(got, string(reply))
	}
	for _, c := range []struct {
		loop []string
		kill string
	}{
		{[]string{"EVAL", "while true do end", "0"}, "SCRIPT"},
		{[]string{"FCALL", "spin", "0"}, "FUNCTION"},
	} {
		cmds := [][]string{{"GET", "u:1"}, {"SET", "u:2", "x"}, {"EVAL", "return 1", "0"}, {"MGET", "u:1", "k:1"},
			{"MULTI"}, {"GET", "u:1"}, {"EXEC"}, {"FUNCTION", "STATS"}, {c.kill, "KILL"}}
		want := busy(redis.Dial(), c.loop, cmds)
		got := busy(through, c.loop, cmds)
		for i := range want {
			// FUNCTION STATS reports how long the function has run: compare its shape only.
			if i == 7 && strings.HasPrefix(want[i], "*4\r\n$14\r\nrunning_script\r\n") && strings.HasPrefix(got[i], "*4\r\n$14\r\nrunning_script\r\n") {
				continue
			}
			if got[i] != want[i] {
				what := "the loop's reply"
				if i < len(cmds) {
					what = strings.Join(cmds[i], " ")
				}
				t.Errorf("%q, %s: featcache answered %q; Redis answered %q", c.loop, what, got[i], want[i])
			}
		}
		hostileSideBySide(t, redis.Dial(), through, [][]string{{c.kill, "KILL"}, {"GET", "u:1"}})
	}

	// A script that wrote before looping cannot be killed.
	looper := redis.Dial()
	looper.Send("EVAL", "redis.call('SET', KEYS[1], 'v2') while true do end", "1", "k:1")
	probe := redis.Dial()
	redistest.Eventually(t, 10*time.Second, "Redis busy", func() bool {
		return bytes.HasPrefix(probe.Do("GET", "u:1"), []byte("-BUSY"))
	})
	hostileSideBySide(t, probe, through, [][]string{{"SCRIPT", "KILL"}, {"GET", "u:1"}})
	probe.Send("SHUTDOWN", "NOSAVE")
	if got, err := probe.ReadTimeout(10 * time.Second); err == nil {
		t.Fatalf("SHUTDOWN NOSAVE answered %q; want the connection closed", got)
	}
	redis.Restart()

	// Redis came back empty: k:1 is neither v1 (the cached value) nor v2 (the script's, never saved).
	redistest.Eventually(t, 20*time.Second, "featcache answering after the restart", func() bool {
		got := string(through.Do("GET", "k:1"))
		if got == "$2\r\nv1\r\n" || got == "$2\r\nv2\r\n" {
			t.Fatalf("GET k:1 after Redis restarted empty: %q", got)
		}
		return got == "$-1\r\n"
	})
	hostileSideBySide(t, redis.Dial(), through, [][]string{{"GET", "k:1"}, {"MGET", "k:1", "u:1"}, {"SET", "k:1", "v3"}, {"GET", "k:1"}})
	hostileAlive(t, in)
}

// TestHostileClientsLeave: clients that disconnect in the middle of something. A client blocked in BLPOP, BLMOVE or
// XREADGROUP that goes away takes nothing with it (the element pushed afterwards stays, no entry is left pending),
// as with Redis; a transaction or a WATCH left open by a client that went away does not reach the next client; a
// subscriber that went away is no longer counted.
func TestHostileClientsLeave(t *testing.T) {
	redis := redistest.Start(t)
	in := startBinary(t, redis, hostilePolicies)
	direct := redis.Dial()
	blocked := func() string { return infoField(direct.Do("INFO", "clients"), "blocked_clients") }

	for _, target := range []string{redis.Addr(), in.addr} {
		for _, c := range []struct {
			block, push []string
			check       []string
			want        string
		}{
			{[]string{"BLPOP", "q:1", "0"}, []string{"LPUSH", "q:1", "x"}, []string{"LLEN", "q:1"}, ":1\r\n"},
			{[]string{"BLMOVE", "q:2", "q:3", "LEFT", "LEFT", "0"}, []string{"LPUSH", "q:2", "y"}, []string{"LLEN", "q:2"}, ":1\r\n"},
			{[]string{"XREADGROUP", "GROUP", "g", "c1", "BLOCK", "0", "STREAMS", "s:1", ">"}, []string{"XADD", "s:1", "*", "f", "v"}, []string{"XPENDING", "s:1", "g"}, "*4\r\n:0\r\n$-1\r\n$-1\r\n*-1\r\n"},
		} {
			direct.Do("DEL", "q:1", "q:2", "q:3", "s:1")
			direct.Do("XGROUP", "CREATE", "s:1", "g", "$", "MKSTREAM")
			leaver := redistest.Dial(t, target)
			leaver.Send(c.block...)
			redistest.Eventually(t, 10*time.Second, "the client blocked", func() bool { return blocked() == "1" })
			leaver.Close()
			redistest.Eventually(t, 10*time.Second, "the client unblocked", func() bool { return blocked() == "0" })
			redistest.Dial(t, target).Do(c.push...)
			if got := string(direct.Do(c.check...)); got != c.want {
				t.Errorf("%s: %q left, then %q: %q answers %q; want %q", target, c.block, c.push, c.check, got, c.want)
			}
		}
	}

	// An interactive transaction and a WATCH left open.
	direct.Do("DEL", "m:1", "w:1", "n:1")
	leaver := redistest.Dial(t, in.addr)
	leaver.Do("MULTI")
	leaver.Do("SET", "m:1", "1")
	leaver.Close()
	leaver = redistest.Dial(t, in.addr)
	leaver.Do("WATCH", "w:1")
	leaver.Close()
	direct.Do("SET", "w:1", "changed")
	for i := 1; i <= 8; i++ {
		c := redistest.Dial(t, in.addr)
		want := "*1\r\n:" + strconv.Itoa(i) + "\r\n"
		if got := string(c.Do("MULTI")) + string(c.Do("INCR", "n:1")) + string(c.Do("EXEC")); got != "+OK\r\n+QUEUED\r\n"+want {
			t.Fatalf("transaction %d of a new client after others left one open: %q", i, got)
		}
		c.Close()
	}
	if got := string(direct.Do("EXISTS", "m:1")); got != ":0\r\n" {
		t.Errorf("the abandoned transaction's SET ran: EXISTS m:1 = %q", got)
	}

	// A subscriber that left.
	sub := redistest.Dial(t, in.addr)
	sub.Do("SUBSCRIBE", "ch:1")
	sub.Close()
	redistest.Eventually(t, 10*time.Second, "the subscriber gone from Redis", func() bool {
		return string(direct.Do("PUBSUB", "NUMSUB", "ch:1")) == "*2\r\n$4\r\nch:1\r\n:0\r\n"
	})
	hostileAlive(t, in)
}

// hostileExchange writes payload to a new connection to addr, then (unless halfClose) an ECHO of a marker, and
// returns everything read until the marker's reply or the end of the connection, with "<EOF>" appended at the end.
// An argument %ADDR% in payload is replaced by the connection's own address (for CLIENT KILL ADDR).
// With halfClose the connection's write side is closed after payload, and everything up to the end is read.
func hostileExchange(t *testing.T, addr string, payload []byte, halfClose bool) string {
	t.Helper()
	const marker = "$12\r\nhostile-mark\r\n"
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	own := c.LocalAddr().String()
	payload = bytes.ReplaceAll(payload, []byte("$6\r\n%ADDR%"), []byte("$"+strconv.Itoa(len(own))+"\r\n"+own))
	if !halfClose {
		payload = append(payload, redistest.Encode("ECHO", "hostile-mark")...)
	}
	if _, err := c.Write(payload); err != nil {
		t.Fatal(err)
	}
	if halfClose {
		c.(*net.TCPConn).CloseWrite()
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	var got []byte
	buf := make([]byte, 4096)
	for {
		n, err := c.Read(buf)
		got = append(got, buf[:n]...)
		if !halfClose && bytes.HasSuffix(got, []byte(marker)) {
			return string(got)
		}
		if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || (err != nil && strings.Contains(err.Error(), "reset")) {
			return string(got) + "<EOF>"
		}
		if err != nil {
			t.Fatalf("reading after %q: %v (read %q)", payload, err, got)
		}
	}
}

// TestHostileBytesAndEndings: malformed requests, and pipelines that end their connection (QUIT, CLIENT KILL of
// the client itself, a half-closed socket) or leave a state behind, sent to Redis and to featcache: the same bytes
// back, the connection closed at the same point, and what ran after the end the same (nothing).
func TestHostileBytesAndEndings(t *testing.T) {
	redis := redistest.Start(t)
	in := startBinary(t, redis, hostilePolicies)
	enc := redistest.Encode
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	cases := []struct {
		name    string
		payload []byte
		after   string // a key whose value is compared afterwards
	}{
		{"invalid bulk length", []byte("*1\r\n$abc\r\n"), ""},
		{"invalid multibulk length", []byte("*abc\r\n"), ""},
		{"negative multibulk", []byte("*-5\r\nPING\r\n"), ""},
		{"integer in a multibulk", []byte("*1\r\n:5\r\n"), ""},
		{"unbalanced quotes", []byte("PING \"unbalanced\r\n"), ""},
		{"quote then text", []byte("ECHO \"abc\"x\r\n"), ""},
		{"blank lines", []byte("\r\n\r\nPING\r\n"), ""},
		{"empty multibulk", []byte("*0\r\nPING\r\n"), ""},
		{"bulk longer than declared", []byte("*1\r\n$4\r\nPINGxx\r\n"), ""},
		{"null bulk argument", []byte("*2\r\n$3\r\nGET\r\n$-1\r\n"), ""},
		{"empty command name", []byte("*1\r\n$0\r\n\r\n"), ""},
		{"nested array", []byte("*1\r\n*1\r\n"), ""},
		{"bulk over 2GB", []byte("*1\r\n$2147483648\r\n"), ""},
		{"status line as a command", []byte("+PING\r\n"), ""},
		{"inline with escapes", []byte("ECHO \"a\\x41b\"\r\nset k:9 \"\"\r\nget k:9\r\n"), ""},
		{"bare newlines", []byte("PING\nPING\n"), ""},
		{"QUIT mid-pipeline", cat(enc("GET", "k:1"), enc("QUIT"), enc("SET", "p:quit", "1")), "p:quit"},
		{"CLIENT KILL of itself", cat(enc("CLIENT", "KILL", "SKIPME", "no", "ADDR", "%ADDR%"), enc("SET", "p:kill", "1")), "p:kill"},
		{"RESET inside MULTI", cat(enc("MULTI"), enc("SET", "p:reset", "1"), enc("RESET"), enc("EXEC")), "p:reset"},
		{"QUIT inside MULTI", cat(enc("MULTI"), enc("SET", "p:mq", "1"), enc("QUIT"), enc("EXEC")), "p:mq"},
		{"QUIT after WATCH", cat(enc("WATCH", "p:w"), enc("QUIT"), enc("SET", "p:w", "1")), "p:w"},
		{"BLPOP then QUIT", cat(enc("RPUSH", "p:l", "a"), enc("BLPOP", "p:l", "1"), enc("QUIT"), enc("RPUSH", "p:l", "b")), "p:l"},
		{"CLIENT REPLY SKIP", cat(enc("CLIENT", "REPLY", "SKIP"), enc("SET", "p:skip", "1"), enc("GET", "p:skip")), "p:skip"},
		{"BLPOP in MULTI", cat(enc("MULTI"), enc("BLPOP", "p:mb", "5"), enc("EXEC"), enc("SET", "p:mb2", "1")), "p:mb2"},
	}
	direct := redis.Dial()
	for _, c := range cases {
		var replies [2]string
		var values [2]string
		for i, addr := range []string{redis.Addr(), in.addr} {
			direct.Do("DEL", "p:quit", "p:kill", "p:reset", "p:mq", "p:w", "p:l", "p:skip", "p:mb", "p:mb2", "k:9")
			replies[i] = hostileExchange(t, addr, c.payload, false)
			if c.after != "" {
				values[i] = string(direct.Do("LRANGE", c.after, "0", "-1"))
				if strings.HasPrefix(values[i], "-WRONGTYPE") {
					values[i] = string(direct.Do("GET", c.after))
				}
			}
		}
		if replies[1] != replies[0] {
			t.Errorf("%s: featcache answered %q; Redis answered %q", c.name, replies[1], replies[0])
		}
		if values[1] != values[0] {
			t.Errorf("%s: afterwards %s is %q through featcache; %q straight on Redis", c.name, c.after, values[1], values[0])
		}
	}

	// A half-closed socket: the commands sent before the close are run and answered, then the connection ends.
	payload := cat(enc("SET", "p:half", "1"), enc("GET", "p:half"), enc("INCR", "p:half2"))
	for i, addr := range []string{redis.Addr(), in.addr} {
		direct.Do("DEL", "p:half", "p:half2")
		got := hostileExchange(t, addr, payload, true)
		if want := "+OK\r\n$1\r\n1\r\n:1\r\n<EOF>"; got != want {
			t.Errorf("half-closed socket (%d): %q; want %q", i, got, want)
		}
	}
	hostileAlive(t, in)
}

// TestHostileConnectionStorm: 2,000 connections opened and closed quickly, each leaving something behind (a cached
// read, a blocking pop, an open transaction, a subscription, half a command), some reset rather than closed, while
// another client reads and writes. That client is served throughout, featcache's upstream connections come back to
// what they were, no client of Redis stays blocked, and the admin endpoints and CACHE STATS answer.
func TestHostileConnectionStorm(t *testing.T) {
	redis := redistest.Start(t)
	redis.Do("SET", "k:1", "v1")
	in := startBinary(t, redis, hostilePolicies)
	direct := redis.Dial()
	through := redistest.Dial(t, in.addr)
	through.Do("GET", "k:1")
	baseline, _ := strconv.Atoi(infoField(direct.Do("INFO", "clients"), "connected_clients"))

	var served atomic.Int64
	var bad atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		c, err := redistest.TryDial(t, in.addr)
		if err != nil {
			bad.Store(err.Error())
			return
		}
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			v := "v" + strconv.Itoa(i)
			c.Send("SET", "k:2", v)
			c.Send("GET", "k:2")
			r1, err1 := c.ReadTimeout(10 * time.Second)
			r2, err2 := c.ReadTimeout(10 * time.Second)
			if err1 != nil || err2 != nil || string(r1) != "+OK\r\n" || string(r2) != "$"+strconv.Itoa(len(v))+"\r\n"+v+"\r\n" {
				bad.Store("SET/GET during the storm: " + string(r1) + string(r2))
				return
			}
			served.Add(1)
		}
	}()

	const workers, each = 8, 250
	var storm sync.WaitGroup
	for w := 0; w < workers; w++ {
		storm.Add(1)
		go func() {
			defer storm.Done()
			for i := 0; i < each; i++ {
				n := w*each + i
				c, err := net.DialTimeout("tcp", in.addr, 5*time.Second)
				if err != nil {
					bad.Store("dial: " + err.Error())
					return
				}
				var p []byte
				switch n % 5 {
				case 0:
					p = redistest.Encode("GET", "k:1")
				case 1:
					p = redistest.Encode("BLPOP", "q:"+strconv.Itoa(n), "0")
				case 2:
					p = append(redistest.Encode("MULTI"), redistest.Encode("SET", "k:3", "x")...)
				case 3:
					p = redistest.Encode("SUBSCRIBE", "ch:"+strconv.Itoa(n))
				case 4:
					p = []byte("*3\r\n$3\r\nSET\r\n$3\r\nk:4\r\n$100\r\nxx")
				}
				c.Write(p)
				if n%2 == 1 {
					c.(*net.TCPConn).SetLinger(0) // reset, not closed
				}
				c.Close()
			}
		}()
	}
	storm.Wait()
	// featcache may keep a few more connections than before (shared ones dialed for the reader's writes, a
	// dedicated one pooled after a transaction): hundreds would be the storm's.
	var clients int
	redistest.Eventually(t, 30*time.Second, "Redis's clients back near the baseline, none blocked, no channel", func() bool {
		info := direct.Do("INFO", "clients")
		clients, _ = strconv.Atoi(infoField(info, "connected_clients"))
		return infoField(info, "blocked_clients") == "0" && clients <= baseline+8 &&
			infoField(direct.Do("INFO", "stats"), "pubsub_channels") == "0"
	})
	close(stop)
	wg.Wait()
	if msg, _ := bad.Load().(string); msg != "" {
		t.Fatal(msg)
	}
	if served.Load() == 0 {
		t.Fatal("the reader was never served during the storm")
	}
	if got := string(through.Do("GET", "k:1")); got != "$2\r\nv1\r\n" {
		t.Errorf("GET k:1 after the storm: %q", got)
	}
	if got := string(through.Do("EXISTS", "k:3", "k:4")); got != ":0\r\n" {
		t.Errorf("abandoned transactions or half commands ran: EXISTS k:3 k:4 = %q", got)
	}
	if got := through.Do("CACHE", "STATS"); !bytes.HasPrefix(got, []byte("*")) {
		t.Errorf("CACHE STATS after the storm: %q", got)
	}
	for _, path := range []string{"/healthz", "/readyz", "/metrics"} {
		if got := in.status(path); got != http.StatusOK {
			t.Errorf("%s after the storm: %d", path, got)
		}
	}
	t.Logf("%d SET/GET pairs served during the storm of %d connections; Redis's clients %d before, %d after", served.Load(), workers*each, baseline, clients)
	hostileAlive(t, in)
}

// hostileReplies writes payload on a new connection to addr and returns the next n replies, the lines of a MONITOR
// stream left out; with eof it then reads on until the connection ends and appends "<EOF>".
func hostileReplies(t *testing.T, addr string, payload []byte, n int, eof bool) string {
	t.Helper()
	c := redistest.Dial(t, addr)
	defer c.Close()
	if _, err := c.NetConn().Write(payload); err != nil {
		t.Fatal(err)
	}
	var got []string
	for len(got) < n || eof {
		frame, err := c.ReadTimeout(10 * time.Second)
		if err != nil {
			if eof && len(frame) == 0 && len(got) >= n {
				return strings.Join(got, "") + "<EOF>"
			}
			t.Fatalf("after %q, replies %q, then %v", payload, got, err)
		}
		if len(frame) > 1 && frame[0] == '+' && frame[1] >= '0' && frame[1] <= '9' && bytes.Contains(frame, []byte(" [0 ")) {
			continue // a MONITOR line
		}
		got = append(got, string(frame))
	}
	return strings.Join(got, "")
}

// TestHostileSessionEndsInPipeline: a client that pipelines SUBSCRIBE or MONITOR with the commands after it (QUIT,
// RESET, featcache's own ECHO, CLIENT ...) gets every reply, in order, as from Redis. featcache answered RESET and
// QUIT without the subscription confirmations before them, and commands it answers itself before MONITOR's +OK;
// inside a MULTI sent while monitoring, it leaked a +QUEUED of its own.
func TestHostileSessionEndsInPipeline(t *testing.T) {
	redis := redistest.Start(t)
	in := startBinary(t, redis, hostilePolicies+`
commands:
  deny: [config|set]
`)
	enc := redistest.Encode
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	for _, c := range []struct {
		name    string
		payload []byte
		n       int
		eof     bool
	}{
		{"SUBSCRIBE, QUIT", cat(enc("SUBSCRIBE", "ch:1"), enc("QUIT")), 2, true},
		{"SUBSCRIBE, RESET, PING", cat(enc("SUBSCRIBE", "ch:1"), enc("RESET"), enc("PING")), 3, false},
		{"PSUBSCRIBE, SUBSCRIBE, QUIT", cat(enc("PSUBSCRIBE", "ch:*"), enc("SUBSCRIBE", "ch:2"), enc("QUIT")), 3, true},
		{"SUBSCRIBE, PING, RESET", cat(enc("SUBSCRIBE", "ch:1"), enc("PING"), enc("RESET"), enc("GET", "k:1")), 4, false},
		{"MONITOR, ECHO, CLIENT", cat(enc("MONITOR"), enc("ECHO", "hi"), enc("CLIENT", "SETNAME", "n"), enc("CLIENT", "GETNAME")), 4, false},
		{"MONITOR, PING", cat(enc("MONITOR"), enc("PING")), 2, false},
		{"MONITOR, QUIT", cat(enc("MONITOR"), enc("QUIT")), 2, true},
		{"MONITOR, RESET, PING", cat(enc("MONITOR"), enc("RESET"), enc("PING")), 3, false},
	} {
		for round := 0; round < 3; round++ {
			want := hostileReplies(t, redis.Addr(), c.payload, c.n, c.eof)
			if got := hostileReplies(t, in.addr, c.payload, c.n, c.eof); got != want {
				t.Errorf("%s (round %d): featcache answered %q; Redis answered %q", c.name, round, got, want)
			}
		}
	}

	// MULTI while monitoring is refused (docs/commands.md): the marker PINGs that keep featcache's own answers in
	// order would be queued in it.
	payload := cat(enc("MONITOR"), enc("MULTI"), enc("ECHO", "hi"), enc("EXEC"), enc("QUIT"))
	want := "+OK\r\n-ERR MULTI while MONITOR is active is not supported by featcache\r\n$2\r\nhi\r\n-ERR EXEC without MULTI\r\n+OK\r\n<EOF>"
	if got := hostileReplies(t, in.addr, payload, 5, true); got != want {
		t.Errorf("MONITOR, MULTI, ECHO, EXEC, QUIT: featcache answered %q; want %q", got, want)
	}
	hostileAlive(t, in)
}

// TestHostileTrackingKilledThenWritten: another client of Redis kills featcache's tracking connection (CLIENT KILL ID,
// as an operator cleaning up connections would; or TYPE normal, which takes featcache's shared connections too) and
// writes a cached key in the same breath, so that Redis never sends the invalidation. A write straight to Redis
// reaches featcache's readers only after its invalidation does, tracking or not (docs/freshness.md), so the read
// right after it may still be the cached value; but featcache must notice the loss and serve the new value soon
// after, and never the old one again, in every round.
func TestHostileTrackingKilledThenWritten(t *testing.T) {
	redis := redistest.Start(t)
	redis.Do("SET", "k:1", "v0")
	in := startBinary(t, redis, hostilePolicies)
	direct, through := redis.Dial(), redistest.Dial(t, in.addr)
	trackingIDs := func() []string {
		var ids []string
		for _, line := range strings.Split(string(direct.Do("CLIENT", "LIST")), "\n") {
			if strings.Contains(line, " name=featcache-tracking") {
				id, _, _ := strings.Cut(strings.TrimPrefix(line, "id="), " ")
				ids = append(ids, id)
			}
		}
		return ids
	}
	prev := "v0"
	for i := 1; i <= 60; i++ {
		through.Do("GET", "k:1")
		through.Do("GET", "k:1") // cached
		var kill []byte
		if i%2 == 0 {
			ids := trackingIDs()
			if len(ids) == 0 {
				// Tracking is still being set up again after the previous round: this round writes with it down.
				kill = redistest.Encode("PING")
			}
			for _, id := range ids {
				kill = append(kill, redistest.Encode("CLIENT", "KILL", "ID", id)...)
			}
		} else {
			kill = redistest.Encode("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
		}
		v := "v" + strconv.Itoa(i)
		if _, err := direct.NetConn().Write(append(kill, redistest.Encode("SET", "k:1", v)...)); err != nil {
			t.Fatal(err)
		}
		for n := bytes.Count(kill, []byte("*")) + 1; n > 0; n-- {
			if _, err := direct.Read(); err != nil {
				t.Fatal(err)
			}
		}
		want, old := hostileBulk(v), hostileBulk(prev)
		redistest.Eventually(t, 5*time.Second, "round "+strconv.Itoa(i)+": the write seen through featcache", func() bool {
			got := string(through.Do("GET", "k:1"))
			if got != want && got != old {
				t.Fatalf("round %d: GET k:1 = %q; want %q (or, for a moment, %q)", i, got, want, old)
			}
			return got == want
		})
		for n := 0; n < 3; n++ {
			if got := string(through.Do("GET", "k:1")); got != want {
				t.Fatalf("round %d: GET k:1 = %q after it answered %q", i, got, want)
			}
		}
		prev = v
	}
	hostileAlive(t, in)
}

// TestHostileShortOfDescriptors: featcache runs with a low file descriptor limit (set on the running process with
// prlimit) and clients keep connecting, every other one blocking in BLPOP (a dedicated upstream connection each).
// Redis lowers maxclients to fit its own limit and answers the clients beyond it with "-ERR max number of clients
// reached"; featcache must answer them so too, never leave them unanswered, and keep serving the clients it has,
// the blocked ones included, and take new clients again once some have left.
func TestHostileShortOfDescriptors(t *testing.T) {
	redis := redistest.Start(t)
	in := startBinary(t, redis, hostilePolicies)
	if out, err := exec.Command("prlimit", "--pid", strconv.Itoa(in.cmd.Process.Pid), "--nofile=256:256").CombinedOutput(); err != nil {
		t.Fatalf("prlimit: %v: %s", err, out)
	}
	var pingers, blocked []*redistest.Conn
	refused := false
	for i := 0; i < 400 && !refused; i++ {
		c, err := redistest.TryDial(t, in.addr)
		if err != nil {
			t.Fatalf("client %d: %v", i, err)
		}
		c.Send("PING")
		switch got, err := c.ReadTimeout(5 * time.Second); {
		case string(got) == "-ERR max number of clients reached\r\n":
			refused = true
		case err != nil || string(got) != "+PONG\r\n":
			t.Fatalf("client %d: %q, %v: a client featcache cannot take must get Redis's error", i, got, err)
		case i%2 == 1:
			c.Send("BLPOP", "fd:list"+strconv.Itoa(i), "0")
			blocked = append(blocked, c)
		default:
			pingers = append(pingers, c)
		}
	}
	if !refused {
		t.Fatalf("%d clients taken under a limit of 256 descriptors", len(pingers)+len(blocked))
	}
	t.Logf("refused after %d clients, %d of them blocked", len(pingers)+len(blocked), len(blocked))
	if got := string(pingers[0].Do("SET", "u:fd", "v")); got != "+OK\r\n" {
		t.Errorf("a client taken before: SET answered %q", got)
	}
	for i, c := range blocked {
		key := "fd:list" + strconv.Itoa(2*i+1)
		redis.Do("RPUSH", key, "x")
		if got, err := c.Read(); string(got) != "*2\r\n"+hostileBulk(key)+"$1\r\nx\r\n" {
			t.Fatalf("blocked client %d: %q, %v", i, got, err)
		}
	}
	for _, c := range pingers[:len(pingers)/2] {
		c.Close()
	}
	redistest.Eventually(t, 10*time.Second, "a new client taken once others have left", func() bool {
		c, err := redistest.TryDial(t, in.addr)
		if err != nil {
			return false
		}
		defer c.Close()
		c.Send("PING")
		got, _ := c.ReadTimeout(5 * time.Second)
		return string(got) == "+PONG\r\n"
	})
	hostileAlive(t, in)
}
