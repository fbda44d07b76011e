package upstream

import (
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"featcache/internal/redistest"
	"featcache/internal/resp"
)

// A slow or busy Redis, for real: a Lua script that keeps Redis running for a given time, a script that loops
// until SCRIPT KILL, and the replies Redis gives meanwhile.

// slowSlack is what a reply may take beyond the bound it is given on a loaded machine.
const slowSlack = time.Second

// clientID returns the CLIENT ID of a shared connection of p (the only one when p has one).
func clientID(t *testing.T, p *Pool) string {
	t.Helper()
	call := NewCall()
	if err := p.Do(call, resp.AppendCommand(nil, "CLIENT", "ID"), 1); err != nil {
		t.Fatalf("CLIENT ID: %v", err)
	}
	return string(call.Frame(0))
}

// TestPoolSlowCommandKeepsConnection: a forwarded script that keeps Redis busy for a second is waited for, on the
// only shared connection, and answers :1 as it does to a direct client. A bounded call behind it gives up after
// the timeout without closing the connection, the next one fails at once (the connection's oldest call is late),
// and other clients' forwarded commands queued behind the script get their own replies once Redis is free.
func TestPoolSlowCommandKeepsConnection(t *testing.T) {
	srv := redistest.Start(t)
	const timeout = 200 * time.Millisecond
	p := NewPool(PoolOptions{Addr: srv.Addr(), Conns: 1, Timeout: timeout, ClientName: "featcache-test"})
	t.Cleanup(p.Close)
	id := clientID(t, p)

	script := NewCall()
	start := time.Now()
	p.Start(script, resp.AppendCommand(nil, "EVAL", redistest.SleepScript, "0", "1000"), 1, true)

	// Other clients' forwarded commands, behind the script on the same connection.
	const others = 8
	var wg sync.WaitGroup
	replies := make([]string, others)
	for i := 0; i < others; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			call := NewCall()
			if err := p.Forward(call, resp.AppendCommand(nil, "ECHO", strings.Repeat("x", i+1)), 1); err != nil {
				replies[i] = err.Error()
				return
			}
			replies[i] = string(call.Frame(0))
		}()
	}

	call := NewCall()
	t0 := time.Now()
	err := p.Do(call, resp.AppendCommand(nil, "PING"), 1)
	if took := time.Since(t0); !errors.Is(err, ErrTimeout) || took < timeout || took > timeout+slowSlack {
		t.Fatalf("a bounded call behind the script: %v after %v; want ErrTimeout after the timeout (%v)", err, took, timeout)
	}
	t0 = time.Now()
	err = p.Do(call, resp.AppendCommand(nil, "PING"), 1)
	if took := time.Since(t0); !errors.Is(err, ErrTimeout) || took > timeout/2 {
		t.Fatalf("a bounded call behind a late one: %v after %v; want ErrTimeout at once", err, took)
	}

	if err := script.Wait(); err != nil {
		t.Fatalf("the script: %v", err)
	}
	if took := time.Since(start); string(script.Replies) != ":1\r\n" || took < time.Second {
		t.Fatalf("the script: got %q after %v; want :1 after its second", script.Replies, took)
	}
	wg.Wait()
	for i, r := range replies {
		if want := "$" + string(rune('0'+i+1)) + "\r\n" + strings.Repeat("x", i+1) + "\r\n"; r != want {
			t.Errorf("forwarded command %d behind the script: got %q; want %q", i, r, want)
		}
	}
	if got := clientID(t, p); got != id {
		t.Fatalf("the shared connection was replaced (client id %q, was %q)", got, id)
	}
	// The abandoned PINGs' replies were dropped: the next calls get their own.
	for i := 0; i < 3; i++ {
		if err := p.Do(call, resp.AppendCommand(nil, "ECHO", "after"), 1); err != nil || string(call.Replies) != "$5\r\nafter\r\n" {
			t.Fatalf("after the script: %q, %v", call.Replies, err)
		}
	}
}

