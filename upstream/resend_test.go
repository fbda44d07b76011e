package upstream

import (
	"errors"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"featcache/internal/commands"
	"featcache/internal/redistest"
	"featcache/internal/testkit"
)

// TestClientReadsSentAgain: Redis closes a shared connection whose replies pass client-output-buffer-limit, which
// many clients' reads sent together do where no one of them alone would. A payload that only reads is then sent
// again, alone (Call.alone), and every caller gets its value; a payload with a write is never sent twice, so an
// INCR counted by Redis is one a caller sent, whether or not its reply came back.
func TestClientReadsSentAgain(t *testing.T) {
	srv := redistest.Start(t, "--client-output-buffer-limit", "normal 256kb 256kb 0")
	big := strings.Repeat("v", 200<<10)
	srv.Do("SET", "big", big)
	c := newClusterClient(t, srv.Addr(), func(o *Options) { o.Conns = 1 })
	cmds, err := commands.Embedded()
	if err != nil {
		t.Fatal(err)
	}
	get, incr := cmds["get"], cmds["incr"]
	const callers = 8
	var incrs, incrErrs int
	var mu sync.Mutex
	// Rounds until Redis has closed a connection under a write (whose call then fails), so that the reads beside it
	// were lost too and sent again: almost always the first.
	for r := 0; r < 20 && (r < 2 || incrErrs == 0); r++ {
		var wg sync.WaitGroup
		for i := 0; i < callers; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				call := NewCall()
				var p Payload
				if i%4 == 3 {
					p.Append(incr, testkit.Args("INCR", "n"), nil)
					p.Append(get, testkit.Args("GET", "big"), nil)
					err := c.Forward(call, &p)
					mu.Lock()
					incrs++
					if err != nil {
						incrErrs++
					}
					mu.Unlock()
					return
				}
				p.Append(get, testkit.Args("GET", "big"), nil)
				if err := c.Forward(call, &p); err != nil || string(call.Frame(0)) != "$"+strconv.Itoa(len(big))+"\r\n"+big+"\r\n" {
					t.Errorf("a read of the big value: %v (%d bytes)", err, len(call.Replies))
				}
			}()
		}
		wg.Wait()
	}
	if incrErrs == 0 {
		t.Fatal("Redis closed no shared connection for its output limit in 20 rounds: the re-send was not exercised")
	}
	n := 0
	if got := string(srv.Do("GET", "n")); got != "$-1\r\n" {
		n, _ = strconv.Atoi(strings.Split(got, "\r\n")[1])
	}
	if n > incrs || n < incrs-incrErrs {
		t.Errorf("Redis counted %d INCRs; %d were sent, %d of them failed: a write was sent twice or lost", n, incrs, incrErrs)
	}
	t.Logf("%d INCRs sent, %d failed with their connection, %d counted by Redis; every read answered", incrs, incrErrs, n)
}

// TestPoolDedicatedWaitsForSetup: a dedicated connection for a client's command, opened while another client of
// Redis has paused it (CLIENT PAUSE ALL), waits for its setup until the pause ends, as a direct client's new
// connection does, where featcache's own (Dedicated) fails after the timeout; Close ends such a wait at once.
func TestPoolDedicatedWaitsForSetup(t *testing.T) {
	srv := redistest.Start(t)
	p := NewPool(PoolOptions{Addr: srv.Addr(), Conns: 1, Timeout: 200 * time.Millisecond, ClientName: "featcache-test"})
	t.Cleanup(p.Close)
	if r := string(srv.Do("CLIENT", "PAUSE", "1000", "ALL")); r != "+OK\r\n" {
		t.Fatalf("CLIENT PAUSE: %q", r)
	}
	start := time.Now()
	if _, err := p.Dedicated(); err == nil {
		t.Error("Dedicated during the pause: no error; want its setup to time out")
	}
	conn, err := p.DedicatedWait()
	took := time.Since(start)
	if err != nil {
		t.Fatalf("DedicatedWait during the pause: %v", err)
	}
	conn.Release()
	if took < 700*time.Millisecond {
		t.Errorf("DedicatedWait returned after %v, within the pause", took)
	}

	if r := string(srv.Do("CLIENT", "PAUSE", "2000", "ALL")); r != "+OK\r\n" {
		t.Fatalf("CLIENT PAUSE: %q", r)
	}
	p.idleMu.Lock()
	idle := p.idle
	p.idle = nil // a new connection, whose setup waits
	p.idleMu.Unlock()
	for _, c := range idle {
		c.nc.Close()
	}
	done := make(chan error, 1)
	go func() {
		_, err := p.DedicatedWait()
		done <- err
	}()
	time.Sleep(200 * time.Millisecond) // the setup is under way
	p.Close()
	select {
	case err := <-done:
		if err == nil || !errors.Is(err, ErrClosed) && !strings.Contains(err.Error(), "closed") {
			t.Errorf("DedicatedWait ended by Close: %v; want an error saying the pool closed", err)
		}
	case <-time.After(time.Second):
		t.Fatal("Close did not end a waiting setup")
	}
}

// TestClientReadsThroughKilledConnections: another client of Redis kills featcache's connections again and again
// (CLIENT KILL TYPE normal) while reads run on the shared connections. Redis itself stays reachable, so every
// read gets its value: one that was on a killed connection is sent again, and one that comes to a connection just
// found dead takes the lane's next one, neither failing with the dead connection's EOF.
func TestClientReadsThroughKilledConnections(t *testing.T) {
	srv := redistest.Start(t)
	srv.Do("SET", "k", "v")
	c := newClusterClient(t, srv.Addr(), func(o *Options) { o.Conns = 2 })
	cmds, err := commands.Embedded()
	if err != nil {
		t.Fatal(err)
	}
	var loops testkit.Loops
	var reads, failed atomic.Int64
	for range 8 {
		loops.Go(func(int) bool {
			call := NewCall()
			var p Payload
			p.Append(cmds["get"], testkit.Args("GET", "k"), nil)
			err := c.Do(call, &p)
			reads.Add(1)
			if err != nil {
				if failed.Add(1) <= 5 {
					t.Errorf("GET k while its connections are killed: %v", err)
				}
			} else if got := string(call.Frame(0)); got != "$1\r\nv\r\n" {
				t.Errorf("GET k while its connections are killed: %q", got)
			}
			return true
		})
	}
	killer := srv.Dial()
	for range 100 {
		killer.Do("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
		time.Sleep(10 * time.Millisecond) // the reads in between, on the connections dialed again
	}
	loops.Stop()
	t.Logf("%d reads, %d failed", reads.Load(), failed.Load())
}
