package proxy

import (
	"errors"
	"net"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"featcache/internal/commands"

	"featcache/internal/redistest"
	"featcache/internal/testkit"
)

// survivalReadTimeout bounds the wait for the reply of a blocking command, which is expected to use it all;
// survivalSlowTimeout that of any other command (PFSELFTEST alone takes about 2 s on a loaded machine).
const (
	survivalReadTimeout = 2 * time.Second
	survivalSlowTimeout = 20 * time.Second
)

// survivalConfig is defaultTestConfig with an upstream timeout above what Redis's slowest argument-less command
// takes (PFSELFTEST runs for half a second to a few seconds), so that every reply is Redis's own.
const survivalConfig = `
upstream:
  timeout: 20s
` + defaultTestConfig

// survivalCase is one command line sent through featcache.
type survivalCase struct {
	args     []string
	info     *commands.Info // the entry the command line resolves to in Redis's table
	blocking bool
}

// TestEveryCommandSurvives sends every command Redis knows through featcache, with no arguments and with one
// argument ("x"), each on a fresh connection; subcommands (COMMAND LIST's "client|kill") are sent as CLIENT KILL. Whatever the command does
// to its connection (SUBSCRIBE, MULTI, CLIENT REPLY OFF, WATCH), featcache and Redis must stay up and answer PING,
// no command may hang unless Redis flags it blocking, denied commands get featcache's error, and no connection
// may end in a recovered panic.
//
// Nothing is skipped: commands that would stop or reconfigure Redis (SHUTDOWN, DEBUG, CONFIG, REPLICAOF, ...) are
// in commands.deny, and this test checks that featcache refuses them.
func TestEveryCommandSurvives(t *testing.T) {
	p := startProxy(t, survivalConfig)
	twin := redistest.Start(t) // the same commands sent directly, to compare the kind of reply
	direct := redistest.Dial(t, p.redis.Addr())
	names := survivalCommandNames(t, direct.Do("COMMAND", "LIST"))
	cmds, err := commands.Parse(direct.Do("COMMAND"))
	if err != nil {
		t.Fatalf("commands.Parse(COMMAND): %v", err)
	}
	direct.Close()
	if len(names) < 200 {
		t.Fatalf("COMMAND LIST named %d commands; want Redis 7's 200 or more", len(names))
	}

	// COMMAND LIST names subcommands as "container|sub": they are sent as CONTAINER SUB.
	var cases []survivalCase
	for _, name := range names {
		base := strings.Split(name, "|")
		if cmds.Lookup(testkit.Args(base...)) == nil {
			t.Errorf("COMMAND LIST names %q, COMMAND does not describe it", name)
		}
		cases = append(cases,
			survivalCase{args: base},
			survivalCase{args: append(slices.Clip(base), "x")})
	}
	for i := range cases {
		c := &cases[i]
		c.info = cmds.Lookup(testkit.Args(c.args...))
		c.blocking = c.info != nil && c.info.Flags.Has(commands.FlagBlocking)
	}

	deny := map[string]bool{}
	for _, name := range p.cfg.Commands.Deny {
		deny[strings.ToLower(name)] = true
	}
	tbl := p.srv.tbl.Load()

	var sent, errorReplies, otherReplies, denied, refused, timeouts int
	kinds := map[string][]string{}
	for _, c := range cases {
		line := strings.Join(c.args, " ")
		reply, err := survivalSend(t, p.addr, c.args, c.blocking)
		sent++
		tc := tbl.lookup(testkit.Args(c.args...))
		// Denied commands are not sent to the twin: they are denied because they would stop or change it.
		local := tc != nil && (tc.class == classDenied || tc.class == classRefused)
		var twinReply []byte
		var twinErr error
		if !local {
			twinReply, twinErr = survivalSend(t, twin.Addr(), c.args, c.blocking)
		}
		switch {
		case err != nil && survivalTimeout(err) && c.blocking:
			timeouts++
			kinds["timeout (blocking)"] = append(kinds["timeout (blocking)"], line)
		case err != nil:
			t.Errorf("%s: %v (read %q)", line, err, reply)
		case tc != nil && tc.class == classDenied:
			denied++
			want := "ERR command '" + tc.name + "' is disabled by featcache (commands.deny)"
			if got, want := string(reply), rejectionReply(c.args, tc, want); got != want {
				t.Errorf("%s: got %q; want %q", line, got, want)
			}
		case tc != nil && tc.class == classRefused:
			refused++
			want := "ERR '" + tc.name + "' is not supported by featcache: it would change a shared upstream connection"
			if got, want := string(reply), rejectionReply(c.args, tc, want); got != want {
				t.Errorf("%s: got %q; want %q", line, got, want)
			}
		case reply[0] == '-':
			errorReplies++
		default:
			otherReplies++
		}
		if !local && err == nil && twinErr == nil &&
			(reply[0] == '-') != (twinReply[0] == '-') {
			t.Errorf("%s: featcache answers %.200q, Redis %.200q", line, reply, twinReply)
		}
		if top := strings.ToLower(c.args[0]); deny[top] && (tc == nil || tc.class != classDenied) {
			t.Errorf("%s: commands.deny names %q, the table classifies it %v", line, top, tc)
		}
		if strings.Contains(string(reply), "featcache internal error") {
			t.Errorf("%s: got %q", line, reply)
		}
		if got, err := survivalSend(t, p.addr, []string{"PING"}, false); err != nil || string(got) != "+PONG\r\n" {
			t.Fatalf("after %s, featcache answers PING on a new connection with %q, %v; want %q", line, got, err, "+PONG\r\n")
		}
		if got, err := survivalSend(t, p.redis.Addr(), []string{"PING"}, false); err != nil || string(got) != "+PONG\r\n" {
			t.Fatalf("after %s, Redis answers PING with %q, %v; want %q", line, got, err, "+PONG\r\n")
		}
	}
	if n := p.srv.Stats().Panics.Load(); n != 0 {
		t.Errorf("featcache recovered %d connection panics", n)
	}
	t.Logf("%d commands from COMMAND LIST, %d command lines sent: %d error replies (%d of them featcache's commands.deny error, %d its refusal of connection state), %d other replies, %d blocking timeouts",
		len(names), sent, errorReplies+denied+refused, denied, refused, otherReplies, timeouts)
	for kind, lines := range kinds {
		t.Logf("%s: %s", kind, strings.Join(lines, ", "))
	}
}

