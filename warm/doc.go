// Package warm holds featcache's warm starts and hot-key tracking: the lists of keys a new instance loads into its
// local tier before and after it turns ready (files, Redis sorted sets, the hot-key list a previous instance
// wrote), the schedule that loads them (batches, a rate limit, progress, the readiness threshold), and the
// bounded top-K tracker of the keys traffic requests most, with its persistence and the TOUCH loop that keeps
// those keys warm in a Redis that evicts by LRU or LFU.
//
// The keys themselves are fetched by a Filler, which the proxy implements with its normal fill rules (policy
// match, single-flight fills, generations), so warming never stores a value older than one a client wrote.
package warm
