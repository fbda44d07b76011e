package proxy

import (
	"slices"
	"strings"
	"testing"

	"featcache/internal/redistest"
)

// The command policy and the store's secrets, seen from a client of featcache.

// TestDeniedNeverReachStore sends denied commands in every state a client can be in (plain, inline, mixed case,
// inside MULTI, in a WATCH session, subscribed) and then requires that Redis never saw them: INFO commandstats has
// no line for them, not even as rejected calls.
func TestDeniedNeverReachStore(t *testing.T) {
	p := startProxy(t, defaultTestConfig)
	denied := [][]string{
		{"CONFIG", "SET", "requirepass", "x"}, {"config", "set", "maxmemory", "1"}, {"AcL", "LIST"}, {"DEBUG", "OBJECT", "k"},
		{"CONFIG", "REWRITE"}, {"CONFIG", "RESETSTAT"}, {"CLIENT", "PAUSE", "100"}, {"CLIENT", "UNPAUSE"},
		{"MONITOR"}, {"SHUTDOWN", "NOSAVE"}, {"MODULE", "LIST"}, {"REPLICAOF", "127.0.0.1", "1"}, {"SLAVEOF", "NO", "ONE"},
		{"FAILOVER"}, {"SAVE"}, {"BGSAVE"}, {"BGREWRITEAOF"}, {"SYNC"}, {"PSYNC", "?", "-1"}, {"REPLCONF", "ack", "1"},
	}
	wantErr := func(args []string) string {
		name := strings.ToLower(args[0])
		if len(args) > 1 && (name == "config" || name == "acl" || name == "module" || name == "client") {
			name += "|" + strings.ToLower(args[1])
		}
		return "-ERR command '" + name + "' is disabled by featcache (commands.deny)\r\n"
	}
	plain := p.dial()
	for _, args := range denied {
		expectDo(t, plain, wantErr(args), args...)
	}
	// Inline, as redis-cli in a pipe or telnet sends it.
	writeRaw(t, plain, []byte("config set requirepass x\r\nPING\r\n"))
	expectRead(t, plain, wantErr([]string{"config", "set"}))
	expectRead(t, plain, "+PONG\r\n")
	// Queued in a transaction: refused at once, and the transaction aborts.
	expectDo(t, plain, "+OK\r\n", "MULTI")
	for _, args := range denied[:4] {
		expectDo(t, plain, wantErr(args), args...)
	}
	expectDo(t, plain, "-EXECABORT Transaction discarded because of previous errors.\r\n", "EXEC")
	// In a WATCH session, whose commands go verbatim to a pinned connection.
	expectDo(t, plain, "+OK\r\n", "WATCH", "w")
	for _, args := range denied {
		expectDo(t, plain, wantErr(args), args...)
	}
	expectDo(t, plain, "+OK\r\n", "UNWATCH")
	// Subscribed, where every command goes to the dedicated connection: the refusal still comes in order, after the
	// replies of the commands before it.
	sub := p.dial()
	writeRaw(t, sub, encodePipeline([]string{"SUBSCRIBE", "a"}, []string{"CONFIG", "SET", "requirepass", "x"}, []string{"SUBSCRIBE", "b"},
		[]string{"ACL", "LIST"}, []string{"PING"}))
	expectRead(t, sub, "*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n")
	expectRead(t, sub, wantErr([]string{"config", "set"}))
	expectRead(t, sub, "*3\r\n$9\r\nsubscribe\r\n$1\r\nb\r\n:2\r\n")
	expectRead(t, sub, wantErr([]string{"acl", "list"}))
	expectRead(t, sub, "*2\r\n$4\r\npong\r\n$0\r\n\r\n")

	stats := string(p.redis.Do("INFO", "commandstats"))
	for _, args := range denied {
		name := "cmdstat_" + strings.ToLower(args[0])
		if name == "cmdstat_client" || name == "cmdstat_config" {
			name += "|" + strings.ToLower(args[1]) // other subcommands of CLIENT and CONFIG are allowed
		}
		if strings.Contains(stats, name+":") || strings.Contains(stats, name+"|") {
			t.Errorf("%q reached Redis: %s", args, commandstatsLine(stats, name))
		}
	}
	if p.srv.Stats().Forwarded.Load() == 0 {
		t.Fatal("nothing was forwarded: the test did not exercise the upstream connections")
	}
}

