package proxy

import "sync"

// A batch whose replies or upstream answers outgrow retainBytes (a pipeline of misses, a large MGET) grows its
// buffers again on every batch, since trim drops them so that an idle client holds little: a cold pipelined fill
// of 1-2 KiB values threw away about 12 KiB per miss, enough to keep the collector running back to back on one core
// and lift the Go memory limit with the heap it found live. bigBuffers keeps those buffers for the next large batch,
// of this client or any other: trim gives a grown buffer back and notes how much the batch used, and the client's
// next batch starts with a pooled buffer of that size. Idle clients still hold none, and the pool's buffers are
// freed by the collector when no batch takes them for two cycles.

// The pool's buffer sizes are bigMin to bigMax in quarter steps of each power of two (64, 80, 96, 112, 128, 160
// KiB ...), so that a pooled buffer is at most a quarter larger than the batch needs, as a buffer grown by append
// would be: with whole powers of two a cold fill's 50 pipelining clients held up to twice what they used. Larger
// buffers are not kept, and a batch that used more does not make the next one start with a buffer that large: one
// huge value read once must not cost every later batch of the client an allocation of its size.
const (
	bigMin     = 64 << 10
	bigMax     = 4 << 20
	bigClasses = 4*6 + 1 // bigMax is bigMin<<6
)

// bigSize is the capacity of the pool's class i.
func bigSize(i int) int { return (bigMin << (i / 4)) / 4 * (4 + i%4) }

// bigClass returns the smallest class of n bytes or more; n is at most bigMax.
func bigClass(n int) int {
	i := 0
	for bigSize(i) < n {
		i++
	}
	return i
}

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
	if n > bigMax {
		return make([]byte, 0, n)
	}
	i := bigClass(n)
	if b, ok := bigBuffers[i].Get().(*[]byte); ok {
		return (*b)[:0]
	}
	return make([]byte, 0, bigSize(i))
}

// putBig gives b to the pool, in the largest class it can serve; the caller no longer uses it. Buffers smaller than
// the first class or over twice the last are dropped.
func putBig(b []byte) {
	if cap(b) < bigMin || cap(b) > 2*bigMax {
		return
	}
	i := bigClasses - 1
	for bigSize(i) > cap(b) {
		i--
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
