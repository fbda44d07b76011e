package proxy

import (
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"featcache/internal/redistest"
)

// The tests of the connection guard as a client meets it: a real featcache listener in front of a real Redis,
// with bad input compared to what a redis-server of its own answers for the same bytes.

// guardOutcome is what a server sent back for some input, and whether it closed the connection.
type guardOutcome struct {
	out    string
	closed bool
	took   time.Duration // until the close, or until the read gave up
}

// sendUntilClose writes in on a new connection to addr and reads until the server closes it or wait passes, or,
// when until is not "", until what was read ends with until.
func sendUntilClose(t *testing.T, addr string, in []byte, wait time.Duration, until string) guardOutcome {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer nc.Close()
	start := time.Now()
	go func() {
		nc.SetWriteDeadline(time.Now().Add(wait))
		nc.Write(in) // fails once the server closed the connection: that is the point
	}()
	var out []byte
	buf := make([]byte, 64<<10)
	nc.SetReadDeadline(start.Add(wait))
	for {
		n, err := nc.Read(buf)
		out = append(out, buf[:n]...)
		switch {
		case err == nil && until != "" && strings.HasSuffix(string(out), until):
			return guardOutcome{out: string(out), took: time.Since(start)}
		case err == nil:
			continue
		case errors.Is(err, os.ErrDeadlineExceeded):
			return guardOutcome{out: string(out), took: time.Since(start)}
		case errors.Is(err, io.EOF) || isConnReset(err):
			return guardOutcome{out: string(out), closed: true, took: time.Since(start)}
		}
		t.Fatalf("read: %v", err)
	}
}

func TestGuardHugeHeaders(t *testing.T) {
	p := startProxy(t, defaultTestConfig)
	ref := redistest.Start(t)
	other := p.dial()
	cases := []struct {
		name string
		in   string
		want string
		// redisWaits: Redis 7.0 accepts the header and waits for the arguments it announces; featcache refuses
		// what its limits (limits.max_args, limits.max_request_bytes) cannot hold.
		redisWaits bool
	}{
		{name: "multibulk count 2^31-1", in: "*2147483647\r\n",
			want: "-ERR Protocol error: invalid multibulk length\r\n", redisWaits: true},
		{name: "multibulk count 2^31", in: "*2147483648\r\n",
			want: "-ERR Protocol error: invalid multibulk length\r\n"},
		{name: "bulk length 2e9", in: "*1\r\n$2000000000\r\n",
			want: "-ERR Protocol error: invalid bulk length\r\n"},
		{name: "bulk length 2e9 after an argument", in: "*2\r\n$3\r\nGET\r\n$2000000000\r\n",
			want: "-ERR Protocol error: invalid bulk length\r\n"},
		{name: "bulk length above max_request_bytes", in: "*2\r\n$3\r\nSET\r\n$100000000\r\n",
			want: "-ERR Protocol error: invalid bulk length\r\n", redisWaits: true},
		{name: "commands before are answered", in: "PING\r\n" + string(redistest.Encode("SET", "guard:a", "1")) + "*2147483647\r\n",
			want: "+PONG\r\n+OK\r\n-ERR Protocol error: invalid multibulk length\r\n", redisWaits: true},
		{name: "commands before are answered, bulk", in: string(encodePipeline([]string{"SET", "guard:b", "1"}, []string{"GET", "guard:b"})) + "*1\r\n$2000000000\r\n",
			want: "+OK\r\n$1\r\n1\r\n-ERR Protocol error: invalid bulk length\r\n"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := sendUntilClose(t, p.addr, []byte(tc.in), 3*time.Second, "")
			if got.out != tc.want || !got.closed {
				t.Errorf("got %q (closed %v); want %q and the connection closed", got.out, got.closed, tc.want)
			}
			if got.took > time.Second {
				t.Errorf("closed after %v; want within 1s", got.took)
			}
			// Another client is served all along.
			expectDo(t, other, "+PONG\r\n", "PING")
			if tc.redisWaits {
				return
			}
			if r := sendUntilClose(t, ref.Addr(), []byte(tc.in), 3*time.Second, ""); r.out != tc.want || !r.closed {
				t.Errorf("Redis: got %q (closed %v); the test expects %q and a close", r.out, r.closed, tc.want)
			}
		})
	}
	expectDo(t, other, "$1\r\n1\r\n", "GET", "guard:a")

	// The declared sizes cost nothing: many clients sending them at once leave featcache answering at once.
	done := make(chan guardOutcome, 20)
	for i := 0; i < cap(done); i++ {
		go func() {
			nc, err := net.Dial("tcp", p.addr)
			if err != nil {
				done <- guardOutcome{}
				return
			}
			defer nc.Close()
			nc.Write([]byte("*2147483647\r\n*1\r\n$2000000000\r\n"))
			nc.SetReadDeadline(time.Now().Add(5 * time.Second))
			b, _ := io.ReadAll(nc)
			done <- guardOutcome{out: string(b), closed: true}
		}()
	}
	start := time.Now()
	expectDo(t, other, "+PONG\r\n", "PING")
	for i := 0; i < cap(done); i++ {
		if r := <-done; r.out != "-ERR Protocol error: invalid multibulk length\r\n" {
			t.Errorf("concurrent client: got %q", r.out)
		}
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("20 bad clients took %v", took)
	}
}