// survivalCommandNames reads COMMAND LIST's reply: an array of command names, sorted here.
func survivalCommandNames(t *testing.T, reply []byte) []string {
	t.Helper()
	names := bulkStrings(t, reply)
	for i, name := range names {
		names[i] = strings.ToLower(name)
	}
	slices.Sort(names)
	return names
}

// survivalSend sends one command on a new connection, reads one reply frame within survivalReadTimeout (a blocking
// command) or survivalSlowTimeout, and closes the connection.
func survivalSend(t *testing.T, addr string, args []string, blocking bool) ([]byte, error) {
	t.Helper()
	c := redistest.Dial(t, addr)
	defer c.Close()
	if err := c.Send(args...); err != nil {
		return nil, err
	}
	if !blocking {
		return c.ReadTimeout(survivalSlowTimeout)
	}
	return c.ReadTimeout(survivalReadTimeout)
}

// rejectionReply is the error reply featcache gives args, a command it does not run (tc): Redis's own
// unknown-subcommand and arity errors come first, as they would from Redis; otherwise msg.
func rejectionReply(args []string, tc *command, msg string) string {
	if m := rejection(testkit.Args(args...), tc); m != "" {
		msg = m
	}
	return "-" + msg + "\r\n"
}

// survivalTimeout reports whether a read ended at its deadline.
func survivalTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, os.ErrDeadlineExceeded) || errors.As(err, &ne) && ne.Timeout()
}
