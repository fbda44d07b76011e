package proxy

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"featcache/internal/redistest"
)

// clientCompareConfig caches every key, and allows MONITOR (denied by default) so that redis-py's monitor() can be
// compared with Redis's: the rest of the default commands.deny list is kept.
const clientCompareConfig = defaultTestConfig + `
commands:
  deny: [acl, bgrewriteaof, bgsave, "client|pause", "client|unpause", "config|resetstat", "config|rewrite",
         "config|set", debug, failover, module, psync, replconf, replicaof, save, shutdown, slaveof, sync]
`

// deliberateDifference is a line of a client's output that may differ from what the client printed against Redis,
// because docs/commands.md lists the difference: what featcache prints must match got.
type deliberateDifference struct {
	got *regexp.Regexp
	why string // the entry of docs/commands.md, "Differences from Redis"
}

// redisPyDifferences are the lines of testdata/redispy/compare.py's output that differ on purpose.
var redisPyDifferences = map[string]deliberateDifference{
	"objects.debug_object": {
		got: regexp.MustCompile(`^"ResponseError: command 'debug' is disabled by featcache \(commands\.deny\)"$`),
		why: "Denied commands (DEBUG is in the default commands.deny)",
	},
	"commands_info.client_pause": {
		got: regexp.MustCompile(`^"ResponseError: command 'client\|pause' is disabled by featcache \(commands\.deny\)"$`),
		why: "Denied commands",
	},
	"commands_info.acl_whoami": {
		got: regexp.MustCompile(`^"ResponseError: command 'acl\|whoami' is disabled by featcache \(commands\.deny\)"$`),
		why: "Denied commands (every ACL subcommand)",
	},
	"commands_info.config_set": {
		got: regexp.MustCompile(`^"ResponseError: command 'config\|set' is disabled by featcache \(commands\.deny\)"$`),
		why: "Denied commands",
	},
	"blocked_killed_from_redis.blpop": {
		got: regexp.MustCompile(`^'ResponseError: featcache upstream unavailable: EOF'$`),
		why: "When Redis closes featcache's connection (the client's own connection stays open)",
	},
	"watch_killed_from_redis.execute": {
		// Redis closes the client, and redis-py raises WatchError; featcache answers MULTI with its upstream
		// error, and EXEC with EXECABORT.
		got: regexp.MustCompile(`^'ResponseError: featcache upstream unavailable: EOF'$`),
		why: "When Redis closes featcache's connection (a WATCH session's next command gets the error)",
	},
	"other_dbs.db1_ping": {
		got: regexp.MustCompile(`^'ResponseError: featcache serves database 0 only \(SELECT 1 is not supported\)'$`),
		why: "Database 0 only (redis-py sends SELECT 1 when it connects with db=1)",
	},
	"other_dbs.db1_set": {
		got: regexp.MustCompile(`^'ResponseError: featcache serves database 0 only \(SELECT 1 is not supported\)'$`),
		why: "Database 0 only",
	},
}

// TestRedisPyCompare runs testdata/redispy/compare.py, redis-py's API call by call, against a redis-server and
// against featcache in front of an identical redis-server, and compares what it printed line by line. The cases
// are those the other redis-py tests do not compare with Redis: WATCH conflicts, pipelines with errors midway,
// Lock, pub/sub (get_message with a timeout, patterns, run_in_thread, health checks), blocking pops that time out,
// the scan iterators, CLIENT LIST/INFO/ID/SETNAME/KILL, MONITOR, OBJECT and MEMORY USAGE, unknown commands,
// decode_responses with binary values, scripts and functions, CONFIG GET, INFO, SELECT, SWAPDB, connections killed
// by another application of Redis, COMMAND and server commands, the connection options that send commands at
// connect (client_name, from_url, password), and cached reads after every kind of write. The script normalises the values that differ between any two servers (client
// ids, addresses, ports, ages, buffer figures, run_id, pids, clocks and uptimes); redisPyDifferences lists the
// deliberate differences.
func TestRedisPyCompare(t *testing.T) {
	requireRedisPy(t)
	direct := redistest.Start(t)
	p := startProxy(t, clientCompareConfig)

	type result struct {
		out []byte
		err error
	}
	run := func(port, upstreamPort int) result {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, redisPyPython, "-B", "compare.py", "127.0.0.1", strconv.Itoa(port), strconv.Itoa(upstreamPort))
		cmd.Dir = filepath.Join("testdata", "redispy")
		cmd.Env = append(os.Environ(), "PYTHONDONTWRITEBYTECODE=1", "PYTHONUNBUFFERED=1")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Errorf("compare.py against port %d: %v\n%s%s", port, err, out, stderr.Bytes())
		}
		t.Logf("compare.py against port %d:\n%s", port, stderr.Bytes())
		return result{out, err}
	}
	_, proxyPort := splitHostPort(t, p.addr)
	pp, _ := strconv.Atoi(proxyPort)
	done := make(chan result)
	go func() { done <- run(pp, p.redis.Port()) }()
	want := run(direct.Port(), direct.Port())
	got := <-done
	if want.err != nil || got.err != nil {
		return
	}
	compareOutputs(t, "redis-py", string(got.out), string(want.out), redisPyDifferences)
}

// compareOutputs compares a client's output lines "name: value" through featcache (got) with its output against
// Redis (want): every line must be the same, except the lines that diffs allows to differ, which must match the
// allowed form. It reports every line that differs.
func compareOutputs(t *testing.T, client, got, want string, diffs map[string]deliberateDifference) {
	t.Helper()
	g, w := strings.Split(strings.TrimSuffix(got, "\n"), "\n"), strings.Split(strings.TrimSuffix(want, "\n"), "\n")
	if len(g) != len(w) {
		t.Errorf("%s printed %d lines through featcache and %d against Redis", client, len(g), len(w))
	}
	seen := map[string]bool{}
	for i := 0; i < min(len(g), len(w)); i++ {
		gName, gValue, _ := strings.Cut(g[i], ": ")
		wName, wValue, _ := strings.Cut(w[i], ": ")
		if gName != wName {
			t.Errorf("%s line %d: %q through featcache; %q against Redis (the outputs are out of step from here)",
				client, i+1, g[i], w[i])
			return
		}
		d, deliberate := diffs[gName]
		seen[gName] = true
		switch {
		case deliberate && !d.got.MatchString(gValue):
			t.Errorf("%s %s: got %s through featcache; want a value matching %s (%s; Redis: %s)",
				client, gName, gValue, d.got, d.why, wValue)
		case !deliberate && gValue != wValue:
			t.Errorf("%s %s: got %s through featcache; Redis: %s", client, gName, gValue, wValue)
		}
	}
	for name := range diffs {
		if !seen[name] {
			t.Errorf("%s printed no %s line: the deliberate difference listed for it was not exercised", client, name)
		}
	}
}
