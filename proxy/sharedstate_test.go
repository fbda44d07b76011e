package proxy

import (
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"featcache/internal/commands"

	"featcache/internal/redistest"
)

// sharedStateConfig refuses nothing but SHUTDOWN (which would stop the test's Redis): every other command Redis
// knows, MONITOR, SYNC and CONFIG SET included, is run through featcache as a client sends it. The upstream
// timeout is far above what Redis's slowest command here takes on a loaded machine (PFSELFTEST), since a shared
// connection that times out is replaced, which this test would see.
const sharedStateConfig = `
commands: {deny: [shutdown]}
upstream:
  timeout: 60s
` + defaultTestConfig

// sharedCase is one client session sent through featcache: its command lines, each sent once the previous one
// was answered (or, with pipelined, all in one write).
type sharedCase struct {
	name      string
	lines     [][]string
	pipelined bool
}

// genericLine is a command line that satisfies a command's arity: its name (and subcommand), then "x" arguments.
func genericLine(info *commands.Info) []string {
	line := strings.Split(info.Name, "|")
	n := info.Arity
	if n < 0 {
		n = -n
	}
	for len(line) < n {
		line = append(line, "x")
	}
	return line
}

// TestNoCommandChangesSharedConnections runs every command of the upstream's COMMAND table through featcache (with
// a generic argument list that satisfies its arity), and then the state-changing commands with plausible
// arguments, alone, pipelined and inside transactions, each from a client that then leaves. After each, featcache's
// upstream connections must be the very same ones (no connection killed or replaced), in the same state in
// Redis's CLIENT LIST (name, flags, db, sub, psub, ssub, multi, resp, user), the connections featcache dialed for
// sessions must be gone or back in the pool clean, and another client's SET and GET through featcache must work.
func TestNoCommandChangesSharedConnections(t *testing.T) {
	p := startProxy(t, sharedStateConfig)
	rc := redistest.Dial(t, p.redis.Addr())
	cmds, err := commands.Parse(rc.Do("COMMAND"))
	if err != nil {
		t.Fatalf("commands.Parse(COMMAND): %v", err)
	}
	var cases []sharedCase
	for _, info := range allCommands(cmds) {
		if info.Subcommands != nil || info.Name == "shutdown" {
			continue // containers: their subcommands are in the list
		}
		cases = append(cases, sharedCase{name: info.Name, lines: [][]string{genericLine(info)}})
	}
	if len(cases) < 300 {
		t.Fatalf("%d commands and subcommands in COMMAND; want Redis 7's 300 or more", len(cases))
	}
	slices.SortFunc(cases, func(a, b sharedCase) int { return strings.Compare(a.name, b.name) })
	cases = append(cases, plausibleSharedCases()...)

	warmShared(t, p)
	before := sharedConnections(t, rc)
	if len(before) < p.cfg.Upstream.Conns+1 {
		t.Fatalf("featcache has %d connections to Redis before the test; want its shared ones and tracking: %v", len(before), before)
	}
	for i, tc := range cases {
		c := p.dial()
		if tc.pipelined {
			var payload []byte
			for _, line := range tc.lines {
				payload = append(payload, redistest.Encode(line...)...)
			}
			writeRaw(t, c, payload)
			for range tc.lines {
				if _, err := c.ReadTimeout(survivalReadTimeout); err != nil {
					break // a reply CLIENT REPLY OFF silenced, or a connection featcache closed (QUIT, CLIENT KILL)
				}
			}
		} else {
			for _, line := range tc.lines {
				if err := c.Send(line...); err != nil {
					break
				}
				if _, err := c.ReadTimeout(survivalReadTimeout); err != nil && !survivalTimeout(err) {
					break
				}
			}
		}
		c.Close()

		after := sharedConnections(t, rc)
		for id, state := range before {
			if after[id] != state {
				t.Fatalf("after %s %q: featcache's upstream connection %s was %q, is %q", tc.name, tc.lines, id, state, after[id])
			}
		}
		redistest.Eventually(t, 5*time.Second, "the connections featcache dialed for "+tc.name+" are gone or clean", func() bool {
			for id, state := range sharedConnections(t, rc) {
				if before[id] == "" && state != cleanDedicated {
					return false
				}
			}
			return true
		})
		v := strconv.Itoa(i)
		// A new client each time: CLIENT KILL through featcache kills featcache's clients, as Redis kills its own.
		// Its SETs go round robin over every shared connection.
		other := p.dial()
		for j := 0; j < p.cfg.Upstream.Conns; j++ {
			expectDo(t, other, "+OK\r\n", "SET", "shared:check", v)
		}
		expectDo(t, other, bulk(v), "GET", "shared:check")
		other.Close()
		if t.Failed() {
			t.Fatalf("after %s %q", tc.name, tc.lines)
		}
	}
	// Tracking still works: a write straight to Redis reaches a value featcache cached.
	other := p.dial()
	expectDo(t, other, "+OK\r\n", "SET", "shared:tracked", "old")
	expectDo(t, other, "$3\r\nold\r\n", "GET", "shared:tracked")
	expectDo(t, rc, "+OK\r\n", "SET", "shared:tracked", "new")
	redistest.Eventually(t, 5*time.Second, "the invalidation arrives", func() bool {
		return string(other.Do("GET", "shared:tracked")) == "$3\r\nnew\r\n"
	})
	if n := p.srv.Stats().Panics.Load(); n != 0 {
		t.Errorf("featcache recovered %d connection panics", n)
	}
	t.Logf("%d client sessions, %d of them every command of COMMAND once", len(cases), len(cases)-len(plausibleSharedCases()))
}

