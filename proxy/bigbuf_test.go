package proxy

import (
	"bufio"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"featcache/internal/redistest"
	"featcache/internal/resp"
)

// TestBigBufferClasses: a request of n bytes is served by a class of at least n and at most a quarter more (from
// 64 KiB on, up to 4 MiB); getBig hands out at least what is asked, exactly that above 4 MiB; putBig keeps no buffer
// below 64 KiB. (Pooled buffers other tests gave back may be larger than their class: capacities are checked as
// bounds.)
func TestBigBufferClasses(t *testing.T) {
	for _, c := range []struct{ n, size int }{
		{1, 64 << 10}, {64 << 10, 64 << 10}, {64<<10 + 1, 80 << 10}, {100 << 10, 112 << 10}, {3 << 20, 3 << 20},
		{3<<20 + 1, 7 << 19}, {4 << 20, 4 << 20},
	} {
		if got := bigSize(bigClass(c.n)); got != c.size {
			t.Errorf("the class of %d bytes holds %d; want %d", c.n, got, c.size)
		}
	}
	for n := 64 << 10; n <= 4<<20; n += 4093 {
		if size := bigSize(bigClass(n)); size < n || size > n+n/4 {
			t.Fatalf("the class of %d bytes holds %d; want from %d to %d", n, size, n, n+n/4)
		}
		if b := getBig(n); len(b) != 0 || cap(b) < n {
			t.Fatalf("getBig(%d): len %d cap %d", n, len(b), cap(b))
		}
	}
	if b := getBig(4<<20 + 1); cap(b) != 4<<20+1 {
		t.Errorf("getBig past the last class: cap %d; want exactly what was asked", cap(b))
	}
	putBig(make([]byte, 10, 32<<10)) // too small to keep: dropped, not filed where it cannot serve
	if b := getBig(64 << 10); cap(b) < 64<<10 {
		t.Fatalf("getBig(64 KiB) after putting a 32 KiB buffer: cap %d", cap(b))
	}
}

// TestTrimKeepsGrownBuffersForTheNextBatch: a batch that filled more than retainBytes of its reply and round-trip
// buffers leaves them to the pool, holding none between batches, and the next batch starts with buffers of the
// size it used; a batch that fitted leaves no hint, so the one after it starts small.
func TestTrimKeepsGrownBuffersForTheNextBatch(t *testing.T) {
	p := startProxy(t, defaultTestConfig)
	nc, peer := net.Pipe()
	t.Cleanup(func() { nc.Close(); peer.Close() })
	c := p.srv.newClient(nc)
	c.out = make([]byte, 0, 256<<10)
	c.outUsed = 150 << 10
	c.call.Replies = make([]byte, 100<<10, 200<<10)
	c.trim()
	if c.out != nil || c.call.Replies != nil {
		t.Fatalf("after a large batch the client holds %d and %d bytes of buffers; want none",
			cap(c.out), cap(c.call.Replies))
	}
	if c.big.out != 150<<10 || c.big.replies != 100<<10 {
		t.Fatalf("hints %+v; want the 150 KiB and 100 KiB the batch used", c.big)
	}
	c.takeBig()
	if cap(c.out) < 150<<10 || cap(c.call.Replies) < 100<<10 || len(c.out) != 0 || len(c.call.Replies) != 0 {
		t.Fatalf("the next batch starts with buffers of %d and %d bytes; want empty ones of at least 150 and 100 KiB",
			cap(c.out), cap(c.call.Replies))
	}
	c.outUsed = 100 // this batch was small
	c.trim()
	if c.big != (bigHints{}) || c.out != nil || c.call.Replies != nil {
		t.Fatalf("after a small batch in large buffers: hints %+v, buffers %d and %d; want none",
			c.big, cap(c.out), cap(c.call.Replies))
	}
	c.takeBig()
	if c.out != nil || c.call.Replies != nil {
		t.Fatal("a batch after a small one was given pooled buffers")
	}
	// A batch that read one huge value (here 100 MiB) leaves no hint: the next batch must not allocate as much.
	c.call.Replies = make([]byte, 100<<20)
	c.trim()
	if c.big != (bigHints{}) || c.call.Replies != nil {
		t.Fatalf("after a 100 MiB reply: hints %+v, %d bytes held; want none", c.big, cap(c.call.Replies))
	}
}

