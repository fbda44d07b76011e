package main

import (
	"bytes"
	"errors"
	"io"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"featcache/internal/redistest"
)

// Drop-in protocol, probed from outside: the same bytes are sent straight to one redis-server and, through the
// featcache binary, to another, and the raw replies are compared. Every script starts from empty databases on
// fresh connections. A script's replies are read up to the reply of a closing PING (so nothing is left unread and
// nothing is waited for by the clock), or up to the close of the connection when the script quits.

// probeEnd is the message of the PING that closes a script: its reply, whatever the mode, ends with it.
const probeEnd = "probe-end"

// protoProbe is a redis-server reached directly, beside a featcache in front of another redis-server.
type protoProbe struct {
	t              *testing.T
	direct, behind *redistest.Server
	fc             *instance
}

// startProtoProbe starts the two servers and featcache, caching every key, with nothing denied (MONITOR too).
func startProtoProbe(t *testing.T) *protoProbe {
	direct := redistest.Start(t)
	behind := redistest.Start(t)
	fc := startBinary(t, behind, `
shutdown_delay: 0s
commands:
  deny: []
policies:
  - {name: all, prefix: "", soft_ttl: 1m, hard_ttl: 5m}
`)
	return &protoProbe{t: t, direct: direct, behind: behind, fc: fc}
}

var (
	// helloID is the client id in HELLO's map, which differs between two servers.
	helloID = regexp.MustCompile(`\$2\r\nid\r\n:[0-9]+\r\n`)
	// monitorLine is a line of MONITOR's stream. featcache's stream also holds its own traffic (health checks,
	// tracking checks) at any moment, which a Redis beside it with no other client has not: the scripts compare the
	// replies around the stream, not its lines.
	monitorLine = regexp.MustCompile(`\+[0-9]+\.[0-9]+ \[[0-9]+ [^\]\r\n]*\][^\r\n]*\r\n`)
)

func normalize(b []byte) []byte {
	b = monitorLine.ReplaceAll(b, nil)
	return helloID.ReplaceAll(b, []byte("$2\r\nid\r\n:N\r\n"))
}

// conns empties both databases (featcache's through featcache, which drops its cached copies before the reply)
// and opens a fresh connection to Redis and one to featcache.
func (p *protoProbe) conns(t *testing.T) (direct, through *redistest.Conn) {
	t.Helper()
	p.direct.Do("FLUSHALL")
	through = redistest.Dial(t, p.fc.addr)
	if got := string(through.Do("FLUSHALL")); got != "+OK\r\n" {
		t.Fatalf("FLUSHALL through featcache: %q", got)
	}
	return redistest.Dial(t, p.direct.Addr()), through
}

// encode writes commands as one RESP payload; a command of one argument holding spaces or ending in a newline
// is sent as it is (an inline command, or raw bytes).
func encode(cmds [][]string) []byte {
	var b []byte
	for _, c := range cmds {
		if len(c) == 1 && strings.HasSuffix(c[0], "\n") {
			b = append(b, c[0]...)
			continue
		}
		b = append(b, redistest.Encode(c...)...)
	}
	return b
}

// readReplies reads frames until the closing PING's reply, or until the connection closes, and returns them all.
func readReplies(t *testing.T, c *redistest.Conn, who string) (all []byte, closed bool) {
	t.Helper()
	for {
		frame, err := c.ReadTimeout(10 * time.Second)
		all = append(all, frame...)
		switch {
		case errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET):
			return all, true
		case err != nil:
			t.Fatalf("%s: after %q: %v", who, all, err)
		case bytes.HasSuffix(frame, []byte(probeEnd+"\r\n")):
			return all, false
		}
	}
}

// compareReplies reads both sides' replies (readReplies) and compares them, and whether each side closed.
func compareReplies(t *testing.T, what string, d, f *redistest.Conn) {
	t.Helper()
	redis, redisClosed := readReplies(t, d, "redis")
	fc, fcClosed := readReplies(t, f, "featcache")
	same(t, what, redis, fc)
	if redisClosed != fcClosed {
		t.Errorf("%s: Redis closed the connection: %v; featcache: %v", what, redisClosed, fcClosed)
	}
}

