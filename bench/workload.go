package main

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"time"
)

// workload describes the key space and the request mix. Everything about a key (its family, its value size)
// is a pure function of its index and the seed, so seeding, every target's traffic and the offline LRU
// simulation agree without sharing state.
type workload struct {
	Keys      int     // key indexes 0..Keys-1; index 0 is the most popular under Zipf
	EmbShare  float64 // share of indexes that are 16 KiB embeddings ("emb:{i}") rather than feature bundles
	ValueSize int     // if > 0, every feature bundle has exactly this size; if zero, 1-2 KiB drawn from the index
	Zipf      float64 // Zipf exponent of the key choice (> 1); 0 means uniform
	Writes    float64 // share of requests that are SETs
	Mget      int     // keys per read request: 1 sends GET, more sends MGET
	Seed      uint64
}

// zipfFlags returns the workload of the admission and memory experiments, GETs of 250,000 feature bundles chosen
// with Zipf 1.1, with -keys (keys says what they are) and -zipf on fs.
func zipfFlags(fs *flag.FlagSet, keys string) *workload {
	w := &workload{Keys: 250_000, Zipf: 1.1, Mget: 1, Seed: 1}
	fs.IntVar(&w.Keys, "keys", w.Keys, keys)
	fs.Float64Var(&w.Zipf, "zipf", w.Zipf, "Zipf exponent of the key choice (> 1)")
	return w
}

const (
	embeddingSize = 16 << 10
	featMinSize   = 1 << 10
	featMaxSize   = 2 << 10
)

