package proxy

import (
	"sync"
	"time"
)

// tokenBucket bounds a rate of events: rate per second, with bursts of up to burst events.
type tokenBucket struct {
	mu     sync.Mutex
	rate   float64
	burst  float64
	tokens float64
	last   time.Time
	now    func() time.Time
}

func newTokenBucket(rate int, now func() time.Time) *tokenBucket {
	burst := max(1, float64(rate)/10)
	return &tokenBucket{rate: float64(rate), burst: burst, tokens: burst, last: now(), now: now}
}

// allow takes a token if one is available.
func (b *tokenBucket) allow() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.now()
	if d := now.Sub(b.last); d > 0 {
		b.tokens = min(b.burst, b.tokens+d.Seconds()*b.rate)
		b.last = now
	}
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}