// same fails the test unless Redis's and featcache's bytes are the same, HELLO's client id aside.
func same(t *testing.T, what string, redis, fc []byte) {
	t.Helper()
	if r, f := normalize(redis), normalize(fc); !bytes.Equal(r, f) {
		i := 0
		for i < len(r) && i < len(f) && r[i] == f[i] {
			i++
		}
		from := max(0, i-80)
		t.Errorf("%s: replies differ at byte %d\nredis:     %q\nfeatcache: %q", what, i, r[from:min(len(r), i+200)], f[from:min(len(f), i+200)])
	}
}

// pipelined sends the script and the closing PING in one write to each side and compares all the replies.
func (p *protoProbe) pipelined(t *testing.T, cmds [][]string) {
	t.Helper()
	d, f := p.conns(t)
	payload := append(encode(cmds), redistest.Encode("PING", probeEnd)...)
	for _, c := range []*redistest.Conn{d, f} {
		if _, err := c.NetConn().Write(payload); err != nil {
			t.Fatal(err)
		}
	}
	compareReplies(t, "pipelined", d, f)
}

// stepwise sends the script one command at a time, each answered by one reply, and compares them one by one.
func (p *protoProbe) stepwise(t *testing.T, cmds [][]string) {
	t.Helper()
	d, f := p.conns(t)
	for _, cmd := range cmds {
		payload := encode([][]string{cmd})
		var got [2][]byte
		for i, c := range []*redistest.Conn{d, f} {
			if _, err := c.NetConn().Write(payload); err != nil {
				t.Fatal(err)
			}
			frame, err := c.ReadTimeout(10 * time.Second)
			if err != nil {
				t.Fatalf("%q: %v", cmd, err)
			}
			got[i] = frame
		}
		same(t, strconv.Quote(strings.Join(cmd, " ")), got[0], got[1])
	}
	for _, c := range []*redistest.Conn{d, f} {
		c.Send("PING", probeEnd)
	}
	compareReplies(t, "closing PING", d, f)
}

// quitting sends the script, which ends the connection, in one write to each side and compares everything read
// before the close.
func (p *protoProbe) quitting(t *testing.T, cmds [][]string) {
	t.Helper()
	d, f := p.conns(t)
	payload := encode(cmds)
	for _, c := range []*redistest.Conn{d, f} {
		if _, err := c.NetConn().Write(payload); err != nil {
			t.Fatal(err)
		}
	}
	compareReplies(t, "up to the close", d, f)
}

// withHello3 is cmds after HELLO 3.
func withHello3(cmds [][]string) [][]string { return append([][]string{{"HELLO", "3"}}, cmds...) }

