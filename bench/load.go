package main

import (
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"featcache/internal/resp"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Latencies are recorded in nanoseconds, 3 significant figures, up to a minute.
const (
	histMin     = 1
	histMax     = int64(time.Minute)
	histSigFigs = 3
)

func newHistogram() *hdrhistogram.Histogram { return hdrhistogram.New(histMin, histMax, histSigFigs) }

// loadConn is one load-generating connection: its request stream, its own histogram (merged after each phase,
// so connections never share a lock) and where its stream stands.
type loadConn struct {
	rc   *respConn
	w    *workload
	st   *stream
	req  request
	key  []byte
	hist *hdrhistogram.Histogram
	sent int64 // requests of st sent and answered so far: the stream position, for the LRU simulation
	replyCounts
}

// loadTarget is the set of connections a target is driven through. They stay open across phases and rounds,
// and each keeps its stream, so a target's later rounds continue its trace rather than repeat it.
type loadTarget struct {
	name  string
	addr  string
	conns []*loadConn
	// marks[p][c] is conns[c].sent at the end of phase p (warm-up is phase 0, then the rounds).
	marks [][]int64
}

// phaseResult is what one measured phase of one target produced.
type phaseResult struct {
	Requests int64
	Elapsed  time.Duration
	Hist     *hdrhistogram.Histogram
	Nils     int64
	Errors   int64
	First    string
	// ClientCPU is this process's own CPU time over the phase: near Elapsed, the load generator (one core) was
	// the limit, not the target.
	ClientCPU time.Duration
}

func openLoadTarget(name, addr string, w *workload, conns int) (*loadTarget, error) {
	lt := &loadTarget{name: name, addr: addr}
	for c := range conns {
		rc, err := dialRESP(addr, 5*time.Second)
		if err != nil {
			lt.close()
			return nil, fmt.Errorf("%s: connect %s: %w", name, addr, err)
		}
		lt.conns = append(lt.conns, &loadConn{rc: rc, w: w, st: newStream(w, c), hist: newHistogram()})
	}
	return lt, nil
}

func (lt *loadTarget) close() {
	for _, lc := range lt.conns {
		lc.rc.Close()
	}
}

// run drives every connection for d (or, if requests > 0, until that many requests have been answered, split
// evenly across connections), with pipeline requests in flight per connection, and merges the histograms.
// Each connection is a closed loop: it sends its batch in one write and waits for every reply before the next.
func (lt *loadTarget) run(d time.Duration, requests int64, pipeline int, stop *atomic.Bool) (phaseResult, error) {
	cpu0, _ := procCPU(os.Getpid())
	start := time.Now()
	deadline := start.Add(d)
	var wg sync.WaitGroup
	errs := make([]error, len(lt.conns))
	for i, lc := range lt.conns {
		lc.hist.Reset() // also for a connection left idle below, so last phase's latencies are not merged again
		quota := int64(0)
		if requests > 0 {
			quota = requests / int64(len(lt.conns))
			if int64(i) < requests%int64(len(lt.conns)) {
				quota++
			}
			if quota == 0 {
				continue
			}
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = lc.run(deadline, quota, pipeline, stop)
		}()
	}
	wg.Wait()
	res := phaseResult{Elapsed: time.Since(start), Hist: newHistogram()}
	if cpu1, err := procCPU(os.Getpid()); err == nil {
		res.ClientCPU = cpu1 - cpu0
	}
	mark := make([]int64, len(lt.conns))
	for i, lc := range lt.conns {
		if errs[i] != nil {
			return res, fmt.Errorf("%s: connection %d: %w", lt.name, i, errs[i])
		}
		res.Hist.Merge(lc.hist)
		res.Nils += lc.nils
		res.Errors += lc.errs
		if res.First == "" {
			res.First = lc.first
		}
		lc.nils, lc.errs, lc.first = 0, 0, ""
		mark[i] = lc.sent
	}
	res.Requests = res.Hist.TotalCount()
	lt.marks = append(lt.marks, mark)
	return res, nil
}

// run is one connection's closed loop. A request's latency runs from the write of its batch to the moment its
// reply has been parsed, as redis-benchmark counts it.
func (lc *loadConn) run(deadline time.Time, quota int64, pipeline int, stop *atomic.Bool) error {
	lc.rc.nc.SetDeadline(deadline.Add(30 * time.Second))
	defer lc.rc.nc.SetDeadline(time.Time{})
	var done int64
	for !stop.Load() {
		n := int64(pipeline)
		if quota > 0 {
			if done >= quota {
				break
			}
			n = min(n, quota-done)
		} else if !time.Now().Before(deadline) {
			break
		}
		for range n {
			lc.st.next(&lc.req)
			lc.appendRequest()
		}
		start := time.Now()
		if err := lc.rc.flush(); err != nil {
			return err
		}
		for range n {
			kind, msg, err := lc.rc.skipReply()
			if err != nil {
				return err
			}
			lc.hist.RecordValue(int64(time.Since(start)))
			lc.check(kind, msg)
		}
		done += n
		lc.sent += n
	}
	return nil
}

func (lc *loadConn) appendRequest() {
	r := &lc.req
	switch {
	case r.Write:
		i := int(r.Keys[0])
		lc.key = lc.w.appendKey(lc.key[:0], i)
		lc.rc.appendSet(lc.key, lc.w.value(i))
	case len(r.Keys) == 1:
		lc.key = lc.w.appendKey(lc.key[:0], int(r.Keys[0]))
		lc.rc.appendGet(lc.key)
	default:
		lc.rc.appendMgetHeader(len(r.Keys))
		for _, k := range r.Keys {
			lc.key = lc.w.appendKey(lc.key[:0], int(k))
			lc.rc.out = resp.AppendBulk(lc.rc.out, lc.key)
		}
	}
}

// replyCounts counts the replies that should not happen: every key is seeded, so a nil means a lost or wrong
// value.
type replyCounts struct {
	nils  int64
	errs  int64
	first string // first error reply or unexpected nil seen, for the report
}

// check counts a reply of kind (msg: an error reply's text) if it should not happen.
func (c *replyCounts) check(kind replyKind, msg []byte) {
	switch kind {
	case replyNil:
		c.nils++
		if c.first == "" {
			c.first = "nil reply for a seeded key"
		}
	case replyError:
		c.errs++
		if c.first == "" {
			c.first = string(msg)
		}
	}
}

// getAll sends one GET for every key name produced by name(0..n-1), spread over the target's connections in
// pipelines of 64, and returns how many replies were nil or errors. It fills a cache before measuring.
func (lt *loadTarget) getAll(n int, name func([]byte, int) []byte) (bad int64, err error) {
	const batch = 64
	var wg sync.WaitGroup
	errs := make([]error, len(lt.conns))
	bads := make([]int64, len(lt.conns))
	for ci, lc := range lt.conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// A bound, so a target that stops answering fails the run instead of hanging it.
			lc.rc.nc.SetDeadline(time.Now().Add(10 * time.Minute))
			defer lc.rc.nc.SetDeadline(time.Time{})
			var key []byte
			step := len(lt.conns) * batch
			for lo := ci * batch; lo < n; lo += step {
				hi := min(lo+batch, n)
				for i := lo; i < hi; i++ {
					key = name(key[:0], i)
					lc.rc.appendGet(key)
				}
				if errs[ci] = lc.rc.flush(); errs[ci] != nil {
					return
				}
				for i := lo; i < hi; i++ {
					kind, _, err := lc.rc.skipReply()
					if err != nil {
						errs[ci] = err
						return
					}
					if kind != replyValue {
						bads[ci]++
					}
				}
			}
		}()
	}
	wg.Wait()
	for i := range errs {
		if errs[i] != nil {
			return 0, fmt.Errorf("%s: %w", lt.name, errs[i])
		}
		bad += bads[i]
	}
	return bad, nil
}

// cycle replaces every connection's stream by a round-robin over key indexes 0..n-1, for the allocation phase,
// where every key must already be cached. The returned function restores the streams, their positions and the
// phase marks, so the phase leaves no trace in what the LRU simulation replays.
func (lt *loadTarget) cycle(n int) (restore func()) {
	saved := make([]*stream, len(lt.conns))
	sent := make([]int64, len(lt.conns))
	marks := len(lt.marks)
	for i, lc := range lt.conns {
		saved[i], sent[i] = lc.st, lc.sent
		lc.st = &stream{w: lc.w, seq: n, pos: i % n}
	}
	return func() {
		for i, lc := range lt.conns {
			lc.st, lc.sent = saved[i], sent[i]
		}
		lt.marks = lt.marks[:marks]
	}
}
