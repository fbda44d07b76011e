package warm

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultBatch is how many keys a warm-up hands the Filler at once when Options.Batch is zero: a few hundred keys
// make one round trip of a few hundred microseconds on the upstream, short enough not to hold Redis up.
const DefaultBatch = 200

// DefaultBatchBytes is about how many reply bytes one round trip of a warm-up reads when Options.BatchBytes is
// zero. A batch of DefaultBatch keys of large values (embeddings of a megabyte) would otherwise be read whole,
// hundreds of megabytes in one reply, far past local.max_memory and possibly past upstream.timeout.
const DefaultBatchBytes = 4 << 20

// firstRoundTrip is how many keys the first round trip of a Warmer reads, before it knows how large values are:
// each round trip then reads about BatchBytes, at most twice as many keys as the one before.
const firstRoundTrip = 16

// DefaultProgressInterval is how often a running warm-up logs its progress when Options.ProgressInterval is zero.
const DefaultProgressInterval = 5 * time.Second

// Filler loads keys into the local tier under the normal fill rules. The proxy implements it.
type Filler interface {
	// WarmFill loads keys: a key no caching policy covers is skipped, a key already cached (or being fetched by a
	// fill in flight) is left as it is, and the rest are fetched from the upstream in one round trip and stored
	// unless a write invalidated them meanwhile. On error (the upstream failed) nothing is counted and the caller
	// may try the same keys again.
	WarmFill(keys [][]byte) (Result, error)
}

// Result counts what one WarmFill did with its keys.
type Result struct {
	Fetched int // read from the upstream
	Present int // already cached, or being fetched by a fill in flight: not read again
	Skipped int // not cacheable: no caching policy covers them
	Bytes   int // reply bytes read from the upstream; 0 if unknown
}

// Options configures a Warmer.
type Options struct {
	// Filler loads the keys. Required.
	Filler Filler
	// Rate is the most keys per second read from the upstream. If zero, 1.
	Rate int
	// ReadyAfter is how many keys the start-up warm-up loads (fetched or found cached) before Ready turns true;
	// the end of its sources is enough. Zero means ready from the start.
	ReadyAfter int
	// ReadyTimeout, if greater than 0, makes Ready true this long after Start whatever the warm-up's progress.
	ReadyTimeout time.Duration
	// Batch is how many keys go to the Filler at once, at most. If zero, DefaultBatch.
	Batch int
	// BatchBytes is about how many reply bytes one call of the Filler reads: once values are known to be large,
	// fewer than Batch keys go at once (down to one). If zero, DefaultBatchBytes.
	BatchBytes int
	// ProgressInterval is how often a running warm-up logs its progress. If zero, DefaultProgressInterval.
	ProgressInterval time.Duration
	// Logger receives start, progress, ready and done lines; if nil, slog.Default().
	Logger *slog.Logger
}

// Stats are a Warmer's counters, for metrics and CACHE STATS.
type Stats struct {
	Fetched, Present, Skipped int64 // keys, by what WarmFill did with them
	Retries                   int64 // batches tried again after an upstream failure
	SourcesDone               int64 // sources read to their end
	SourcesFailed             int64 // sources that could not be read (missing, unreadable, invalid)
	StartupLoaded             int64 // keys loaded (fetched or present) by the start-up warm-up
	Running                   bool  // a warm-up is in progress
	Queued                    int   // warm-ups waiting for the one in progress
	Ready                     bool  // the start-up warm-up has loaded what readiness waits for
	Current                   string
}

// Warmer runs warm-ups one after another on one goroutine: the start-up warm-up (whose progress gates Ready) and
// those CACHE WARM asks for, all paced by one rate limit. It is safe for concurrent use.
type Warmer struct {
	opt Options
	log *slog.Logger
	lim *limiter

	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}

	mu      sync.Mutex
	queue   []job
	wake    chan struct{}
	started bool
	current string

	ready   atomic.Bool
	readyMu sync.Mutex

	// chunk is how many keys the next call of the Filler gets (see load); only the run goroutine uses it.
	chunk int

	fetched, present, skipped, retries atomic.Int64
	sourcesDone, sourcesFailed         atomic.Int64
	startupLoaded                      atomic.Int64
	running                            atomic.Bool
}

// job is one warm-up: its sources in order. Missing optional sources (the hot-key lists, absent on a first start)
// are logged at info level, missing required ones at warn.
type job struct {
	sources  []Source
	optional []bool
	startup  bool
}

