package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"featcache/internal/redistest"
	"featcache/internal/testkit"
)

// These tests drive featcache with the clients its users run: redis-py (Debian's python3-redis, as the model
// servers use it) and redis-cli (as on-call engineers use it). Each starts a real redis-server and a real featcache
// listener; nothing is faked on either side.

// redisPyPython is the interpreter the redis-py scripts run with: Debian's, which python3-redis installs into.
// The python3 first in PATH may be another one without the redis module.
const redisPyPython = "/usr/bin/python3"

// redisPyInstallHint is printed when the interpreter or the redis module is missing.
const redisPyInstallHint = "install it with: apt-get update && apt-get install -y python3-redis"

// TestRedisPy runs the scripts in testdata/redispy against featcache, each with its own redis-server. A script
// prints PASS or FAIL for each of its cases; the test fails with that output when any case fails.
func TestRedisPy(t *testing.T) {
	requireRedisPy(t)
	tests := []struct {
		script string
		config string
	}{
		// Connection options, GET/SET/MGET hits and misses, binary keys and values, INCR, TTLs, hashes, DEL,
		// SCAN, error replies compared with Redis's, other writes (scripts, SORT STORE, FLUSHDB), changes made
		// in Redis directly.
		{script: "basic.py", config: defaultTestConfig},
		// MULTI/EXEC pipelines, a 2000-command plain pipeline, read-your-writes within and across clients.
		{script: "pipeline.py", config: defaultTestConfig},
		// The WATCH recipe, conflicts from featcache and Redis clients, retry loops, transaction().
		{script: "watch.py", config: defaultTestConfig},
		// redis-py's Lock: SET NX PX and Lua scripts; a contended lock.
		{script: "lock.py", config: defaultTestConfig},
		// SUBSCRIBE, PSUBSCRIBE, PING and health checks while subscribed, UNSUBSCRIBE, PUBSUB NUMSUB.
		{script: "pubsub.py", config: defaultTestConfig},
		// BLPOP 0 and timed pops, with upstream.timeout shorter than the pops wait.
		{script: "blocking.py", config: blockingConfig},
	}
	for _, tt := range tests {
		t.Run(strings.TrimSuffix(tt.script, ".py"), func(t *testing.T) {
			t.Parallel()
			p := startProxy(t, tt.config)
			runRedisPy(t, p, tt.script)
		})
	}
}

// requireRedisPy fails the test, with the install hint, unless redisPyPython can import redis.
func requireRedisPy(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(redisPyPython); err != nil {
		t.Fatalf("%s not found (%v): %s", redisPyPython, err, redisPyInstallHint)
	}
	out, err := exec.Command(redisPyPython, "-c", "import redis; print(redis.__version__)").CombinedOutput()
	if err != nil {
		t.Fatalf("%s cannot import redis (%v): %s\n%s", redisPyPython, err, redisPyInstallHint, out)
	}
	t.Logf("redis-py %s", bytes.TrimSpace(out))
}

// runRedisPy runs testdata/redispy/script as "script host port upstream_port" and fails the test with its output
// if it exits non-zero or does not finish within a minute.
func runRedisPy(t *testing.T, p *testProxy, script string) {
	t.Helper()
	host, port := splitHostPort(t, p.addr)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// -B: no __pycache__ in testdata.
	cmd := exec.CommandContext(ctx, redisPyPython, "-B", script, host, port, strconv.Itoa(p.redis.Port()))
	cmd.Dir = filepath.Join("testdata", "redispy")
	cmd.Env = append(os.Environ(), "PYTHONDONTWRITEBYTECODE=1", "PYTHONUNBUFFERED=1")
	start := time.Now()
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("%s did not finish within a minute; output so far:\n%s", script, out)
	}
	if err != nil {
		t.Fatalf("%s failed (%v) after %v:\n%s", script, err, time.Since(start).Round(time.Millisecond), out)
	}
	t.Logf("%s passed in %v:\n%s", script, time.Since(start).Round(time.Millisecond), out)
}