// TestCustomDenyList: a commands.deny list in the file replaces the default. The commands it names are refused,
// plain, inline and inside MULTI, and never reach Redis; the default's commands it leaves out (CONFIG, ACL) and
// the other subcommands of a denied one (CLIENT HELP) are forwarded with Redis's own replies.
func TestCustomDenyList(t *testing.T) {
	p := startProxy(t, `
commands: {deny: ["client|kill", "flushall"]}
`+defaultTestConfig)
	p.redis.Do("SET", "survivor", "v")
	c := p.dial()
	const killDenied = "-ERR command 'client|kill' is disabled by featcache (commands.deny)\r\n"
	const flushDenied = "-ERR command 'flushall' is disabled by featcache (commands.deny)\r\n"
	expectDo(t, c, killDenied, "CLIENT", "KILL", "TYPE", "normal")
	expectDo(t, c, killDenied, "client", "kill", "127.0.0.1:1")
	expectDo(t, c, flushDenied, "FLUSHALL")
	expectDo(t, c, flushDenied, "flushall", "ASYNC")
	writeRaw(t, c, []byte("FLUSHALL SYNC\r\nCLIENT KILL TYPE normal\r\nPING\r\n"))
	expectRead(t, c, flushDenied)
	expectRead(t, c, killDenied)
	expectRead(t, c, "+PONG\r\n")
	expectDo(t, c, "+OK\r\n", "MULTI")
	expectDo(t, c, flushDenied, "FLUSHALL")
	expectDo(t, c, "-EXECABORT Transaction discarded because of previous errors.\r\n", "EXEC")

	for _, args := range [][]string{{"CONFIG", "GET", "maxmemory"}, {"ACL", "WHOAMI"}, {"CONFIG", "GET", "maxmemory-policy"}} {
		if got, want := string(c.Do(args...)), string(p.redis.Do(args...)); got != want || strings.HasPrefix(got, "-") {
			t.Errorf("%q through featcache: got %q; want Redis's %q", args, got, want)
		}
	}
	if got, want := string(c.Do("CLIENT", "HELP")), string(p.redis.Do("CLIENT", "HELP")); got != want {
		t.Errorf("CLIENT HELP through featcache: got %.200q; want Redis's %.200q", got, want)
	}
	if got := string(c.Do("GET", "survivor")); got != bulk("v") {
		t.Fatalf("GET survivor after the refused FLUSHALLs: %q", got)
	}

	stats := string(p.redis.Do("INFO", "commandstats"))
	for _, name := range []string{"cmdstat_flushall", "cmdstat_client|kill"} {
		if line := commandstatsLine(stats, name+":"); line != "" {
			t.Errorf("a denied command reached Redis: %s", line)
		}
	}
	for _, name := range []string{"cmdstat_client|help", "cmdstat_config|get", "cmdstat_acl|whoami"} {
		if commandstatsLine(stats, name+":") == "" {
			t.Errorf("%s: no call reached Redis", name)
		}
	}
}

func commandstatsLine(stats, prefix string) string {
	for _, line := range strings.Split(stats, "\n") {
		if strings.HasPrefix(line, prefix) {
			return strings.TrimSpace(line)
		}
	}
	return ""
}

// TestStorePasswordNotReadable tries every path by which a client of featcache could learn the password featcache
// uses for the store, or featcache's own: the configuration (denied), ACLs (denied), server introspection
// (forwarded: INFO, CLIENT LIST, SLOWLOG with every command logged, LATENCY, MEMORY), scripts and functions calling
// CONFIG or ACL (Redis refuses them), and featcache's own commands. No reply contains either password.
func TestStorePasswordNotReadable(t *testing.T) {
	const storeSecret, clientSecret = "store-Secret-9f1c", "client-Secret-77ab"
	// The slow log records every command, featcache's connection set-up (AUTH) included.
	redis := redistest.Start(t, "--requirepass", storeSecret, "--slowlog-log-slower-than", "0", "--slowlog-max-len", "100000")
	p := startProxyOn(t, redis, "password: "+clientSecret+"\nupstream: {password: "+storeSecret+"}\n"+defaultTestConfig)

	c := p.dial()
	expectDo(t, c, "+OK\r\n", "AUTH", clientSecret)
	expectDo(t, c, "+OK\r\n", "SET", "k", "v")
	probes := [][]string{
		{"CONFIG", "GET", "requirepass"}, {"CONFIG", "GET", "*"}, {"CONFIG", "GET", "masterauth"},
		{"ACL", "LIST"}, {"ACL", "GETUSER", "default"}, {"ACL", "LOG"}, {"DEBUG", "JMAP"}, {"MONITOR"},
		{"INFO"}, {"INFO", "everything"}, {"INFO", "server"}, {"CLIENT", "LIST"}, {"CLIENT", "INFO"},
		{"SLOWLOG", "GET", "1000"}, {"LATENCY", "DOCTOR"}, {"MEMORY", "DOCTOR"}, {"COMMAND", "INFO", "auth"},
		{"EVAL", "return redis.call('config', 'get', 'requirepass')", "0"},
		{"EVAL", "return redis.call('acl', 'list')", "0"},
		{"EVAL", "return redis.pcall('config', 'get', '*')", "0"},
		{"FUNCTION", "LOAD", "#!lua name=steal\nredis.register_function('steal', function() return redis.call('config', 'get', 'requirepass') end)"},
		{"FCALL", "steal", "0"},
		{"HELLO", "2"}, {"CACHE", "STATS"}, {"CACHE", "EXPLAIN", "k"}, {"CACHE", "HELP"},
		{"MIGRATE", "127.0.0.1", "1", "k", "0", "10"},
	}
	var slow string
	for _, args := range probes {
		reply := string(c.Do(args...))
		if strings.Contains(reply, storeSecret) || strings.Contains(reply, clientSecret) {
			t.Errorf("%q revealed a password: %.300q", args, reply)
		}
		if args[0] == "SLOWLOG" {
			slow = reply
		}
	}
	// The slow log did record featcache's connection set-up, with the password redacted by Redis.
	if !strings.Contains(slow, "(redacted)") {
		t.Errorf("SLOWLOG GET: no redacted AUTH of featcache's connections; the probe did not see them: %.500q", slow)
	}
}