// TestOutsideProtocolSessionEnds: QUIT and RESET pipelined behind a command that opens a session on a dedicated
// connection (SUBSCRIBE, PSUBSCRIBE, SSUBSCRIBE, MONITOR) come after that command's reply, as from Redis, which
// writes the confirmation (MONITOR's +OK) before QUIT's +OK and closes only then; featcache once closed the
// session's connection before its reply came back, and the client never got it. A command featcache answers itself
// while monitoring comes after MONITOR's +OK too. RESET with arguments gets Redis's arity error in every state
// (subscribed in RESP2 and RESP3, monitoring, in a WATCH session, inside a MULTI, pinned or pipelined) and ends
// nothing: featcache once reset the connection there. MONITOR under CLIENT REPLY SKIP or OFF gets no +OK, as from
// Redis.
func TestOutsideProtocolSessionEnds(t *testing.T) {
	p := startProtoProbe(t)
	ends := map[string][][]string{
		"SUBSCRIBE then QUIT":                 {{"SUBSCRIBE", "c"}, {"QUIT"}},
		"SUBSCRIBE PING then QUIT":            {{"SUBSCRIBE", "c", "d"}, {"PING"}, {"QUIT"}},
		"PSUBSCRIBE then QUIT":                {{"PSUBSCRIBE", "c*"}, {"QUIT"}},
		"SSUBSCRIBE then QUIT":                {{"SSUBSCRIBE", "s"}, {"QUIT"}},
		"RESP3 SUBSCRIBE then QUIT":           withHello3([][]string{{"SUBSCRIBE", "c"}, {"QUIT"}}),
		"MONITOR then QUIT":                   {{"MONITOR"}, {"QUIT"}},
		"MONITOR, a local command, then QUIT": {{"MONITOR"}, {"CLIENT", "NO-EVICT", "on"}, {"QUIT"}},
	}
	for name, cmds := range ends {
		t.Run(name, func(t *testing.T) { p.quitting(t, cmds) })
	}
	resets := map[string][][]string{
		"SUBSCRIBE then RESET":       {{"SUBSCRIBE", "c"}, {"RESET"}, {"GET", "a"}},
		"PSUBSCRIBE PING then RESET": {{"PSUBSCRIBE", "c*"}, {"PING"}, {"RESET"}, {"GET", "a"}},
		"RESP3 SUBSCRIBE then RESET": withHello3([][]string{{"SUBSCRIBE", "c"}, {"RESET"}, {"GET", "a"}}),
		"MONITOR then RESET":         {{"MONITOR"}, {"RESET"}, {"GET", "a"}},
		"REPLY SKIP, MONITOR, then RESET": {{"CLIENT", "REPLY", "SKIP"}, {"MONITOR"}, {"CLIENT", "NO-EVICT", "on"},
			{"RESET"}, {"GET", "a"}},
		"REPLY OFF, MONITOR, then RESET": {{"CLIENT", "REPLY", "OFF"}, {"MONITOR"}, {"RESET"}, {"GET", "a"}},
		"monitoring RESET x":             {{"MONITOR"}, {"RESET", "x"}, {"RESET"}, {"GET", "a"}},
		"subscribed RESET with argument": {{"SUBSCRIBE", "c"}, {"ECHO", "x"}, {"RESET", "x"}, {"PING"}, {"UNSUBSCRIBE"}},
		"RESP3 subscribed RESET with argument": withHello3([][]string{{"SUBSCRIBE", "c"}, {"RESET", "x"}, {"PING"},
			{"UNSUBSCRIBE"}}),
		"pipelined MULTI with RESET x": {{"MULTI"}, {"SET", "a", "1"}, {"RESET", "x"}, {"EXEC"}, {"GET", "a"}},
	}
	for name, cmds := range resets {
		t.Run(name, func(t *testing.T) { p.pipelined(t, cmds) })
	}
	// One command at a time: the WATCH session and the interactive MULTI run on dedicated connections.
	stepwise := map[string][][]string{
		"WATCH then RESET x":             {{"WATCH", "a"}, {"RESET", "x"}, {"MULTI"}, {"SET", "a", "1"}, {"EXEC"}},
		"interactive MULTI then RESET x": {{"MULTI"}, {"SET", "a", "1"}, {"RESET", "x"}, {"EXEC"}, {"GET", "a"}},
		"WATCH MULTI then RESET x":       {{"WATCH", "a"}, {"MULTI"}, {"RESET", "x"}, {"EXEC"}, {"PING"}},
		"subscribed RESET x":             {{"SUBSCRIBE", "c"}, {"RESET", "x"}, {"PING"}, {"UNSUBSCRIBE", "c"}},
	}
	for name, cmds := range stepwise {
		t.Run(name, func(t *testing.T) { p.stepwise(t, cmds) })
	}
}

// TestOutsideProtocolExecRejected: an EXEC that Redis rejects before running it answers EXECABORT naming the
// reason, as Redis's rejectCommand does for EXEC: with a wrong number of arguments, and before authentication
// (featcache with a password beside a Redis with requirepass).
func TestOutsideProtocolExecRejected(t *testing.T) {
	p := startProtoProbe(t)
	p.stepwise(t, [][]string{{"EXEC", "x"}, {"EXEC"}, {"DISCARD", "x"}, {"MULTI", "x"}, {"UNWATCH", "x"}})

	direct := redistest.Start(t, "--requirepass", "s3cret")
	fc := startBinary(t, p.behind, "shutdown_delay: 0s\npassword: s3cret\n")
	cmds := [][]string{{"EXEC"}, {"EXEC", "x"}, {"MULTI"}, {"DISCARD"}, {"GET", "a"}, {"GET"}, {"AUTH", "wrong"},
		{"HELLO", "3", "AUTH", "default", "wrong"}, {"AUTH", "s3cret"}, {"EXEC"}, {"PING", probeEnd}}
	d, f := redistest.Dial(t, direct.Addr()), redistest.Dial(t, fc.addr)
	for _, cmd := range cmds {
		same(t, strconv.Quote(strings.Join(cmd, " ")), d.Do(cmd...), f.Do(cmd...))
	}
}

