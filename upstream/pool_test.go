package upstream

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"featcache/internal/redistest"
	"featcache/internal/resp"
)

func newTestPool(t *testing.T, addr string, timeout time.Duration) *Pool {
	p := NewPool(PoolOptions{Addr: addr, Timeout: timeout, ClientName: "featcache-test"})
	t.Cleanup(p.Close)
	return p
}

func TestPoolDoReturnsRedisBytes(t *testing.T) {
	srv := redistest.Start(t)
	p := newTestPool(t, srv.Addr(), time.Second)
	call := NewCall()
	var req []byte
	req = resp.AppendCommand(req, "SET", "k", "v")
	req = resp.AppendCommand(req, "GET", "k")
	req = resp.AppendCommand(req, "GET", "missing")
	req = resp.AppendCommand(req, "LPOP", "missing", "2")
	req = resp.AppendCommand(req, "HSET", "k", "f", "v")
	req = resp.AppendCommand(req, "MGET", "k", "missing")
	if err := p.Do(call, req, 6); err != nil {
		t.Fatal(err)
	}
	want := []string{"+OK\r\n", "$1\r\nv\r\n", "$-1\r\n", "*-1\r\n",
		"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n", "*2\r\n$1\r\nv\r\n$-1\r\n"}
	for i, w := range want {
		if got := string(call.Frame(i)); got != w {
			t.Errorf("frame %d: got %q; want %q", i, got, w)
		}
	}
}

// TestPoolConcurrentBatches sends many pipelined batches from many goroutines over few connections: every batch
// gets exactly its own replies, in order.
func TestPoolConcurrentBatches(t *testing.T) {
	srv := redistest.Start(t)
	p := NewPool(PoolOptions{Addr: srv.Addr(), Conns: 2, Timeout: 5 * time.Second})
	t.Cleanup(p.Close)
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for g := 0; g < 32; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			call := NewCall()
			for round := 0; round < 50; round++ {
				var req []byte
				n := 1 + (g+round)%20
				for i := 0; i < n; i++ {
					req = resp.AppendCommand(req, "ECHO", fmt.Sprintf("g%d-r%d-%d", g, round, i))
				}
				if err := p.Do(call, req, n); err != nil {
					errs <- err
					return
				}
				for i := 0; i < n; i++ {
					v := fmt.Sprintf("g%d-r%d-%d", g, round, i)
					if want := fmt.Sprintf("$%d\r\n%s\r\n", len(v), v); string(call.Frame(i)) != want {
						errs <- fmt.Errorf("got %q; want %q", call.Frame(i), want)
						return
					}
				}
			}
		}(g)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

func TestPoolLargeReply(t *testing.T) {
	srv := redistest.Start(t)
	p := newTestPool(t, srv.Addr(), 5*time.Second)
	call := NewCall()
	big := strings.Repeat("x", 3<<20)
	if err := p.Do(call, resp.AppendCommand(nil, "SET", "big", big), 1); err != nil {
		t.Fatal(err)
	}
	if err := p.Do(call, resp.AppendCommand(nil, "GET", "big"), 1); err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("$%d\r\n%s\r\n", len(big), big); string(call.Frame(0)) != want {
		t.Fatalf("large reply differs: got %d bytes; want %d", len(call.Frame(0)), len(want))
	}
}

// TestPoolTimeoutOnHungUpstream: a SIGSTOPped Redis answers nothing; a batch fails with ErrTimeout close to the
// timeout, and the pool recovers by itself once Redis continues.
func TestPoolTimeoutOnHungUpstream(t *testing.T) {
	srv := redistest.Start(t)
	p := newTestPool(t, srv.Addr(), 200*time.Millisecond)
	call := NewCall()
	if err := p.Do(call, resp.AppendCommand(nil, "PING"), 1); err != nil {
		t.Fatal(err)
	}
	srv.Pause()
	start := time.Now()
	err := p.Do(call, resp.AppendCommand(nil, "PING"), 1)
	elapsed := time.Since(start)
	srv.Resume()
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("got %v; want ErrTimeout", err)
	}
	if elapsed > 2*time.Second {
		t.Fatalf("timeout took %v; want about 200ms", elapsed)
	}
	redistest.Eventually(t, 5*time.Second, "pool recovers after SIGCONT", func() bool {
		return p.Do(call, resp.AppendCommand(nil, "PING"), 1) == nil && string(call.Frame(0)) == "+PONG\r\n"
	})
}

