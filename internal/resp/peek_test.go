package resp

import (
	"io"
	"testing"
)

// TestPeek: a socket with nothing waiting, with bytes waiting (which a read still gets afterwards), and closed by
// its peer.
func TestPeek(t *testing.T) {
	nc, peer := tcpPair(t)
	if data, closed, ok := Peek(nc); data || closed || !ok {
		t.Fatalf("idle socket: data %v, closed %v, ok %v", data, closed, ok)
	}
	peer.Write([]byte("PING\r\n"))
	for data, closed, _ := Peek(nc); !data; data, closed, _ = Peek(nc) {
		if closed {
			t.Fatal("closed while bytes were sent")
		}
	}
	b := make([]byte, 6)
	if _, err := io.ReadFull(nc, b); err != nil || string(b) != "PING\r\n" {
		t.Fatalf("read after the peek: %q, %v", b, err)
	}
	peer.Close()
	for data, closed, _ := Peek(nc); !closed; data, closed, _ = Peek(nc) {
		if data {
			t.Fatal("bytes after the peer's close")
		}
	}
}
