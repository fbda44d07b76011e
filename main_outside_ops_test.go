package main

import (
	"bufio"
	"crypto/tls"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"featcache/internal/redistest"
)

// These tests operate featcache as its documentation tells an operator to (docs/operations.md,
// docs/configuration.md, docs/security.md, config.yaml): the -check flag, the metrics, /healthz and /readyz, the
// CACHE admin commands, reloads, logs and the client limits. Where Redis has the same behaviour, the replies are
// compared with Redis's own.

// opsScrape returns the admin listener's /metrics text.
func opsScrape(t *testing.T, in *instance) string {
	t.Helper()
	c := http.Client{Timeout: 5 * time.Second}
	r, err := c.Get(in.admin + "/metrics")
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	defer r.Body.Close()
	body, err := io.ReadAll(r.Body)
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	return string(body)
}

// opsMetric is the value of the sample series (name with its labels as the exposition writes them, such as
// `featcache_requests_total{policy="k",result="hit"}`) in text, or -1 when it is not there.
func opsMetric(text, series string) float64 {
	for _, line := range strings.Split(text, "\n") {
		if rest, ok := strings.CutPrefix(line, series+" "); ok {
			v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			if err != nil {
				return -1
			}
			return v
		}
	}
	return -1
}

// opsValue scrapes in and returns the value of series.
func opsValue(t *testing.T, in *instance, series string) float64 {
	t.Helper()
	return opsMetric(opsScrape(t, in), series)
}

// runCheck runs featcache -check with the configuration text and the flags args, and returns its combined output
// and exit code.
func runCheck(t *testing.T, text string, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(binary(t), append([]string{"-config", writeConfig(t, text), "-check"}, args...)...)
	out, err := cmd.CombinedOutput()
	if err == nil {
		return string(out), 0
	}
	if exit, ok := err.(*exec.ExitError); ok {
		return string(out), exit.ExitCode()
	}
	t.Fatalf("-check: %v", err)
	return "", -1
}

// TestOutsideOpsCheckNamesFieldAndLine: -check on a bad file exits 1 with an error that names the field, the value
// and the line (docs/configuration.md, config.yaml's header), whether the value does not parse or parses and is out
// of range; on a good file it exits 0 with the OK line.
func TestOutsideOpsCheckNamesFieldAndLine(t *testing.T) {
	out, code := runCheck(t, "shutdown_delay: 0s\npolicies:\n  - {name: k, prefix: \"k:\", hard_ttl: 1h}\n")
	if code != 0 || !strings.Contains(out, "configuration OK") || !strings.Contains(out, "1 policies") {
		t.Fatalf("-check of a good file: exit %d, %q", code, out)
	}
	// The flags replace the file's values before they are judged: a file that listens on every interface runs on
	// loopback with -listen, and an error about a flag's value points at no line of the file.
	open := "listen: \"0.0.0.0:7777\"\nupstream:\n  addresses: [\"nohost\"]\n"
	if out, code := runCheck(t, "listen: \"0.0.0.0:7777\"\n"); code != 1 || !strings.Contains(out, "protected mode") || !strings.Contains(out, "(line 1)") {
		t.Fatalf("-check of a file listening on every interface without a password: exit %d, %q", code, out)
	}
	if out, code := runCheck(t, open, "-listen", "127.0.0.1:7777", "-upstream", "127.0.0.1:6379"); code != 0 || !strings.Contains(out, "listen 127.0.0.1:7777") {
		t.Fatalf("-check with -listen on loopback and -upstream overriding the file: exit %d, %q; want OK", code, out)
	}
	if out, code := runCheck(t, open, "-listen", "nohost", "-upstream", "127.0.0.1:6379"); code != 1 || !strings.Contains(out, `listen: invalid address "nohost"`) || strings.Contains(out, "(line") {
		t.Fatalf("-check with an invalid -listen: exit %d, %q; want the flag's value named, with no line of the file", code, out)
	}
	cases := []struct {
		name, text, want string
	}{
		{"duration that does not parse", "limits:\n  idle_timeout: 5\n", `limits.idle_timeout: invalid duration "5"`},
		{"unknown field", "limits:\n  max_client: 5\n", `unknown field "max_client"`},
		{"max_clients 0", "log:\n  level: info\nlimits:\n  max_clients: 0\n", "limits.max_clients"},
		{"max_clients negative", "limits:\n  idle_timeout: 1s\n  max_clients: -5\n", "limits.max_clients"},
		{"max_output_bytes under 1KB", "limits:\n  max_output_bytes: 10\n", "limits.max_output_bytes"},
		{"max_conn_age under 1s", "limits:\n\n  max_conn_age: 500ms\n", "limits.max_conn_age"},
		{"upstream.timeout 0", "upstream:\n  timeout: 0s\n", "upstream.timeout"},
		{"upstream.conns 65", "upstream:\n  conns: 65\n", "upstream.conns"},
		{"shutdown_timeout 0", "shutdown_timeout: 0s\n", "shutdown_timeout"},
		{"hotkeys_interval under 1s", "warm:\n  hotkeys_interval: 10ms\n", "warm.hotkeys_interval"},
		{"max_memory 0", "local:\n  max_memory: 0\n", "local.max_memory"},
		{"listen port out of range", "listen: \"127.0.0.1:99999\"\n", "listen"},
		{"admin without a port", "admin: \"notanaddr\"\n", "admin"},
		{"soft_ttl over hard_ttl", "policies:\n  - name: a\n    prefix: \"a\"\n    hard_ttl: 1m\n    soft_ttl: 2m\n", `policy "a": soft_ttl`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out, code := runCheck(t, tc.text)
			if code != 1 || !strings.Contains(out, tc.want) {
				t.Fatalf("-check: exit %d, %q; want exit 1 naming %s", code, out, tc.want)
			}
			// The line is the one of the offending field: the last non-empty line of each case's text.
			lines := strings.Split(strings.TrimRight(tc.text, "\n"), "\n")
			if tc.name == "soft_ttl over hard_ttl" {
				lines = lines[:5]
			}
			want := "(line " + strconv.Itoa(len(lines)) + ")"
			if !strings.Contains(out, want) {
				t.Fatalf("-check: %q; want the line, %s", strings.TrimSpace(out), want)
			}
		})
	}
}