// TestConfigGet: CONFIG GET is allowed and answers as Redis does, except that the values of parameters holding a
// credential come back redacted, whatever the pattern that matched them.
func TestConfigGet(t *testing.T) {
	const pass, auth, user, keyPass, clientKeyPass = "req-Secret-1", "auth-Secret-2", "repl-User-3", "key-Secret-4", "ckey-Secret-5"
	redis := redistest.Start(t, "--requirepass", pass, "--masterauth", auth, "--masteruser", user,
		"--tls-key-file-pass", keyPass, "--tls-client-key-file-pass", clientKeyPass)
	p := startProxyOn(t, redis, "upstream: {password: "+pass+"}\n"+defaultTestConfig)
	c := p.dial()
	rc := redistest.Dial(t, redis.Addr())
	expectDo(t, rc, "+OK\r\n", "AUTH", pass)
	secrets := []string{pass, auth, user, keyPass, clientKeyPass}

	// Parameters without a secret: Redis's bytes. A client test suite reads such settings.
	for _, args := range [][]string{
		{"CONFIG", "GET", "hash-max-listpack-value"}, {"CONFIG", "GET", "maxmemory-policy"},
		{"config", "get", "MAXMEMORY"}, {"CONFIG", "GET", "no-such-parameter"}, {"CONFIG", "GET", "maxmemory*", "hz"},
		{"CONFIG", "GET"}, {"CONFIG", "HELP"},
	} {
		if got, want := string(c.Do(args...)), string(rc.Do(args...)); got != want {
			t.Errorf("%q: got %.300q; want Redis's %.300q", args, got, want)
		}
	}
	redacted := func(name string) string { return "*2\r\n" + bulk(name) + bulk("(redacted)") }
	expectReplies(t, []replyCase{
		{[]string{"CONFIG", "GET", "requirepass"}, redacted("requirepass")},
		{[]string{"CONFIG", "GET", "REQUIREPASS"}, redacted("REQUIREPASS")}, // Redis 7.0 echoes the name as asked
		{[]string{"CONFIG", "GET", "masterauth"}, redacted("masterauth")},
		{[]string{"CONFIG", "GET", "masteruser"}, redacted("masteruser")},
		{[]string{"CONFIG", "GET", "tls-key-file-pass"}, redacted("tls-key-file-pass")},
		{[]string{"CONFIG", "GET", "tls-client-key-file-pass"}, redacted("tls-client-key-file-pass")},
	}, c)
	// By glob: every secret is redacted, every other value is Redis's.
	for _, pattern := range []string{"*", "*pass*", "master*", "*e*"} {
		got := bulkStrings(t, c.Do("CONFIG", "GET", pattern))
		want := bulkStrings(t, rc.Do("CONFIG", "GET", pattern))
		if len(got) != len(want) || len(got) == 0 {
			t.Fatalf("CONFIG GET %s: %d elements; Redis sends %d", pattern, len(got), len(want))
		}
		seen := 0
		for i := 0; i < len(got); i += 2 {
			name, value, wantName, wantValue := got[i], got[i+1], want[i], want[i+1]
			switch {
			case name != wantName:
				t.Errorf("CONFIG GET %s: parameter %d is %q; Redis says %q", pattern, i/2, name, wantName)
			case slices.Contains(secrets, wantValue):
				seen++
				if value != "(redacted)" {
					t.Errorf("CONFIG GET %s: %s = %q; want it redacted", pattern, name, value)
				}
			case value != wantValue:
				t.Errorf("CONFIG GET %s: %s = %q; Redis says %q", pattern, name, value, wantValue)
			}
		}
		if pattern == "*" && seen != len(secrets) {
			t.Errorf("CONFIG GET *: %d secret values seen; want %d", seen, len(secrets))
		}
		for _, secret := range secrets {
			if strings.Contains(string(c.Do("CONFIG", "GET", pattern)), secret) {
				t.Errorf("CONFIG GET %s reveals %q", pattern, secret)
			}
		}
	}
	// What stays denied gets Redis's syntax errors first, as Redis checks them first.
	for _, args := range [][]string{{"CONFIG", "GET_XX"}, {"CONFIG", "SET"}, {"CONFIG", "SET", "hz"}, {"CONFIG"}, {"CONFIG", "REWRITE", "x"}} {
		if got, want := string(c.Do(args...)), string(rc.Do(args...)); got != want {
			t.Errorf("%q: got %q; want Redis's %q", args, got, want)
		}
	}
	expectDo(t, c, "-ERR command 'config|set' is disabled by featcache (commands.deny)\r\n", "CONFIG", "SET", "hz", "20")
	if n := redis.Calls("config|set"); n != 0 {
		t.Errorf("CONFIG SET reached Redis %d times", n)
	}
}