// TestPoolReconnectsAfterRestart: killing Redis fails in-flight and new batches with an error, never a hang, and
// the pool reconnects by itself after Redis comes back.
func TestPoolReconnectsAfterRestart(t *testing.T) {
	srv := redistest.Start(t)
	p := newTestPool(t, srv.Addr(), time.Second)
	call := NewCall()
	if err := p.Do(call, resp.AppendCommand(nil, "PING"), 1); err != nil {
		t.Fatal(err)
	}
	srv.Kill()
	if err := p.Do(call, resp.AppendCommand(nil, "PING"), 1); err == nil {
		t.Fatal("PING to a killed server succeeded")
	}
	srv.Restart()
	redistest.Eventually(t, 5*time.Second, "pool reconnects", func() bool {
		return p.Do(call, resp.AppendCommand(nil, "PING"), 1) == nil
	})
}

func TestPoolAuth(t *testing.T) {
	srv := redistest.Start(t, "--requirepass", "s3cret")
	call := NewCall()
	bad := newTestPool(t, srv.Addr(), time.Second)
	if err := bad.Do(call, resp.AppendCommand(nil, "PING"), 1); err == nil || !strings.Contains(err.Error(), "NOAUTH") {
		t.Fatalf("pool without the password: got %v; want a NOAUTH error", err)
	}
	good := NewPool(PoolOptions{Addr: srv.Addr(), Password: "s3cret"})
	t.Cleanup(good.Close)
	if err := good.Do(call, resp.AppendCommand(nil, "PING"), 1); err != nil || string(call.Frame(0)) != "+PONG\r\n" {
		t.Fatalf("got %q, %v; want +PONG", call.Frame(0), err)
	}
	wrong := NewPool(PoolOptions{Addr: srv.Addr(), Password: "nope"})
	t.Cleanup(wrong.Close)
	err := wrong.Do(call, resp.AppendCommand(nil, "PING"), 1)
	if err == nil || !strings.Contains(err.Error(), "WRONGPASS") || strings.Contains(err.Error(), "nope") {
		t.Fatalf("got %v; want a WRONGPASS error that does not show the password", err)
	}
}

