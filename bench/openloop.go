package main

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"featcache/internal/resp"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Open-loop phases compare targets at the same offered load. A closed loop (the rounds) sends a connection's next
// request only when the last one has been answered, so a slow target is sent fewer requests, and a stall delays
// the requests that would have been sent during it without their latency showing it (coordinated omission). Its
// tails are taken at whatever rate each target reaches: featcache's at about twice the direct client's.
//
// An open-loop phase sends requests at fixed arrival times instead, the same for every target:
//
//   - Arrivals are a Poisson process at the phase's rate (exponential gaps, drawn from a seed of the round and
//     rate), built before the phase together with each request's keys, so every target is sent the same requests
//     at the same moments.
//   - A dispatcher goroutine sleeps on a timerfd (Go's timers wake up to a millisecond late) until each request's
//     intended send time and queues it. Idle connections of a pool take queued requests in order, as a client's
//     connection pool does; a request waits in the queue while every connection is busy.
//   - Latency runs from the request's intended send time to the parse of its reply, as wrk2 counts it: a
//     dispatcher that woke late, a wait for a free connection or a stall of the target all count. The time from
//     the intended send to the actual write is recorded apart too ("late send"), to show how much of it was the
//     client side.
//   - Every -open-mark-th request sent to featcache is preceded, in the same write, by a CACHE EXPLAIN of each key
//     it reads. featcache answers the commands of a connection in order, so the state EXPLAIN reports (fresh,
//     stale, miss) is the one the read finds, barring another connection's fill or an invalidation in the few
//     microseconds between them. EXPLAIN only peeks (it does not touch freecache's LRU order). The request is then
//     counted in its class's histogram too: a request with any key missing is a miss, else with any stale key a
//     stale serve, else a hit. The marked requests are a sample; the shares of all reads come from CACHE STATS.

// openSettings are a profile's open-loop phases.
type openSettings struct {
	Loads    loadList      `json:"loads,omitempty"`
	Duration time.Duration `json:"duration_ns,omitempty"` // per target, rate and round; 0: the profile's -duration
	Rounds   int           `json:"rounds,omitempty"`      // 0: the profile's -rounds
	Conns    int           `json:"conns"`                 // the pool's connections per target
	Mark     int           `json:"mark"`                  // every Mark-th featcache request is classified; 0: none
}

func (o openSettings) duration(s settings) time.Duration {
	if o.Duration > 0 {
		return o.Duration
	}
	return s.Duration
}

func (o openSettings) rounds(s settings) int {
	if o.Rounds > 0 {
		return o.Rounds
	}
	return s.Rounds
}

func (o openSettings) validate() error {
	if len(o.Loads) == 0 {
		return nil
	}
	if o.Conns < 1 || o.Mark < 0 || o.Duration < 0 || o.Rounds < 0 {
		return errors.New("-open-conns must be at least 1, and -open-mark, -open-duration and -open-rounds not negative")
	}
	return nil
}

// openLoad is one arrival rate: a share of direct Redis's closed-loop throughput in the same run, or a number of
// requests per second.
type openLoad struct {
	Share float64 `json:"share,omitempty"`
	Rate  float64 `json:"rate,omitempty"`
}

// label names a load with its rate: "25% = 9812/s", or "5000/s".
func (l openLoad) label(rate float64) string {
	if l.Share > 0 {
		return fmt.Sprintf("%s = %.0f/s", l, rate)
	}
	return fmt.Sprintf("%.0f/s", rate)
}

func (l openLoad) String() string {
	if l.Share > 0 {
		return strconv.FormatFloat(100*l.Share, 'f', -1, 64) + "%"
	}
	return strconv.FormatFloat(l.Rate, 'f', -1, 64)
}

// loadList is the -open-loads flag: "25%,50%,90%" or "5000,10000". Set replaces the list; "" empties it.
type loadList []openLoad

func defaultOpenLoads() loadList {
	return loadList{{Share: 0.25}, {Share: 0.5}, {Share: 0.9}}
}

func (l *loadList) String() string {
	if l == nil {
		return ""
	}
	var parts []string
	for _, x := range *l {
		parts = append(parts, x.String())
	}
	return strings.Join(parts, ",")
}

func (l *loadList) Set(v string) error {
	*l = nil
	for _, f := range strings.Split(v, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		var x openLoad
		num, share := strings.CutSuffix(f, "%")
		n, err := strconv.ParseFloat(num, 64)
		if err != nil || n <= 0 || math.IsInf(n, 0) {
			return fmt.Errorf("open-loop load %q: want a share like 50%% or requests per second like 5000", f)
		}
		if share {
			x.Share = n / 100
		} else {
			x.Rate = n
		}
		*l = append(*l, x)
	}
	return nil
}