// TestPoolCommandTimeout: with CommandTimeout set, a forwarded command that Redis does not answer in time gets
// ErrCommandTimeout after it; its late reply is dropped and the connection goes on.
func TestPoolCommandTimeout(t *testing.T) {
	srv := redistest.Start(t)
	const bound = 300 * time.Millisecond
	p := NewPool(PoolOptions{Addr: srv.Addr(), Conns: 1, Timeout: time.Second, CommandTimeout: bound})
	t.Cleanup(p.Close)
	id := clientID(t, p)
	call := NewCall()
	start := time.Now()
	err := p.Forward(call, resp.AppendCommand(nil, "EVAL", redistest.SleepScript, "0", "1000"), 1)
	if took := time.Since(start); !errors.Is(err, ErrCommandTimeout) || took < bound || took > bound+slowSlack {
		t.Fatalf("a script longer than CommandTimeout: %v after %v; want ErrCommandTimeout after %v", err, took, bound)
	}
	srv.Do("PING") // a direct client: answered once the script is over
	if err := p.Forward(call, resp.AppendCommand(nil, "ECHO", "next"), 1); err != nil || string(call.Replies) != "$4\r\nnext\r\n" {
		t.Fatalf("the next command: %q, %v; want its own reply", call.Replies, err)
	}
	if got := clientID(t, p); got != id {
		t.Fatalf("the shared connection was replaced (client id %q, was %q)", got, id)
	}
}

// TestPoolStartWaitUntil: a batch that mixes featcache's reads with a forwarded command is started, waited for a
// short while (WaitUntil: what the reads may wait), then within the forwarded command's bound (Wait). Redis writes
// the replies of what it read from a connection together, after running it all: with a slow script in the batch
// the short wait ends without them, and Wait gets them all once the script is over. A batch queued behind a call
// that is already late does not even wait the short while.
func TestPoolStartWaitUntil(t *testing.T) {
	srv := redistest.Start(t)
	srv.Do("SET", "k", "v")
	const timeout = 200 * time.Millisecond
	p := NewPool(PoolOptions{Addr: srv.Addr(), Conns: 1, Timeout: timeout})
	t.Cleanup(p.Close)
	call := NewCall()
	p.Start(call, resp.AppendCommand(AppendFetch(nil, []byte("k")), "ECHO", "e"), 3, true)
	if !call.WaitUntil(time.Now().Add(5 * time.Second)) {
		t.Fatal("a quick batch: WaitUntil gave up")
	}
	if err := call.Wait(); err != nil || call.Len() != 3 || string(call.Frame(0)) != "$1\r\nv\r\n" || string(call.Frame(2)) != "$1\r\ne\r\n" {
		t.Fatalf("a quick batch: %q, %v", call.Replies, err)
	}

	// With a slow script in the batch.
	start := time.Now()
	p.Start(call, resp.AppendCommand(AppendFetch(nil, []byte("k")), "EVAL", redistest.SleepScript, "0", "800"), 3, true)
	if call.WaitUntil(start.Add(timeout)) {
		t.Fatalf("a batch with a slow script: WaitUntil saw every reply after %v", time.Since(start))
	}
	if took := time.Since(start); took < timeout || took > timeout+slowSlack {
		t.Errorf("WaitUntil gave up after %v; want %v", took, timeout)
	}
	if err := call.Wait(); err != nil || call.Len() != 3 || string(call.Frame(0)) != "$1\r\nv\r\n" || string(call.Frame(2)) != ":1\r\n" {
		t.Fatalf("a batch with a slow script: %q, %v", call.Replies, err)
	}

	// Behind another call's script, once it is late.
	script := NewCall()
	p.Start(script, resp.AppendCommand(nil, "EVAL", redistest.SleepScript, "0", "800"), 1, true)
	bounded := NewCall()
	if err := p.Do(bounded, resp.AppendCommand(nil, "PING"), 1); !errors.Is(err, ErrTimeout) {
		t.Fatalf("a bounded call behind the script: %v; want ErrTimeout", err)
	}
	start = time.Now()
	p.Start(call, resp.AppendCommand(AppendFetch(nil, []byte("k")), "ECHO", "e"), 3, true)
	if call.WaitUntil(start.Add(5 * time.Second)) {
		t.Fatal("a batch behind a late call: WaitUntil saw every reply")
	}
	if took := time.Since(start); took > timeout/2 {
		t.Errorf("a batch behind a late call: WaitUntil gave up after %v; want at once", took)
	}
	if err := call.Wait(); err != nil || call.Len() != 3 || string(call.Frame(2)) != "$1\r\ne\r\n" {
		t.Fatalf("the batch behind the script: %q, %v", call.Replies, err)
	}
	if err := script.Wait(); err != nil || string(script.Replies) != ":1\r\n" {
		t.Fatalf("the script: %q, %v", script.Replies, err)
	}
	// The abandoned bounded call is reusable at once, and gets its own replies.
	if err := p.Do(bounded, AppendFetch(nil, []byte("k")), 2); err != nil || bounded.Len() != 2 || string(bounded.Frame(0)) != "$1\r\nv\r\n" {
		t.Fatalf("the bounded call again: %q, %v", bounded.Replies, err)
	}
}

