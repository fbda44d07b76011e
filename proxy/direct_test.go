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