// TestPooledBuffersKeepClientsApart: clients pipelining hundreds of misses and hits of 1-4 KiB values at once, each
// batch's replies and round trips large enough to take pooled buffers that other clients gave back, each writing
// new values of its own keys between its reads, get exactly their own values, in order. They also all read a set of
// shared keys that another client of the same Redis keeps rewriting with the same values, so that their fills are
// invalidated again and again and each client waits on fills other clients lead, whose buffers go back to the pool
// while the waiters answer.
func TestPooledBuffersKeepClientsApart(t *testing.T) {
	p := startProxy(t, defaultTestConfig)
	const clients, keys, rounds = 6, 200, 6
	value := func(key string, gen int) string {
		n := 1000 + (len(key)*131+gen*977)%3000
		unit := key + "/" + strconv.Itoa(gen) + ";"
		return strings.Repeat(unit, n/len(unit)+1)[:n]
	}
	name := func(cl, i int) string { return "pool:" + strconv.Itoa(cl) + ":" + strconv.Itoa(i) }
	for cl := 0; cl < clients; cl++ {
		for i := range keys {
			p.redis.Do("SET", name(cl, i), value(name(cl, i), 0))
		}
	}
	const shared = 100
	sharedName := func(i int) string { return "pool:shared:" + strconv.Itoa(i) }
	var rewrite []byte
	for i := range shared {
		p.redis.Do("SET", sharedName(i), value(sharedName(i), 0))
		rewrite = append(rewrite, redistest.Encode("SET", sharedName(i), value(sharedName(i), 0))...)
	}
	// Another client of the same Redis: the same values again and again, each SET an invalidation.
	done := make(chan struct{})
	rewrote := make(chan int)
	go func() {
		n := 0
		defer func() { rewrote <- n }()
		nc, err := net.Dial("tcp", p.redis.Addr())
		if err != nil {
			return
		}
		defer nc.Close()
		r := bufio.NewReader(nc)
		for {
			select {
			case <-done:
				return
			default:
			}
			if _, err := nc.Write(rewrite); err != nil {
				return
			}
			for range shared {
				if _, err := resp.ReadFrame(r, nil); err != nil {
					return
				}
			}
			n++
		}
	}()
	// Each batch's replies are far past the size a client keeps between batches: its buffers come from the pool.
	if least := (keys + shared) * 1000; least < 2*bigMin {
		t.Fatalf("a batch's replies are at least %d bytes; the test needs them past %d", least, 2*bigMin)
	}
	errs := make(chan error, clients)
	for cl := 0; cl < clients; cl++ {
		go func() {
			errs <- func() error {
				nc, err := net.Dial("tcp", p.addr)
				if err != nil {
					return err
				}
				defer nc.Close()
				r := bufio.NewReaderSize(nc, 64<<10)
				gens := make([]int, keys)
				name := func(i int) string { return name(cl, i) }
				for round := range rounds {
					var batch []byte
					var want []string
					for i := round; i < keys; i += 7 { // new values, written through featcache
						gens[i]++
						batch = append(batch, redistest.Encode("SET", name(i), value(name(i), gens[i]))...)
						want = append(want, "+OK\r\n")
					}
					for i := range keys {
						batch = append(batch, redistest.Encode("GET", name(i))...)
						want = append(want, bulk(value(name(i), gens[i])))
					}
					for i := range shared {
						batch = append(batch, redistest.Encode("GET", sharedName(i))...)
						want = append(want, bulk(value(sharedName(i), 0)))
					}
					mget := []string{"MGET"}
					wantMget := "*50\r\n"
					for i := 0; i < 50; i++ {
						k := (i*13 + round) % keys
						mget = append(mget, name(k))
						wantMget += bulk(value(name(k), gens[k]))
					}
					batch = append(batch, redistest.Encode(mget...)...)
					want = append(want, wantMget)
					if _, err := nc.Write(batch); err != nil {
						return err
					}
					nc.SetReadDeadline(time.Now().Add(10 * time.Second))
					for j, w := range want {
						frame, err := resp.ReadFrame(r, nil)
						if err != nil {
							return fmt.Errorf("client %d round %d reply %d: %v", cl, round, j, err)
						}
						if string(frame) != w {
							return fmt.Errorf("client %d round %d reply %d: got %.80q; want %.80q", cl, round, j, frame, w)
						}
					}
				}
				return nil
			}()
		}()
	}
	for range clients {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	close(done)
	if n := <-rewrote; n == 0 {
		t.Fatal("the other Redis client never rewrote the shared keys")
	}
	if p.cache.Stats().FillsJoined == 0 {
		t.Fatal("no client waited on a fill another one led")
	}
}