// New returns a Warmer; it starts nothing until Start or Enqueue.
func New(opt Options) *Warmer {
	if opt.Batch <= 0 {
		opt.Batch = DefaultBatch
	}
	if opt.BatchBytes <= 0 {
		opt.BatchBytes = DefaultBatchBytes
	}
	if opt.ProgressInterval <= 0 {
		opt.ProgressInterval = DefaultProgressInterval
	}
	if opt.Logger == nil {
		opt.Logger = slog.Default()
	}
	ctx, cancel := context.WithCancel(context.Background())
	w := &Warmer{
		opt: opt, log: opt.Logger, lim: newLimiter(opt.Rate, opt.Batch), chunk: min(opt.Batch, firstRoundTrip),
		ctx: ctx, cancel: cancel, done: make(chan struct{}), wake: make(chan struct{}, 1),
	}
	w.ready.Store(opt.ReadyAfter <= 0)
	go w.run()
	return w
}

// Start queues the start-up warm-up: the optional hot-key lists first, then sources. Ready turns true once it has
// loaded ReadyAfter keys, read all its sources, or run for ReadyTimeout. Only the first call does anything.
func (w *Warmer) Start(hot, sources []Source) {
	w.mu.Lock()
	if w.started {
		w.mu.Unlock()
		return
	}
	w.started = true
	j := job{startup: true}
	for _, s := range hot {
		j.sources, j.optional = append(j.sources, s), append(j.optional, true)
	}
	for _, s := range sources {
		j.sources, j.optional = append(j.sources, s), append(j.optional, false)
	}
	w.queue = append([]job{j}, w.queue...)
	w.mu.Unlock()
	if d := w.opt.ReadyTimeout; d > 0 && !w.ready.Load() {
		time.AfterFunc(d, func() {
			if w.ctx.Err() == nil {
				w.markReady("ready_timeout passed before ready_after keys were loaded; the warm-up goes on", slog.LevelWarn)
			}
		})
	}
	w.signal()
}

// Enqueue queues a warm-up of src after those already queued.
func (w *Warmer) Enqueue(src Source) {
	w.mu.Lock()
	w.queue = append(w.queue, job{sources: []Source{src}, optional: []bool{false}})
	w.mu.Unlock()
	w.signal()
}

func (w *Warmer) signal() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// Ready reports whether the start-up warm-up has loaded what readiness waits for.
func (w *Warmer) Ready() bool { return w.ready.Load() }

// SetRate changes the rate limit of running and later warm-ups.
func (w *Warmer) SetRate(rate int) { w.lim.set(rate, w.opt.Batch) }

// Stats returns the Warmer's counters.
func (w *Warmer) Stats() Stats {
	w.mu.Lock()
	queued, current := len(w.queue), w.current
	w.mu.Unlock()
	return Stats{
		Fetched: w.fetched.Load(), Present: w.present.Load(), Skipped: w.skipped.Load(), Retries: w.retries.Load(),
		SourcesDone: w.sourcesDone.Load(), SourcesFailed: w.sourcesFailed.Load(),
		StartupLoaded: w.startupLoaded.Load(), Running: w.running.Load(), Queued: queued, Ready: w.ready.Load(),
		Current: current,
	}
}

// Close stops the warm-up in progress and drops those queued; it waits until the Filler is no longer called.
func (w *Warmer) Close() {
	w.cancel()
	<-w.done
}

func (w *Warmer) markReady(why string, level slog.Level) {
	w.readyMu.Lock()
	defer w.readyMu.Unlock()
	if w.ready.Load() {
		return
	}
	w.ready.Store(true)
	w.log.Log(context.Background(), level, "warm-up: ready", "reason", why, "loaded", w.startupLoaded.Load(),
		"ready_after", w.opt.ReadyAfter)
}

func (w *Warmer) run() {
	defer close(w.done)
	for {
		w.mu.Lock()
		var j job
		have := len(w.queue) > 0
		if have {
			j = w.queue[0]
			w.queue = w.queue[1:]
		}
		w.mu.Unlock()
		if !have {
			select {
			case <-w.ctx.Done():
				return
			case <-w.wake:
				continue
			}
		}
		w.running.Store(true)
		w.runJob(j)
		w.running.Store(false)
		w.mu.Lock()
		w.current = ""
		w.mu.Unlock()
		if w.ctx.Err() != nil {
			return
		}
	}
}

