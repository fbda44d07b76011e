//go:build linux

package main

import (
	"bytes"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coocood/freecache"

	"featcache/internal/redistest"
)

// startFloorEpoll runs an epoll floor on a free loopback port for the test's duration.
func startFloorEpoll(t *testing.T) string {
	t.Helper()
	fe, err := listenFloorEpoll("127.0.0.1:0", freecache.NewCache(64<<20))
	if err != nil {
		t.Fatal(err)
	}
	addr := fe.addr()
	done := make(chan error)
	go func() { done <- fe.serve() }()
	t.Cleanup(func() {
		fe.shutdown()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return addr
}

// TestFloorEpollMatchesRedis is TestFloorMatchesRedis for the epoll floor: the same pipeline in pieces of 7 bytes
// (reads that end inside commands and inside values, a value larger than the first read buffer), the same reply
// bytes as redis-server's, and then a command the floor cannot parse, which closes the connection.
func TestFloorEpollMatchesRedis(t *testing.T) {
	srv := redistest.Start(t)
	addr := startFloorEpoll(t)

	compareFloorWithRedis(t, "floor-epoll", srv.Addr(), addr)

	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("PING\r\n")) // an inline command: not a request the floor parses
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if b, err := io.ReadAll(c); err != nil || len(b) != 0 {
		t.Errorf("after an inline command: read %q, %v; want the connection closed", b, err)
	}
}

// TestFloorEpollSlowReaders sends, on several connections at once, pipelines whose replies (8 MiB each) are far
// larger than the socket buffers, before reading any of them: the loop's writes are cut short (on this machine a
// few times per run), the rest waits for
// EPOLLOUT while the other connections are served, and every connection gets Redis's exact reply bytes in order.
func TestFloorEpollSlowReaders(t *testing.T) {
	srv := redistest.Start(t)
	addr := startFloorEpoll(t)
	big := strings.Repeat("x", 32<<10)
	setup := append(redistest.Encode("SET", "floor:big", big), redistest.Encode("SET", "floor:small", "s")...)
	for _, a := range []string{srv.Addr(), addr} {
		exchange(t, a, setup)
	}
	var in []byte
	for i := range 256 {
		key := "floor:big"
		if i%5 == 4 {
			key = "floor:small"
		}
		in = append(in, redistest.Encode("GET", key)...)
	}
	in = append(in, redistest.Encode("PING")...)
	want := writeThenRead(t, srv.Addr(), in)

	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() {
			got := writeThenRead(t, addr, in)
			if !bytes.Equal(got, want) {
				t.Errorf("connection %d: floor-epoll replied %d bytes %q; redis replied %d bytes %q",
					i, len(got), trim(got), len(want), trim(want))
			}
		})
	}
	wg.Wait()
}

// writeThenRead writes all of in before reading anything, then reads until the last reply, +PONG, has arrived.
func writeThenRead(t *testing.T, addr string, in []byte) []byte {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Error(err)
		return nil
	}
	defer c.Close()
	if _, err := c.Write(in); err != nil {
		t.Error(err)
		return nil
	}
	var out []byte
	buf := make([]byte, 64<<10)
	c.SetReadDeadline(time.Now().Add(20 * time.Second))
	for !bytes.HasSuffix(out, []byte("+PONG\r\n")) {
		n, err := c.Read(buf)
		out = append(out, buf[:n]...)
		if err != nil {
			t.Errorf("%s: after %d bytes: %v", addr, len(out), err)
			return out
		}
	}
	return out
}
