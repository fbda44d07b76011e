package main

import (
	"bytes"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coocood/freecache"

	"featcache/internal/redistest"
)

// TestFloorMatchesRedis sends the same pipeline to redis-server and to the floor, in pieces cut inside commands
// and inside values, and compares the reply bytes: the floor must answer GET, SET and PING as Redis does, or its
// throughput would not be a floor for the same work.
func TestFloorMatchesRedis(t *testing.T) {
	srv := redistest.Start(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cache := freecache.NewCache(64 << 20) // entries up to 64 KiB
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go floorConn(c, cache)
		}
	}()
	compareFloorWithRedis(t, "floor", srv.Addr(), ln.Addr().String())

	// The read loop that serves where there is no TCP_INQ (not Linux).
	loop, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer loop.Close()
	loopCache := freecache.NewCache(64 << 20)
	go func() {
		for {
			c, err := loop.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				floorConnReads(c, newFloorBuffer(), nil, loopCache)
			}()
		}
	}()
	compareFloorWithRedis(t, "floor without TCP_INQ", srv.Addr(), loop.Addr().String())
}

// compareFloorWithRedis sends one pipeline of GET, SET and PING (a value larger than a floor's first read buffer
// among them) to Redis at redisAddr and to a floor at floorAddr, cut in pieces (exchange), and compares the
// reply bytes.
func compareFloorWithRedis(t *testing.T, name, redisAddr, floorAddr string) {
	t.Helper()
	big := strings.Repeat("v", 40<<10)
	var in []byte
	for _, cmd := range [][]string{
		{"GET", "floor:missing"},
		{"SET", "floor:a", "1"},
		{"SET", "floor:empty", ""},
		{"SET", "floor:big", big},
		{"get", "floor:a"},
		{"GET", "floor:empty"},
		{"GET", "floor:big"},
		{"PING"},
		{"SET", "floor:a", "two\r\nlines"},
		{"GET", "floor:a"},
	} {
		in = append(in, redistest.Encode(cmd...)...)
	}
	want := exchange(t, redisAddr, in)
	got := exchange(t, floorAddr, in)
	if !bytes.Equal(got, want) {
		t.Errorf("%s replied\n%q\nredis replied\n%q", name, trim(got), trim(want))
	}
}

// exchange writes in to addr in pieces of 7 bytes (each piece its own write, so reads end mid-command), then reads
// until the connection has been quiet for a while after the last expected byte count is reached.
func exchange(t *testing.T, addr string, in []byte) []byte {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	done := make(chan []byte)
	go func() {
		var out []byte
		buf := make([]byte, 64<<10)
		for {
			c.SetReadDeadline(time.Now().Add(time.Second))
			n, err := c.Read(buf)
			out = append(out, buf[:n]...)
			if err != nil {
				done <- out
				return
			}
		}
	}()
	for len(in) > 0 {
		n := min(7, len(in))
		if len(in) > 1000 {
			n = 997 // the big value in larger pieces, still cut mid-value
		}
		if _, err := c.Write(in[:n]); err != nil && err != io.EOF {
			t.Fatal(err)
		}
		in = in[n:]
	}
	return <-done
}

func trim(b []byte) []byte {
	if len(b) > 300 {
		return append(b[:300:300], "..."...)
	}
	return b
}

// The floor's request path without its socket, for comparison with proxy's BenchmarkHitPathGet and
// BenchmarkHitPathPipeline16 (the same keys, values and pipelines): parse a read, answer each GET, reset the
// reply buffer as if written.
func BenchmarkFloorGet(b *testing.B)        { benchFloor(b, 1) }
func BenchmarkFloorPipeline16(b *testing.B) { benchFloor(b, 16) }

func benchFloor(b *testing.B, pipeline int) {
	cache := freecache.NewCache(64 << 20)
	val := bytes.Repeat([]byte("v"), 1024)
	for i := range 1000 {
		cache.Set([]byte("key:"+strconv.Itoa(i)), val, 0)
	}
	var payload []byte
	for i := range pipeline {
		payload = append(payload, redistest.Encode("GET", "key:"+strconv.Itoa(i*37%1000))...)
	}
	var args [floorMaxArgs][]byte
	out := make([]byte, 0, 32<<10)
	b.SetBytes(int64(pipeline) * 1024)
	b.ReportAllocs()
	for b.Loop() {
		in := payload
		for len(in) > 0 {
			argv, used, err := floorParse(in, args[:0])
			if err != nil || used == 0 {
				b.Fatal("bad payload")
			}
			in = in[used:]
			out = floorServe(out, argv, cache)
		}
		out = out[:0]
	}
}
