package resp_test

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"featcache/internal/redistest"
	"featcache/internal/resp"
)

// redisOutcome is what a real redis-server did with some input: the reply frames it sent and whether it closed
// the connection (after a protocol error) or kept waiting.
type redisOutcome struct {
	replies []string
	closed  bool
}

// redisSend writes in to a new connection to addr and reads Redis's replies. When the Reader found a protocol
// error (closes), it reads until Redis closes the connection; otherwise until replies frames have arrived and
// then a little longer, to catch a reply or a close that should not come. The bounds are generous because the
// outcome, not the timing, is under test: a slow machine makes the test slower, not flaky.
func redisSend(t *testing.T, addr string, in []byte, replies int, closes bool) redisOutcome {
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Errorf("dial: %v", err)
		return redisOutcome{}
	}
	defer c.Close()
	if _, err := c.Write(in); err != nil {
		t.Errorf("write: %v", err)
		return redisOutcome{}
	}
	var out []byte
	buf := make([]byte, 64<<10)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	extended := false
	for {
		n, err := c.Read(buf)
		out = append(out, buf[:n]...)
		if err == io.EOF {
			frames, _ := splitReplies(out)
			return redisOutcome{replies: frames, closed: true}
		}
		if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("read: %v", err)
			return redisOutcome{}
		}
		frames, rest := splitReplies(out)
		if err != nil {
			if len(rest) > 0 {
				t.Errorf("partial reply %q", rest)
			}
			return redisOutcome{replies: frames}
		}
		if !closes && !extended && len(frames) >= replies && len(rest) == 0 {
			extended = true
			c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		}
	}
}

// splitReplies splits reply frames; rest is an incomplete frame at the end.
func splitReplies(b []byte) (frames []string, rest []byte) {
	for len(b) > 0 {
		var sc resp.Scanner
		n, err := sc.Next(b)
		if err != nil || n == 0 {
			return frames, b
		}
		frames = append(frames, string(b[:n]))
		b = b[n:]
	}
	return frames, nil
}