// runJob reads the job's sources in order and loads their keys.
func (w *Warmer) runJob(j job) {
	if len(j.sources) == 0 {
		if j.startup {
			w.markReady("no warm sources", slog.LevelInfo)
		}
		return
	}
	names := make([]string, len(j.sources))
	for i, s := range j.sources {
		names[i] = s.String()
	}
	start := time.Now()
	before := w.Stats()
	kind := "run-time"
	if j.startup {
		kind = "start-up"
	}
	w.log.Info("warm-up: started", "kind", kind, "sources", strings.Join(names, ", "), "rate", w.lim.current())
	p := progress{w: w, start: start, last: start, before: before}
	for i, src := range j.sources {
		w.mu.Lock()
		w.current = src.String()
		w.mu.Unlock()
		yielded := 0
		err := src.Keys(w.ctx, w.opt.Batch, func(keys [][]byte) bool {
			yielded += len(keys)
			w.load(keys, j.startup)
			p.maybeLog(src)
			return w.ctx.Err() == nil
		})
		switch {
		case w.ctx.Err() != nil:
			return
		case err == nil:
			w.sourcesDone.Add(1)
		case errors.Is(err, ErrNoSource) && j.optional[i]:
			w.sourcesFailed.Add(1)
			w.log.Info("warm-up: no list yet, skipped", "source", src.String(), "err", err)
		default:
			w.sourcesFailed.Add(1)
			w.log.Warn("warm-up: source failed", "source", src.String(), "keys_read", yielded, "err", err)
		}
	}
	after := w.Stats()
	elapsed := time.Since(start)
	fetched := after.Fetched - before.Fetched
	w.log.Info("warm-up: done", "kind", kind, "sources", strings.Join(names, ", "), "fetched", fetched,
		"present", after.Present-before.Present, "skipped", after.Skipped-before.Skipped,
		"retries", after.Retries-before.Retries, "elapsed", elapsed.Round(time.Millisecond),
		"fetched_per_second", int64(float64(fetched)/max(elapsed.Seconds(), 1e-3)))
	if j.startup {
		w.markReady("all sources read", slog.LevelInfo)
	}
}

// load hands keys to the Filler at the rate limit, in calls of w.chunk keys, trying again with a growing pause while
// the upstream fails. The calls are sized by what they read: about BatchBytes each, growing at most twofold from
// one call to the next, and halved after a failure, so that large values are read a few at a time and a round
// trip that could not arrive within upstream.timeout is tried again in pieces that can.
func (w *Warmer) load(keys [][]byte, startup bool) {
	backoff := 100 * time.Millisecond
	for len(keys) > 0 {
		n := min(len(keys), w.chunk)
		if err := w.lim.take(w.ctx, n); err != nil {
			return
		}
		res, err := w.opt.Filler.WarmFill(keys[:n])
		w.lim.giveBack(n - res.Fetched)
		if err == nil {
			w.fetched.Add(int64(res.Fetched))
			w.present.Add(int64(res.Present))
			w.skipped.Add(int64(res.Skipped))
			if startup {
				loaded := w.startupLoaded.Add(int64(res.Fetched + res.Present))
				if w.opt.ReadyAfter > 0 && loaded >= int64(w.opt.ReadyAfter) {
					w.markReady("ready_after keys loaded", slog.LevelInfo)
				}
			}
			w.chunk = w.nextChunk(n, res)
			keys, backoff = keys[n:], 100*time.Millisecond
			continue
		}
		w.chunk = max(1, n/2)
		if r := w.retries.Add(1); r == 1 || r%10 == 0 {
			w.log.Warn("warm-up: upstream failed, retrying the batch", "keys", n, "retries", r, "err", err)
		}
		t := time.NewTimer(backoff)
		select {
		case <-w.ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// nextChunk is how many keys the call after one of n keys that did res gets: as many as read BatchBytes at the
// size of the values it read, at most twice the current size (n is less when the source's batch ended first)
// and at most Batch.
func (w *Warmer) nextChunk(n int, res Result) int {
	next := 2 * max(n, w.chunk)
	if res.Fetched > 0 && res.Bytes > 0 {
		next = min(next, w.opt.BatchBytes/max(1, res.Bytes/res.Fetched))
	}
	return max(1, min(next, w.opt.Batch))
}

// progress logs a warm-up's progress at most every ProgressInterval.
type progress struct {
	w           *Warmer
	start, last time.Time
	before      Stats
}

func (p *progress) maybeLog(src Source) {
	now := time.Now()
	if now.Sub(p.last) < p.w.opt.ProgressInterval {
		return
	}
	p.last = now
	st := p.w.Stats()
	p.w.log.Info("warm-up: progress", "source", src.String(), "fetched", st.Fetched-p.before.Fetched,
		"present", st.Present-p.before.Present, "skipped", st.Skipped-p.before.Skipped,
		"startup_loaded", st.StartupLoaded, "ready", st.Ready, "elapsed", now.Sub(p.start).Round(time.Millisecond))
}