// openRequest is one request of an open-loop phase.
type openRequest struct {
	at   time.Duration // intended send time, from the phase's start
	keys []uint32      // the key indexes it names (Feast: entities)
	op   int           // what the workload makes of them: 1 is a SET for the key-value workload; Feast's view
}

// openWorkload is what an open-loop phase sends.
type openWorkload interface {
	// draw returns a function that appends the keys of successive requests, drawn from a stream seeded by seed,
	// to keys, and returns them with the request's op.
	draw(seed uint64) func(keys []uint32) ([]uint32, int)
	// appendRequest appends r's commands to rc's write buffer and returns how many replies they bring.
	appendRequest(rc *respConn, r *openRequest) int
	// appendMark appends a CACHE EXPLAIN of each key r reads and returns how many (none for a write).
	appendMark(rc *respConn, r *openRequest) int
}

// buildSchedule draws a phase's requests: Poisson arrivals at rate for d, the requests from wl's stream.
func buildSchedule(rate float64, d time.Duration, seed uint64, wl openWorkload) []openRequest {
	arrivals := rand.New(rand.NewPCG(seed, 0x0a441fa1))
	next := wl.draw(seed)
	reqs := make([]openRequest, 0, int(rate*d.Seconds()*1.1)+16)
	var keys []uint32
	var ends []int
	for at := time.Duration(0); ; {
		at += time.Duration(arrivals.ExpFloat64() / rate * 1e9)
		if at >= d {
			break
		}
		var op int
		keys, op = next(keys)
		reqs = append(reqs, openRequest{at: at, op: op})
		ends = append(ends, len(keys))
	}
	// One array holds every request's keys: the schedule is a few allocations, not one per request.
	from := 0
	for i := range reqs {
		reqs[i].keys, from = keys[from:ends[i]:ends[i]], ends[i]
	}
	return reqs
}

// answerClass is what featcache did for a marked request, from CACHE EXPLAIN of its keys.
type answerClass int

const (
	classHit answerClass = iota
	classStale
	classMiss
	classOther // a key no policy caches, or an EXPLAIN reply not understood
	numClasses
)

var classNames = [numClasses]string{"hit", "stale", "miss", "other"}

// classify reads the state from one CACHE EXPLAIN reply (an array of lines): a hash field's state when a field was
// named, else the key's.
func classify(v any) answerClass {
	var lines []string
	switch v := v.(type) {
	case string:
		lines = strings.Split(v, "\r\n")
	case []any:
		for _, e := range v {
			if s, ok := e.(string); ok {
				lines = append(lines, s)
			}
		}
	}
	state := ""
	for _, line := range lines {
		if st, ok := strings.CutPrefix(line, "field_state:"); ok {
			state = st
			break
		}
		if st, ok := strings.CutPrefix(line, "state:"); ok {
			state = st
		}
	}
	switch {
	case strings.HasPrefix(state, "fresh"):
		return classHit
	case strings.HasPrefix(state, "stale"), strings.HasPrefix(state, "unverified"):
		return classStale
	case strings.HasPrefix(state, "miss"), strings.HasPrefix(state, "dead"):
		return classMiss
	}
	return classOther
}

// worse combines the classes of a request's keys: any miss makes it a miss, else any stale key a stale serve.
func worse(a, b answerClass) answerClass {
	switch {
	case a == classOther:
		return b
	case b == classOther:
		return a
	}
	return max(a, b)
}

// openPool is a target's connections for the open-loop phases.
type openPool struct {
	name  string
	conns []*respConn
	mark  int // every mark-th request is preceded by CACHE EXPLAIN (featcache only); 0: none
}

func openPoolFor(name, addr string, conns, mark int) (*openPool, error) {
	p := &openPool{name: name, mark: mark}
	for range conns {
		rc, err := dialRESP(addr, 5*time.Second)
		if err != nil {
			p.close()
			return nil, fmt.Errorf("%s: connect %s: %w", name, addr, err)
		}
		p.conns = append(p.conns, rc)
	}
	return p, nil
}

func (p *openPool) close() {
	for _, rc := range p.conns {
		rc.Close()
	}
}

// openPhase is what one target's open-loop phase produced.
type openPhase struct {
	Elapsed   time.Duration // from the phase's start to the last reply
	Hist      *hdrhistogram.Histogram
	Late      *hdrhistogram.Histogram // intended send time to the write
	Classes   [numClasses]*hdrhistogram.Histogram
	Nils      int64
	Errors    int64
	First     string
	ClientCPU time.Duration
}