// TestPoolConnectsWhileBusy: a connection opened while a script keeps Redis busy (past busy-reply-threshold)
// passes AUTH, which Redis allows then, and is not failed by the -BUSY that CLIENT SETNAME gets: the command that
// needed it gets Redis's own -BUSY reply, byte for byte. Once Redis is free the connection takes its name.
func TestPoolConnectsWhileBusy(t *testing.T) {
	srv := redistest.Start(t, "--busy-reply-threshold", "50", "--requirepass", "pw")
	p := NewPool(PoolOptions{Addr: srv.Addr(), Password: "pw", Conns: 1, Timeout: time.Second, ClientName: "featcache-test"})
	t.Cleanup(p.Close)
	direct := srv.Dial()
	expectRaw(t, direct, "+OK\r\n", "AUTH", "pw")
	script := srv.Dial()
	expectRaw(t, script, "+OK\r\n", "AUTH", "pw")
	script.Loop()
	var want string
	redistest.Eventually(t, 5*time.Second, "Redis busy", func() bool {
		want = string(direct.Do("SET", "k", "v"))
		return strings.HasPrefix(want, "-BUSY ")
	})
	call := NewCall()
	if err := p.Forward(call, resp.AppendCommand(nil, "SET", "k", "v"), 1); err != nil || string(call.Replies) != want {
		t.Fatalf("a command on a connection opened while Redis is busy: %q, %v; want Redis's %q", call.Replies, err, want)
	}
	redistest.Eventually(t, 5*time.Second, "SCRIPT KILL", func() bool {
		return string(direct.Do("SCRIPT", "KILL")) == "+OK\r\n"
	})
	redistest.Eventually(t, 5*time.Second, "Redis free", func() bool { return string(direct.Do("PING")) == "+PONG\r\n" })
	if err := p.Forward(call, resp.AppendCommand(nil, "SET", "k", "v"), 1); err != nil || string(call.Replies) != "+OK\r\n" {
		t.Fatalf("after SCRIPT KILL: %q, %v", call.Replies, err)
	}
	redistest.Eventually(t, 5*time.Second, "the connection named", func() bool {
		p.Forward(call, resp.AppendCommand(nil, "PING"), 1)
		return strings.Contains(string(direct.Do("CLIENT", "LIST")), "name=featcache-test ")
	})
}

func expectRaw(t *testing.T, c *redistest.Conn, want string, args ...string) {
	t.Helper()
	if got := string(c.Do(args...)); got != want {
		t.Fatalf("%q: got %q; want %q", args, got, want)
	}
}

// TestPoolForwardWhileHungWaits: forwarded commands sent while Redis hangs (SIGSTOP) wait for it as a direct
// client would, also those whose shared connection is not open yet (the handshake cannot complete: they take a
// live one), and get Redis's replies once it continues.
func TestPoolForwardWhileHungWaits(t *testing.T) {
	srv := redistest.Start(t)
	p := NewPool(PoolOptions{Addr: srv.Addr(), Conns: 4, Timeout: 200 * time.Millisecond, ClientName: "featcache-test"})
	t.Cleanup(p.Close)
	clientID(t, p) // one shared connection open, three not yet
	srv.Pause()
	const n = 8
	replies := make(chan string, n)
	for i := 0; i < n; i++ {
		go func() {
			call := NewCall()
			if err := p.Forward(call, resp.AppendCommand(nil, "ECHO", "e"), 1); err != nil {
				replies <- err.Error()
				return
			}
			replies <- string(call.Replies)
		}()
	}
	select {
	case r := <-replies:
		srv.Resume()
		t.Fatalf("a forwarded command was answered while Redis hangs: %q", r)
	case <-time.After(time.Second):
	}
	srv.Resume()
	for i := 0; i < n; i++ {
		select {
		case r := <-replies:
			if r != "$1\r\ne\r\n" {
				t.Errorf("forwarded command %d: got %q; want Redis's reply", i, r)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("a forwarded command got no reply after Redis continued")
		}
	}
}
