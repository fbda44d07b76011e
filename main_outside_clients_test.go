package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"featcache/internal/redistest"
	"featcache/internal/resp"
	"featcache/internal/testkit"
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
		w, g := testkit.Line(want, i), testkit.Line(got, i)
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
	// The same commands from a RESP3 client, with no script running: its dedicated connection speaks RESP3 too.
	resp3 := func(s clientsSide) string {
		c := redistest.Dial(t, s.addr)
		c.Do("HELLO", "3")
		return fmt.Sprintf("%q", [][]byte{c.Do("FUNCTION", "STATS"), c.Do("SCRIPT", "KILL"), c.Do("FUNCTION", "KILL")})
	}
	if want, got := resp3(direct), resp3(through); want != got {
		t.Errorf("RESP3 client:\nredis:     %s\nfeatcache: %s", want, got)
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

// cliRun runs redis-cli against addr with args (and stdin, if not empty) until it exits or d passes, and returns
// what it printed on stdout and stderr, ending with its exit status ("exit 0"), or "killed" when d ended it. With
// unbuffered, its output is not buffered (modes that run until interrupted). An empty addr leaves the address to
// args (-u).
func cliRun(addr string, d time.Duration, stdin string, unbuffered bool, args ...string) string {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	argv := append([]string{"redis-cli"}, args...)
	if host, port, ok := strings.Cut(addr, ":"); ok {
		argv = append([]string{"redis-cli", "-h", host, "-p", port}, args...)
	}
	if unbuffered {
		argv = append([]string{"stdbuf", "-o0"}, argv...)
	}
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	err := cmd.Run()
	switch {
	case ctx.Err() != nil:
		return out.String() + "killed"
	case err == nil:
		return out.String() + "exit 0"
	}
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		return out.String() + "exit " + strconv.Itoa(exit.ExitCode())
	}
	return out.String() + err.Error()
}

// cliStart starts redis-cli against addr with args, its output unbuffered into the returned buffer, and stops it
// when stop is called, which returns what it printed.
func cliStart(addr string, args ...string) (out *redistest.LogBuffer, stop func() string) {
	host, port, _ := strings.Cut(addr, ":")
	out = &redistest.LogBuffer{}
	cmd := exec.Command("stdbuf", append([]string{"-o0", "redis-cli", "-h", host, "-p", port}, args...)...)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		return out, func() string { return err.Error() }
	}
	return out, func() string {
		cmd.Process.Kill()
		cmd.Wait()
		return out.String()
	}
}

// cliPoll reports whether cond turned true within d, polling it every 10ms; unlike redistest.Eventually it does
// not end the test, so that it may run on the goroutines of bothSides.
func cliPoll(d time.Duration, cond func() bool) bool {
	for end := time.Now().Add(d); ; time.Sleep(10 * time.Millisecond) {
		if cond() {
			return true
		}
		if time.Now().After(end) {
			return false
		}
	}
}

// cliIDs are the places redis-cli prints a connection's id (HELLO's map in each output mode): ids differ between
// two servers.
var cliIDs = []*regexp.Regexp{
	regexp.MustCompile(`(?m)^id \d+$`),
	regexp.MustCompile(`"id" => \(integer\) \d+`),
	regexp.MustCompile(`"id",\d+`),
	regexp.MustCompile(`(?m)^(\d+\) )?"id"\n(\d+\) )?\(integer\) \d+$`),
}

func cliNormalize(s string) string {
	for _, re := range cliIDs {
		s = re.ReplaceAllStringFunc(s, func(m string) string { return regexp.MustCompile(`\d+$`).ReplaceAllString(m, "ID") })
	}
	return s
}

// cliLines keeps the lines of s that keep matches, or drops them with keep false.
func cliLines(s string, re *regexp.Regexp, keep bool) string {
	var b strings.Builder
	for _, l := range strings.SplitAfter(s, "\n") {
		if re.MatchString(l) == keep {
			b.WriteString(l)
		}
	}
	return b.String()
}