// TestOutsideOpsLimitsLikeRedis: limits.max_clients answers one more client with Redis's own maxclients error,
// byte for byte, and closes it; limits.idle_timeout closes an idle client silently, as Redis's timeout does; both are
// counted in the documented metrics, and the clients still connected are served.
func TestOutsideOpsLimitsLikeRedis(t *testing.T) {
	direct := redistest.Start(t, "--maxclients", "1")
	held := direct.Dial()
	held.Do("PING")
	over := direct.Dial()
	redisReply, err := over.ReadTimeout(5 * time.Second)
	if err != nil {
		t.Fatalf("Redis over maxclients: %v", err)
	}

	redis := redistest.Start(t)
	in := startBinary(t, redis, "shutdown_delay: 0s\nlimits:\n  max_clients: 2\n  idle_timeout: 1s\n")
	a, b := redistest.Dial(t, in.addr), redistest.Dial(t, in.addr)
	a.Do("PING")
	b.Do("PING")
	third := redistest.Dial(t, in.addr)
	got, err := third.ReadTimeout(5 * time.Second)
	if err != nil || string(got) != string(redisReply) {
		t.Fatalf("featcache over max_clients: %q, %v; Redis answers %q", got, err, redisReply)
	}
	if _, err := third.ReadTimeout(5 * time.Second); err != io.EOF {
		t.Fatalf("after the refusal: %v; want the connection closed", err)
	}
	if v := opsValue(t, in, "featcache_rejected_connections_total"); v != 1 {
		t.Fatalf("featcache_rejected_connections_total = %v; want 1", v)
	}
	if v := opsValue(t, in, "featcache_client_connections"); v != 2 {
		t.Fatalf("featcache_client_connections = %v with the refused client gone; want 2", v)
	}

	// Keep b busy while a stays idle: a is closed with nothing written, b is not.
	start := time.Now()
	for time.Since(start) < 1500*time.Millisecond {
		if got := string(b.Do("PING")); got != "+PONG\r\n" {
			t.Fatalf("busy client: %q", got)
		}
		// A command every 100ms keeps it well inside the 1s timeout.
		time.Sleep(100 * time.Millisecond)
	}
	frame, err := a.ReadTimeout(10 * time.Second)
	if err != io.EOF {
		t.Fatalf("idle client: %q, %v; want the connection closed silently", frame, err)
	}
	if got := string(b.Do("PING")); got != "+PONG\r\n" {
		t.Fatalf("busy client after the idle one was closed: %q", got)
	}
	redistest.Eventually(t, 5*time.Second, "idle_timeout disconnect counted", func() bool {
		return opsValue(t, in, `featcache_client_limit_disconnects_total{reason="idle_timeout"}`) >= 1
	})
}

