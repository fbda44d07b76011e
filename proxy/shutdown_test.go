package proxy

import (
	"context"
	"errors"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"featcache/internal/redistest"
	"featcache/internal/resp"
)

// closedCleanly reports whether err is how a client sees featcache close a connection between replies.
func closedCleanly(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, net.ErrClosed)
}

// TestShutdownFinishesPipelines: clients are in the middle of large pipelines (hits, misses, MGETs, writes, INCRs)
// when Shutdown starts; every command each client sent gets its complete reply, in order, and only then does the
// connection close; Shutdown returns before its deadline.
func TestShutdownFinishesPipelines(t *testing.T) {
	p := startProxy(t, defaultTestConfig)
	loadKeys(t, p.redis, "k:", 1000)
	p.settle()
	warmConn := p.dial()
	mgetAll(t, warmConn, keyList("k:", 0, 500)) // half the keys cached: the pipelines mix hits and misses
	warmConn.Close()

	const clients, n = 6, 4000
	type outcome struct {
		replies int
		err     error
		bad     string
	}
	results := make([]outcome, clients)
	started := make(chan struct{}, clients)
	var wg sync.WaitGroup
	for id := 0; id < clients; id++ {
		c := p.dial()
		var payload []byte
		for i := 0; i < n; i++ {
			switch i % 4 {
			case 0:
				payload = resp.AppendCommand(payload, "GET", "k:"+strconv.Itoa(i%1000))
			case 1:
				payload = resp.AppendCommand(payload, "INCR", "cnt:"+strconv.Itoa(id))
			case 2:
				payload = resp.AppendCommand(payload, "MGET", "k:"+strconv.Itoa((i+7)%1000), "k:"+strconv.Itoa((i+501)%1000))
			case 3:
				payload = resp.AppendCommand(payload, "SET", "s:"+strconv.Itoa(id)+":"+strconv.Itoa(i), "v")
			}
		}
		wg.Add(2)
		go func() {
			defer wg.Done()
			c.NetConn().Write(payload)
		}()
		go func(id int) {
			defer wg.Done()
			r := &results[id]
			incr := 0
			for ; r.replies < n; r.replies++ {
				frame, err := c.ReadTimeout(20 * time.Second)
				if err != nil {
					r.err = err
					return
				}
				if r.replies == 0 {
					started <- struct{}{}
				}
				if r.replies%4 == 1 {
					incr++
					if want := ":" + strconv.Itoa(incr) + "\r\n"; string(frame) != want && r.bad == "" {
						r.bad = "INCR reply " + strconv.Quote(string(frame)) + ", want " + strconv.Quote(want)
					}
				} else if (frame[0] == '-') && r.bad == "" {
					r.bad = "error reply " + strconv.Quote(string(frame))
				}
			}
			if _, err := c.ReadTimeout(10 * time.Second); !closedCleanly(err) {
				r.err = errors.New("after the last reply: " + errString(err))
			}
		}(id)
	}
	for i := 0; i < clients; i++ {
		<-started
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := p.srv.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	wg.Wait()
	for id, r := range results {
		if r.replies != n || r.err != nil || r.bad != "" {
			t.Errorf("client %d: %d of %d replies, err %v, %s", id, r.replies, n, r.err, r.bad)
		}
	}
}

func errString(err error) string {
	if err == nil {
		return "no error: the connection stayed open"
	}
	return err.Error()
}

// shutdownIdle shuts p down with only idle clients connected and fails the test unless Shutdown returns nil
// within bound: it does not wait for clients that have nothing in progress.
func shutdownIdle(t *testing.T, p *testProxy, bound time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	start := time.Now()
	if err := p.srv.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if took := time.Since(start); took > bound {
		t.Errorf("Shutdown took %v with only idle clients; want at most %v", took, bound)
	}
}

// TestShutdownClosesIdleConnections: idle clients are closed at once, well before the deadline.
func TestShutdownClosesIdleConnections(t *testing.T) {
	p := startProxy(t, defaultTestConfig)
	var conns []*redistest.Conn
	for i := 0; i < 20; i++ {
		c := p.dial()
		c.Do("PING")
		conns = append(conns, c)
	}
	shutdownIdle(t, p, 5*time.Second)
	for i, c := range conns {
		if _, err := c.ReadTimeout(5 * time.Second); !closedCleanly(err) {
			t.Fatalf("idle client %d: %v; want its connection closed", i, err)
		}
	}
}

// TestShutdownWaitsForExec: a client inside MULTI keeps its connection until EXEC, which gets its reply.
func TestShutdownWaitsForExec(t *testing.T) {
	p := startProxy(t, defaultTestConfig)
	c := p.dial()
	c.Do("MULTI")
	c.Do("SET", "tx", "1")
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		done <- p.srv.Shutdown(ctx)
	}()
	select {
	case err := <-done:
		t.Fatalf("Shutdown returned (%v) while a client was inside MULTI", err)
	case <-time.After(300 * time.Millisecond):
	}
	if got := string(c.Do("EXEC")); got != "*1\r\n+OK\r\n" {
		t.Fatalf("EXEC during shutdown: %q", got)
	}
	if _, err := c.ReadTimeout(5 * time.Second); !closedCleanly(err) {
		t.Fatalf("after EXEC: %v; want the connection closed", err)
	}
	if err := <-done; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
}

