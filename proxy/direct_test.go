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
// tests of the binary (package main) keep the default.
func TestMain(m *testing.M) {
	directAfter = 0
	os.Exit(m.Run())
}

// TestDirectReadClosedWithLastCommand: a client that sends its commands and closes its side at once gets every
// reply and then the end of the connection, and leaves no client behind, however the commands and the FIN reach
// the socket (together in one read, or apart). A client reading inside its socket's RawConn.Read must not take a
// read that returned the last command for an empty socket: the FIN behind it brings no readiness of its own.
func TestDirectReadClosedWithLastCommand(t *testing.T) {
	p := startProxy(t, defaultTestConfig)
	p.redis.Do("SET", "s:direct", "v")
	const conns = 200
	for i := 0; i < conns; i++ {
		nc, err := net.DialTimeout("tcp", p.addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		nc.SetDeadline(time.Now().Add(5 * time.Second))
		var want string
		if i%2 == 1 {
			// Apart: the first command alone, its reply read, so that the connection waits for the next.
			nc.Write([]byte("PING\r\n"))
			b := make([]byte, 7)
			if _, err := io.ReadFull(nc, b); err != nil || string(b) != "+PONG\r\n" {
				t.Fatalf("connection %d: PING: %q, %v", i, b, err)
			}
			nc.Write([]byte("GET s:direct\r\n"))
			want = "$1\r\nv\r\n"
		} else {
			nc.Write([]byte("PING\r\nGET s:direct\r\n"))
			want = "+PONG\r\n$1\r\nv\r\n"
		}
		nc.(*net.TCPConn).CloseWrite()
		got, err := io.ReadAll(nc)
		nc.Close()
		if err != nil || string(got) != want {
			t.Fatalf("connection %d: got %q, %v; want %q and the end of the connection", i, got, err, want)
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