// TestOutsideOpsMetricsMove: the metrics the operations page documents exist with their documented types, and the
// counters move as it says for hits, misses, bypasses, forwards, refusals (a denied command, and SELECT of another
// database, which featcache cannot run for a client), and invalidations and flushes caused by another client of the
// same Redis.
func TestOutsideOpsMetricsMove(t *testing.T) {
	redis := redistest.Start(t)
	redis.Do("SET", "k:1", "v1")
	in := startBinary(t, redis, "shutdown_delay: 0s\npolicies:\n  - {name: k, prefix: \"k:\", hard_ttl: 1h}\n")
	c := redistest.Dial(t, in.addr)
	before := opsScrape(t, in)
	delta := func(after, series string) float64 {
		return opsMetric(after, series) - max(opsMetric(before, series), 0)
	}
	c.Do("GET", "k:1")                // miss
	c.Do("GET", "k:1")                // hit
	c.Do("GET", "other")              // no policy: bypass, forwarded
	c.Do("CONFIG", "SET", "hz", "10") // denied: refused
	c.Do("SELECT", "1")               // another database, which featcache cannot serve: refused
	after := opsScrape(t, in)
	for series, want := range map[string]float64{
		`featcache_requests_total{policy="k",result="miss"}`:        1,
		`featcache_requests_total{policy="k",result="hit"}`:         1,
		`featcache_requests_total{policy="(none)",result="bypass"}`: 1,
		`featcache_errors_total{reason="refused"}`:                  2,
		`featcache_commands_total{command="get"}`:                   3,
		`featcache_commands_total{command="config|set"}`:            1,
		`featcache_fills_total{outcome="stored"}`:                   1,
	} {
		if got := delta(after, series); got != want {
			t.Errorf("%s moved by %v; want %v", series, got, want)
		}
	}
	// Both vectors list what was seen so far: checked once commands have been counted.
	text := after
	types := map[string]string{
		"featcache_request_duration_seconds": "histogram", "featcache_commands_total": "counter",
		"featcache_build_info": "gauge", "featcache_requests_total": "counter",
		"featcache_served_age_seconds": "histogram", "featcache_upstream_duration_seconds": "histogram",
		"featcache_upstream_up": "gauge", "featcache_tracking_up": "gauge",
		"featcache_invalidated_keys_total": "counter", "featcache_flushes_total": "counter",
		"featcache_local_bytes": "gauge", "featcache_local_capacity_bytes": "gauge", "featcache_local_entries": "gauge",
		"featcache_evictions_total": "counter", "featcache_fills_total": "counter", "featcache_not_stored_total": "counter",
		"featcache_forwarded_total": "counter", "featcache_client_connections": "gauge",
		"featcache_client_connections_total": "counter", "featcache_ready": "gauge", "featcache_draining": "gauge",
		"featcache_config_reloads_total": "counter", "featcache_errors_total": "counter",
		"featcache_rejected_connections_total": "counter", "featcache_client_limit_disconnects_total": "counter",
		"featcache_client_buffer_bytes": "gauge",
	}
	for name, typ := range types {
		if !strings.Contains(text, "# TYPE "+name+" "+typ+"\n") {
			t.Errorf("%s is not exposed as a %s", name, typ)
		}
	}
	for _, series := range []string{`featcache_not_stored_total{reason="too_large"}`, `featcache_not_stored_total{reason="not_admitted"}`,
		`featcache_errors_total{reason="upstream"}`, `featcache_errors_total{reason="refused"}`, "process_resident_memory_bytes", "go_goroutines"} {
		if opsMetric(text, series) < 0 {
			t.Errorf("%s is not listed", series)
		}
	}
	if !regexp.MustCompile(`featcache_build_info\{goversion="go[^"]+",version="[^"]+"\} 1`).MatchString(text) {
		t.Errorf("featcache_build_info lacks its labels")
	}

	if delta(after, "featcache_forwarded_total") < 1 {
		t.Errorf("featcache_forwarded_total did not move for a GET no policy caches")
	}
	if got := redis.Calls("config|set"); got != 0 {
		t.Errorf("the denied CONFIG SET reached Redis %d times", got)
	}

	// Another client of Redis writes the cached key, then flushes: featcache counts both and serves Redis's values.
	before = opsScrape(t, in)
	redis.Do("SET", "k:1", "v2")
	redistest.Eventually(t, 5*time.Second, "the other client's SET invalidates", func() bool {
		return delta(opsScrape(t, in), "featcache_invalidated_keys_total") >= 1
	})
	if got := string(c.Do("GET", "k:1")); got != "$2\r\nv2\r\n" {
		t.Fatalf("GET after another client's SET: %q", got)
	}
	redis.Do("FLUSHALL")
	redistest.Eventually(t, 5*time.Second, "the other client's FLUSHALL flushes", func() bool {
		return delta(opsScrape(t, in), "featcache_flushes_total") >= 1
	})
	if got, want := string(c.Do("GET", "k:1")), string(redis.Do("GET", "k:1")); got != want {
		t.Fatalf("GET after FLUSHALL: %q; Redis answers %q", got, want)
	}
	if got := opsValue(t, in, "featcache_local_entries"); got != 0 {
		t.Errorf("featcache_local_entries = %v after FLUSHALL and a nil read; want 0", got)
	}
}

// TestOutsideOpsHealthThroughPausedRedis: with Redis paused (SIGSTOP), /healthz and /readyz stay 200,
// featcache_upstream_up turns 0, a miss gets featcache's upstream error and counts as one; once Redis resumes,
// upstream_up and tracking_up return to 1 and reads are served again.
func TestOutsideOpsHealthThroughPausedRedis(t *testing.T) {
	redis := redistest.Start(t)
	redis.Do("SET", "k:1", "v1")
	in := startBinary(t, redis, "shutdown_delay: 0s\nupstream:\n  timeout: 300ms\npolicies:\n  - {name: k, prefix: \"k:\", hard_ttl: 1h}\n")
	c := redistest.Dial(t, in.addr)
	redis.Pause()
	resumed := false
	defer func() {
		if !resumed {
			redis.Resume()
		}
	}()
	redistest.Eventually(t, 10*time.Second, "upstream_up 0 while Redis is paused", func() bool {
		return opsValue(t, in, "featcache_upstream_up") == 0
	})
	if h, r := in.status("/healthz"), in.status("/readyz"); h != http.StatusOK || r != http.StatusOK {
		t.Fatalf("while Redis is paused: /healthz %d, /readyz %d; want 200 and 200", h, r)
	}
	errorsBefore := opsValue(t, in, `featcache_errors_total{reason="upstream"}`)
	if got := string(c.Do("GET", "k:2")); !strings.HasPrefix(got, "-ERR featcache upstream") {
		t.Fatalf("a miss while Redis is paused: %q; want featcache's upstream error", got)
	}
	if got := opsValue(t, in, `featcache_errors_total{reason="upstream"}`) - errorsBefore; got != 1 {
		t.Fatalf("featcache_errors_total{reason=\"upstream\"} moved by %v; want 1", got)
	}
	redis.Resume()
	resumed = true
	redistest.Eventually(t, 15*time.Second, "upstream_up and tracking_up 1 after Redis resumes", func() bool {
		text := opsScrape(t, in)
		return opsMetric(text, "featcache_upstream_up") == 1 && opsMetric(text, "featcache_tracking_up") == 1
	})
	if got := string(c.Do("GET", "k:1")); got != "$2\r\nv1\r\n" {
		t.Fatalf("GET after Redis resumed: %q", got)
	}
}