func splitHostPort(t *testing.T, addr string) (host, port string) {
	t.Helper()
	i := strings.LastIndexByte(addr, ':')
	if i < 0 {
		t.Fatalf("address %q has no port", addr)
	}
	return addr[:i], addr[i+1:]
}

// redisCLIPipeConfig caches every key, with an upstream timeout shorter than a mass insertion lasts.
const redisCLIPipeConfig = "upstream: {timeout: 250ms}\n" + defaultTestConfig

// TestRedisCLI runs redis-cli against featcache: one-shot commands, featcache's CACHE commands, an interactive
// prompt fed on stdin, its transcript compared with the same input against Redis, and --pipe mass insertion.
func TestRedisCLI(t *testing.T) {
	if _, err := exec.LookPath("redis-cli"); err != nil {
		t.Fatalf("redis-cli not found in PATH: %s", redistest.InstallHint)
	}
	p := startProxy(t, defaultTestConfig)

	t.Run("ping", func(t *testing.T) {
		if got := redisCLI(t, p.addr, nil, "PING"); got != "PONG\n" {
			t.Errorf("got %q; want %q", got, "PONG\n")
		}
	})

	t.Run("set_get", func(t *testing.T) {
		if got := redisCLI(t, p.addr, nil, "SET", "cli:k", "hello world"); got != "OK\n" {
			t.Errorf("SET: got %q; want %q", got, "OK\n")
		}
		for i := 0; i < 2; i++ { // a miss, then a hit
			if got := redisCLI(t, p.addr, nil, "GET", "cli:k"); got != "hello world\n" {
				t.Errorf("GET #%d: got %q; want %q", i+1, got, "hello world\n")
			}
			if got := redisCLI(t, p.addr, nil, "--no-raw", "GET", "cli:k"); got != "\"hello world\"\n" {
				t.Errorf("GET --no-raw #%d: got %q; want %q", i+1, got, "\"hello world\"\n")
			}
		}
		if got := redisCLI(t, p.addr, nil, "--no-raw", "GET", "cli:missing"); got != "(nil)\n" {
			t.Errorf("GET of a missing key: got %q; want %q", got, "(nil)\n")
		}
	})

	t.Run("binary_get", func(t *testing.T) {
		value := "\x00\x01\x7f\x80\xff\r\n\"quoted\" \\ tab\t end"
		c := p.dial()
		if got := string(c.Do("SET", "cli:bin", value)); got != "+OK\r\n" {
			t.Fatalf("SET: got %q", got)
		}
		if got := string(p.redis.Do("GET", "cli:bin")); got != "$"+strconv.Itoa(len(value))+"\r\n"+value+"\r\n" {
			t.Fatalf("the value in Redis: got %q", got)
		}
		for i := 0; i < 2; i++ { // a miss, then a hit
			if got, want := redisCLI(t, p.addr, nil, "--raw", "GET", "cli:bin"), value+"\n"; got != want {
				t.Errorf("GET --raw #%d: got %q; want %q", i+1, got, want)
			}
			got := redisCLI(t, p.addr, nil, "--no-raw", "GET", "cli:bin")
			want := redisCLI(t, p.redis.Addr(), nil, "--no-raw", "GET", "cli:bin")
			if got != want {
				t.Errorf("GET --no-raw #%d: got %q; Redis prints %q", i+1, got, want)
			}
		}
	})

	t.Run("cache_commands", func(t *testing.T) {
		redisCLI(t, p.addr, nil, "SET", "cli:explain", "v")
		redisCLI(t, p.addr, nil, "GET", "cli:explain") // miss: fills the entry
		redisCLI(t, p.addr, nil, "GET", "cli:explain") // hit
		stats := redisCLI(t, p.addr, nil, "--raw", "CACHE", "STATS")
		for _, want := range []string{"hits:", "misses:", "tracking:up"} {
			if !strings.Contains(stats, want) {
				t.Errorf("CACHE STATS does not contain %q:\n%s", want, stats)
			}
		}
		if hits := infoField(stats, "hits"); hits < 1 {
			t.Errorf("CACHE STATS hits:%d after a GET of a cached key; want at least 1:\n%s", hits, stats)
		}
		explain := redisCLI(t, p.addr, nil, "CACHE", "EXPLAIN", "cli:explain")
		for _, want := range []string{"key:\"cli:explain\"", "policy:default", "state:fresh", "kind:value"} {
			if !strings.Contains(explain, want) {
				t.Errorf("CACHE EXPLAIN after a GET does not contain %q:\n%s", want, explain)
			}
		}
		if got := redisCLI(t, p.addr, nil, "CACHE", "FLUSH"); got != "OK\n" {
			t.Errorf("CACHE FLUSH: got %q; want %q", got, "OK\n")
		}
		explain = redisCLI(t, p.addr, nil, "CACHE", "EXPLAIN", "cli:explain")
		if !strings.Contains(explain, "state:miss") {
			t.Errorf("CACHE EXPLAIN after CACHE FLUSH does not contain %q:\n%s", "state:miss", explain)
		}
		if got := redisCLI(t, p.addr, nil, "GET", "cli:explain"); got != "v\n" {
			t.Errorf("GET after CACHE FLUSH: got %q; want %q", got, "v\n")
		}
		help := redisCLI(t, p.addr, nil, "CACHE", "HELP")
		for _, want := range []string{"STATS", "EXPLAIN <key>", "FLUSH", "HELP"} {
			if !strings.Contains(help, want) {
				t.Errorf("CACHE HELP does not contain %q:\n%s", want, help)
			}
		}
		got := redisCLI(t, p.addr, nil, "--no-raw", "CACHE", "NOPE")
		if !strings.HasPrefix(got, "(error) ERR unknown subcommand") {
			t.Errorf("CACHE NOPE: got %q; want an unknown subcommand error", got)
		}
	})

	t.Run("info_server", func(t *testing.T) {
		info := redisCLI(t, p.addr, nil, "INFO", "server")
		for _, want := range []string{"# Server", "redis_version:", "run_id:"} {
			if !strings.Contains(info, want) {
				t.Errorf("INFO server does not contain %q:\n%s", want, info)
			}
		}
	})

	t.Run("command_docs", func(t *testing.T) {
		// redis-cli reads COMMAND DOCS for its hints; featcache must forward it as Redis answers it.
		got := redisCLI(t, p.addr, nil, "--no-raw", "COMMAND", "DOCS", "GET")
		want := redisCLI(t, p.redis.Addr(), nil, "--no-raw", "COMMAND", "DOCS", "GET")
		if got != want {
			t.Errorf("COMMAND DOCS GET:\ngot\n%s\nRedis prints\n%s", got, want)
		}
		if !strings.Contains(got, "summary") || !strings.Contains(got, "arguments") {
			t.Errorf("COMMAND DOCS GET has no summary or arguments:\n%s", got)
		}
	})

	t.Run("denied", func(t *testing.T) {
		got := redisCLI(t, p.addr, nil, "--no-raw", "CONFIG", "SET", "maxmemory", "1")
		if !strings.HasPrefix(got, "(error) ERR command 'config") ||
			!strings.Contains(got, "disabled by featcache (commands.deny)") {
			t.Errorf("CONFIG SET maxmemory 1: got %q; want featcache's commands.deny error", got)
		}
		// CONFIG GET is allowed (secrets redacted): redis-cli prints what it prints against Redis.
		got = redisCLI(t, p.addr, nil, "--no-raw", "CONFIG", "GET", "maxmemory")
		if want := redisCLI(t, p.redis.Addr(), nil, "--no-raw", "CONFIG", "GET", "maxmemory"); got != want {
			t.Errorf("CONFIG GET maxmemory: got %q; want %q", got, want)
		}
		if got := redisCLI(t, p.addr, nil, "PING"); got != "PONG\n" {
			t.Errorf("PING after a denied command: got %q", got)
		}
	})

	t.Run("interactive", func(t *testing.T) {
		// What an on-call engineer types at the prompt: redis-cli reads the lines from stdin as from the terminal.
		input := strings.Join([]string{
			`PING`,
			`PING "hello there"`,
			`SET s:a 1`,
			`GET s:a`,
			`GET s:a`,
			`MULTI`,
			`SET s:a 2`,
			`INCR s:a`,
			`GET s:a`,
			`MGET s:a s:none`,
			`EXEC`,
			`GET s:a`,
			`MGET s:a s:none s:a`,
			`SET s:bin "a\x00b\r\nc"`,
			`GET s:bin`,
			`STRLEN s:bin`,
			`HSET s:h f1 "v 1" f2 v2`,
			`HGETALL s:h`,
			`HGET s:h f1`,
			`EXPIRE s:a 100`,
			`TTL s:a`,
			`TYPE s:h`,
			`EXISTS s:a s:h s:none`,
			`GET s:h`,
			`INCR s:bin`,
			`NOSUCHCOMMAND x y`,
			`GET`,
			`DISCARD`,
			`EXEC`,
			`MULTI`,
			`GET s:a`,
			`NOSUCHCOMMAND`,
			`EXEC`,
			`MULTI`,
			`SET s:c 1`,
			`DISCARD`,
			`GET s:c`,
			`ECHO "tab\there"`,
			`CLIENT SETNAME oncall`,
			`CLIENT GETNAME`,
			`SELECT 0`,
			`DEL s:a s:h s:none`,
			`GET s:a`,
			`RPUSH s:l a b c`,
			`LRANGE s:l 0 -1`,
			`SCAN 0 MATCH s:l COUNT 1000`,
			// Explained below: featcache numbers its client connections itself, so the id differs from Redis's.
			`CLIENT ID`,
		}, "\n") + "\n"
		direct := redistest.Start(t)
		want := redisCLI(t, direct.Addr(), []byte(input), "--no-raw")
		got := redisCLI(t, p.addr, []byte(input), "--no-raw")
		got, gotID := cutLastLine(got)
		want, wantID := cutLastLine(want)
		if !regexp.MustCompile(`^\(integer\) [0-9]+$`).MatchString(gotID) {
			t.Errorf("CLIENT ID: got %q; want an integer (Redis printed %q)", gotID, wantID)
		}
		compareTranscripts(t, got, want)
	})

	t.Run("interactive_watch", func(t *testing.T) {
		// WATCH, then a transaction, as typed at the prompt: first unopposed, then with the key changed behind it.
		input := strings.Join([]string{
			`SET w:a 1`,
			`WATCH w:a`,
			`GET w:a`,
			`MULTI`,
			`INCR w:a`,
			`SET w:b x`,
			`GET w:a`,
			`EXEC`,
			`GET w:a`,
			`GET w:b`,
			`WATCH w:a`,
			`UNWATCH`,
			`MULTI`,
			`INCR w:a`,
			`EXEC`,
			`GET w:a`,
		}, "\n") + "\n"
		direct := redistest.Start(t)
		want := redisCLI(t, direct.Addr(), []byte(input), "--no-raw")
		got := redisCLI(t, p.addr, []byte(input), "--no-raw")
		compareTranscripts(t, got, want)
	})

	t.Run("pipe", func(t *testing.T) {
		// A featcache of its own with a short upstream.timeout: every SET is answered in well under a
		// millisecond, but the mass insert as a whole lasts longer than the timeout, as it does in production
		// with the default 1s and a bigger file.
		p := startProxy(t, redisCLIPipeConfig)
		const n = 5000
		var in bytes.Buffer
		for i := 0; i < n; i++ {
			in.Write(redistest.Encode("SET", fmt.Sprintf("pipe:%d", i), fmt.Sprintf("value-%d\r\n", i)))
		}
		// Some keys are cached before the mass insert, which must invalidate them.
		for _, i := range []int{0, 1, n / 2, n - 1} {
			p.do("GET", fmt.Sprintf("pipe:%d", i))
		}
		start := time.Now()
		stdout, stderr, err := runRedisCLI(t, p.addr, in.Bytes(), "--pipe")
		if want := fmt.Sprintf("errors: 0, replies: %d", n); err != nil || !strings.Contains(stdout, want) {
			t.Errorf("redis-cli --pipe (exit: %v): summary does not contain %q:\n%s%s", err, want, stdout, stderr)
		}
		t.Logf("redis-cli --pipe of %d SETs: %v", n, time.Since(start).Round(time.Millisecond))
		if got, want := string(p.redis.Do("DBSIZE")), ":"+strconv.Itoa(n)+"\r\n"; got != want {
			t.Errorf("DBSIZE in Redis after --pipe: got %q; want %q", got, want)
		}
		c := p.dial()
		for _, i := range []int{0, 1, n / 2, n - 1} {
			k, v := fmt.Sprintf("pipe:%d", i), fmt.Sprintf("value-%d\r\n", i)
			want := "$" + strconv.Itoa(len(v)) + "\r\n" + v + "\r\n"
			if got := string(c.Do("GET", k)); got != want {
				t.Errorf("GET %s after --pipe: got %q; want %q", k, got, want)
			}
		}
		args := []string{"MGET"}
		for i := 0; i < n; i++ {
			args = append(args, fmt.Sprintf("pipe:%d", i))
		}
		if got, want := string(c.Do(args...)), string(p.redis.Do(args...)); got != want {
			t.Errorf("MGET of the %d keys through featcache differs from Redis's (%d bytes; want %d)", n, len(got), len(want))
		}
	})
}

