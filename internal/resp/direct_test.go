package resp

import (
	"errors"
	"io"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// directCollect reads commands with ReadDirect inside one RawConn.Read until it has want of them, calling after
// with each batch (while still inside the Read, as the server runs a batch there). It returns the commands as
// strings and RawConn.Read's error. A deadline two seconds away turns a wait that is never woken into an error.
func directCollect(t *testing.T, r *Reader, raw syscall.RawConn, want int, after func(batch int)) ([]string, error) {
	t.Helper()
	var got []string
	var cmds []Command
	batches := 0
	r.BeginDirect()
	err := raw.Read(func(fd uintptr) bool {
		for len(got) < want {
			var wait bool
			var err error
			cmds, wait, err = r.ReadDirect(cmds, fd)
			if wait {
				return false
			}
			if err != nil {
				t.Errorf("ReadDirect: %v", err)
				return true
			}
			for _, c := range cmds {
				got = append(got, strings.ToUpper(string(c.Args[0]))+" "+string(c.Args[len(c.Args)-1]))
			}
			if after != nil {
				after(batches)
			}
			batches++
		}
		return true
	})
	return got, err
}

// TestReaderDirect reads over a real socket with ReadDirect, inside RawConn.Read as the server does: commands
// split across reads come out whole; bytes that arrive while a batch runs, after a read that emptied the socket,
// are read (the wait that follows it is woken by them, not lost); bytes that arrive between two RawConn.Reads are
// read although the first left a short read behind (BeginDirect); a deadline ends the wait, holding no buffer, and
// comes back from ReadBatch after DirectError, for ClearTimeout to forget; the peer's close is io.EOF, also when
// it arrives with the last command.
func TestReaderDirect(t *testing.T) {
	sc, cc, raw, r := idleReaderPair(t)
	if !r.SetDirect() {
		t.Fatal("SetDirect refused a TCP connection")
	}
	sc.SetReadDeadline(time.Now().Add(2 * time.Second))

	// Split across reads, a large command among them (it grows the buffer).
	big := strings.Repeat("abcdefghij", 4096)
	go func() {
		for _, s := range []string{"*2\r\n$3\r\nGET\r\n$1\r\na\r\n*1\r\n$4\r\nPI", "NG\r\n",
			"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$40960\r\n" + big[:100], big[100:] + "\r\n"} {
			time.Sleep(5 * time.Millisecond)
			cc.Write([]byte(s))
		}
	}()
	got, err := directCollect(t, r, raw, 3, nil)
	if err != nil || strings.Join(got, ",") != "GET a,PING PING,SET "+big {
		t.Fatalf("split commands: %.60q, %v", got, err)
	}

	// The next command arrives while a batch runs, after the read that emptied the socket: the wait that follows
	// must end at once.
	cc.Write([]byte("*2\r\n$3\r\nGET\r\n$1\r\nb\r\n"))
	got, err = directCollect(t, r, raw, 3, func(batch int) {
		if batch < 2 {
			cc.Write([]byte("*2\r\n$3\r\nGET\r\n$1\r\nc\r\n"))
			time.Sleep(10 * time.Millisecond) // the bytes are in the socket before the batch ends
		}
	})
	if err != nil || strings.Join(got, ",") != "GET b,GET c,GET c" {
		t.Fatalf("commands sent while a batch ran: %q, %v", got, err)
	}

	// A short read ended the last RawConn.Read; bytes that arrive before the next one are read in it.
	cc.Write([]byte("*2\r\n$3\r\nGET\r\n$1\r\nd\r\n"))
	got, err = directCollect(t, r, raw, 1, func(int) {
		cc.Write([]byte("*2\r\n$3\r\nGET\r\n$1\r\ne\r\n"))
		time.Sleep(10 * time.Millisecond)
	})
	if err != nil || strings.Join(got, ",") != "GET d" {
		t.Fatalf("before the pause: %q, %v", got, err)
	}
	got, err = directCollect(t, r, raw, 1, nil)
	if err != nil || strings.Join(got, ",") != "GET e" {
		t.Fatalf("bytes that arrived between two RawConn.Reads: %q, %v", got, err)
	}

	// A deadline ends the wait; the Reader holds no buffer while it waits.
	sc.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	got, err = directCollect(t, r, raw, 1, nil)
	if !errors.Is(err, os.ErrDeadlineExceeded) || len(got) != 0 {
		t.Fatalf("past the deadline: %q, %v; want os.ErrDeadlineExceeded", got, err)
	}
	if n := r.Footprint(); n != 0 {
		t.Errorf("footprint while waiting = %d; want 0", n)
	}
	r.DirectError(err)
	if _, err := r.ReadBatch(nil); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("ReadBatch after DirectError: %v", err)
	}
	if !r.ClearTimeout() {
		t.Fatal("ClearTimeout found no deadline error")
	}
	sc.SetReadDeadline(time.Now().Add(2 * time.Second))
	cc.Write([]byte("*1\r\n$4\r\nPING\r\n"))
	if got, err = directCollect(t, r, raw, 1, nil); err != nil || strings.Join(got, ",") != "PING PING" {
		t.Fatalf("after the deadline: %q, %v", got, err)
	}

	// The last command and the peer's FIN arrive together, before the read: the read that returns the command
	// leaves the FIN behind it, with no readiness to come for it, and the next read must still be made.
	cc.Write([]byte("*1\r\n$4\r\nPING\r\n"))
	cc.Close()
	time.Sleep(10 * time.Millisecond)
	var cmds []Command
	var rerr error
	n := 0
	r.BeginDirect()
	if err := raw.Read(func(fd uintptr) bool {
		for {
			var wait bool
			cmds, wait, rerr = r.ReadDirect(cmds, fd)
			n += len(cmds)
			if wait || rerr != nil {
				return !wait
			}
		}
	}); err != nil || rerr != io.EOF || n != 1 {
		t.Fatalf("a command and the peer's close: %d commands, %v, %v; want 1 and io.EOF", n, err, rerr)
	}
}