// openRecord is what the connections note of each request, by its index in the schedule: each index is handled by
// one connection, so they write without locks, and the histograms are filled once the phase is over (a
// histogram per connection would be 200 KiB each).
type openRecord struct {
	latency []int64 // intended send time to reply; 0: never sent
	late    []int64 // intended send time to the write
	class   []int8  // the answer class of a marked request; -1: not marked
}

// openConnState is one connection's counts in a phase.
type openConnState struct {
	replyCounts
	last time.Time
	err  error
}

// run sends the schedule through the pool and waits for every reply.
func (p *openPool) run(reqs []openRequest, wl openWorkload, stop *atomic.Bool) (openPhase, error) {
	cpu0, _ := procCPU(os.Getpid())
	rec := &openRecord{latency: make([]int64, len(reqs)), late: make([]int64, len(reqs)), class: make([]int8, len(reqs))}
	queue := make(chan int32, len(reqs))
	start := time.Now().Add(time.Millisecond) // the connections are waiting by then
	end := start
	if len(reqs) > 0 {
		end = start.Add(reqs[len(reqs)-1].at)
	}
	dispatched := make(chan error, 1)
	go func() { dispatched <- dispatch(reqs, start, queue, stop) }()
	states := make([]openConnState, len(p.conns))
	var wg sync.WaitGroup
	for i, rc := range p.conns {
		st := &states[i]
		wg.Add(1)
		go func() {
			defer wg.Done()
			rc.nc.SetDeadline(end.Add(30 * time.Second))
			defer rc.nc.SetDeadline(time.Time{})
			if st.err = p.serve(rc, reqs, start, queue, wl, rec, st); st.err != nil {
				for range queue { // the phase has failed: let the dispatcher finish
				}
			}
		}()
	}
	wg.Wait()
	res := newOpenPhase()
	if err := <-dispatched; err != nil {
		return res, err
	}
	last := start
	for i, st := range states {
		if st.err != nil {
			return res, fmt.Errorf("%s: open-loop connection %d: %w", p.name, i, st.err)
		}
		res.Nils += st.nils
		res.Errors += st.errs
		if res.First == "" {
			res.First = st.first
		}
		if st.last.After(last) {
			last = st.last
		}
	}
	res.Elapsed = last.Sub(start)
	if cpu1, err := procCPU(os.Getpid()); err == nil {
		res.ClientCPU = cpu1 - cpu0
	}
	for i, lat := range rec.latency {
		if lat == 0 {
			continue // not sent: the run was interrupted
		}
		res.Hist.RecordValue(lat)
		res.Late.RecordValue(max(rec.late[i], histMin))
		if c := rec.class[i]; c >= 0 {
			res.Classes[c].RecordValue(lat)
		}
	}
	return res, nil
}

func newOpenPhase() openPhase {
	ph := openPhase{Hist: newHistogram(), Late: newHistogram()}
	for c := range ph.Classes {
		ph.Classes[c] = newHistogram()
	}
	return ph
}

// dispatch queues each request at its intended send time, then closes the queue. It sleeps on a wakeTimer
// (openloop_linux.go: a timerfd, to the microsecond).
func dispatch(reqs []openRequest, start time.Time, queue chan<- int32, stop *atomic.Bool) error {
	defer close(queue)
	timer, err := newWakeTimer()
	if err != nil {
		return err
	}
	defer timer.close()
	for i := range reqs {
		due := start.Add(reqs[i].at)
		for {
			d := time.Until(due)
			if d <= 0 {
				break
			}
			if err := timer.sleep(d); err != nil {
				return err
			}
		}
		if stop.Load() {
			return nil
		}
		queue <- int32(i)
	}
	return nil
}

// serve is one pooled connection: it takes the next queued request, sends it (after its marks, if marked) and
// waits for its replies.
func (p *openPool) serve(rc *respConn, reqs []openRequest, start time.Time, queue <-chan int32, wl openWorkload,
	rec *openRecord, st *openConnState) error {
	for i := range queue {
		r := &reqs[i]
		intended := start.Add(r.at)
		marks := 0
		if p.mark > 0 && int(i)%p.mark == 0 {
			marks = wl.appendMark(rc, r)
		}
		n := wl.appendRequest(rc, r)
		sent := time.Now()
		if err := rc.flush(); err != nil {
			return err
		}
		rec.late[i] = int64(sent.Sub(intended))
		class := classOther
		for range marks {
			v, err := rc.readValue()
			var re resp.Error
			if err != nil && !errors.As(err, &re) {
				return err
			}
			class = worse(class, classify(v))
		}
		for range n {
			kind, msg, err := rc.skipReply()
			if err != nil {
				return err
			}
			st.check(kind, msg)
		}
		st.last = time.Now()
		rec.latency[i] = max(int64(st.last.Sub(intended)), histMin)
		rec.class[i] = -1
		if marks > 0 {
			rec.class[i] = int8(class)
		}
	}
	return nil
}