// redisCLI runs redis-cli against addr with args, stdin as its input (nil: none), and returns its standard output.
// redis-cli's stdout is not a terminal here, so it prints replies raw unless args say --no-raw. The test fails if
// redis-cli exits non-zero or writes to stderr.
func redisCLI(t *testing.T, addr string, stdin []byte, args ...string) string {
	t.Helper()
	stdout, stderr, err := runRedisCLI(t, addr, stdin, args...)
	switch {
	case err != nil:
		t.Fatalf("redis-cli %q: %v; output:\n%s%s", args, err, stdout, stderr)
	case stderr != "":
		t.Fatalf("redis-cli %q wrote to stderr:\n%s", args, stderr)
	}
	return stdout
}

// runRedisCLI runs redis-cli against addr and returns what it printed and how it exited; the test fails if it
// cannot be started or takes more than 20 seconds.
func runRedisCLI(t *testing.T, addr string, stdin []byte, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	host, port := splitHostPort(t, addr)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "redis-cli", append([]string{"-h", host, "-p", port}, args...)...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err = cmd.Run()
	var exitErr *exec.ExitError
	switch {
	case ctx.Err() != nil:
		t.Fatalf("redis-cli %q did not finish within 20s; output:\n%s%s", args, out.Bytes(), errOut.Bytes())
	case err != nil && !errors.As(err, &exitErr):
		t.Fatalf("redis-cli %q: %v", args, err)
	}
	return out.String(), errOut.String(), err
}

// compareTranscripts compares what redis-cli printed for some input against featcache with what it printed for
// the same input against Redis. It reports the first line that differs (later lines are usually shifted by it)
// and both transcripts.
func compareTranscripts(t *testing.T, got, want string) {
	t.Helper()
	if got == want {
		return
	}
	g, w := strings.Split(got, "\n"), strings.Split(want, "\n")
	for i := 0; i < max(len(g), len(w)); i++ {
		gl, wl := testkit.Line(g, i), testkit.Line(w, i)
		if gl != wl {
			t.Errorf("redis-cli output differs from Redis's from line %d: got %q; Redis prints %q\n"+
				"through featcache:\n%s\nagainst Redis:\n%s", i+1, gl, wl, got, want)
			return
		}
	}
}

// cutLastLine splits off the last line of s.
func cutLastLine(s string) (rest, last string) {
	s = strings.TrimSuffix(s, "\n")
	i := strings.LastIndexByte(s, '\n')
	return s[:i+1], s[i+1:]
}

// infoField returns the integer value of "name:" in INFO-style text, or -1.
func infoField(text, name string) int64 {
	for _, line := range strings.Split(text, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), name+":"); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			if err == nil {
				return n
			}
		}
	}
	return -1
}