// splitmix64 is a small, well-mixed hash: it gives each key index its family and size without a table.
func splitmix64(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

func (w *workload) isEmbedding(i int) bool {
	if w.EmbShare <= 0 {
		return false
	}
	return float64(splitmix64(w.Seed^uint64(i))>>11)/(1<<53) < w.EmbShare
}

// appendKey appends the name of key index i: "emb:{i}" or "feat:{i}".
func (w *workload) appendKey(dst []byte, i int) []byte {
	if w.isEmbedding(i) {
		dst = append(dst, "emb:"...)
	} else {
		dst = append(dst, "feat:"...)
	}
	return strconv.AppendInt(dst, int64(i), 10)
}

// prefillOrder is the key index read n-th by the prefill: the least popular first and the most popular last
// (index 0 is Zipf's most popular), so a cache that keeps what was used last starts as a long-running one would
// be, holding the hottest keys, and the rounds measure its steady state instead of its filling.
func (w *workload) prefillOrder(n int) int { return w.Keys - 1 - n }

func (w *workload) appendPrefillKey(dst []byte, n int) []byte {
	return w.appendKey(dst, w.prefillOrder(n))
}

func (w *workload) keyLen(i int) int {
	var b [32]byte
	return len(w.appendKey(b[:0], i))
}

// valueLen is the size of key index i's value as seeded and as written by the workload's SETs.
func (w *workload) valueLen(i int) int {
	switch {
	case w.isEmbedding(i):
		return embeddingSize
	case w.ValueSize > 0:
		return w.ValueSize
	}
	return featMinSize + int(splitmix64(w.Seed^0x5eed^uint64(i)*31)%(featMaxSize-featMinSize+1))
}

// valuePool holds the bytes every value is a prefix of; values need a size, not distinct contents.
var valuePool = func() []byte {
	b := make([]byte, embeddingSize)
	for i := range b {
		b[i] = 'a' + byte(i%26)
	}
	return b
}()

func (w *workload) value(i int) []byte { return valuePool[:w.valueLen(i)] }

// request is one command of the workload: a SET of Keys[0], or a GET/MGET of Keys.
type request struct {
	Write bool
	Keys  []uint32
}

// stream is the request sequence of one client connection. Connection c of every target gets the stream seeded
// with (Seed, c), so every target is sent the same requests in the same order per connection, and the LRU
// simulation can regenerate exactly what featcache was sent.
type stream struct {
	w    *workload
	rng  *rand.Rand
	zipf *rand.Zipf // nil: uniform
	// seq > 0 makes the stream a plain round-robin over key indexes 0..seq-1 from pos, GETs only: the
	// allocation phase uses it to touch only keys known to be cached.
	seq, pos int
}

func newStream(w *workload, conn int) *stream {
	return newStreamFrom(w, rand.NewPCG(w.Seed, uint64(conn)+1))
}

// newStreamFrom is a stream drawn from src: the open-loop phases' streams have seeds of their own.
func newStreamFrom(w *workload, src rand.Source) *stream {
	rng := rand.New(src)
	s := &stream{w: w, rng: rng}
	if w.Zipf > 0 && w.Keys > 1 {
		s.zipf = rand.NewZipf(rng, w.Zipf, 1, uint64(w.Keys-1))
	}
	return s
}

// next fills req with the stream's next request, reusing req.Keys.
func (s *stream) next(req *request) {
	if s.seq > 0 {
		req.Write = false
		req.Keys = append(req.Keys[:0], uint32(s.pos))
		s.pos = (s.pos + 1) % s.seq
		return
	}
	req.Write = s.w.Writes > 0 && s.rng.Float64() < s.w.Writes
	n := s.w.Mget
	if req.Write || n < 1 {
		n = 1
	}
	req.Keys = req.Keys[:0]
	for range n {
		req.Keys = append(req.Keys, s.key())
	}
}

func (s *stream) key() uint32 {
	if s.zipf != nil {
		return uint32(s.zipf.Uint64())
	}
	return uint32(s.rng.IntN(s.w.Keys))
}

// seedRedis writes every key of the workload into Redis with pipelined SETs over a few connections and returns
// how long it took and how many value bytes were written.
func seedRedis(addr string, w *workload) (time.Duration, int64, error) {
	return seedKeys(addr, w.Keys, func(dst []byte, i int) []byte { return w.appendKey(dst, i) }, w.value)
}

// seedKeys SETs keys 0..n-1 (named by name, valued by value) with pipelines of 256 over 8 connections.
func seedKeys(addr string, n int, name func([]byte, int) []byte, value func(int) []byte) (time.Duration, int64, error) {
	return seedKeysWhere(addr, n, name, value, nil)
}

// seedKeysWhere is seedKeys for the keys i for which keep(i) is true (every key when keep is nil); keep is
// called by one goroutine per connection, never concurrently for the same i.
func seedKeysWhere(addr string, n int, name func([]byte, int) []byte, value func(int) []byte,
	keep func(int) bool) (time.Duration, int64, error) {
	const conns, batch = 8, 256
	var keepMu sync.Mutex
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, conns)
	sizes := make([]int64, conns)
	for c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rc, err := dialRESP(addr, 5*time.Second)
			if err != nil {
				errs <- err
				return
			}
			defer rc.Close()
			var key []byte
			for lo := c * batch; lo < n; lo += conns * batch {
				hi := min(lo+batch, n)
				sent := 0
				for i := lo; i < hi; i++ {
					if keep != nil {
						keepMu.Lock()
						ok := keep(i)
						keepMu.Unlock()
						if !ok {
							continue
						}
					}
					key = name(key[:0], i)
					v := value(i)
					rc.appendSet(key, v)
					sizes[c] += int64(len(v))
					sent++
				}
				if err := rc.flush(); err != nil {
					errs <- err
					return
				}
				for range sent {
					kind, msg, err := rc.skipReply()
					if err == nil && kind == replyError {
						err = fmt.Errorf("SET: %s", msg)
					}
					if err != nil {
						errs <- err
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return 0, 0, fmt.Errorf("seeding %s: %w", addr, err)
	}
	var total int64
	for _, s := range sizes {
		total += s
	}
	return time.Since(start), total, nil
}

// benchmarkKey is the key redis-benchmark generates for key:__rand_int__ with -r: "key:" and 12 zero-padded digits.
func benchmarkKey(dst []byte, i int) []byte {
	return fmt.Appendf(dst, "key:%012d", i)
}
