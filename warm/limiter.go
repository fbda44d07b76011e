package warm

import (
	"context"
	"sync"
	"time"
)

// limiter paces warm-ups at a rate of keys per second. It is a token bucket that lends: take reserves n keys at
// once and waits until the debt is paid off at the rate, and keys reserved but not read from the upstream (found
// cached, or skipped) are given back, so that re-running a warm-up of cached keys is not slowed down.
type limiter struct {
	mu     sync.Mutex
	rate   float64 // keys per second
	burst  float64 // most tokens saved up while idle
	tokens float64
	last   time.Time
}

func newLimiter(rate, batch int) *limiter {
	l := &limiter{last: time.Now()}
	l.set(rate, batch)
	l.tokens = l.burst
	return l
}

// set changes the rate; the burst is a batch or a twentieth of a second's worth, whichever is more.
func (l *limiter) set(rate, batch int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.refill(time.Now())
	l.rate = float64(max(rate, 1))
	l.burst = max(float64(batch), l.rate/20)
	l.tokens = min(l.tokens, l.burst)
}

func (l *limiter) refill(now time.Time) {
	l.tokens = min(l.burst, l.tokens+now.Sub(l.last).Seconds()*l.rate)
	l.last = now
}

// take reserves n keys and waits until the rate allows them, or ctx ends.
func (l *limiter) take(ctx context.Context, n int) error {
	l.mu.Lock()
	l.refill(time.Now())
	l.tokens -= float64(n)
	wait := time.Duration(-l.tokens / l.rate * float64(time.Second))
	l.mu.Unlock()
	if wait <= 0 {
		return nil
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// giveBack returns n reserved keys that were not read.
func (l *limiter) giveBack(n int) {
	if n <= 0 {
		return
	}
	l.mu.Lock()
	l.refill(time.Now())
	l.tokens = min(l.burst, l.tokens+float64(n))
	l.mu.Unlock()
}

// current returns the rate in keys per second.
func (l *limiter) current() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return int(l.rate)
}