// TestReaderMatchesRedis sends malformed requests to a real redis-server and to the Reader and compares the
// protocol error text and the number of commands run before it.
func TestReaderMatchesRedis(t *testing.T) {
	open := redistest.Start(t)
	auth := redistest.Start(t, "--requirepass", "pw")
	cases := []struct {
		in   string
		lim  resp.Limits
		cmds int
	}{
		{in: "*2147483648\r\n"},
		{in: "*\r\n"},
		{in: "*-0\r\n"},
		{in: "*01\r\n"},
		{in: "*+1\r\n"},
		{in: "*1x\r\n"},
		{in: "*9223372036854775808\r\n"},
		{in: "*" + strings.Repeat("1", 20) + "\r\n"},
		{in: "*1\r\nX\r\n"},
		{in: "*1\r\n\r\n"},
		{in: "*1\r\n\n\r\n"},
		{in: "*1\r\n\t\r\n"},
		{in: "*1\r\n\xff\r\n"},
		{in: "*2\r\n$4\r\nECHO\r\n:1\r\n"},
		{in: "*1\r\n$-1\r\n"},
		{in: "*1\r\n$ 4\r\n"},
		{in: "*1\r\n$\r\n"},
		{in: "*1\r\n$536870913\r\n"},
		{in: "*1\r\n$00\r\n"},
		{in: "ECHO \"a\"b\r\n"},
		{in: "ECHO 'a'b\r\n"},
		{in: "ECHO \"a\r\n"},
		{in: "ECHO 'a\\'\r\n"},
		{in: "ECHO \"\\\r\n"},
		{in: "ECHO \"a\" \"b\"c\n"},
		{in: "PING\r\n" + resp.Enc([]string{"ECHO", "a"}) + "ECHO \"a\"\vb\r\n*1\r\nX\r\n", cmds: 3},
		{in: "*1\rX$4\rXPINGXY*1\r\nY\r\n", cmds: 1},
		{in: "\n\r\n*0\r\n*-3\r\nPING\n*1\r\n$-2\r\n", cmds: 1},
		// Redis reaches its 64 KiB bound before the '\r' or '\n' arrive; the Reader gives the same text at 32
		// bytes (header lines) or at MaxInlineBytes+1 (inline).
		// Redis fails once more than 65536 bytes follow the line start; sending exactly one more than that lets
		// it read everything before it closes, so the close is not a reset that could lose the reply.
		{in: "*" + strings.Repeat("1", 65536)},
		{in: "*1\r\n$" + strings.Repeat("1", 65536)},
		{in: "*1\r\n" + strings.Repeat("X", 65537)},
		{in: strings.Repeat("a", 65537)},
		{in: "PING\n" + strings.Repeat("a", 65537), cmds: 1},
		// Unauthenticated limits.
		{in: "*11\r\n", lim: resp.UnauthenticatedLimits()},
		{in: "*1\r\n$16385\r\n", lim: resp.UnauthenticatedLimits()},
		{in: "*2147483648\r\n", lim: resp.UnauthenticatedLimits()},
		{in: "*1\r\n$536870913\r\n", lim: resp.UnauthenticatedLimits()},
		{in: "*1\r\n$-1\r\n", lim: resp.UnauthenticatedLimits()},
		{in: "*0\r\n*11\r\n", lim: resp.UnauthenticatedLimits()},
		{in: "a b c d e f g h i j k l m\r\n*1\r\n$4\r\nPING\r\n*12\r\n", lim: resp.UnauthenticatedLimits(), cmds: 2},
		{in: resp.Enc([]string{"ECHO", strings.Repeat("x", 16384)}) + "*1\r\n$16385\r\n", lim: resp.UnauthenticatedLimits(),
			cmds: 1},
	}
	var wg sync.WaitGroup
	results := make([]redisOutcome, len(cases))
	for i, tc := range cases {
		addr := open.Addr()
		if tc.lim.Unauthenticated {
			addr = auth.Addr()
		}
		wg.Go(func() { results[i] = redisSend(t, addr, []byte(tc.in), tc.cmds+1, true) })
	}
	wg.Wait()
	for i, tc := range cases {
		got, err := resp.Collect(t, strings.NewReader(tc.in), tc.lim)
		var pe *resp.ProtocolError
		if !errors.As(err, &pe) {
			t.Errorf("%q: Reader error %v; want a protocol error", resp.TrimForLog(tc.in), err)
			continue
		}
		res := results[i]
		if !res.closed || len(res.replies) != tc.cmds+1 {
			t.Errorf("%q: Redis sent %q (closed %v); want %d replies and an error",
				resp.TrimForLog(tc.in), res.replies, res.closed, tc.cmds)
			continue
		}
		if want := "-ERR " + pe.Error() + "\r\n"; res.replies[tc.cmds] != want {
			t.Errorf("%q: Redis replied %q; Reader %q", resp.TrimForLog(tc.in), res.replies[tc.cmds], want)
		}
		if len(got) != tc.cmds {
			t.Errorf("%q: Reader returned %d commands before the error; Redis ran %d", resp.TrimForLog(tc.in), len(got), tc.cmds)
		}
	}
}