func TestGuardInline(t *testing.T) {
	p := startProxy(t, defaultTestConfig)
	ref := redistest.Start(t)
	other := p.dial()
	long := "ECHO " + strings.Repeat("x", 128<<10)
	cases := []struct {
		name   string
		in     string
		want   string
		closes bool
	}{
		{name: "inline longer than 64 KiB", in: long + "\r\n",
			want: "-ERR Protocol error: too big inline request\r\n", closes: true},
		{name: "inline longer than 64 KiB without newline", in: long,
			want: "-ERR Protocol error: too big inline request\r\n", closes: true},
		{name: "inline just below 64 KiB", in: "ECHO " + strings.Repeat("y", 60000) + "\r\n",
			want: "$60000\r\n" + strings.Repeat("y", 60000) + "\r\n"},
		{name: "unbalanced double quote", in: "SET k \"abc\r\n",
			want: "-ERR Protocol error: unbalanced quotes in request\r\n", closes: true},
		{name: "unbalanced single quote", in: "SET k 'abc\r\n",
			want: "-ERR Protocol error: unbalanced quotes in request\r\n", closes: true},
		{name: "closing quote followed by a letter", in: "SET k \"abc\"d\r\n",
			want: "-ERR Protocol error: unbalanced quotes in request\r\n", closes: true},
		{name: "quotes and escapes", in: "ECHO \"a\\x41\\n b\"\r\nECHO 'it\\'s'\r\nECHO a b\r\n",
			want: "$5\r\naA\n b\r\n$4\r\nit's\r\n-ERR wrong number of arguments for 'echo' command\r\n"},
		{name: "adjacent quoted strings", in: "ECHO 'it''s'\r\n",
			want: "-ERR Protocol error: unbalanced quotes in request\r\n", closes: true},
		{name: "commands before are answered",
			in:   "PING\r\nSET guard:i 1\r\n" + string(redistest.Encode("INCR", "guard:i")) + "SET k \"abc\r\n",
			want: "+PONG\r\n+OK\r\n:2\r\n-ERR Protocol error: unbalanced quotes in request\r\n", closes: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for _, target := range []struct{ who, addr string }{{"featcache", p.addr}, {"redis", ref.Addr()}} {
				in, want, until := tc.in, tc.want, ""
				if !tc.closes {
					// A PING after the input proves that nothing else was sent and the connection is open.
					in, want, until = in+"PING\r\n", want+"+PONG\r\n", "+PONG\r\n"
				}
				got := sendUntilClose(t, target.addr, []byte(in), 3*time.Second, until)
				if got.out != want || got.closed != tc.closes {
					t.Errorf("%s: got %.200q (closed %v); want %.200q (closed %v)", target.who, got.out, got.closed, want, tc.closes)
				}
				if target.who == "featcache" && tc.closes && got.took > time.Second {
					t.Errorf("closed after %v; want within 1s", got.took)
				}
			}
			expectDo(t, other, "+PONG\r\n", "PING")
		})
	}
	expectDo(t, other, "$1\r\n2\r\n", "GET", "guard:i")
}

// TestGuardPipeline5000 writes 5000 mixed commands at once and requires every reply, in order, equal to what a
// Redis of its own returns for the same pipeline.
func TestGuardPipeline5000(t *testing.T) {
	p := startProxy(t, defaultTestConfig)
	ref := redistest.Start(t)
	rng := rand.New(rand.NewPCG(1, 2))
	key := func(prefix string, n int) string { return prefix + strconv.Itoa(rng.IntN(n)) }
	cmds := make([][]string, 5000)
	for i := range cmds {
		switch rng.IntN(8) {
		case 0:
			cmds[i] = []string{"SET", key("pk", 40), "v" + strconv.Itoa(i)}
		case 1, 2:
			cmds[i] = []string{"GET", key("pk", 40)}
		case 3:
			cmds[i] = []string{"INCR", key("pk", 40)} // often an error: the key holds "v..."
		case 4:
			cmds[i] = []string{"MGET", key("pk", 40), key("ph", 5), key("pk", 40)}
		case 5:
			cmds[i] = []string{"HSET", key("ph", 5), key("f", 4), strconv.Itoa(i)}
		case 6:
			cmds[i] = []string{"DEL", key("pk", 40)}
		default:
			cmds[i] = []string{"PING"}
		}
		if rng.IntN(10) == 0 {
			cmds[i] = []string{"GET", key("ph", 5)} // WRONGTYPE, from the cache path
		}
	}
	payload := encodePipeline(cmds...)
	fc, rc := p.dial(), redistest.Dial(t, ref.Addr())
	// Write from other goroutines while the replies are read, so neither side waits on a full socket buffer.
	for _, c := range []*redistest.Conn{fc, rc} {
		go func() {
			c.NetConn().SetWriteDeadline(time.Now().Add(20 * time.Second))
			c.NetConn().Write(payload)
		}()
	}
	got := readFrames(t, fc, len(cmds))
	want := readFrames(t, rc, len(cmds))
	mismatches := 0
	for i := range cmds {
		if got[i] != want[i] {
			if mismatches++; mismatches <= 5 {
				t.Errorf("reply %d to %q: got %q; want %q", i, cmds[i], got[i], want[i])
			}
		}
	}
	if mismatches > 0 {
		t.Errorf("%d of %d replies differ from Redis's", mismatches, len(cmds))
	}
	if hits := p.srv.Stats().Hits.Load(); hits == 0 {
		t.Errorf("no cache hits in the pipeline: it did not exercise the cached-read path")
	}
	// Nothing more follows.
	expectDo(t, fc, "+PONG\r\n", "PING")
}