// TestOutsideProtocolSameBytes: checks that found no difference, kept so that none appears. Cached reads (a miss,
// then a hit) with odd arguments, wrong types, empty, binary and long keys and values; featcache's local commands
// with odd arguments; transactions and WATCH; reply modes; blocking commands that time out; inline commands and
// protocol errors. Each in RESP2 and after HELLO 3, one at a time where every command has one reply, and pipelined.
func TestOutsideProtocolSameBytes(t *testing.T) {
	p := startProtoProbe(t)
	long := strings.Repeat("v", 100000)
	longKey := strings.Repeat("k", 70000)
	reads := [][]string{
		{"SET", "s", "v"}, {"LPUSH", "l", "a"}, {"HSET", "h", "f", "v", "g", ""}, {"SET", "e", ""},
		{"SET", "bin", "\x00\r\n\xff"}, {"SET", "", "empty key"}, {"SET", "big", long}, {"SET", longKey, "v"},
		{"HSET", "hb", longKey, "v"},
		{"GET"}, {"GET", "a", "b"}, {"get", "s"}, {"gEt", "s"}, {"MGET"}, {"HGET", "h"}, {"HMGET", "h"}, {"HGETALL"},
		{"HGET", "h", "f", "g"}, {"HGETALL", "h", "x"},
	}
	for _, twice := range [][]string{
		{"GET", "s"}, {"GET", "l"}, {"GET", "h"}, {"GET", ""}, {"GET", "e"}, {"GET", "bin"}, {"GET", "nokey"},
		{"GET", "big"}, {"GET", longKey}, {"MGET", "s", "l", "h", "nokey", "s"}, {"HGET", "h", "f"}, {"HGET", "h", "g"},
		{"HGET", "h", "nof"}, {"HGET", "s", "f"}, {"HMGET", "h", "f", "nof", "g", "f"}, {"HMGET", "s", "f"},
		{"HMGET", "nokey", "f"}, {"HGETALL", "h"}, {"HGETALL", "s"}, {"HGETALL", "nokey"}, {"HGET", "hb", longKey},
		{"HGETALL", "hb"},
	} {
		reads = append(reads, twice, twice)
	}
	local := [][]string{
		{"PING", "a", "b"}, {"ECHO"}, {"ECHO", ""}, {"PING", ""},
		{"HELLO", "0"}, {"HELLO", "-1"}, {"HELLO", "abc"}, {"HELLO", "2", "extra"}, {"HELLO", "3", "AUTH"},
		{"HELLO", "3", "AUTH", "default", "x"}, {"HELLO", "2", "SETNAME", "a b"}, {"HELLO", "2", "SETNAME", "ok"},
		{"HELLO", "99999999999999999999"}, {"CLIENT", "GETNAME"},
		{"AUTH"}, {"AUTH", "x"}, {"AUTH", "default", "x"}, {"AUTH", "a", "b", "c"},
		{"SELECT"}, {"SELECT", "0"}, {"SELECT", "-1"}, {"SELECT", "16"}, {"SELECT", "x"}, {"SELECT", "00"},
		{"CLIENT"}, {"CLIENT", "NOSUCH"}, {"CLIENT", "SETNAME", "a b"}, {"CLIENT", "SETNAME", "x", "y"},
		{"CLIENT", "SETNAME", ""}, {"CLIENT", "ID", "x"}, {"CLIENT", "REPLY"}, {"CLIENT", "REPLY", "maybe"},
		{"CLIENT", "UNBLOCK", "x"}, {"CLIENT", "UNBLOCK", "999999"}, {"CLIENT", "UNBLOCK", "999999", "FOO"},
		{"CLIENT", "KILL"}, {"CLIENT", "KILL", "1.2.3.4:5"}, {"CLIENT", "KILL", "ID", "x"},
		{"CLIENT", "KILL", "TYPE", "foo"}, {"CLIENT", "LIST", "TYPE", "foo"}, {"CLIENT", "LIST", "ID", "x"},
		{"CLIENT", "TRACKING", "maybe"}, {"CLIENT", "TRACKING", "on", "BCAST", "OPTIN"}, {"CLIENT", "CACHING", "yes"},
		{"CLIENT", "TRACKING", "on", "REDIRECT", "9999"}, {"CLIENT", "NO-EVICT", "maybe"},
		{"READONLY", "x"}, {"RESET", "x"},
	}
	tx := [][]string{
		{"MULTI"}, {"SET", "a", "1"}, {"GET", "a"}, {"HGETALL", "a"}, {"MGET", "a", "b"}, {"EXEC"}, {"GET", "a"},
		{"MULTI"}, {"GET", "a"}, {"DISCARD"}, {"EXEC"}, {"DISCARD"}, {"MULTI"}, {"MULTI"}, {"NOSUCH"}, {"EXEC"},
		{"MULTI"}, {"GET"}, {"SET", "x", "1"}, {"EXEC"}, {"GET", "x"},
		{"WATCH", "a"}, {"MULTI"}, {"WATCH", "b"}, {"GET", "a"}, {"EXEC"}, {"UNWATCH"}, {"WATCH"},
		{"MULTI"}, {"PING"}, {"ECHO", "x"}, {"EXEC"}, {"MULTI"}, {"RESET"}, {"GET", "a"},
		{"ZADD", "z", "1.5", "m"}, {"MULTI"}, {"ZSCORE", "z", "m"}, {"HSET", "hh", "f", "v"}, {"HGETALL", "hh"}, {"EXEC"},
	}
	blocking := [][]string{
		{"BLPOP", "l", "0.05"}, {"BLPOP", "l", "-1"}, {"BLPOP", "l", "x"}, {"BLPOP", "l", "inf"}, {"BLPOP", "l"},
		{"BLMOVE", "l", "m", "LEFT", "RIGHT", "0.01"}, {"BLMOVE", "l", "m", "UP", "RIGHT", "0.01"},
		{"BRPOPLPUSH", "l", "m", "0.01"}, {"BLMPOP", "0.01", "1", "l", "LEFT"}, {"BLMPOP", "0.01", "0", "l", "LEFT"},
		{"BZPOPMIN", "z", "0.01"}, {"BZMPOP", "0.01", "1", "z", "MIN"}, {"XREAD", "BLOCK", "10", "STREAMS", "s", "$"},
		{"XREAD", "BLOCK", "-1", "STREAMS", "s", "$"}, {"SET", "str", "v"}, {"BLPOP", "str", "0.01"},
		{"RPUSH", "l", "a", "b"}, {"BLPOP", "l", "0"}, {"BLMPOP", "0", "1", "l", "LEFT", "COUNT", "5"},
		{"WAIT", "0", "10"}, {"WAIT", "x", "1"}, {"MULTI"}, {"BLPOP", "l", "0"}, {"EXEC"}, {"BLPOP", "l", "1e-300"},
	}
	scripts := map[string][][]string{"reads": reads, "local": local, "tx": tx, "blocking": blocking}
	for name, cmds := range scripts {
		t.Run(name+"/stepwise", func(t *testing.T) { p.stepwise(t, cmds) })
		t.Run(name+"/pipelined", func(t *testing.T) { p.pipelined(t, cmds) })
		t.Run(name+"/resp3 stepwise", func(t *testing.T) { p.stepwise(t, withHello3(cmds)) })
		t.Run(name+"/resp3 pipelined", func(t *testing.T) { p.pipelined(t, withHello3(cmds)) })
	}

	replyModes := [][]string{
		{"SET", "a", "1"}, {"CLIENT", "REPLY", "SKIP"}, {"GET", "a"}, {"GET", "a"}, {"CLIENT", "REPLY", "SKIP"},
		{"CLIENT", "REPLY", "SKIP"}, {"GET", "a"}, {"GET", "nokey"}, {"CLIENT", "REPLY", "OFF"}, {"GET", "a"},
		{"SET", "a", "2"}, {"GET"}, {"MGET", "a"}, {"NOSUCH"}, {"CLIENT", "REPLY", "SKIP"}, {"PING"},
		{"CLIENT", "REPLY", "ON"}, {"GET", "a"}, {"CLIENT", "REPLY", "OFF"}, {"MULTI"}, {"SET", "a", "3"}, {"EXEC"},
		{"CLIENT", "REPLY", "ON"}, {"GET", "a"}, {"CLIENT", "REPLY", "SKIP"}, {"MULTI"}, {"GET", "a"}, {"EXEC"},
		{"CLIENT", "REPLY", "SKIP"}, {"SUBSCRIBE", "x"}, {"PING"}, {"UNSUBSCRIBE"}, {"PING"},
		{"CLIENT", "REPLY", "OFF"}, {"HELLO", "3"}, {"CLIENT", "REPLY", "ON"}, {"GET", "a"}, {"HGETALL", "a"},
		{"CLIENT", "REPLY", "SKIP"}, {"RESET"}, {"GET", "a"},
	}
	t.Run("reply modes", func(t *testing.T) { p.pipelined(t, replyModes) })
	t.Run("resp3 reply modes", func(t *testing.T) { p.pipelined(t, withHello3(replyModes)) })

	wire := [][]string{
		{"PING\r\n"}, {"GET a\r\n"}, {"SET a \"hello world\"\r\n"}, {"GET a\r\n"}, {"GET a\n"}, {"\r\n"},
		{"SET b 'x y' \r\n"}, {"GET b\r\n"}, {"MGET a b c\r\n"}, {"HGETALL h\r\n"}, {"ECHO \"\\x41\\n\"\r\n"}, {"get\r\n"},
		{"*1\r\n$4\r\nPING\r\n"}, {"*0\r\n"}, {"*-1\r\n"}, {"*1\r\n$3\r\nGETX\r\n"},
	}
	t.Run("inline", func(t *testing.T) { p.pipelined(t, wire) })
	for _, bad := range []string{"*x\r\n", "*2\r\n$3\r\nGET\r\n:1\r\n", "*1\r\n$-1\r\n", "*1\r\n$4\r\nPINGxx\r\n",
		"$4\r\nPING\r\n", "+PING\r\n", "\"abc\r\n", "*1\r\n$x\r\n", "*3000000000\r\n", "*1\r\n$600000000\r\n"} {
		t.Run("protocol error "+strconv.Quote(bad), func(t *testing.T) {
			p.pipelined(t, [][]string{{"SET a 1\r\n"}, {bad}}) // the connection closes, or PING answers
		})
	}
}

