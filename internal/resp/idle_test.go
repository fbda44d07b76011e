package resp

import (
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"
)

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t *testing.T) (server, client *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	sc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close(); sc.Close() })
	return sc.(*net.TCPConn), cc.(*net.TCPConn)
}

// idleReaderPair returns both ends of a loopback TCP connection, the server end's RawConn, and a Reader of the
// server end with SetIdleRelease.
func idleReaderPair(t *testing.T) (server, client *net.TCPConn, raw syscall.RawConn, r *Reader) {
	t.Helper()
	server, client = tcpPair(t)
	raw, err := server.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	r = NewReader(server, Limits{})
	r.SetIdleRelease(raw)
	return server, client, raw, r
}

// TestReaderIdleRelease reads commands over a real socket with SetIdleRelease: the Reader holds no buffer while it
// waits with nothing buffered, commands split across reads (a large one too, which grows the buffer) come out
// whole, a read deadline interrupts the wait as it does a Read, and the peer's close is io.EOF.
func TestReaderIdleRelease(t *testing.T) {
	sc, cc, _, r := idleReaderPair(t)
	if got := r.Footprint(); got != 0 {
		t.Fatalf("footprint before any input = %d; want 0", got)
	}

	big := make([]byte, 40<<10)
	for i := range big {
		big[i] = 'a' + byte(i%26)
	}
	steps := []struct {
		send []string // written one by one, each after the Reader has had a chance to wait
		want [][]string
	}{
		{[]string{"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"}, [][]string{{"GET", "k"}}},
		{[]string{"*1\r\n$4\r\nPI", "NG\r\n*1\r\n$4\r\nPING\r\n"}, [][]string{{"PING"}, {"PING"}}},
		{[]string{"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$40960\r\n" + string(big[:100]), string(big[100:]) + "\r\n"},
			[][]string{{"SET", "k", string(big)}}},
		{[]string{"PING\r\n"}, [][]string{{"PING"}}},
	}
	var cmds []Command
	var err error
	for _, st := range steps {
		go func() {
			for _, s := range st.send {
				time.Sleep(5 * time.Millisecond) // lets the Reader reach its wait between the parts
				cc.Write([]byte(s))
			}
		}()
		var got [][]string
		for len(got) < len(st.want) {
			cmds, err = r.ReadBatch(cmds)
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range cmds {
				var args []string
				for _, a := range c.Args {
					args = append(args, string(a))
				}
				got = append(got, args)
			}
		}
		if len(got) != len(st.want) {
			t.Fatalf("got %d commands; want %d", len(got), len(st.want))
		}
		for i := range got {
			if len(got[i]) != len(st.want[i]) || got[i][0] != st.want[i][0] || got[i][len(got[i])-1] != st.want[i][len(st.want[i])-1] {
				t.Errorf("command %d = %.40q; want %.40q", i, got[i], st.want[i])
			}
		}
		r.Shrink(cmds)
	}

	// Nothing buffered: the wait holds no buffer, and a deadline ends it with the error a Read would return.
	sc.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	if _, err := r.ReadBatch(cmds); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("ReadBatch past the deadline: %v; want os.ErrDeadlineExceeded", err)
	}
	if got := r.Footprint(); got != 0 {
		t.Errorf("footprint while waiting = %d; want 0", got)
	}
	if !r.ClearTimeout() {
		t.Fatal("ClearTimeout found no deadline error")
	}
	sc.SetReadDeadline(time.Time{})
	cc.Write([]byte("*1\r\n$4\r\nPING\r\n"))
	if cmds, err = r.ReadBatch(cmds); err != nil || len(cmds) != 1 || string(cmds[0].Args[0]) != "PING" {
		t.Fatalf("after the deadline: %v, %v", cmds, err)
	}
	cc.Close()
	if _, err := r.ReadBatch(cmds); err != io.EOF {
		t.Fatalf("after the peer closed: %v; want io.EOF", err)
	}
}

// BenchmarkReaderIdleRelease is one command per wait over a socket, with and without SetIdleRelease: what taking
// and giving back the buffer costs a client that sends one command at a time.
func BenchmarkReaderIdleRelease(b *testing.B) {
	for _, release := range []bool{false, true} {
		name := map[bool]string{false: "held", true: "released"}[release]
		b.Run(name, func(b *testing.B) {
			t := &testing.T{}
			sc, cc := tcpPair(t)
			r := NewReader(sc, Limits{})
			if release {
				raw, _ := sc.SyscallConn()
				r.SetIdleRelease(raw)
			}
			cmd := []byte("*2\r\n$3\r\nGET\r\n$5\r\nkey:1\r\n")
			var cmds []Command
			b.ReportAllocs()
			for b.Loop() {
				cc.Write(cmd)
				var err error
				if cmds, err = r.ReadBatch(cmds); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
