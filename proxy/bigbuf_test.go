package proxy

import (
	"net"
	"testing"
)

// TestBigBufferClasses: getBig hands out at least what is asked, in the pool's classes up to 4 MiB and exactly
// above; putBig files a buffer under the largest class it can serve, and keeps none below 64 KiB or above 4 MiB.
func TestBigBufferClasses(t *testing.T) {
	for _, c := range []struct{ n, cap int }{
		{1, 64 << 10}, {64 << 10, 64 << 10}, {64<<10 + 1, 128 << 10}, {3 << 20, 4 << 20}, {4 << 20, 4 << 20},
		{4<<20 + 1, 4<<20 + 1},
	} {
		if b := getBig(c.n); len(b) != 0 || cap(b) < c.cap || cap(b) > max(c.cap, c.n)*2 {
			t.Errorf("getBig(%d): len %d cap %d; want empty, cap %d", c.n, len(b), cap(b), c.cap)
		}
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
		t.Fatalf("after a large batch the client holds %d and %d bytes of buffers; want none", cap(c.out), cap(c.call.Replies))
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
		t.Fatalf("after a small batch in large buffers: hints %+v, buffers %d and %d; want none", c.big, cap(c.out), cap(c.call.Replies))
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
