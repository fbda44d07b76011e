package warm

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"featcache/internal/resp"
	"featcache/upstream"
)

// HotKeys is the hot-key tracker: a TopK per policy, kept by policy name so that counts survive a reload that
// reorders the policies. It is safe for concurrent use.
type HotKeys struct {
	mu       sync.Mutex
	size     int
	byPolicy map[string]*TopK
}

// NewHotKeys returns a tracker whose TopKs hold size keys each; size 0 turns tracking off.
func NewHotKeys(size int) *HotKeys {
	return &HotKeys{size: size, byPolicy: map[string]*TopK{}}
}

// Policy returns the TopK of the named policy, creating it; nil when tracking is off.
func (h *HotKeys) Policy(name string) *TopK {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.size == 0 {
		return nil
	}
	t := h.byPolicy[name]
	if t == nil {
		t = NewTopK(h.size)
		h.byPolicy[name] = t
	}
	return t
}

// SetSize changes how many keys each TopK holds. A new size starts the counts afresh (TopKs handed out before keep
// counting, but are no longer listed); it reports whether the size changed.
func (h *HotKeys) SetSize(size int) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if size == h.size {
		return false
	}
	h.size = size
	h.byPolicy = map[string]*TopK{}
	return true
}

// Top returns the n hottest keys across policies (n < 0: all held), hottest first, with their policies.
func (h *HotKeys) Top(n int) []HotKey {
	h.mu.Lock()
	tks := make(map[string]*TopK, len(h.byPolicy))
	for name, t := range h.byPolicy {
		tks[name] = t
	}
	h.mu.Unlock()
	var all []HotKey
	for name, t := range tks {
		for _, k := range t.Top(n) {
			k.Policy = name
			all = append(all, k)
		}
	}
	SortHotKeys(all)
	if n >= 0 && len(all) > n {
		all = all[:n]
	}
	return all
}

// Decay halves every count (see TopK.Decay).
func (h *HotKeys) Decay() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, t := range h.byPolicy {
		t.Decay()
	}
}

// Len returns the number of keys held across policies.
func (h *HotKeys) Len() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, t := range h.byPolicy {
		n += t.Len()
	}
	return n
}

// PersistConfig is what the Persister writes and touches; a reload may change it (SetConfig).
type PersistConfig struct {
	File     string        // hot-key list file; "" for none
	Zset     string        // hot-key list sorted set; "" for none
	Size     int           // most keys written and touched
	Interval time.Duration // how often the list is written and its counts halved
	Touch    int           // keys TOUCHed per second while the upstream evicts by LRU or LFU; 0 for none
}

// PersistStats counts the Persister's work.
type PersistStats struct {
	FileWrites, FileErrors int64
	ZsetWrites, ZsetErrors int64
	Touched                int64  // keys TOUCHed on the upstream
	Eviction               string // the upstream's maxmemory-policy, "" until known
}

// Persister writes the hot-key list every interval and on demand (shutdown), halves its counts after each write,
// and TOUCHes the hottest keys on an upstream that evicts by LRU or LFU.
type Persister struct {
	hot  *HotKeys
	pool Upstream
	log  *slog.Logger
	cfg  atomic.Pointer[PersistConfig]

	writeMu sync.Mutex // one write of the list at a time

	file     listSink // the hot-key file
	zset     listSink // the hot-key sorted set
	touched  atomic.Int64
	eviction atomic.Pointer[string]

	ctx     context.Context
	cancel  context.CancelFunc
	done    chan struct{}
	reset   chan struct{}
	started sync.Once
}

