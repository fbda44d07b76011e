package proxy

import (
	"math/bits"
	"sync"
)

// A batch whose replies or upstream answers outgrow retainBytes (a pipeline of misses, a large MGET) grows its
// buffers again on every batch, since trim drops them so that an idle client holds little: a cold pipelined fill
// of 1-2 KiB values threw away about 12 KiB per miss, enough to keep the collector running back to back on one core
// and lift the Go memory limit with the heap it found live. bigBuffers keeps those buffers for the next large batch,
// of this client or any other: trim gives a grown buffer back and notes how much the batch used, and the client's
// next batch starts with a pooled buffer of that size. Idle clients still hold none, and the pool's buffers are
// freed by the collector when no batch takes them for two cycles.

// bigClasses are the pool's buffer sizes: bigMin, doubling, up to bigMax. Larger buffers are not kept, and a
// batch that used more does not make the next one start with a buffer that large: one huge value read once must
// not cost every later batch of the client an allocation of its size.
const (
	bigMin     = 64 << 10
	bigClasses = 7
	bigMax     = bigMin << (bigClasses - 1) // 4 MiB
)

// bigHint is what a batch that used n bytes of a buffer leaves as a hint for the next one: n when a pooled buffer
// serves it, else 0.
func bigHint(n int) int {
	if n <= retainBytes || n > bigMax {
		return 0
	}
	return n
}

var bigBuffers [bigClasses]sync.Pool // of *[]byte, each of its class's capacity or more

// getBig returns an empty buffer of at least n bytes' capacity, from the pool when it has one.
func getBig(n int) []byte {
	i := bits.Len(uint((n - 1) / bigMin)) // the smallest class of n bytes or more
	if i >= bigClasses {
		return make([]byte, 0, n)
	}
	if b, ok := bigBuffers[i].Get().(*[]byte); ok {
		return (*b)[:0]
	}
	return make([]byte, 0, bigMin<<i)
}

// putBig gives b to the pool (in the largest class it can serve); the caller no longer uses it.
func putBig(b []byte) {
	i := bits.Len(uint(cap(b)/bigMin)) - 1
	if i < 0 || i >= bigClasses {
		return
	}
	bigBuffers[i].Put(&b)
}

// bigHints are how much of its grown buffers a client's last batch used, for its next batch (see bigBuffers);
// 0 when the batch fitted in retainBytes.
type bigHints struct {
	out, replies int
}

// takeBig gives a client whose last batch outgrew its buffers pooled ones of the size it used, before the batch
// runs.
func (c *client) takeBig() {
	if c.big.out > 0 && c.out == nil {
		c.out = getBig(c.big.out)
	}
	if c.big.replies > 0 && c.call.Replies == nil {
		c.call.Replies = getBig(c.big.replies)
	}
}
