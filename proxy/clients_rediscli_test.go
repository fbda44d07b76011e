package proxy

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"featcache/internal/redistest"
)

// cliPair is a redis-server reached directly and a featcache in front of an identical one: the same redis-cli
// command line runs against both and what it prints is compared.
type cliPair struct {
	direct *redistest.Server
	p      *testProxy
}

func startCLIPair(t *testing.T, redisArgs ...string) cliPair {
	t.Helper()
	direct := redistest.Start(t, redisArgs...)
	p := startProxyOn(t, redistest.Start(t, redisArgs...), clientCompareConfig)
	return cliPair{direct: direct, p: p}
}

// both runs redis-cli with stdin and args against featcache (got) and against Redis (want).
func (c cliPair) both(t *testing.T, stdin []byte, args ...string) (got, want string) {
	t.Helper()
	return redisCLI(t, c.p.addr, stdin, args...), redisCLI(t, c.direct.Addr(), stdin, args...)
}

// same runs redis-cli against both and fails the test unless it printed the same thing.
func (c cliPair) same(t *testing.T, stdin []byte, args ...string) string {
	t.Helper()
	got, want := c.both(t, stdin, args...)
	compareTranscripts(t, got, want)
	return got
}

// cliDataset is loaded into both servers: strings of growing sizes, binary values, and one key of each type, so that
// --bigkeys and --memkeys have something to rank and --raw and --no-raw something to escape.
func cliDataset() []byte {
	var b bytes.Buffer
	for i := 1; i <= 30; i++ { // the biggest string is alone in its allocator size class: --memkeys finds one

		fmt.Fprintf(&b, "SET cl:str:%02d %s\n", i, strings.Repeat("x", i*i*3))
	}
	b.WriteString(`SET cl:bin "\x00\x01\xff\xfe tab\there\r\nnew \"quoted\" \\ end"` + "\n")
	b.WriteString(`SET cl:utf8 "h\xc3\xa9llo w\xc3\xb6rld"` + "\n")
	b.WriteString(`RPUSH cl:list a "b c" "\x00\xff" ""` + "\n")
	b.WriteString(`HSET cl:hash f1 v1 "f 2" "\xff\x00" f3 ""` + "\n")
	b.WriteString(`SADD cl:set m1 m2 m3 "\x01"` + "\n")
	b.WriteString(`ZADD cl:zset 1 a 2.5 b -3 "\xff" 1e10 big` + "\n")
	b.WriteString(`XADD cl:stream 1-1 f v "g\x00" "\xfe"` + "\n")
	b.WriteString(`XADD cl:stream 2-1 only one` + "\n")
	return b.Bytes()
}

// cliReadsInput reads every key of cliDataset twice (through featcache: a miss, then a hit).
const cliReadsInput = `GET cl:bin
GET cl:bin
GET cl:utf8
GET cl:utf8
MGET cl:bin cl:utf8 cl:none
MGET cl:bin cl:utf8 cl:none
LRANGE cl:list 0 -1
HGETALL cl:hash
HGETALL cl:hash
HGET cl:hash "f 2"
HGET cl:hash "f 2"
HMGET cl:hash f1 "f 2" none
HMGET cl:hash f1 "f 2" none
SMISMEMBER cl:set m1 nope "\x01"
SCARD cl:set
ZRANGE cl:zset 0 -1 WITHSCORES
ZSCORE cl:zset b
XRANGE cl:stream - +
XREAD COUNT 5 STREAMS cl:stream 0
GET cl:str:03
TYPE cl:stream
`