// TestMaxConnAge: connections older than limits.max_conn_age are closed between replies: an idle one soon after
// its age, a busy one at a command boundary, never in the middle of a reply; a subscription and a MULTI stay open.
func TestMaxConnAge(t *testing.T) {
	p := startProxy(t, defaultTestConfig+`
limits:
  max_conn_age: 1s
`)
	admin := p.adminURL()
	p.redis.Do("SET", "k", strings.Repeat("x", 10000))
	idle := p.dial()
	busy := p.dial()
	sub := p.dial()
	sub.Do("SUBSCRIBE", "ch")
	multi := p.dial()
	multi.Do("MULTI")

	start := time.Now()
	closedAfter := 0
	for i := 0; ; i++ {
		if err := busy.Send("GET", "k"); err != nil {
			closedAfter = i
			break
		}
		frame, err := busy.ReadTimeout(10 * time.Second)
		if err != nil {
			if len(frame) != 0 || !closedCleanly(err) {
				t.Fatalf("busy client: %v after %d bytes of a reply; want a close between replies", err, len(frame))
			}
			closedAfter = i
			break
		}
		if string(frame) != bulk(strings.Repeat("x", 10000)) {
			t.Fatalf("busy client: reply %d is %.40q", i, frame)
		}
		if time.Since(start) > 20*time.Second {
			t.Fatal("busy client never closed")
		}
	}
	if d := time.Since(start); d < 800*time.Millisecond {
		t.Fatalf("busy client closed after %v; max_conn_age is 1s (less up to 10%%)", d)
	}
	t.Logf("busy client closed after %d replies", closedAfter)
	if _, err := idle.ReadTimeout(10 * time.Second); !closedCleanly(err) {
		t.Fatalf("idle client: %v; want its connection closed", err)
	}
	if got := string(sub.Do("PING")); got != "*2\r\n$4\r\npong\r\n$0\r\n\r\n" {
		t.Fatalf("subscribed client after max_conn_age: %q; want it still open", got)
	}
	if got := string(multi.Do("EXEC")); got != "*0\r\n" {
		t.Fatalf("EXEC after max_conn_age: %q", got)
	}
	if got := scrapeMetrics(t, admin).value(t, "featcache_client_connections_aged_out_total"); got < 2 {
		t.Fatalf("aged_out = %v; want at least 2", got)
	}
}

// TestShutdownStopsEndlessPipeliner: a client that never stops pipelining is served until Shutdown's deadline, then
// stopped between two batches: Redis's counter equals the INCR replies it received, each complete.
func TestShutdownStopsEndlessPipeliner(t *testing.T) {
	p := startProxy(t, defaultTestConfig)
	c := p.dial()
	var batch []byte
	for i := 0; i < 100; i++ {
		batch = resp.AppendCommand(batch, "INCR", "cnt")
	}
	replies := 0 // read after readErr
	readErr := c.Flood(batch, 20*time.Second, func(frame []byte) error {
		replies++
		if want := ":" + strconv.Itoa(replies) + "\r\n"; string(frame) != want {
			return errors.New("reply " + strconv.Quote(string(frame)) + ", want " + strconv.Quote(want))
		}
		return nil
	})
	redistest.Eventually(t, 10*time.Second, "pipelining", func() bool { return strings.HasPrefix(string(p.redis.Do("GET", "cnt")), "$4") })
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := p.srv.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown: %v; want its deadline exceeded", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Shutdown took %v after its deadline of 500ms", d)
	}
	if err := <-readErr; !closedCleanly(err) {
		t.Fatalf("pipeliner: %v", err)
	}
	got := string(p.redis.Do("GET", "cnt"))
	if want := bulk(strconv.Itoa(replies)); got != want {
		t.Fatalf("Redis executed %s INCRs; the client received %d replies", got, replies)
	}
}