// plausibleSharedCases are the commands that change the connection they run on, with arguments that make them do
// it, alone and inside transactions (pipelined: on a shared connection; interactive: pinned).
func plausibleSharedCases() []sharedCase {
	one := func(args ...string) sharedCase {
		return sharedCase{name: strings.ToLower(strings.Join(args, " ")), lines: [][]string{args}}
	}
	seq := func(name string, lines ...[]string) sharedCase { return sharedCase{name: name, lines: lines} }
	cases := []sharedCase{
		seq("client reply off", []string{"CLIENT", "REPLY", "OFF"}, []string{"SET", "s:a", "1"}, []string{"PING"}),
		seq("client reply skip", []string{"CLIENT", "REPLY", "SKIP"}, []string{"PING"}, []string{"PING"}),
		one("CLIENT", "NO-EVICT", "on"),
		one("CLIENT", "SETNAME", "changed-name"),
		one("CLIENT", "TRACKING", "on"),
		one("CLIENT", "TRACKING", "on", "BCAST"),
		one("CLIENT", "CACHING", "yes"),
		one("CLIENT", "KILL", "TYPE", "normal"),
		one("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "no"),
		one("CLIENT", "KILL", "USER", "default"),
		one("CLIENT", "PAUSE", "10", "WRITE"),
		one("CLIENT", "UNPAUSE"),
		one("CLIENT", "UNBLOCK", "1"),
		one("READONLY"), one("READWRITE"), one("ASKING"),
		seq("select", []string{"SELECT", "1"}, []string{"SET", "s:b", "1"}, []string{"SELECT", "0"}),
		one("HELLO", "3"),
		one("HELLO", "2", "SETNAME", "hello-name"),
		one("AUTH", "nosuch", "x"),
		seq("monitor", []string{"MONITOR"}, []string{"SET", "s:c", "1"}, []string{"PING"}),
		seq("monitor reset", []string{"MONITOR"}, []string{"RESET"}, []string{"SET", "s:c", "2"}),
		one("SUBSCRIBE", "ch"), one("PSUBSCRIBE", "ch*"), one("SSUBSCRIBE", "ch"),
		seq("unsubscribe", []string{"UNSUBSCRIBE"}, []string{"PING"}),
		seq("watch", []string{"WATCH", "s:w"}, []string{"GET", "s:w"}),
		seq("watch unwatch", []string{"WATCH", "s:w"}, []string{"UNWATCH"}),
		seq("watch multi", []string{"WATCH", "s:w"}, []string{"MULTI"}, []string{"SET", "s:w", "1"}),
		seq("multi left open", []string{"MULTI"}, []string{"SET", "s:m", "1"}),
		seq("multi reset", []string{"MULTI"}, []string{"SET", "s:m", "1"}, []string{"RESET"}),
		seq("multi quit", []string{"MULTI"}, []string{"SET", "s:m", "1"}, []string{"QUIT"}),
		one("RESET"),
		one("SYNC"), one("PSYNC", "?", "-1"), one("REPLCONF", "listening-port", "1"), one("REPLCONF", "capa", "eof"),
		seq("script debug", []string{"SCRIPT", "DEBUG", "YES"}, []string{"EVAL", "return 1", "0"}),
		one("WAIT", "0", "0"),
		one("BLPOP", "s:list", "0.01"),
		one("QUIT"),
		one("SWAPDB", "0", "1"),
		one("SWAPDB", "1", "0"),
		one("EVAL", "redis.call('select', 1) return redis.call('set', 's:lua', 1)", "0"),
		one("DEBUG", "SLEEP", "0"),
		one("CONFIG", "SET", "maxmemory-policy", "noeviction"),
	}
	// Inside transactions, pipelined (EXEC in the same write: a shared connection) and interactive (pinned).
	for _, inner := range [][]string{
		{"SELECT", "1"}, {"CLIENT", "SETNAME", "tx-name"}, {"CLIENT", "REPLY", "OFF"}, {"HELLO", "3"},
		{"CLIENT", "KILL", "TYPE", "normal"}, {"SUBSCRIBE", "ch"}, {"MONITOR"}, {"READONLY"}, {"AUTH", "nosuch", "x"},
		{"WATCH", "s:w"}, {"MULTI"}, {"SCRIPT", "DEBUG", "YES"}, {"REPLCONF", "listening-port", "1"},
		{"CLIENT", "TRACKING", "on"}, {"CLIENT", "NO-EVICT", "on"}, {"SYNC"},
	} {
		lines := [][]string{{"MULTI"}, {"SET", "s:t", "1"}, inner, {"EXEC"}}
		name := "multi " + strings.ToLower(strings.Join(inner, " "))
		cases = append(cases, sharedCase{name: name + " (pipelined)", lines: lines, pipelined: true})
		cases = append(cases, sharedCase{name: name + " (interactive)", lines: lines})
	}
	return cases
}