// TestRedisCLICompare runs redis-cli's modes against a redis-server and against featcache in front of an identical
// one, and compares what redis-cli printed: --scan --pattern, --bigkeys, --memkeys, --raw and --no-raw output of
// binary values (RESP2 and -3), -r/-i repetition, -x, --pipe with errors, --eval, --stat, --latency, MONITOR,
// SUBSCRIBE, CLIENT TRACKING's pushes under -3, -a/--user warnings and -n. Where the output depends on the server process rather than on the data
// (SCAN order, which follows each server's hash seed; latencies; memory and connection counts), the test compares
// what does not, and says so. --hotkeys is TestRedisCLIHotkeys's.
func TestRedisCLICompare(t *testing.T) {
	if _, err := exec.LookPath("redis-cli"); err != nil {
		t.Fatalf("redis-cli not found in PATH: %s", redistest.InstallHint)
	}
	c := startCLIPair(t)
	c.same(t, cliDataset(), "--no-raw")

	t.Run("scan", func(t *testing.T) {
		// SCAN's order follows each server's dictionary: the keys found are compared, sorted.
		for _, pattern := range []string{"cl:str:1*", "*", "cl:[bl]i*", "nomatch*"} {
			got, want := c.both(t, nil, "--scan", "--pattern", pattern)
			if g, w := sortedLines(got), sortedLines(want); !slices.Equal(g, w) {
				t.Errorf("--scan --pattern %q: got %q; Redis: %q", pattern, g, w)
			}
		}
	})

	for _, mode := range []string{"--bigkeys", "--memkeys"} {
		t.Run(strings.TrimPrefix(mode, "--"), func(t *testing.T) {
			// The "found so far" progress lines follow SCAN's order; the summary is compared whole.
			got, want := c.both(t, nil, mode)
			compareTranscripts(t, dropScanProgress(got), dropScanProgress(want))
			if !strings.Contains(got, "-------- summary -------") || !strings.Contains(got, "Sampled 37 keys") {
				t.Errorf("redis-cli %s through featcache has no summary of 37 keys:\n%s", mode, got)
			}
		})
	}

	t.Run("raw_and_no_raw", func(t *testing.T) {
		for _, args := range [][]string{{"--raw"}, {"--no-raw"}, {"-3", "--raw"}, {"-3", "--no-raw"}} {
			got, want := c.both(t, []byte(cliReadsInput), args...)
			if got != want {
				t.Errorf("redis-cli %q reading the dataset:\nthrough featcache:\n%s\nagainst Redis:\n%s", args, got, want)
			}
		}
		// One-shot commands, as a script calls redis-cli.
		for _, args := range [][]string{
			{"--raw", "GET", "cl:bin"}, {"--no-raw", "GET", "cl:bin"}, {"--raw", "HGETALL", "cl:hash"},
			{"--no-raw", "LRANGE", "cl:list", "0", "-1"}, {"-3", "--no-raw", "HGETALL", "cl:hash"},
			{"--no-raw", "--quoted-input", "GET", `"cl:\x62in"`}, {"--csv", "MGET", "cl:bin", "cl:utf8", "cl:none"},
			{"--csv", "ZRANGE", "cl:zset", "0", "-1", "WITHSCORES"}, {"-d", "|", "LRANGE", "cl:list", "0", "-1"},
		} {
			got, want := c.both(t, nil, args...)
			if got != want {
				t.Errorf("redis-cli %q: got %q; Redis: %q", args, got, want)
			}
		}
	})

	t.Run("repeat", func(t *testing.T) {
		c.same(t, nil, "-r", "3", "-i", "0.1", "INCR", "cl:repeat")
		c.same(t, nil, "-r", "3", "--no-raw", "GET", "cl:repeat")
	})

	t.Run("stdin_arg", func(t *testing.T) {
		value := []byte("from\x00stdin\r\nline 2\n")
		c.same(t, value, "-x", "SET", "cl:x")
		c.same(t, nil, "--no-raw", "GET", "cl:x")
		c.same(t, value, "-x", "HSET", "cl:xh", "f")
		c.same(t, nil, "--no-raw", "HGETALL", "cl:xh")
		c.same(t, []byte("12"), "-x", "INCRBY", "cl:repeat")
	})

	t.Run("pipe", func(t *testing.T) {
		// Mass insertion with two errors in it: the summary counts them, and redis-cli prints them on stderr.
		in := []byte("SET cl:pipe:1 v\r\nINCR cl:pipe:1\r\nNOSUCH\r\n*1\r\n$4\r\nPING\r\n" +
			string(redistest.Encode("SET", "cl:pipe:2", "a\r\nb")) + "GET cl:pipe:2\r\n")
		gotOut, gotErr, gotExit := runRedisCLI(t, c.p.addr, in, "--pipe")
		wantOut, wantErr, wantExit := runRedisCLI(t, c.direct.Addr(), in, "--pipe")
		if gotOut != wantOut || gotErr != wantErr || fmt.Sprint(gotExit) != fmt.Sprint(wantExit) {
			t.Errorf("redis-cli --pipe: got %q, stderr %q, exit %v; Redis: %q, stderr %q, exit %v",
				gotOut, gotErr, gotExit, wantOut, wantErr, wantExit)
		}
		if !strings.Contains(gotOut, "errors: 2, replies: 6") {
			t.Errorf("redis-cli --pipe summary: %q; want errors: 2, replies: 6", gotOut)
		}
		c.same(t, nil, "--no-raw", "MGET", "cl:pipe:1", "cl:pipe:2")
	})

	t.Run("eval", func(t *testing.T) {
		dir := t.TempDir()
		script := filepath.Join(dir, "s.lua")
		if err := os.WriteFile(script, []byte(`redis.call("SET", KEYS[2], ARGV[2])
return {KEYS[1], KEYS[2], ARGV[1], ARGV[2], redis.call("INCR", KEYS[1]), redis.call("GET", KEYS[2])}`), 0o644); err != nil {
			t.Fatal(err)
		}
		bad := filepath.Join(dir, "bad.lua")
		if err := os.WriteFile(bad, []byte(`return redis.call("INCR", KEYS[1])`), 0o644); err != nil {
			t.Fatal(err)
		}
		c.same(t, nil, "GET", "cl:ev2") // cached through featcache before the script writes it
		c.same(t, nil, "--eval", script, "cl:ev1", "cl:ev2", ",", "a1", "a 2")
		c.same(t, nil, "--no-raw", "--eval", script, "cl:ev1", "cl:ev2", ",", "a1", "second")
		c.same(t, nil, "--no-raw", "MGET", "cl:ev1", "cl:ev2")
		c.same(t, nil, "--no-raw", "--eval", bad, "cl:bin")
		c.same(t, nil, "--no-raw", "--eval", script)
	})

	t.Run("stat", func(t *testing.T) {
		// The header and the keys column are compared; mem, clients, requests and connections are Redis's
		// figures of its own process (through featcache: its connection pool and its own commands).
		got := redisCLILines(t, c.p.addr, 4, nil, "--stat", "-i", "0.2")
		want := redisCLILines(t, c.direct.Addr(), 4, nil, "--stat", "-i", "0.2")
		if !slices.Equal(got[:2], want[:2]) {
			t.Errorf("--stat header: got %q; Redis: %q", got[:2], want[:2])
		}
		for i := 2; i < 4; i++ {
			g, w := strings.Fields(got[i]), strings.Fields(want[i])
			if len(g) != len(w) || len(g) == 0 || g[0] != w[0] {
				t.Errorf("--stat line %d: got %q; Redis: %q (keys should agree)", i+1, got[i], want[i])
			}
		}
	})

	t.Run("latency", func(t *testing.T) {
		// Without a terminal, --latency prints one line after the interval: min, max, avg, samples.
		line := regexp.MustCompile(`^[0-9]+ [0-9]+ [0-9.]+ [0-9]+\n$`)
		got, want := c.both(t, nil, "--latency", "-i", "1")
		if !line.MatchString(got) || !line.MatchString(want) {
			t.Errorf("--latency -i 1: got %q; Redis: %q; want \"min max avg samples\"", got, want)
		}
	})

	t.Run("monitor", func(t *testing.T) {
		// MONITOR through featcache shows what reaches Redis (docs/commands.md, MONITOR): featcache's fills (GET
		// and PTTL) and its own traffic (PING, INFO, CLIENT SETNAME featcache on a dedicated connection) are in
		// it, the reads it answers from memory are not. The commands of the client are compared in order, once
		// featcache's own lines and the reads are set aside; the timestamps and the [db addr] part differ.
		commands := [][]string{
			{"SET", "cl:mon", "a b"}, {"GET", "cl:mon"}, {"GET", "cl:mon"}, {"INCRBY", "cl:mon:n", "5"},
			{"HSET", "cl:mon:h", "f", "\x01\xff"}, {"PUBLISH", "cl:ch", "x"}, {"DEL", "cl:mon"},
		}
		run := func(addr string) []string {
			return redisCLIMonitor(t, addr, func() {
				for _, cmd := range commands {
					redisCLI(t, addr, nil, cmd...)
				}
			})
		}
		got, want := run(c.p.addr), run(c.direct.Addr())
		t.Logf("MONITOR through featcache:\n%s\nagainst Redis:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
		reads := regexp.MustCompile(`^"(GET|MGET|HGET|HMGET|HGETALL)" `)
		own := regexp.MustCompile(`^"(PING|PTTL|INFO)"|^"CLIENT" "SETNAME" "featcache"|^"HELLO"`)
		var gotCmds, gotReads, wantCmds, wantReads []string
		for _, l := range got {
			switch {
			case own.MatchString(l):
			case reads.MatchString(l):
				gotReads = append(gotReads, l)
			default:
				gotCmds = append(gotCmds, l)
			}
		}
		for _, l := range want {
			if reads.MatchString(l) {
				wantReads = append(wantReads, l)
			} else {
				wantCmds = append(wantCmds, l)
			}
		}
		if !slices.Equal(gotCmds, wantCmds) {
			t.Errorf("MONITOR through featcache:\n%s\nagainst Redis:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
		// The first GET is a miss that featcache fills from Redis; the second is answered from memory.
		if len(gotReads) != 1 || len(wantReads) != 2 || gotReads[0] != wantReads[0] {
			t.Errorf("MONITOR reads through featcache %q; Redis %q; want the one fill of the two GETs", gotReads, wantReads)
		}
	})

	t.Run("subscribe", func(t *testing.T) {
		run := func(addr string) []string {
			// The first line, "subscribe", is printed once the subscription is confirmed.
			return redisCLILines(t, addr, 6, func() {
				if got := redisCLI(t, addr, nil, "PUBLISH", "cl:sub", "hello \x01\xff there"); got != "1\n" {
					t.Errorf("PUBLISH to the subscribed channel: %q receivers; want 1", got)
				}
			}, "SUBSCRIBE", "cl:sub")
		}
		got, want := run(c.p.addr), run(c.direct.Addr())
		if !slices.Equal(got, want) {
			t.Errorf("SUBSCRIBE: got %q; Redis: %q", got, want)
		}
	})

	t.Run("tracking_pushes", func(t *testing.T) {
		// CLIENT TRACKING in RESP3, its invalidation pushes shown: the invalidations of the client's own writes
		// come right after the writes' replies (a transaction's after EXEC's), as Redis 7.0 sends them.
		input := []byte(`SET tk:a v1
CLIENT TRACKING on
GET tk:a
SET tk:a v2
GET tk:a
MGET tk:a tk:b
DEL tk:a tk:b
GET tk:a
GET tk:c
MULTI
SET tk:c v3
EXEC
CLIENT TRACKING on BCAST PREFIX tk:
CLIENT TRACKING off
CLIENT TRACKING on BCAST PREFIX tk:
SET tk:b x
CLIENT TRACKINGINFO
PING
`)
		got := c.same(t, input, "-3", "--no-raw", "--show-pushes", "yes")
		if n := strings.Count(got, "-> invalidate: "); n != 4 {
			t.Errorf("redis-cli -3 --show-pushes yes printed %d invalidations; want 4:\n%s", n, got)
		}
	})

	t.Run("auth_options", func(t *testing.T) {
		// Neither server has a password: redis-cli prints its warning and Redis's AUTH error, then goes on.
		for _, args := range [][]string{
			{"-a", "secret", "PING"}, {"--user", "bob", "--pass", "secret", "PING"},
			{"--no-auth-warning", "-a", "x", "PING"}, {"-n", "0", "DBSIZE"},
		} {
			gotOut, gotErr, gotExit := runRedisCLI(t, c.p.addr, nil, args...)
			wantOut, wantErr, wantExit := runRedisCLI(t, c.direct.Addr(), nil, args...)
			if gotOut != wantOut || gotErr != wantErr || fmt.Sprint(gotExit) != fmt.Sprint(wantExit) {
				t.Errorf("redis-cli %q: got %q, stderr %q, exit %v; Redis: %q, stderr %q, exit %v",
					args, gotOut, gotErr, gotExit, wantOut, wantErr, wantExit)
			}
		}
		// -n 1: featcache serves database 0 only (docs/commands.md). redis-cli prints the SELECT error and runs
		// the command on database 0.
		_, gotErr, _ := runRedisCLI(t, c.p.addr, nil, "-n", "1", "PING")
		if want := "SELECT 1 failed: ERR featcache serves database 0 only (SELECT 1 is not supported)\n"; gotErr != want {
			t.Errorf("redis-cli -n 1: stderr %q; want %q", gotErr, want)
		}
	})
}

// TestRedisCLIHotkeys runs redis-cli --hotkeys against Redis and featcache with maxmemory-policy allkeys-lfu.
// Reads featcache answers from memory never reach Redis, so Redis's LFU counters, which --hotkeys reports, see
// one fill where Redis alone sees every read (docs/commands.md); CACHE HOTKEYS is featcache's own view.
func TestRedisCLIHotkeys(t *testing.T) {
	c := startCLIPair(t, "--maxmemory-policy", "allkeys-lfu")
	c.same(t, []byte("SET hot:a 1\nSET hot:b 2\nHSET hot:h f v\n"), "--no-raw")
	var reads bytes.Buffer
	for i := 0; i < 200; i++ {
		reads.WriteString("GET hot:a\nHGET hot:h f\n")
	}
	c.both(t, reads.Bytes())
	got, want := c.both(t, nil, "--hotkeys")
	counter := regexp.MustCompile(`counter:? [0-9]+`)
	norm := func(s string) string { return counter.ReplaceAllString(dropScanProgress(s), "counter N") }
	compareTranscripts(t, sortedSummary(norm(got)), sortedSummary(norm(want)))
	gotFreq, wantFreq := hotkeyCounter(got, "hot:a"), hotkeyCounter(want, "hot:a")
	t.Logf("--hotkeys counter of hot:a: %d through featcache, %d from Redis", gotFreq, wantFreq)
	if wantFreq <= 5 || gotFreq >= wantFreq {
		t.Errorf("--hotkeys counter of hot:a: %d through featcache, %d from Redis; want Redis's higher (200 reads, "+
			"answered from memory through featcache)", gotFreq, wantFreq)
	}
	if hk := redisCLI(t, c.p.addr, nil, "CACHE", "HOTKEYS", "2"); !strings.Contains(hk, `key:"hot:a"`) {
		t.Errorf("CACHE HOTKEYS does not name hot:a:\n%s", hk)
	}
	// With another policy Redis refuses, and featcache relays its error.
	c.direct.Do("CONFIG", "SET", "maxmemory-policy", "noeviction")
	c.p.redis.Do("CONFIG", "SET", "maxmemory-policy", "noeviction")
	gotOut, gotErr, gotExit := runRedisCLI(t, c.p.addr, nil, "--hotkeys")
	wantOut, wantErr, wantExit := runRedisCLI(t, c.direct.Addr(), nil, "--hotkeys")
	if gotOut != wantOut || gotErr != wantErr || fmt.Sprint(gotExit) != fmt.Sprint(wantExit) {
		t.Errorf("--hotkeys without LFU: got %q, stderr %q, exit %v; Redis: %q, stderr %q, exit %v",
			gotOut, gotErr, gotExit, wantOut, wantErr, wantExit)
	}
}

// hotkeyCounter returns the counter --hotkeys printed for key in its summary, or -1.
func hotkeyCounter(out, key string) int {
	m := regexp.MustCompile(`hot key found with counter: ([0-9]+)\tkeyname: "` + regexp.QuoteMeta(key) + `"`).FindStringSubmatch(out)
	if m == nil {
		return -1
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// sortedLines returns the lines of s, sorted.
func sortedLines(s string) []string {
	lines := strings.Split(strings.TrimSuffix(s, "\n"), "\n")
	slices.Sort(lines)
	return lines
}

// sortedSummary sorts the lines after --hotkeys's summary header: with the counters normalised, keys of equal
// counters come in SCAN's order.
func sortedSummary(s string) string {
	head, summary, ok := strings.Cut(s, "-------- summary -------\n")
	if !ok {
		return s
	}
	return head + "-------- summary -------\n" + strings.Join(sortedLines(summary), "\n") + "\n"
}

// dropScanProgress removes the "[12.50%] Biggest ... found so far" lines of --bigkeys, --memkeys and --hotkeys:
// they follow SCAN's order, which depends on the server's hash seed.
func dropScanProgress(s string) string {
	var b strings.Builder
	for _, l := range strings.SplitAfter(s, "\n") {
		if !strings.Contains(l, "found so far") {
			b.WriteString(l)
		}
	}
	return b.String()
}

// startRedisCLIStream starts a redis-cli that streams (MONITOR, SUBSCRIBE, --stat) against addr, its output line
// buffered, and returns a function that returns its next line, with MONITOR's timestamp and [db addr] cut off. The
// test fails if no line comes within 20 seconds of the start; redis-cli is stopped when the test ends.
func startRedisCLIStream(t *testing.T, addr string, args ...string) (next func(what string) string) {
	t.Helper()
	host, port := splitHostPort(t, addr)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	cmd := exec.CommandContext(ctx, "stdbuf", append([]string{"-oL", "redis-cli", "-h", host, "-p", port}, args...)...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("redis-cli %q: %v", args, err)
	}
	t.Cleanup(func() {
		cancel()
		cmd.Wait()
	})
	lines := make(chan string, 1000)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- monitorPrefix.ReplaceAllString(sc.Text(), "")
		}
	}()
	return func(what string) string {
		t.Helper()
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("redis-cli %q ended waiting for %s; stderr: %s", args, what, stderr.Bytes())
			}
			return l
		case <-ctx.Done():
			t.Fatalf("redis-cli %q: no %s within 20s; stderr: %s", args, what, stderr.Bytes())
		}
		return ""
	}
}

// redisCLILines returns the first n lines of a streaming redis-cli; after the first line, during runs (if not nil).
func redisCLILines(t *testing.T, addr string, n int, during func(), args ...string) []string {
	t.Helper()
	next := startRedisCLIStream(t, addr, args...)
	out := []string{next("the first line")}
	if during != nil {
		during()
	}
	for len(out) < n {
		out = append(out, next(fmt.Sprintf("line %d", len(out)+1)))
	}
	return out
}

// redisCLIMonitor runs redis-cli MONITOR against addr, runs during once the stream has started (MONITOR's +OK,
// which redis-cli prints as OK), and returns the commands the stream showed meanwhile (timestamps and [db addr]
// cut off), up to a marker SET that follows during.
func redisCLIMonitor(t *testing.T, addr string, during func()) []string {
	t.Helper()
	next := startRedisCLIStream(t, addr, "MONITOR")
	if l := next("MONITOR's OK"); l != "OK" {
		t.Fatalf("redis-cli MONITOR printed %q first; want OK", l)
	}
	during()
	redisCLI(t, addr, nil, "SET", "cl:marker", "end")
	var out []string
	for l := next("the end marker"); l != `"SET" "cl:marker" "end"`; l = next("the end marker") {
		out = append(out, l)
	}
	return out
}

// monitorPrefix is the start of a MONITOR line: the timestamp, the database and the client's address.
var monitorPrefix = regexp.MustCompile(`^[0-9]+\.[0-9]+ \[[0-9]+ [^]]*\] `)

// TestRedisCLILuaDebugger runs redis-cli --ldb (SCRIPT DEBUG YES, then EVAL under Redis's Lua debugger) against Redis
// and against featcache: the same session transcript (steps, prints, the debugger's redis and eval commands,
// restart, abort), the script's changes rolled back in Redis and in featcache's memory, and SCRIPT DEBUG's other
// forms answered as Redis answers them. featcache used to refuse SCRIPT DEBUG, which redis-cli ignores: the script
// then ran outside the debugger and its writes were kept.
func TestRedisCLILuaDebugger(t *testing.T) {
	c := startCLIPair(t)
	script := filepath.Join(t.TempDir(), "debug.lua")
	if err := os.WriteFile(script, []byte(`redis.call("SET", KEYS[1], ARGV[1])
local v = redis.call("GET", KEYS[1])
return {v, "done"}
`), 0o644); err != nil {
		t.Fatal(err)
	}
	c.same(t, nil, "SET", "ldb:k", "orig")
	c.same(t, nil, "GET", "ldb:k") // cached through featcache
	for _, input := range []string{
		"step\nprint\nredis GET ldb:k\neval return 1+1\nc\n",
		"list\nrestart\nstep\nabort\n",
		"c\n",
	} {
		got, want := c.both(t, []byte(input), "--ldb", "--eval", script, "ldb:k", ",", "new value")
		compareTranscripts(t, got, want)
		if !strings.Contains(got, "(Lua debugging session ended -- dataset changes rolled back)") {
			t.Errorf("redis-cli --ldb with input %q through featcache did not end its session:\n%s", input, got)
		}
	}
	if got := string(c.p.redis.Do("GET", "ldb:k")); got != "$4\r\norig\r\n" {
		t.Errorf("ldb:k in Redis after the debugging sessions: %q; want orig (rolled back)", got)
	}
	c.same(t, nil, "GET", "ldb:k")
	// SCRIPT DEBUG's other forms, typed at the prompt; EVALSHA cannot be debugged, NO disarms.
	input := `SCRIPT DEBUG maybe
SCRIPT DEBUG
SCRIPT DEBUG YES
EVALSHA e0e1f9fabfc9d4800c877a703b823ac0578ff8db 0
SCRIPT DEBUG NO
EVAL "return redis.call('INCR', KEYS[1])" 1 ldb:n
GET ldb:n
`
	c.same(t, []byte(input), "--no-raw")
	// SYNC would block every client of Redis while someone steps through a script: refused (docs/commands.md).
	if got := redisCLI(t, c.p.addr, nil, "SCRIPT", "DEBUG", "SYNC"); !strings.HasPrefix(got, "ERR 'script|debug' is not supported by featcache with SYNC") {
		t.Errorf("SCRIPT DEBUG SYNC: got %q; want featcache's refusal", got)
	}
}
