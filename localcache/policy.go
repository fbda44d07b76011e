package localcache

import "time"

// Policy is what the tier needs to know of a key's policy. The proxy converts its own policy type to
// this once per policy (at load and reload) and passes a pointer on every call; the tier only reads it,
// so one Policy may be shared by any number of goroutines as long as nobody modifies it.
//
// localcache does not import the config package on purpose: the tier stays testable on its own and the
// config package is free to change its shape.
type Policy struct {
	// SoftTTL is the age after which an entry is still served but should be refreshed in the background.
	SoftTTL time.Duration
	// HardTTL is the age after which an entry is never served (except under ServeStale). If zero or
	// negative, nothing is stored and nothing already stored is served.
	HardTTL time.Duration
	// Jitter in [0,1) shortens each entry's deadlines by a random fraction up to this, drawn once at
	// fill, so keys filled together do not expire together. Values outside [0,1) are clamped.
	Jitter float64
	// NegativeTTL is how long a missing key (nil) is remembered. If zero, nils are not stored and
	// remembered nils are no longer served.
	NegativeTTL time.Duration
	// ServeStale allows serving an entry past its hard deadline while the upstream fails, up to
	// MaxStale past it and never past the upstream key's own expiry.
	ServeStale bool
	// MaxStale bounds how far past the hard deadline ServeStale may serve.
	MaxStale time.Duration
	// Revalidate keeps entries through a tracking loss (SetTrusted(false)) as unverified instead of dropping
	// them: they are served only within their soft deadline (StateUnverified), and by ServeStale.
	Revalidate bool
	// NotBefore, if not zero, makes entries whose fill began before this instant (on the cache's clock)
	// unservable under this policy: a lookup treats them as misses. The proxy sets it when the policy's keys start
	// being tracked for invalidation only now, so entries stored while nothing announced their writes are never
	// served.
	NotBefore time.Time
}

// jitter returns the fraction, in [0,1), by which an entry's deadlines are shortened, given a draw
// from Options.Rand.
func (p *Policy) jitter(draw float64) float64 {
	j := p.Jitter
	if !(j > 0) { // also NaN
		return 0
	}
	if j >= 1 {
		j = 0.999
	}
	if !(draw > 0) {
		return 0
	}
	if draw >= 1 {
		draw = 0.999
	}
	return draw * j
}