// TestOutsideProtocolPubSubAndBlocking: pub/sub messages and confirmations in RESP2 and RESP3 (a subscribed RESP3
// client's cached reads and writes beside them), and a blocking pop woken by another client of Redis, compared
// with Redis.
func TestOutsideProtocolPubSubAndBlocking(t *testing.T) {
	p := startProtoProbe(t)
	for _, proto := range []string{"2", "3"} {
		t.Run("RESP"+proto, func(t *testing.T) {
			d, f := p.conns(t)
			both := func(args ...string) {
				t.Helper()
				same(t, strconv.Quote(strings.Join(args, " ")), d.Do(args...), f.Do(args...))
			}
			both("HELLO", proto)
			both("SUBSCRIBE", "c1")
			for _, c := range []*redistest.Conn{d, f} {
				if _, err := c.NetConn().Write(encode([][]string{{"PSUBSCRIBE", "c*"}, {"PING"}})); err != nil {
					t.Fatal(err)
				}
			}
			// Both confirmations and PING's reply: the subscriptions are in place.
			for range 2 {
				d2, _ := d.Read()
				f2, _ := f.Read()
				same(t, "PSUBSCRIBE and PING", d2, f2)
			}
			for _, s := range []*redistest.Server{p.direct, p.behind} {
				if got := string(s.Do("PUBLISH", "c1", "hello")); got != ":2\r\n" {
					t.Fatalf("PUBLISH: %q; want both subscriptions", got)
				}
			}
			// The messages come before the reply of a command sent after PUBLISH answered. (A RESP3 client's PING,
			// which featcache answers itself, may come before them: a command Redis runs closes the script.)
			closing := []string{"PING", probeEnd}
			if proto == "3" {
				closing = []string{"EVAL", "return ARGV[1]", "0", probeEnd}
			}
			for _, c := range []*redistest.Conn{d, f} {
				c.Send(closing...)
			}
			compareReplies(t, "messages", d, f)
			if proto == "3" {
				both("SET", "a", "1")
				both("GET", "a")
				both("GET", "a")
			}
			for _, c := range []*redistest.Conn{d, f} {
				c.NetConn().Write(encode([][]string{{"UNSUBSCRIBE"}, {"PUNSUBSCRIBE"}, {"GET", "a"}, {"PING", probeEnd}}))
			}
			compareReplies(t, "unsubscribed", d, f)
		})
	}

	t.Run("BLPOP woken by another client", func(t *testing.T) {
		d, f := p.conns(t)
		payload := encode([][]string{{"BLPOP", "l", "0"}, {"GET", "a"}, {"SET", "a", "x"}, {"GET", "a"}, {"PING", probeEnd}})
		for _, c := range []*redistest.Conn{d, f} {
			c.NetConn().Write(payload)
		}
		for _, s := range []*redistest.Server{p.direct, p.behind} {
			// BLPOP blocks before the push: Redis reports the blocked client.
			redistest.Eventually(t, 10*time.Second, "BLPOP blocked", func() bool {
				return strings.Contains(string(s.Do("INFO", "clients")), "blocked_clients:1")
			})
			s.Do("RPUSH", "l", "v")
		}
		compareReplies(t, "woken", d, f)
	})
}