// kvOpen is the key-value workload (GET, MGET, SET of the profile's keys) in open-loop phases.
type kvOpen struct{ w *workload }

func (k kvOpen) draw(seed uint64) func([]uint32) ([]uint32, int) {
	st := newStreamFrom(k.w, rand.NewPCG(k.w.Seed^0x6f70656e, seed)) // "open": apart from the connections' streams
	var req request
	return func(keys []uint32) ([]uint32, int) {
		st.next(&req)
		if req.Write {
			return append(keys, req.Keys...), 1
		}
		return append(keys, req.Keys...), 0
	}
}

func (k kvOpen) appendRequest(rc *respConn, r *openRequest) int {
	var kb [32]byte
	switch {
	case r.op == 1:
		i := int(r.keys[0])
		rc.appendSet(k.w.appendKey(kb[:0], i), k.w.value(i))
	case len(r.keys) == 1:
		rc.appendGet(k.w.appendKey(kb[:0], int(r.keys[0])))
	default:
		rc.appendMgetHeader(len(r.keys))
		for _, i := range r.keys {
			rc.out = resp.AppendBulk(rc.out, k.w.appendKey(kb[:0], int(i)))
		}
	}
	return 1
}

func (k kvOpen) appendMark(rc *respConn, r *openRequest) int {
	if r.op == 1 {
		return 0
	}
	var kb [32]byte
	for _, i := range r.keys {
		rc.out = resp.AppendBulkString(resp.AppendBulkString(resp.AppendArray(rc.out, 3), "CACHE"), "EXPLAIN")
		rc.out = resp.AppendBulk(rc.out, k.w.appendKey(kb[:0], int(i)))
	}
	return len(r.keys)
}

// openTarget is a target of the open-loop phases.
type openTarget struct {
	name      string
	addr      string
	featcache bool                   // its requests are marked, and it has CACHE STATS
	sample    func() (sample, error) // CPU and CACHE STATS before and after each phase; nil: none
}

// runOpenLoop runs the open-loop phases: in each round, each load in turn, each target in turn, the same
// schedule for every target of a round and load. capacity is what shares of the loads refer to.
func runOpenLoop(o openSettings, d time.Duration, rounds int, capacity float64, targets []openTarget, wl openWorkload,
	stop *atomic.Bool, logf func(string, ...any)) (*openLoopResult, error) {
	res := &openLoopResult{Capacity: capacity, Conns: o.Conns, Mark: o.Mark, Rounds: rounds, Seconds: d.Seconds(),
		Arrivals: "poisson"}
	for _, l := range o.Loads {
		lr := &openLoadResult{Load: l, Rate: l.Rate}
		if l.Share > 0 {
			if capacity <= 0 {
				return nil, fmt.Errorf("open-loop load %s: no direct Redis throughput to take a share of", l)
			}
			lr.Rate = l.Share * capacity
		}
		for _, t := range targets {
			lr.Targets = append(lr.Targets, newOpenTargetResult(t.name))
		}
		res.Loads = append(res.Loads, lr)
	}
	pools := make([]*openPool, len(targets))
	for i, t := range targets {
		mark := 0
		if t.featcache {
			mark = o.Mark
		}
		p, err := openPoolFor(t.name, t.addr, o.Conns, mark)
		if err != nil {
			return nil, err
		}
		defer p.close()
		pools[i] = p
	}
	for round := 1; round <= rounds && !stop.Load(); round++ {
		for li, lr := range res.Loads {
			reqs := buildSchedule(lr.Rate, d, uint64(round)<<16|uint64(li), wl)
			for ti, t := range targets {
				var before, after sample
				var err error
				if t.sample != nil {
					if before, err = t.sample(); err != nil {
						return nil, err
					}
				}
				ph, err := pools[ti].run(reqs, wl, stop)
				if err != nil {
					return nil, err
				}
				if t.sample != nil {
					if after, err = t.sample(); err != nil {
						return nil, err
					}
				}
				r := lr.Targets[ti].add(ph, int64(len(reqs)), before, after)
				logf("open loop %d/%d %-14s %-10s %s", round, rounds, lr.Load.label(lr.Rate), t.name, r.progress(ph))
			}
		}
	}
	if stop.Load() {
		return nil, errors.New("interrupted")
	}
	for _, lr := range res.Loads {
		for _, t := range lr.Targets {
			t.summarize()
		}
	}
	return res, nil
}