// TestOutsideClientsRedisCLI runs redis-cli's modes against Redis and through featcache and compares what they
// print: plain commands in every output mode (default, --no-raw, --raw, --csv, -3), -r with -i, -x, --eval,
// --scan, --bigkeys, --memkeys, --hotkeys, --pipe with 10,000 commands, --latency, --latency-history, --stat,
// -e, -a, -u, SUBSCRIBE and PSUBSCRIBE while another client publishes, MONITOR while another client writes, and
// --rdb. Figures that differ between two servers (ids, latencies, counters) are normalized; the documented
// differences (MONITOR shows featcache's fills and not its hits, SYNC is refused) are checked as documented.
func TestOutsideClientsRedisCLI(t *testing.T) {
	direct, through := clientsSides(t)
	const setup = "FLUSHALL\nHSET h f1 v1 f2 \"two words\" f3 \"\"\nRPUSH lst a \"b c\" \"\"\nSET a 1\n" +
		"SET bigstr 0123456789012345678901234567890123456789\nRPUSH biglist a b c d e\nHSET bighash f1 v1 f2 v2\n" +
		"SADD s m1 m2 m3\nZADD z 1.5 m\n"
	var keys strings.Builder
	for i := 0; i < 60; i++ {
		fmt.Fprintf(&keys, "SET sc:%d %d\n", i, i)
	}
	compare := func(name string, f func(s clientsSide) string) {
		t.Helper()
		want, got := bothSides(direct, through, f)
		if want != got {
			t.Errorf("%s:\nredis:\n%s\nfeatcache:\n%s", name, want, got)
		}
	}
	bothSides(direct, through, func(s clientsSide) string { return cliRun(s.addr, 10*time.Second, setup+keys.String(), false) })

	// Plain commands in every output mode.
	commands := []string{"get a", "get a", "hgetall h", "hgetall h", "hmget h f1 nof f2", "mget a nokey a",
		"get nokey", "lrange lst 0 -1", "get lst", "hget a f", "incrbyfloat fl 1.5", "zrange z 0 -1 withscores",
		"zscore z m", "sort s alpha", "type h", "object encoding h", "exists a h", "hello 3", "ping", "echo hi",
		"config get maxmemory", "client getname", "nosuchcommand x", "get"}
	for _, mode := range [][]string{nil, {"--no-raw"}, {"--raw"}, {"--csv"}, {"-3"}, {"-3", "--no-raw"}} {
		compare(fmt.Sprintf("commands %q", mode), func(s clientsSide) string {
			var b strings.Builder
			for _, c := range commands {
				b.WriteString("> " + c + "\n")
				b.WriteString(cliNormalize(cliRun(s.addr, 10*time.Second, "", false, append(mode, strings.Fields(c)...)...)) + "\n")
			}
			return b.String()
		})
	}
	compare("-r 5 -i 0.1", func(s clientsSide) string {
		return cliRun(s.addr, 10*time.Second, "", false, "-r", "5", "-i", "0.1", "incr", "ctr")
	})
	compare("-x", func(s clientsSide) string {
		return cliRun(s.addr, 10*time.Second, "", false, "get", "xk") +
			cliRun(s.addr, 10*time.Second, "line1\nline2\n", false, "-x", "set", "xk") +
			cliRun(s.addr, 10*time.Second, "", false, "get", "xk") +
			cliRun(s.addr, 10*time.Second, "", false, "--no-raw", "get", "xk") +
			cliRun(s.addr, 10*time.Second, "val", false, "-x", "hset", "h", "f1") +
			cliRun(s.addr, 10*time.Second, "", false, "hget", "h", "f1")
	})
	script := filepath.Join(t.TempDir(), "write.lua")
	if err := os.WriteFile(script, []byte("redis.call('SET', KEYS[1], ARGV[1]) return {redis.call('GET', KEYS[1]), KEYS[1], ARGV[1]}"), 0o644); err != nil {
		t.Fatal(err)
	}
	compare("--eval", func(s clientsSide) string {
		return cliRun(s.addr, 10*time.Second, "", false, "get", "sc:2") +
			cliRun(s.addr, 10*time.Second, "", false, "--eval", script, "sc:2", ",", "new") +
			cliRun(s.addr, 10*time.Second, "", false, "get", "sc:2")
	})
	compare("--scan --pattern", func(s clientsSide) string {
		lines := strings.Split(cliRun(s.addr, 10*time.Second, "", false, "--scan", "--pattern", "sc:1*"), "\n")
		slices.Sort(lines) // SCAN's order is the server's hash table's
		return strings.Join(lines, "\n")
	})
	// The progress lines name keys in SCAN's order; the summaries must be the same.
	progress := regexp.MustCompile(`found so far`)
	for _, mode := range []string{"--bigkeys", "--memkeys"} {
		compare(mode, func(s clientsSide) string {
			return cliLines(cliRun(s.addr, 20*time.Second, "", false, mode), progress, false)
		})
	}
	compare("--hotkeys without an LFU policy", func(s clientsSide) string {
		return cliRun(s.addr, 20*time.Second, "", false, "--hotkeys")
	})

	// --pipe: 10,000 commands, the summary, then what they stored.
	var mass bytes.Buffer
	for i := 0; i < 10000; i++ {
		mass.Write(resp.AppendCommand(nil, "SET", "pk:"+strconv.Itoa(i), "v"+strconv.Itoa(i)))
	}
	compare("--pipe", func(s clientsSide) string {
		return cliRun(s.addr, 10*time.Second, "", false, "get", "pk:9999") +
			cliRun(s.addr, 30*time.Second, mass.String(), false, "--pipe") +
			cliRun(s.addr, 10*time.Second, "", false, "dbsize") +
			cliRun(s.addr, 10*time.Second, "", false, "get", "pk:9999")
	})

	// Latency and stat modes: their figures differ, their shape must not.
	figures := regexp.MustCompile(`\d+(\.\d+)?`)
	compare("--latency --raw and --csv", func(s clientsSide) string {
		return figures.ReplaceAllString(cliRun(s.addr, 10*time.Second, "", false, "--latency", "--raw")+
			cliRun(s.addr, 10*time.Second, "", false, "--latency", "--csv"), "N")
	})
	for _, mode := range [][]string{{"--latency-history", "-i", "1"}, {"--stat", "-i", "1"}} {
		compare(mode[0], func(s clientsSide) string {
			out := figures.ReplaceAllString(cliRun(s.addr, 2500*time.Millisecond, "", true, mode...), "N")
			lines := strings.Split(regexp.MustCompile(` +`).ReplaceAllString(out, " "), "\n")
			slices.Sort(lines) // how many samples fit in the time differs: the kinds of lines must not
			return strings.Join(slices.Compact(lines), "\n")
		})
	}

	// SUBSCRIBE and PSUBSCRIBE while another client publishes, through the same endpoint.
	for _, sub := range [][]string{{"subscribe", "c1", "c2"}, {"psubscribe", "c*"}} {
		compare(sub[0], func(s clientsSide) string {
			out, stop := cliStart(s.addr, sub...)
			if !cliPoll(10*time.Second, func() bool {
				return strings.Count(out.String(), sub[0]) == len(sub)-1
			}) {
				return stop() + "\nno confirmation"
			}
			cliRun(s.addr, 10*time.Second, "", false, "publish", "c1", "hello")
			cliRun(s.addr, 10*time.Second, "", false, "publish", "c2", "a b")
			cliPoll(10*time.Second, func() bool { return strings.Contains(out.String(), "a b") })
			return stop()
		})
	}

	// MONITOR while another client writes and reads. Documented difference (docs/commands.md, MONITOR): the stream
	// shows what reaches Redis, so through featcache a read answered from memory is not in it, and featcache's own
	// fills are (GET and PTTL, upper case, from featcache's address).
	monitor := func(s clientsSide) string {
		out, stop := cliStart(s.addr, "monitor")
		if !cliPoll(10*time.Second, func() bool { return strings.HasPrefix(out.String(), "OK") }) {
			return stop() + "\nno OK"
		}
		for _, c := range [][]string{{"set", "monk", "1"}, {"get", "monk"}, {"get", "monk"}, {"incr", "monk"}} {
			cliRun(s.addr, 10*time.Second, "", false, c...)
		}
		cliPoll(10*time.Second, func() bool { return strings.Contains(out.String(), `"incr" "monk"`) })
		return cliLines(stop(), regexp.MustCompile(`^OK|"monk"`), true)
	}
	want, got := bothSides(direct, through, monitor)
	clientLine := regexp.MustCompile(`(?m)^\d+\.\d+ \[0 [0-9.:]+\] (.*)$`)
	commandsOf := func(s string) (cmds []string) {
		for _, m := range clientLine.FindAllStringSubmatch(s, -1) {
			cmds = append(cmds, m[1])
		}
		return cmds
	}
	if w := commandsOf(want); strings.Join(w, "|") != `"set" "monk" "1"|"get" "monk"|"get" "monk"|"incr" "monk"` {
		t.Errorf("MONITOR on Redis: %q", want)
	}
	// A read right after a write through featcache may be filled twice (docs/commands.md: the first fill may be
	// dropped when the write's invalidation comes after it): one fill or two, never the client's reads.
	fills := regexp.MustCompile(`^"set" "monk" "1"\|("GET" "monk"\|"PTTL" "monk"\|){1,2}"incr" "monk"$`)
	if g := commandsOf(got); !fills.MatchString(strings.Join(g, "|")) || !strings.HasPrefix(got, "OK\n") {
		t.Errorf("MONITOR through featcache: the client's writes and featcache's fill expected, got %q", got)
	}

	// --rdb asks for SYNC. Documented difference (docs/commands.md): refused by the default commands.deny, with
	// REPLCONF; redis-cli says so and exits 1.
	rdb := filepath.Join(t.TempDir(), "dump.rdb")
	want, got = bothSides(direct, through, func(s clientsSide) string {
		return cliRun(s.addr, 20*time.Second, "", false, "--rdb", rdb+"."+s.name)
	})
	if !strings.Contains(want, "Transfer finished with success") || !strings.HasSuffix(want, "exit 0") {
		t.Errorf("--rdb from Redis: %q", want)
	}
	const refused = "sending REPLCONF capa eof\n" +
		"REPLCONF capa error: ERR command 'replconf' is disabled by featcache (commands.deny)\n" +
		"sending REPLCONF rdb-only 1\n" +
		"REPLCONF rdb-only error: ERR command 'replconf' is disabled by featcache (commands.deny)\n" +
		"SYNC with master failed: -ERR command 'sync' is disabled by featcache (commands.deny)\r\n" +
		"exit 1"
	if got != refused {
		t.Errorf("--rdb through featcache:\n%q\nwant:\n%q", got, refused)
	}

	// --hotkeys under an LFU policy: Redis's counters count featcache's fills, not its clients' reads (documented:
	// docs/commands.md); the scan and its summary are the same.
	for _, s := range []clientsSide{direct, through} {
		s.redis.Do("CONFIG", "SET", "maxmemory-policy", "allkeys-lfu")
	}
	counters := regexp.MustCompile(`(?m)^.*(Hot key|hot key found).*\n`)
	compare("--hotkeys under allkeys-lfu", func(s clientsSide) string {
		cliRun(s.addr, 10*time.Second, strings.Repeat("GET sc:7\n", 30), false)
		return counters.ReplaceAllString(cliRun(s.addr, 20*time.Second, "", false, "--hotkeys"), "")
	})

	// Exit status and warnings.
	compare("-e, -a, --user, -u, -n 0", func(s clientsSide) string {
		return cliRun(s.addr, 10*time.Second, "", false, "-e", "get", "h") +
			cliRun(s.addr, 10*time.Second, "", false, "-e", "get", "a") +
			cliRun(s.addr, 10*time.Second, "", false, "-a", "secret", "ping") +
			cliRun(s.addr, 10*time.Second, "", false, "--user", "default", "--pass", "secret", "ping") +
			cliRun("", 10*time.Second, "", false, "-u", "redis://"+s.addr+"/0", "get", "a") +
			cliRun(s.addr, 10*time.Second, "", false, "-n", "0", "get", "a")
	})
}