// TestReaderMatchesRedisMutations corrupts valid pipelines at random and checks that Redis and the Reader agree on
// how many commands run, on the protocol error that follows, or on waiting for more input. Inputs where the
// Reader gives up on a header line at 32 bytes, which Redis would wait for up to 64 KiB, are left out.
func TestReaderMatchesRedisMutations(t *testing.T) {
	srv := redistest.Start(t)
	base := []string{
		resp.Enc([]string{"PING"}, []string{"ECHO", "hi"}) + "ECHO \"a b\" 'c'\r\n" + resp.Enc([]string{"ECHO", "x\r\ny"}) +
			"PING\n",
		"ECHO \"q\\x41\\\"\" 'it\\'s'\nPING\r\n" + resp.Enc([]string{"ECHO", ""}) + "*0\r\nECHO z\n",
		resp.Enc([]string{"ECHO", "abc"}, []string{"PING", "p"}, []string{"ECHO", "-1"}),
	}
	alphabet := []byte("*$\r\n\"' \\x\t\v09-12aE")
	rng := rand.New(rand.NewPCG(1, 2))
	type mcase struct {
		in   []byte
		cmds []string
		err  error
	}
	var cases []mcase
	for len(cases) < 400 {
		in := []byte(base[rng.IntN(len(base))])
		for k := 1 + rng.IntN(3); k > 0; k-- {
			i := rng.IntN(len(in))
			c := alphabet[rng.IntN(len(alphabet))]
			switch rng.IntN(3) {
			case 0:
				in[i] = c
			case 1:
				in = append(in[:i:i], in[i+1:]...)
			default:
				in = append(in[:i:i], append([]byte{c}, in[i:]...)...)
			}
		}
		cmds, err := resp.Collect(t, bytes.NewReader(in), resp.Limits{})
		if err == resp.ErrTooBigMultibulkCount || err == resp.ErrTooBigBulkCount {
			continue
		}
		cases = append(cases, mcase{in, cmds, err})
	}
	results := make([]redisOutcome, len(cases))
	var wg sync.WaitGroup
	for i, mc := range cases {
		var pe *resp.ProtocolError
		closes := errors.As(mc.err, &pe)
		wg.Go(func() { results[i] = redisSend(t, srv.Addr(), mc.in, len(mc.cmds), closes) })
	}
	wg.Wait()
	agreeErr := 0
	for i, mc := range cases {
		res := results[i]
		var pe *resp.ProtocolError
		switch {
		case errors.As(mc.err, &pe):
			agreeErr++
			if !res.closed || len(res.replies) != len(mc.cmds)+1 || res.replies[len(mc.cmds)] != "-ERR "+pe.Error()+"\r\n" {
				t.Errorf("%q: Reader ran %d commands then %q; Redis sent %q (closed %v)",
					mc.in, len(mc.cmds), pe.Error(), res.replies, res.closed)
			}
		case mc.err == io.EOF:
			if res.closed || len(res.replies) != len(mc.cmds) {
				t.Errorf("%q: Reader ran %v and waits; Redis sent %q (closed %v)", mc.in, mc.cmds, res.replies, res.closed)
			}
		default:
			t.Errorf("%q: Reader error %v", mc.in, mc.err)
		}
	}
	t.Logf("%d mutated pipelines, %d ending in a protocol error", len(cases), agreeErr)
}

// TestEncodersMatchRedis compares each encoder's bytes with the reply a real redis-server sends for the same value,
// and checks that commands written by AppendCommand and AppendArgs mean to Redis what they say.
func TestEncodersMatchRedis(t *testing.T) {
	srv := redistest.Start(t)
	c := srv.Dial()
	defer c.Close()
	value := "line one\r\nline two, binary \x00\xff"
	// Commands as AppendArgs writes them, binary value included, and as AppendCommand writes them.
	req := resp.AppendArgs(nil, [][]byte{[]byte("SET"), []byte("k"), []byte(value)})
	req = resp.AppendCommand(req, "RPUSH", "list", "a", "bb")
	if _, err := c.NetConn().Write(req); err != nil {
		t.Fatal(err)
	}
	for _, want := range [][]byte{resp.AppendOK(nil), resp.AppendInt(nil, 2)} {
		if got, err := c.Read(); err != nil || string(got) != string(want) {
			t.Fatalf("got %q, %v; want %q", got, err, want)
		}
	}
	tests := []struct {
		cmd  []string
		want []byte
	}{
		{[]string{"GET", "k"}, resp.AppendBulkString(nil, value)},
		{[]string{"GET", "missing"}, resp.AppendNullBulk(nil)},
		{[]string{"PING"}, resp.AppendString(nil, "PONG")},
		{[]string{"INCRBY", "n", "-12"}, resp.AppendInt(nil, -12)},
		{[]string{"LRANGE", "list", "0", "-1"},
			resp.AppendBulk(resp.AppendBulkString(resp.AppendArray(nil, 2), "a"), []byte("bb"))},
		{[]string{"MGET", "k", "missing"},
			resp.AppendNullBulk(resp.AppendBulk(resp.AppendArray(nil, 2), []byte(value)))},
		{[]string{"LRANGE", "missing", "0", "-1"}, resp.AppendArray(nil, 0)},
		{[]string{"BLPOP", "missing", "0.01"}, resp.AppendNullArray(nil)},
		{[]string{"GET"}, resp.AppendError(nil, "ERR wrong number of arguments for 'get' command")},
		{[]string{"ECHO", strings.Repeat("e", 100)}, resp.AppendBulkString(nil, strings.Repeat("e", 100))},
	}
	for _, tc := range tests {
		if got := c.Do(tc.cmd...); string(got) != string(tc.want) {
			t.Errorf("%q: Redis replied %q; the encoder wrote %q", tc.cmd, got, tc.want)
		}
	}
}