// NewPersister returns a Persister of hot's list; Start starts its loop.
func NewPersister(hot *HotKeys, pool Upstream, cfg PersistConfig, log *slog.Logger) *Persister {
	if log == nil {
		log = slog.Default()
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &Persister{hot: hot, pool: pool, log: log, ctx: ctx, cancel: cancel, done: make(chan struct{}),
		reset: make(chan struct{}, 1), file: listSink{what: "file", attr: "file"},
		zset: listSink{what: "sorted set", attr: "zset"}}
	p.cfg.Store(&cfg)
	return p
}

// SetConfig replaces what the Persister writes and touches; a new interval applies from the next write.
func (p *Persister) SetConfig(cfg PersistConfig) {
	p.cfg.Store(&cfg)
	select {
	case p.reset <- struct{}{}:
	default:
	}
}

// Stats returns the Persister's counters.
func (p *Persister) Stats() PersistStats {
	st := PersistStats{
		FileWrites: p.file.writes.Load(), FileErrors: p.file.errors.Load(),
		ZsetWrites: p.zset.writes.Load(), ZsetErrors: p.zset.errors.Load(), Touched: p.touched.Load(),
	}
	if e := p.eviction.Load(); e != nil {
		st.Eviction = *e
	}
	return st
}

// Start starts the loop that writes the list every interval until Close; it first asks the upstream how it evicts
// (CONFIG GET maxmemory-policy, on featcache's own connection), asking again each interval until it answers. Only
// the first call does anything.
func (p *Persister) Start() {
	p.started.Do(func() { go p.run() })
}

func (p *Persister) run() {
	defer close(p.done)
	p.checkEviction()
	for {
		t := time.NewTimer(p.cfg.Load().Interval)
		select {
		case <-p.ctx.Done():
			t.Stop()
			return
		case <-p.reset:
			t.Stop()
			continue
		case <-t.C:
		}
		if p.eviction.Load() == nil {
			p.checkEviction()
		}
		p.Persist(p.ctx)
		p.hot.Decay()
		p.touch()
	}
}

// Close stops the loop (a TOUCH pass in progress ends) and waits for it; it does not write the list (Persist does).
func (p *Persister) Close() {
	p.started.Do(func() { close(p.done) }) // never started: nothing to wait for
	p.cancel()
	<-p.done
}

// Persist writes the hottest keys to the file and the sorted set. An empty list is not written, so that an
// instance that served nothing does not erase the list its predecessor left. Errors are logged and returned.
func (p *Persister) Persist(ctx context.Context) error {
	p.writeMu.Lock()
	defer p.writeMu.Unlock()
	cfg := p.cfg.Load()
	if cfg.File == "" && cfg.Zset == "" {
		return nil
	}
	keys := p.hot.Top(cfg.Size)
	if len(keys) == 0 {
		return nil
	}
	var fileErr, zsetErr error
	if cfg.File != "" {
		fileErr = p.file.wrote(p.log, cfg.File, len(keys), WriteKeysFile(cfg.File, keys))
	}
	if cfg.Zset != "" && ctx.Err() == nil {
		zsetErr = p.zset.wrote(p.log, cfg.Zset, len(keys), WriteZset(p.pool, cfg.Zset, keys))
	}
	return errors.Join(fileErr, zsetErr)
}

// listSink is a place the hot-key list is written to (the file or the sorted set), with its counters.
type listSink struct {
	what           string // in log messages: "file", "sorted set"
	attr           string // the log attribute that names it
	writes, errors atomic.Int64
}

// wrote counts and logs the outcome err of writing keys keys to the sink named name, and returns err.
func (s *listSink) wrote(log *slog.Logger, name string, keys int, err error) error {
	if err != nil {
		s.errors.Add(1)
		log.Warn("hot keys: writing the "+s.what+" failed", s.attr, name, "err", err)
		return err
	}
	s.writes.Add(1)
	log.Debug("hot keys: "+s.what+" written", s.attr, name, "keys", keys)
	return nil
}

// Evicts reports whether maxmemory-policy makes Redis evict by recency or frequency of access.
func Evicts(maxmemoryPolicy string) bool {
	return strings.HasSuffix(maxmemoryPolicy, "-lru") || strings.HasSuffix(maxmemoryPolicy, "-lfu")
}

// checkEviction asks the upstream for its maxmemory-policy and warns when it evicts by LRU or LFU: reads featcache
// answers from memory never reach Redis, which then sees featcache's hottest keys as its coldest.
func (p *Persister) checkEviction() {
	call := upstream.NewCall()
	call.Req.AppendCommand(upstream.NoSlot, "CONFIG", "GET", "maxmemory-policy")
	if err := p.pool.Do(call, &call.Req); err != nil {
		return // unreachable: asked again later
	}
	vals, err := resp.ParseBulkArray(call.Frame(0), nil)
	policy := "unknown"
	if err == nil && len(vals) == 2 {
		policy = string(vals[1])
	} else {
		// CONFIG refused (ACL, renamed on managed services): nothing to warn about, nothing to touch.
		p.log.Info("hot keys: cannot read the upstream's maxmemory-policy", "err", err)
	}
	p.eviction.Store(&policy)
	if !Evicts(policy) {
		return
	}
	if p.cfg.Load().Touch > 0 {
		p.log.Warn("hot keys: the upstream evicts by access (reads served by featcache do not count there); "+
			"touching the hottest keys every hotkeys_interval", "maxmemory_policy", policy, "hotkeys_touch", p.cfg.Load().Touch)
		return
	}
	p.log.Warn("hot keys: the upstream evicts by access, and reads served by featcache do not count there, so it "+
		"may evict the hottest keys first; set warm.hotkeys_touch to TOUCH them", "maxmemory_policy", policy)
}

// touch TOUCHes the hottest keys on the upstream at the configured rate, when it evicts by LRU or LFU.
func (p *Persister) touch() {
	cfg := p.cfg.Load()
	e := p.eviction.Load()
	if cfg.Touch <= 0 || e == nil || !Evicts(*e) {
		return
	}
	const batch = 100
	lim := newLimiter(cfg.Touch, min(batch, cfg.Touch))
	keys := p.hot.Top(cfg.Size)
	call := upstream.NewCall()
	for i := 0; i < len(keys); i += batch {
		part := keys[i:min(i+batch, len(keys))]
		if lim.take(p.ctx, len(part)) != nil {
			return
		}
		// One TOUCH per key, all in one round trip: in front of a Redis Cluster each goes to its key's master,
		// where one TOUCH of keys in many slots would be refused (CROSSSLOT).
		req := &call.Req
		req.Reset()
		for _, k := range part {
			req.AppendKey("TOUCH", []byte(k.Key))
		}
		if err := p.pool.Do(call, req); err != nil {
			p.log.Debug("hot keys: TOUCH failed", "err", err)
			return
		}
		p.touched.Add(int64(len(part)))
	}
}
