package resp

import (
	"io"
	"net"
	"syscall"
	"testing"
)

// TestPeek: a socket with nothing waiting, with bytes waiting (which a read still gets afterwards), and closed by
// its peer.
func TestPeek(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	peer, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	nc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	raw, err := nc.(syscall.Conn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	if data, closed := Peek(raw); data || closed {
		t.Fatalf("idle socket: data %v, closed %v", data, closed)
	}
	peer.Write([]byte("PING\r\n"))
	for data, closed := Peek(raw); !data; data, closed = Peek(raw) {
		if closed {
			t.Fatal("closed while bytes were sent")
		}
	}
	b := make([]byte, 6)
	if _, err := io.ReadFull(nc, b); err != nil || string(b) != "PING\r\n" {
		t.Fatalf("read after the peek: %q, %v", b, err)
	}
	peer.Close()
	for data, closed := Peek(raw); !closed; data, closed = Peek(raw) {
		if data {
			t.Fatal("bytes after the peer's close")
		}
	}
}