func TestDedicatedBlockingCommand(t *testing.T) {
	srv := redistest.Start(t)
	p := newTestPool(t, srv.Addr(), 100*time.Millisecond)
	c, err := p.Dedicated()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Write(resp.AppendCommand(nil, "BLPOP", "q", "0")); err != nil {
		t.Fatal(err)
	}
	// The pool's timeout (100ms) does not cut the blocking command short.
	time.AfterFunc(400*time.Millisecond, func() { srv.Do("RPUSH", "q", "job") })
	reply, err := c.ReadFrame(nil, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if want := "*2\r\n$1\r\nq\r\n$3\r\njob\r\n"; string(reply) != want {
		t.Fatalf("got %q; want %q", reply, want)
	}
	c.Release()
	c2, err := p.Dedicated()
	if err != nil {
		t.Fatal(err)
	}
	if c2 != c {
		t.Fatal("released connection was not reused")
	}
	call := NewCall()
	if err := c2.Do(call, resp.AppendCommand(nil, "BLPOP", "q", "0.05"), 1, time.Now().Add(5*time.Second)); err != nil {
		t.Fatal(err)
	}
	if got := string(call.Frame(0)); got != "*-1\r\n" {
		t.Fatalf("BLPOP timeout: got %q; want *-1", got)
	}
	c2.Close()
}

func TestFetch(t *testing.T) {
	srv := redistest.Start(t)
	srv.Do("SET", "plain", "v1")
	srv.Do("SET", "expiring", "v2", "PX", "60000")
	srv.Do("HSET", "hash", "f", "v")
	p := newTestPool(t, srv.Addr(), time.Second)
	call := NewCall()
	out, err := p.Fetch(call, [][]byte{[]byte("plain"), []byte("expiring"), []byte("missing"), []byte("hash")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != 4 {
		t.Fatalf("got %d answers; want 4", len(out))
	}
	if string(out[0].Value) != "v1" || out[0].Nil || out[0].PTTL != -1 {
		t.Errorf("plain: %+v", out[0])
	}
	if string(out[1].Value) != "v2" || out[1].PTTL <= 0 || out[1].PTTL > 60000 {
		t.Errorf("expiring: %+v", out[1])
	}
	if !out[2].Nil || out[2].PTTL != -2 {
		t.Errorf("missing: %+v", out[2])
	}
	if !strings.HasPrefix(string(out[3].Error), "-WRONGTYPE") {
		t.Errorf("hash: %+v", out[3])
	}
}

// TestPoolConnectionOutlivesTimeout: a shared connection keeps working long after the timeout has passed since
// it was opened (the handshake's deadlines must not stay on it), with AUTH and CLIENT SETNAME in the handshake.
func TestPoolConnectionOutlivesTimeout(t *testing.T) {
	srv := redistest.Start(t, "--requirepass", "pw")
	p := NewPool(PoolOptions{Addr: srv.Addr(), Password: "pw", ClientName: "featcache", Timeout: 100 * time.Millisecond, Conns: 1})
	t.Cleanup(p.Close)
	call := NewCall()
	if err := p.Do(call, resp.AppendCommand(nil, "PING"), 1); err != nil {
		t.Fatal(err)
	}
	var id []byte
	if err := p.Do(call, resp.AppendCommand(nil, "CLIENT", "ID"), 1); err != nil {
		t.Fatal(err)
	}
	id = append(id, call.Frame(0)...)
	time.Sleep(300 * time.Millisecond) // idle past the handshake's deadline
	for i := 0; i < 3; i++ {
		if err := p.Do(call, resp.AppendCommand(nil, "CLIENT", "ID"), 1); err != nil {
			t.Fatalf("request %d on a connection older than the timeout: %v", i, err)
		}
		if string(call.Frame(0)) != string(id) {
			t.Fatalf("the shared connection was replaced (client id %q, was %q): it died at the handshake's deadline", call.Frame(0), id)
		}
	}
	dc, err := p.Dedicated()
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	if err := dc.Do(call, resp.AppendCommand(nil, "PING"), 1, time.Time{}); err != nil {
		t.Fatalf("dedicated connection older than the timeout: %v", err)
	}
	dc.Release()
}

// TestHashFetchWithFieldTTL: against an upstream with per-field expiry (Redis 7.4+), a hash fetch also reads each
// field's TTL with HPTTL; its reply gives each field's own TTL, and a failed HPTTL makes every field's unknown.
func TestHashFetchWithFieldTTL(t *testing.T) {
	got := string(AppendHashFetch(nil, []byte("h"), [][]byte{[]byte("a"), []byte("b")}, false, true))
	want := string(resp.AppendCommand(nil, "HMGET", "h", "a", "b")) + string(resp.AppendCommand(nil, "PTTL", "h")) +
		string(resp.AppendCommand(nil, "HPTTL", "h", "FIELDS", "2", "a", "b"))
	if got != want {
		t.Fatalf("got %q; want %q", got, want)
	}
	if HashFetchFrames(false, true) != 3 || HashFetchFrames(true, true) != 2 || HashFetchFrames(false, false) != 2 {
		t.Fatal("HashFetchFrames")
	}
	var hf HashFetched
	fields := [][]byte{[]byte("a"), []byte("b")}
	err := ParseHashFetched([]byte("*2\r\n$1\r\n1\r\n$-1\r\n"), []byte(":-1\r\n"), []byte("*2\r\n:1500\r\n:-2\r\n"), fields, false, &hf)
	if err != nil || len(hf.FieldPTTL) != 2 || hf.FieldPTTL[0] != 1500 || hf.FieldPTTL[1] != -2 || !hf.Missing[1] {
		t.Fatalf("got %+v, %v", hf, err)
	}
	err = ParseHashFetched([]byte("*2\r\n$1\r\n1\r\n$1\r\n2\r\n"), []byte(":-1\r\n"), []byte("-ERR unknown command 'HPTTL'\r\n"), fields, false, &hf)
	if err != nil || hf.FieldPTTL[0] != -3 || hf.FieldPTTL[1] != -3 {
		t.Fatalf("a failed HPTTL: got %+v, %v; want unknown TTLs", hf.FieldPTTL, err)
	}
}

// TestPoolRecoversAllConnectionsAtOnce: while Redis is down each shared connection redials at most once a second,
// but once one of them reaches Redis again the others stop waiting out their gap.
func TestPoolRecoversAllConnectionsAtOnce(t *testing.T) {
	srv := redistest.Start(t)
	p := NewPool(PoolOptions{Addr: srv.Addr(), Conns: 4, Timeout: time.Second})
	t.Cleanup(p.Close)
	call := NewCall()
	for i := 0; i < 4; i++ {
		if err := p.Do(call, resp.AppendCommand(nil, "PING"), 1); err != nil {
			t.Fatal(err)
		}
	}
	srv.Kill()
	for i := 0; i < 4; i++ {
		if err := p.Do(call, resp.AppendCommand(nil, "PING"), 1); err == nil {
			t.Fatal("PING to a killed server succeeded")
		}
	}
	// Once the gap has passed, one connection redials and fails again: its next redial is a second away, while
	// the other three may redial at once.
	<-time.After(maxRedialGap + 50*time.Millisecond)
	if err := p.Do(call, resp.AppendCommand(nil, "PING"), 1); err == nil {
		t.Fatal("PING to a killed server succeeded")
	}
	srv.Restart()
	redistest.Eventually(t, 5*time.Second, "one connection back", func() bool {
		return p.Do(call, resp.AppendCommand(nil, "PING"), 1) == nil
	})
	for i := 0; i < 8; i++ {
		if err := p.Do(call, resp.AppendCommand(nil, "PING"), 1); err != nil {
			t.Fatalf("PING %d right after one connection came back: %v", i, err)
		}
	}
}

// clientNames returns the names of the clients connected to s (CLIENT LIST), one per connection.
func clientNames(t *testing.T, s *redistest.Server) []string {
	t.Helper()
	var names []string
	for _, line := range strings.Split(string(s.Do("CLIENT", "LIST")), "\n") {
		for _, f := range strings.Fields(line) {
			if name, ok := strings.CutPrefix(f, "name="); ok && name != "" {
				names = append(names, name)
			}
		}
	}
	return names
}

func hasClient(t *testing.T, s *redistest.Server, name string) bool {
	for _, n := range clientNames(t, s) {
		if n == name {
			return true
		}
	}
	return false
}

// TestPoolRetarget: Retarget closes every connection to the old address (calls in flight fail, a dedicated
// connection in use fails with ErrRetargeted and is not reused, idle ones are dropped) and new connections go to
// the new address at once.
func TestPoolRetarget(t *testing.T) {
	a, b := redistest.Start(t), redistest.Start(t)
	a.Do("SET", "where", "a")
	b.Do("SET", "where", "b")
	p := newTestPool(t, a.Addr(), time.Second)
	call := NewCall()
	get := resp.AppendCommand(nil, "GET", "where")
	if err := p.Do(call, get, 1); err != nil || string(call.Frame(0)) != "$1\r\na\r\n" {
		t.Fatalf("before: %q, %v", call.Frame(0), err)
	}
	idle, _ := p.Dedicated()
	idle.Release()
	busy, err := p.Dedicated()
	if err != nil {
		t.Fatal(err)
	}
	idle2, _ := p.Dedicated()
	idle2.Release()
	// A blocked command on the old address ends with ErrRetargeted, not after its own timeout.
	if err := busy.Write(resp.AppendCommand(nil, "BLPOP", "q", "0")); err != nil {
		t.Fatal(err)
	}
	blocked := make(chan error, 1)
	go func() {
		_, err := busy.ReadFrame(nil, time.Time{})
		blocked <- err
	}()

	p.Retarget(b.Addr())
	if p.Addr() != b.Addr() {
		t.Fatalf("Addr = %q; want %q", p.Addr(), b.Addr())
	}
	select {
	case err := <-blocked:
		if !errors.Is(err, ErrRetargeted) {
			t.Fatalf("blocked read: got %v; want ErrRetargeted", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a blocked dedicated connection to the old address was not closed")
	}
	busy.Release()
	if err := p.Do(call, get, 1); err != nil || string(call.Frame(0)) != "$1\r\nb\r\n" {
		t.Fatalf("after: %q, %v; want the new address's value at once", call.Frame(0), err)
	}
	c, err := p.Dedicated()
	if err != nil {
		t.Fatal(err)
	}
	if c == busy || c == idle2 {
		t.Fatal("a connection to the old address was handed out")
	}
	if err := c.Do(call, get, 1, time.Now().Add(time.Second)); err != nil || string(call.Frame(0)) != "$1\r\nb\r\n" {
		t.Fatalf("dedicated after: %q, %v", call.Frame(0), err)
	}
	c.Release()
	redistest.Eventually(t, 5*time.Second, "no connection left on the old address", func() bool {
		return !hasClient(t, a, "featcache-test")
	})
}

// TestPoolOnReadOnly: a -READONLY reply on a shared connection (a primary demoted to a replica) calls OnReadOnly.
func TestPoolOnReadOnly(t *testing.T) {
	primary := redistest.Start(t)
	replica := redistest.Start(t, "--replicaof", "127.0.0.1", strings.TrimPrefix(primary.Addr(), "127.0.0.1:"))
	seen := make(chan struct{}, 1)
	p := NewPool(PoolOptions{Addr: replica.Addr(), Timeout: time.Second, OnReadOnly: func() {
		select {
		case seen <- struct{}{}:
		default:
		}
	}})
	t.Cleanup(p.Close)
	call := NewCall()
	if err := p.Do(call, resp.AppendCommand(nil, "SET", "k", "v"), 1); err != nil || !strings.HasPrefix(string(call.Frame(0)), "-READONLY") {
		t.Fatalf("SET on a replica: %q, %v", call.Frame(0), err)
	}
	select {
	case <-seen:
	default:
		t.Fatal("OnReadOnly was not called")
	}
}

// TestPoolSkipsPushes: a push on a shared connection (here an invalidation Redis sends to a connection a command
// switched to RESP3 and tracking) is never taken as the reply to the command after it, nor does it cost the
// connection.
func TestPoolSkipsPushes(t *testing.T) {
	srv := redistest.Start(t)
	p := NewPool(PoolOptions{Addr: srv.Addr(), Timeout: time.Second, Conns: 1})
	t.Cleanup(p.Close)
	call := NewCall()
	var req []byte
	req = resp.AppendCommand(req, "HELLO", "3")
	req = resp.AppendCommand(req, "CLIENT", "TRACKING", "ON")
	req = resp.AppendCommand(req, "GET", "k")
	req = resp.AppendCommand(req, "CLIENT", "ID")
	if err := p.Do(call, req, 4); err != nil {
		t.Fatal(err)
	}
	id := string(call.Frame(3))
	// The SET makes Redis push an invalidation of k to the shared connection before it answers the SET, so the
	// push is on that connection ahead of the PING's reply.
	srv.Do("SET", "k", "v")
	req = resp.AppendCommand(resp.AppendCommand(nil, "PING"), "CLIENT", "ID")
	if err := p.Do(call, req, 2); err != nil {
		t.Fatal(err)
	}
	if got := string(call.Frame(0)); got != "+PONG\r\n" {
		t.Errorf("PING after a push: got %q; want +PONG", got)
	}
	if got := string(call.Frame(1)); got != id {
		t.Errorf("the shared connection is %q after the push; was %q: the push cost the connection", got, id)
	}
}

// TestPoolJoinsFormingBatch: a call started while a batch forms on a connection joins that connection rather than
// the next one in turn, unless the connection is broken; calls with no batch forming go round the connections of
// their group.
func TestPoolJoinsFormingBatch(t *testing.T) {
	srv := redistest.Start(t)
	p := NewPool(PoolOptions{Addr: srv.Addr(), Conns: 4, Timeout: 5 * time.Second})
	t.Cleanup(p.Close)
	call := NewCall()
	clientID := func() string {
		t.Helper()
		if err := p.Do(call, resp.AppendCommand(nil, "CLIENT", "ID"), 1); err != nil {
			t.Fatal(err)
		}
		return string(call.Frame(0))
	}
	ids := map[string]bool{}
	for i := 0; i < 8; i++ {
		ids[clientID()] = true
	}
	// Do's reads go round the connections of the reads group: all but the one that carries writes.
	if len(ids) != 3 {
		t.Fatalf("with no batch forming, 8 calls used %d connections; want all 3 of the reads group", len(ids))
	}

	forming := p.lanes[2].cur.Load()
	var want string
	for i := 0; i < 8; i++ {
		p.reads.forming.Store(forming) // as the call that kicks its writer does
		id := clientID()
		if want == "" {
			want = id
		}
		if id != want {
			t.Fatalf("call %d joined the connection of CLIENT ID %q; want the forming one's, %q", i, id, want)
		}
	}

	forming.fail(errors.New("test: connection lost"))
	p.reads.forming.Store(forming)
	if id := clientID(); id == want {
		t.Fatalf("a call joined the broken connection (CLIENT ID %q)", id)
	}
}

// TestPoolMaxClientsRefusal: a Redis at maxclients writes -ERR max number of clients reached to a new connection
// and closes it, before it reads anything. The dial's error wraps Redis's error as Redis wrote it, with a password
// (the refusal comes where AUTH's reply was expected, and the second reply never comes) and without; an idle
// dedicated connection that Redis closed meanwhile is not handed out.
func TestPoolMaxClientsRefusal(t *testing.T) {
	srv := redistest.Start(t, "--requirepass", "pw")
	admin := srv.Dial()
	if got := string(admin.Do("AUTH", "pw")); got != "+OK\r\n" {
		t.Fatalf("AUTH: %q", got)
	}
	withPass := NewPool(PoolOptions{Addr: srv.Addr(), Timeout: time.Second, Password: "pw", ClientName: "featcache-test"})
	t.Cleanup(withPass.Close)
	idle, err := withPass.Dedicated()
	if err != nil {
		t.Fatal(err)
	}
	idle.Release()
	if got := string(admin.Do("CONFIG", "SET", "maxclients", "1")); got != "+OK\r\n" {
		t.Fatalf("CONFIG SET maxclients: %q", got)
	}
	t.Cleanup(func() { admin.Do("CONFIG", "SET", "maxclients", "10000") })
	// The idle connection is killed: it must not come back from the idle list.
	if got := string(admin.Do("CLIENT", "KILL", "USER", "default", "SKIPME", "yes")); got == ":0\r\n" {
		t.Fatalf("CLIENT KILL: %q", got)
	}
	for _, p := range []*Pool{withPass, newTestPool(t, srv.Addr(), time.Second)} {
		_, err := p.Dedicated()
		var re resp.Error
		if !errors.As(err, &re) || re.Error() != "ERR max number of clients reached" {
			t.Errorf("password %q: Dedicated: got %v; want Redis's refusal wrapped", p.opt.Password, err)
		}
	}
}
