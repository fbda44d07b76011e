package proxy

import (
	"io"
	"net"
	"os"
	"testing"
	"time"

	"featcache/internal/redistest"
)

// TestMain makes every client of the package's tests read directly from its first batch (directAfter), so that the
// tests run every kind of batch inside the socket's read, not only those after a client's first eight. The black-box
// tests of the binary (package main) keep the default. It also shortens roleRetry to a moment, for
// TestHelloRoleFollowsUpstream.
func TestMain(m *testing.M) {
	directAfter = 0
	roleRetry = 300 * time.Millisecond
	os.Exit(m.Run())
}

// TestDirectReadClosedWithLastCommand: a client that sends its commands and closes its side at once gets every
// reply and then the end of the connection, as from Redis, and leaves no client behind, however the commands and
// the FIN reach the socket (together in one read, or apart). A client reading inside its socket's RawConn.Read must
// not take a read that returned the last command for an empty socket: the FIN behind it brings no readiness of its
// own.
func TestDirectReadClosedWithLastCommand(t *testing.T) {
	p := startProxy(t, defaultTestConfig)
	p.redis.Do("SET", "s:direct", "v")
	// exchange sends PING and GET to addr, apart (the GET after PING's reply) or together, closes its side at once
	// and returns everything the server sent until it closed the connection.
	exchange := func(addr string, apart bool) (string, error) {
		nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			return "", err
		}
		defer nc.Close()
		nc.SetDeadline(time.Now().Add(5 * time.Second))
		var first []byte
		if apart {
			nc.Write([]byte("PING\r\n"))
			first = make([]byte, 7)
			if _, err := io.ReadFull(nc, first); err != nil {
				return string(first), err
			}
			nc.Write([]byte("GET s:direct\r\n"))
		} else {
			nc.Write([]byte("PING\r\nGET s:direct\r\n"))
		}
		nc.(*net.TCPConn).CloseWrite()
		rest, err := io.ReadAll(nc)
		return string(first) + string(rest), err
	}
	const want = "+PONG\r\n$1\r\nv\r\n"
	for _, apart := range []bool{false, true} {
		if got, err := exchange(p.redis.Addr(), apart); err != nil || got != want {
			t.Fatalf("straight from Redis (apart %v): %q, %v; want %q and the end of the connection", apart, got, err, want)
		}
	}
	const conns = 200
	for i := 0; i < conns; i++ {
		if got, err := exchange(p.addr, i%2 == 1); err != nil || got != want {
			t.Fatalf("connection %d (apart %v): got %q, %v; want %q, as from Redis, and the end of the connection",
				i, i%2 == 1, got, err, want)
		}
	}
	redistest.Eventually(t, 5*time.Second, "every client gone", func() bool { return p.srv.Clients() == 0 })
}

// TestDirectReadOutsideCommands: the command table marks the commands a batch must not run inside the socket's read
// with (command.outside), and only those: the ones that may watch the client's socket or start a session. Nothing is
// denied here, so that MONITOR has its class (denied, as by default, it is refused like any denied command).
func TestDirectReadOutsideCommands(t *testing.T) {
	p := startProxy(t, "commands: {deny: []}\n"+defaultTestConfig)
	tbl := p.srv.tbl.Load()
	for _, tc := range []struct {
		args    []string
		outside bool
	}{
		{[]string{"BLPOP", "q", "0"}, true}, {[]string{"WAIT", "0", "0"}, true}, {[]string{"MULTI"}, true},
		{[]string{"WATCH", "k"}, true}, {[]string{"SUBSCRIBE", "ch"}, true}, {[]string{"MONITOR"}, true},
		{[]string{"SCRIPT", "KILL"}, true}, {[]string{"FUNCTION", "KILL"}, true}, {[]string{"SCRIPT", "DEBUG", "YES"}, true},
		{[]string{"INFO"}, true},
		{[]string{"GET", "k"}, false}, {[]string{"MGET", "k"}, false}, {[]string{"HGETALL", "h"}, false},
		{[]string{"SET", "k", "v"}, false}, {[]string{"EVAL", "return 1", "0"}, false}, {[]string{"PING"}, false},
		{[]string{"CLIENT", "KILL", "ID", "1"}, false}, {[]string{"CACHE", "STATS"}, false}, {[]string{"SCRIPT", "LOAD", "x"}, false},
	} {
		args := make([][]byte, len(tc.args))
		for i, a := range tc.args {
			args[i] = []byte(a)
		}
		cmd := tbl.lookup(args)
		if cmd == nil {
			t.Fatalf("%q: not in the command table", tc.args)
		}
		if cmd.outside != tc.outside {
			t.Errorf("%q (%s): outside = %v; want %v", tc.args, cmd.name, cmd.outside, tc.outside)
		}
	}
}