// TestOutsideOpsAdminCommands: CACHE commands with odd arguments answer an error and leave the connection usable;
// CACHE RELOAD of an invalid or missing file answers why, changes nothing (the policy and its cached entry stay)
// and is counted as rejected; a valid file is applied, and settings that need a restart are named.
func TestOutsideOpsAdminCommands(t *testing.T) {
	redis := redistest.Start(t)
	redis.Do("SET", "k:1", "v1")
	good := "shutdown_delay: 0s\npolicies:\n  - {name: k, prefix: \"k:\", hard_ttl: 1h}\n"
	in := startBinary(t, redis, good)
	c := redistest.Dial(t, in.addr)
	for _, args := range [][]string{
		{"CACHE"}, {"CACHE", "BOGUS"}, {"CACHE", "STATS", "x"}, {"CACHE", "EXPLAIN"}, {"CACHE", "FLUSH", "x"},
		{"CACHE", "WARM"}, {"CACHE", "WARM", "FILE"}, {"CACHE", "WARM", "bogus", "x"}, {"CACHE", "WARM", "FILE", "/nonexistent/keys"},
		{"CACHE", "WARM", "ZSET", "nokey"}, {"CACHE", "HOTKEYS", "-1"}, {"CACHE", "HOTKEYS", "abc"},
		{"CACHE", "HOTKEYS", "99999999999999999999"}, {"CACHE", "HOTKEYS", "1", "2"}, {"CACHE", "RELOAD", "x"},
	} {
		if got := string(c.Do(args...)); !strings.HasPrefix(got, "-ERR ") {
			t.Errorf("%q: %q; want an error", args, got)
		}
	}
	if got := string(c.Do("PING")); got != "+PONG\r\n" {
		t.Fatalf("PING after the odd CACHE commands: %q", got)
	}
	if got := string(c.Do("CACHE", "HOTKEYS", "0")); got != "*0\r\n" {
		t.Errorf("CACHE HOTKEYS 0: %q; want an empty array", got)
	}

	opsStored(t, c, "k:1")
	explain := string(c.Do("CACHE", "EXPLAIN", "k:1"))
	if !strings.Contains(explain, "policy:k") || !strings.Contains(explain, "state:fresh") {
		t.Fatalf("CACHE EXPLAIN k:1: %q", explain)
	}
	path := in.configPath()
	for _, bad := range []struct{ name, text, want string }{
		{"invalid duration", "policies:\n  - {name: k, prefix: \"k:\", hard_ttl: soon}\n", `hard_ttl: invalid duration "soon"`},
		{"unknown field", "bogus: 1\n", `unknown top-level field "bogus" (line 1)`},
		{"missing file", "", "no such file or directory"},
	} {
		if bad.name == "missing file" {
			os.Remove(path)
		} else if err := os.WriteFile(path, []byte(bad.text), 0o644); err != nil {
			t.Fatal(err)
		}
		rejected := opsValue(t, in, `featcache_config_reloads_total{result="rejected"}`)
		got := string(c.Do("CACHE", "RELOAD"))
		if !strings.HasPrefix(got, "-ERR reload rejected") || !strings.Contains(got, bad.want) {
			t.Errorf("CACHE RELOAD of a file with %s: %q; want a rejection naming %s", bad.name, got, bad.want)
		}
		text := opsScrape(t, in)
		if opsMetric(text, `featcache_config_reloads_total{result="rejected"}`) != rejected+1 ||
			opsMetric(text, "featcache_config_last_reload_successful") != 0 {
			t.Errorf("a rejected reload (%s) is not counted as one", bad.name)
		}
		if got := string(c.Do("CACHE", "EXPLAIN", "k:1")); got != explain && !strings.Contains(got, "state:fresh") {
			t.Errorf("after a rejected reload (%s): %q; want the entry still fresh under policy k", bad.name, got)
		}
		if got := string(c.Do("GET", "k:1")); got != "$2\r\nv1\r\n" {
			t.Errorf("GET after a rejected reload (%s): %q", bad.name, got)
		}
	}
	if err := os.WriteFile(path, []byte(good+"password: s3cretreload\nlimits:\n  max_clients: 5\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	got := string(c.Do("CACHE", "RELOAD"))
	if !strings.Contains(got, "restart_needed:password,limits.max_clients") || strings.Contains(got, "s3cretreload") {
		t.Fatalf("CACHE RELOAD of a file that sets a password and max_clients: %q; want both named as needing a restart", got)
	}
	if got := string(c.Do("GET", "k:1")); got != "$2\r\nv1\r\n" {
		t.Fatalf("GET after a reload that sets a password: %q; want the running configuration (no AUTH) kept", got)
	}
	if v := opsValue(t, in, "featcache_config_last_reload_successful"); v != 1 {
		t.Fatalf("featcache_config_last_reload_successful = %v after an applied reload", v)
	}
}

// TestOutsideOpsLogsHoldNoSecrets: with json logs at debug level, a client password and an upstream password in
// use, wrong passwords, CONFIG GET, CACHE commands, a reload and a tracking loss log neither password, and every log
// line is one JSON object.
func TestOutsideOpsLogsHoldNoSecrets(t *testing.T) {
	const clientPW, upstreamPW = "cl1entPassw0rd", "upstr3amPassw0rd"
	redis := redistest.Start(t, "--requirepass", upstreamPW)
	cfg := "shutdown_delay: 0s\npassword: " + clientPW + "\nupstream:\n  password: " + upstreamPW +
		"\nlog:\n  format: json\n  level: debug\npolicies:\n  - {name: k, prefix: \"k:\", hard_ttl: 1h}\n"
	in := startBinary(t, redis, cfg)
	c := redistest.Dial(t, in.addr)
	if got := string(c.Do("GET", "k:1")); got != "-NOAUTH Authentication required.\r\n" {
		t.Fatalf("GET before AUTH: %q", got)
	}
	if got := string(c.Do("AUTH", "wrong"+clientPW)); !strings.HasPrefix(got, "-WRONGPASS") {
		t.Fatalf("AUTH with a wrong password: %q", got)
	}
	if got := string(c.Do("AUTH", clientPW)); got != "+OK\r\n" {
		t.Fatalf("AUTH: %q", got)
	}
	for _, args := range [][]string{{"CONFIG", "GET", "requirepass"}, {"CACHE", "STATS"}, {"INFO", "featcache"}, {"CACHE", "RELOAD"},
		{"GET", "k:1"}, {"CLIENT", "LIST"}} {
		if got := string(c.Do(args...)); strings.Contains(got, clientPW) || strings.Contains(got, upstreamPW) {
			t.Errorf("%q shows a password: %q", args, got)
		}
	}
	killed := redis.Dial()
	killed.Do("AUTH", upstreamPW)
	killed.Do("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
	redistest.Eventually(t, 10*time.Second, "tracking back after the kill", func() bool {
		return opsValue(t, in, "featcache_tracking_up") == 1 && strings.Contains(in.log.String(), "tracking")
	})
	in.signal(os.Interrupt)
	in.wait(30 * time.Second)
	logs := in.log.String()
	if strings.Contains(logs, clientPW) || strings.Contains(logs, upstreamPW) {
		t.Fatalf("the log holds a password:\n%s", logs)
	}
	sc := bufio.NewScanner(strings.NewReader(logs))
	for sc.Scan() {
		var line map[string]any
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			t.Errorf("a log line is not JSON: %q", sc.Text())
		}
	}
}

// blockedOnRedis is how many of Redis's clients are blocked in cmd, from CLIENT LIST.
func blockedOnRedis(redis *redistest.Server, cmd string) int {
	return strings.Count(string(redis.Do("CLIENT", "LIST")), "cmd="+cmd+" ")
}

// TestOutsideOpsSIGTERMWithBlockedClient: SIGTERM while a client waits in BLPOP with no timeout. featcache serves
// it until shutdown_timeout, then closes it and exits 0 within the documented bound (shutdown_timeout and the
// grace after it, not never), and Redis is left with no blocked command that could take an element nobody will
// receive: a value pushed after the exit stays in the list.
func TestOutsideOpsSIGTERMWithBlockedClient(t *testing.T) {
	redis := redistest.Start(t)
	in := startBinary(t, redis, "shutdown_delay: 0s\nshutdown_timeout: 1s\n")
	c := redistest.Dial(t, in.addr)
	if err := c.Send("BLPOP", "q", "0"); err != nil {
		t.Fatal(err)
	}
	redistest.Eventually(t, 5*time.Second, "BLPOP blocked on Redis", func() bool { return blockedOnRedis(redis, "blpop") == 1 })
	start := time.Now()
	in.signal(syscall.SIGTERM)
	in.wait(15 * time.Second)
	t.Logf("exited %v after SIGTERM", time.Since(start).Round(time.Millisecond))
	if frame, err := c.ReadTimeout(5 * time.Second); err == nil {
		t.Fatalf("the blocked client got %q; want its connection closed", frame)
	}
	redistest.Eventually(t, 5*time.Second, "no BLPOP left blocked on Redis", func() bool { return blockedOnRedis(redis, "blpop") == 0 })
	redis.Do("RPUSH", "q", "x")
	if got := string(redis.Do("LLEN", "q")); got != ":1\r\n" {
		t.Fatalf("LLEN q after a push = %q; want the element kept", got)
	}
}

// TestOutsideOpsBlockedClientLeavesAfterIdleTimeout: limits.idle_timeout never closes a client waiting in a
// blocking command, and when such a client leaves after the idle timeout has passed, featcache still notices and
// Redis drops the blocked command, as it does for its own client that leaves: the next push is not popped for
// nobody.
func TestOutsideOpsBlockedClientLeavesAfterIdleTimeout(t *testing.T) {
	redis := redistest.Start(t)
	in := startBinary(t, redis, "shutdown_delay: 0s\nlimits:\n  idle_timeout: 1s\n")
	c := redistest.Dial(t, in.addr)
	if err := c.Send("BLPOP", "q", "0"); err != nil {
		t.Fatal(err)
	}
	redistest.Eventually(t, 5*time.Second, "BLPOP blocked on Redis", func() bool { return blockedOnRedis(redis, "blpop") == 1 })
	// Past the idle timeout the client is still served: it is waiting, not idle.
	time.Sleep(1500 * time.Millisecond) // idle_timeout (1s) passes while the command waits
	if frame, err := c.ReadTimeout(100 * time.Millisecond); err == nil || !os.IsTimeout(err) {
		t.Fatalf("a client blocked past idle_timeout: %q, %v; want it still waiting", frame, err)
	}
	c.Close()
	redistest.Eventually(t, 5*time.Second, "no BLPOP left blocked on Redis after the client left", func() bool {
		return blockedOnRedis(redis, "blpop") == 0
	})
	redis.Do("RPUSH", "q", "x")
	if got := string(redis.Do("LLEN", "q")); got != ":1\r\n" {
		t.Fatalf("LLEN q after a push = %q; want the element kept", got)
	}
}

// TestOutsideOpsTLSBothWays: with tls.cert_file, key_file and client_ca_file, the listener speaks TLS only and
// asks for client certificates: a plain-text client and a TLS client without a certificate (or offering TLS 1.1)
// are not served, one with a certificate is; upstream.tls reaches a Redis that listens on TLS only and asks for
// featcache's certificate, tracking included (a write by another client invalidates).
func TestOutsideOpsTLSBothWays(t *testing.T) {
	certs := redistest.NewCerts(t)
	redis := redistest.StartTLS(t, certs, true)
	redis.Do("SET", "k:1", "v1")
	cfg := "shutdown_delay: 0s\n" +
		"tls:\n  cert_file: " + strconv.Quote(certs.ServerCertFile) + "\n  key_file: " + strconv.Quote(certs.ServerKeyFile) +
		"\n  client_ca_file: " + strconv.Quote(certs.CAFile) + "\n" +
		"upstream:\n  tls:\n    enabled: true\n    ca_file: " + strconv.Quote(certs.CAFile) +
		"\n    cert_file: " + strconv.Quote(certs.ClientCertFile) + "\n    key_file: " + strconv.Quote(certs.ClientKeyFile) + "\n" +
		"policies:\n  - {name: k, prefix: \"k:\", hard_ttl: 1h}\n"
	in := startBinary(t, redis, cfg)

	plain := redistest.Dial(t, in.addr)
	plain.Send("PING")
	if frame, err := plain.ReadTimeout(5 * time.Second); err == nil {
		t.Fatalf("a plain-text client got %q; want no reply", frame)
	}
	for name, cfg := range map[string]*tls.Config{
		"without a certificate": certs.ClientConfig(false),
		"offering TLS 1.1 only": func() *tls.Config {
			c := certs.ClientConfig(true)
			c.MinVersion, c.MaxVersion = tls.VersionTLS11, tls.VersionTLS11
			return c
		}(),
	} {
		cfg.ServerName = "127.0.0.1"
		nc, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", in.addr, cfg)
		if err == nil {
			nc.SetDeadline(time.Now().Add(5 * time.Second))
			_, err = nc.Write(redistest.Encode("PING"))
			if err == nil {
				var b [64]byte
				var n int
				n, err = nc.Read(b[:])
				if err == nil {
					t.Errorf("a TLS client %s got %q; want the handshake refused", name, b[:n])
				}
			}
			nc.Close()
		}
	}
	c := redistest.DialTLS(t, in.addr, certs.ClientConfig(true))
	if got := string(c.Do("GET", "k:1")); got != "$2\r\nv1\r\n" {
		t.Fatalf("GET over mutual TLS: %q", got)
	}
	c.Do("GET", "k:1")
	redis.Do("SET", "k:1", "v2")
	redistest.Eventually(t, 5*time.Second, "the other client's write seen over upstream TLS", func() bool {
		return string(c.Do("GET", "k:1")) == "$2\r\nv2\r\n"
	})
	if v := opsValue(t, in, "featcache_tracking_up"); v != 1 {
		t.Fatalf("featcache_tracking_up = %v over upstream TLS", v)
	}
}

// opsStored reads key through c until featcache stores it. Ready does not wait for tracking, and a read before
// tracking is established is served and not stored (CACHE EXPLAIN: not_stored:untrusted).
func opsStored(t *testing.T, c *redistest.Conn, key string) {
	t.Helper()
	redistest.Eventually(t, 10*time.Second, key+" stored by a read", func() bool {
		c.Do("GET", key)
		return strings.Contains(string(c.Do("CACHE", "EXPLAIN", key)), "state:fresh")
	})
}

// TestOutsideOpsTrackingLossAndRestart: another client of Redis kills featcache's tracking connection. /readyz
// stays 200, the cached entry is not served any more (on_tracking_loss: flush), and tracking comes back; the same
// server coming back is no whole-tier flush (featcache_flushes_total stays, as the operations page says). Then Redis
// restarts: the server that comes back is another one, and that flush is counted.
func TestOutsideOpsTrackingLossAndRestart(t *testing.T) {
	redis := redistest.Start(t)
	redis.Do("SET", "k:1", "v1")
	in := startBinary(t, redis, "shutdown_delay: 0s\npolicies:\n  - {name: k, prefix: \"k:\", hard_ttl: 1h}\n")
	c := redistest.Dial(t, in.addr)
	opsStored(t, c, "k:1")
	flushes := opsValue(t, in, "featcache_flushes_total")
	if got := string(redis.Do("CLIENT", "KILL", "SKIPME", "yes")); got == ":0\r\n" {
		t.Fatalf("CLIENT KILL closed nothing: %q", got)
	}
	redistest.Eventually(t, 10*time.Second, "tracking back", func() bool {
		return opsValue(t, in, "featcache_tracking_up") == 1 && strings.Count(in.log.String(), "tracking: established") >= 2
	})
	if got := in.status("/readyz"); got != http.StatusOK {
		t.Fatalf("/readyz after a tracking loss: %d", got)
	}
	if got := string(c.Do("CACHE", "EXPLAIN", "k:1")); strings.Contains(got, "state:fresh") {
		t.Fatalf("CACHE EXPLAIN k:1 after the tracking loss: %q; want the entry no longer served", got)
	}
	if got := opsValue(t, in, "featcache_flushes_total"); got != flushes {
		t.Fatalf("featcache_flushes_total %v -> %v across a tracking loss to the same server; want no flush", flushes, got)
	}

	c.Do("GET", "k:1")
	redis.Restart()
	redistest.Eventually(t, 15*time.Second, "the restarted server's flush counted", func() bool {
		return opsValue(t, in, "featcache_flushes_total") > flushes
	})
	redis.Do("SET", "k:1", "v2")
	redistest.Eventually(t, 10*time.Second, "the restarted server's value served", func() bool {
		return string(c.Do("GET", "k:1")) == "$2\r\nv2\r\n"
	})
	if got := in.status("/readyz"); got != http.StatusOK {
		t.Fatalf("/readyz after Redis restarted: %d", got)
	}
}

// TestOutsideOpsAuthLikeRedis: with password set, what a client sends before and around AUTH is answered as Redis
// with requirepass answers it, byte for byte, on a new connection each (CACHE, which Redis does not know, gets
// NOAUTH as the security page says).
func TestOutsideOpsAuthLikeRedis(t *testing.T) {
	const pw = "s3cr3t-pw"
	direct := redistest.Start(t, "--requirepass", pw)
	redis := redistest.Start(t)
	in := startBinary(t, redis, "shutdown_delay: 0s\npassword: "+pw+"\n")
	for _, pipeline := range [][][]string{
		{{"PING"}}, {{"GET", "k"}}, {{"FOO"}}, {{"GET"}}, {{"CLIENT", "FOO"}}, {{"AUTH"}}, {{"AUTH", "a", "b", "c"}},
		{{"AUTH", "nouser", pw}}, {{"AUTH", "default", "wrong"}}, {{"AUTH", "wrong"}}, {{"HELLO", "2", "AUTH", "default", "wrong"}},
		{{"HELLO", "2", "AUTH", "default"}}, {{"HELLO", "3"}}, {{"HELLO", "4"}}, {{"HELLO", "2", "SETNAME", "x"}},
		{{"CLIENT", "SETNAME", "x"}}, {{"RESET"}}, {{"ECHO"}},
		{{"AUTH", pw}, {"PING"}, {"AUTH", "wrong"}, {"PING"}},
		{{"AUTH", "default", pw}, {"HELLO", "2", "AUTH", "default", "wrong"}, {"ECHO", "x"}},
		{{"HELLO", "2", "AUTH", "default", pw, "SETNAME", "n"}, {"CLIENT", "GETNAME"}, {"RESET"}, {"PING"}},
	} {
		var req []byte
		for _, args := range pipeline {
			req = append(req, redistest.Encode(args...)...)
		}
		replies := func(addr string) string {
			c := redistest.Dial(t, addr)
			defer c.Close()
			if _, err := c.NetConn().Write(req); err != nil {
				t.Fatal(err)
			}
			var out []string
			for range pipeline {
				frame, err := c.ReadTimeout(5 * time.Second)
				if err != nil {
					out = append(out, err.Error())
					break
				}
				out = append(out, string(frame))
			}
			return strings.Join(out, "")
		}
		// HELLO's reply holds the connection's id, which differs between the two servers.
		clientID := regexp.MustCompile(`\$2\r\nid\r\n:\d+\r\n`)
		want := clientID.ReplaceAllString(replies(direct.Addr()), "$$2\r\nid\r\n:ID\r\n")
		got := clientID.ReplaceAllString(replies(in.addr), "$$2\r\nid\r\n:ID\r\n")
		if got != want {
			t.Errorf("%q: featcache %q; Redis %q", pipeline, got, want)
		}
	}
	c := redistest.Dial(t, in.addr)
	if got := string(c.Do("CACHE", "STATS")); got != "-NOAUTH Authentication required.\r\n" {
		t.Errorf("CACHE STATS before AUTH: %q", got)
	}
}

// TestOutsideOpsMaxConnAge: limits.max_conn_age closes a connection that reached its age between two commands,
// with nothing written (as Redis's timeout does), leaves one inside MULTI until EXEC, whose replies it gets, and
// counts what it closed.
func TestOutsideOpsMaxConnAge(t *testing.T) {
	redis := redistest.Start(t)
	in := startBinary(t, redis, "shutdown_delay: 0s\nlimits:\n  max_conn_age: 1s\n")
	idle, tx := redistest.Dial(t, in.addr), redistest.Dial(t, in.addr)
	idle.Do("PING")
	if got := string(tx.Do("MULTI")); got != "+OK\r\n" {
		t.Fatalf("MULTI: %q", got)
	}
	tx.Do("SET", "k", "1")
	if frame, err := idle.ReadTimeout(10 * time.Second); err != io.EOF {
		t.Fatalf("a connection past max_conn_age: %q, %v; want it closed with nothing written", frame, err)
	}
	if got := string(tx.Do("EXEC")); got != "*1\r\n+OK\r\n" {
		t.Fatalf("EXEC past max_conn_age: %q; want the transaction's replies", got)
	}
	if frame, err := tx.ReadTimeout(10 * time.Second); err != io.EOF {
		t.Fatalf("after EXEC: %q, %v; want the connection closed", frame, err)
	}
	if got := string(redis.Do("GET", "k")); got != "$1\r\n1\r\n" {
		t.Fatalf("GET k on Redis: %q; want the transaction applied", got)
	}
	if v := opsValue(t, in, "featcache_client_connections_aged_out_total"); v != 2 {
		t.Fatalf("featcache_client_connections_aged_out_total = %v; want 2", v)
	}
}

// TestOutsideOpsReadyOnceRedisAnswers: started while Redis is down, featcache answers /healthz 200 and /readyz 503
// with its reason, PING locally and a read with its upstream error; once Redis is up it turns ready and serves. A
// Redis that goes down afterwards leaves it ready (cached entries keep answering) with featcache_upstream_up 0.
func TestOutsideOpsReadyOnceRedisAnswers(t *testing.T) {
	redis := redistest.Start(t)
	redis.Kill()
	listen := "127.0.0.1:" + strconv.Itoa(redistest.FreePort(t))
	admin := "127.0.0.1:" + strconv.Itoa(redistest.FreePort(t))
	in := &instance{t: t, log: &redistest.LogBuffer{}, addr: listen, admin: "http://" + admin}
	cmd := exec.Command(binary(t), "-config", writeConfig(t, "shutdown_delay: 0s\npolicies:\n  - {name: k, prefix: \"k:\", hard_ttl: 1h}\n"),
		"-listen", listen, "-admin", admin, "-upstream", redis.Addr())
	cmd.Stderr = in.log
	in.process = startProcess(t, cmd, nil, 0)
	redistest.Eventually(t, 30*time.Second, "/healthz answering", func() bool { return in.status("/healthz") == http.StatusOK })
	if got := in.status("/readyz"); got != http.StatusServiceUnavailable {
		t.Fatalf("/readyz before Redis ever answered: %d; want 503", got)
	}
	r, err := http.Get(in.admin + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	reason, _ := io.ReadAll(r.Body)
	r.Body.Close()
	if !strings.Contains(string(reason), "upstream") {
		t.Errorf("/readyz 503 body %q; want the reason", reason)
	}
	c := redistest.Dial(t, in.addr)
	if got := string(c.Do("PING")); got != "+PONG\r\n" {
		t.Fatalf("PING with Redis down: %q", got)
	}
	if got := string(c.Do("GET", "k:1")); !strings.HasPrefix(got, "-ERR featcache upstream") {
		t.Fatalf("GET with Redis down: %q; want featcache's upstream error", got)
	}
	redis.Restart()
	redis.Do("SET", "k:1", "v1")
	redistest.Eventually(t, 15*time.Second, "ready once Redis answers", func() bool { return in.status("/readyz") == http.StatusOK })
	redistest.Eventually(t, 10*time.Second, "the value served", func() bool { return string(c.Do("GET", "k:1")) == "$2\r\nv1\r\n" })
	redistest.Eventually(t, 10*time.Second, "tracking up", func() bool { return opsValue(t, in, "featcache_tracking_up") == 1 })
	c.Do("GET", "k:1")

	redis.Kill()
	redistest.Eventually(t, 10*time.Second, "upstream_up 0 after Redis went down", func() bool {
		return opsValue(t, in, "featcache_upstream_up") == 0
	})
	if got := in.status("/readyz"); got != http.StatusOK {
		t.Fatalf("/readyz once ready, Redis down: %d; want 200", got)
	}
	in.signal(syscall.SIGTERM)
	in.wait(30 * time.Second)
}

// TestOutsideOpsReloadAppliesShutdownDelay: shutdown_delay applies at once on reload (the operations page): an
// instance started with 30s and reloaded with 0s exits at once on SIGTERM; a log.level reloaded to debug applies
// at once too.
func TestOutsideOpsReloadAppliesShutdownDelay(t *testing.T) {
	redis := redistest.Start(t)
	in := startBinary(t, redis, "shutdown_delay: 30s\nlog:\n  level: warn\n")
	c := redistest.Dial(t, in.addr)
	if err := os.WriteFile(in.configPath(), []byte("shutdown_delay: 0s\nlog:\n  level: debug\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := string(c.Do("CACHE", "RELOAD")); !strings.Contains(got, "restart_needed:\r\n") {
		t.Fatalf("CACHE RELOAD: %q; want nothing needing a restart", got)
	}
	c.Close()
	redistest.Eventually(t, 5*time.Second, "debug lines after the reload", func() bool {
		return strings.Contains(in.log.String(), "level=DEBUG")
	})
	start := time.Now()
	in.signal(syscall.SIGTERM)
	in.wait(15 * time.Second)
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("exited %v after SIGTERM; want well under the 30s delay the reload replaced", d)
	}
}

// TestOutsideOpsAdminFlagEmptyTurnsAdminOff: -admin "" overrides the file's admin address with "", which turns the
// admin listener off (as admin: "" in the file does, and as scripts/run.sh relies on when no admin port fits): -check
// says so, and a running instance serves RESP with nothing on the file's admin address.
func TestOutsideOpsAdminFlagEmptyTurnsAdminOff(t *testing.T) {
	fileAdmin := "127.0.0.1:" + strconv.Itoa(redistest.FreePort(t))
	text := "shutdown_delay: 0s\nadmin: \"" + fileAdmin + "\"\n"
	if out, code := runCheck(t, text, "-admin", ""); code != 0 || !strings.Contains(out, "admin none") {
		t.Fatalf("-check -admin \"\": exit %d, %q; want the admin listener off", code, out)
	}
	redis := redistest.Start(t)
	listen := "127.0.0.1:" + strconv.Itoa(redistest.FreePort(t))
	in := &instance{t: t, log: &redistest.LogBuffer{}, addr: listen, admin: "http://" + fileAdmin}
	cmd := exec.Command(binary(t), "-config", writeConfig(t, text), "-listen", listen, "-admin", "", "-upstream", redis.Addr())
	cmd.Stderr = in.log
	in.process = startProcess(t, cmd, nil, 0)
	redistest.Eventually(t, 30*time.Second, "featcache serving", func() bool {
		c, err := redistest.TryDial(t, listen)
		if err != nil {
			return false
		}
		defer c.Close()
		return string(c.Do("PING")) == "+PONG\r\n"
	})
	if got := in.status("/healthz"); got != 0 {
		t.Fatalf("the file's admin address answers %d with -admin \"\"; want nothing listening", got)
	}
	in.signal(syscall.SIGTERM)
	in.wait(30 * time.Second)
}
