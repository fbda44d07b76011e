package localcache

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

const ms = time.Millisecond

// t0 is a whole second, so tests can also reason about freecache's whole-second clock.
var t0 = time.UnixMilli(1_700_000_000_000)

// testClock is an injected clock that tests move by hand; safe for concurrent use.
type testClock struct{ ns atomic.Int64 }

func newClock(t time.Time) *testClock {
	c := &testClock{}
	c.ns.Store(t.UnixNano())
	return c
}

func (c *testClock) Now() time.Time                { return time.Unix(0, c.ns.Load()) }
func (c *testClock) Set(t time.Time)               { c.ns.Store(t.UnixNano()) }
func (c *testClock) Add(d time.Duration) time.Time { return time.Unix(0, c.ns.Add(int64(d))) }

func newTestCache(t testing.TB, clk *testClock, rnd func() float64) *Cache {
	t.Helper()
	c, err := New(Options{MaxMemory: 4 << 20, Now: clk.Now, Rand: rnd})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return c
}

// fill runs one whole fill of key as its leader and returns whether it stored.
func fill(t testing.TB, c *Cache, key string, res Result, p *Policy) bool {
	t.Helper()
	f, leader := c.Acquire([]byte(key))
	if !leader {
		t.Fatalf("Acquire(%q): joined a fill; want to lead one", key)
	}
	return c.Complete(f, res, p)
}

func value(s string) Result { return Result{Value: []byte(s), PTTL: NoExpiry} }

func bulk(s string) string { return "$" + itoa(len(s)) + "\r\n" + s + "\r\n" }

func itoa(n int) string {
	if n == 0 {
		return "0"
	}
	var b []byte
	for ; n > 0; n /= 10 {
		b = append([]byte{byte('0' + n%10)}, b...)
	}
	return string(b)
}

func TestNewOptions(t *testing.T) {
	tests := []struct {
		name    string
		mem     int64
		wantErr bool
	}{
		{"zero", 0, true},
		{"negative", -1, true},
		{"just below 1 MiB", MinMemory - 1, true},
		{"1 MiB", MinMemory, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(Options{MaxMemory: tt.mem})
			if (err != nil) != tt.wantErr {
				t.Fatalf("New(MaxMemory %d) error = %v; want error %v", tt.mem, err, tt.wantErr)
			}
			if err != nil && !errors.Is(err, ErrMaxMemory) {
				t.Fatalf("error %v does not wrap ErrMaxMemory", err)
			}
		})
	}
}

// TestStates walks one entry through fresh, stale, dead and serve-stale at the exact millisecond
// boundaries, for values and remembered nils.
func TestStates(t *testing.T) {
	valuePolicy := &Policy{SoftTTL: 10 * time.Second, HardTTL: 60 * time.Second, NegativeTTL: 5 * time.Second, ServeStale: true, MaxStale: 30 * time.Second}
	type probe struct {
		at        time.Duration // since the fill started
		allowDead bool
		want      State
	}
	tests := []struct {
		name   string
		res    Result
		p      *Policy
		reply  string
		probes []probe
	}{
		{
			name: "value", res: value("v1"), p: valuePolicy, reply: bulk("v1"),
			probes: []probe{
				{0, false, StateFresh},
				{9999 * ms, false, StateFresh},
				{10000 * ms, false, StateStale},
				{59999 * ms, false, StateStale},
				{60000 * ms, false, StateMiss},
				{60000 * ms, true, StateDead},
				{89999 * ms, true, StateDead},
				{90000 * ms, true, StateMiss},
				{9999 * ms, true, StateFresh},
			},
		},
		{
			name: "value without serve-stale", res: value("v1"),
			p:     &Policy{SoftTTL: 10 * time.Second, HardTTL: 60 * time.Second},
			reply: bulk("v1"),
			probes: []probe{
				{59999 * ms, true, StateStale},
				{60000 * ms, true, StateMiss},
			},
		},
		{
			name: "empty value", res: value(""), p: valuePolicy, reply: "$0\r\n\r\n",
			probes: []probe{{0, false, StateFresh}},
		},
		{
			name: "nil", res: Result{Nil: true}, p: valuePolicy, reply: "$-1\r\n",
			probes: []probe{
				{0, false, StateFresh},
				{4999 * ms, false, StateFresh},
				{5000 * ms, false, StateMiss},
				{5000 * ms, true, StateDead},
				{34999 * ms, true, StateDead},
				{35000 * ms, true, StateMiss},
			},
		},
		{
			name: "upstream expiry caps soft and hard", res: Result{Value: []byte("v"), PTTL: 7 * time.Second}, p: valuePolicy, reply: bulk("v"),
			probes: []probe{
				{6999 * ms, false, StateFresh},
				{7000 * ms, false, StateMiss},
				{7000 * ms, true, StateMiss}, // serve-stale never passes the upstream expiry
			},
		},
		{
			name: "upstream expiry caps hard only", res: Result{Value: []byte("v"), PTTL: 30 * time.Second}, p: valuePolicy, reply: bulk("v"),
			probes: []probe{
				{9999 * ms, false, StateFresh},
				{10000 * ms, false, StateStale},
				{29999 * ms, false, StateStale},
				{30000 * ms, false, StateMiss},
				{30000 * ms, true, StateMiss},
			},
		},
		{
			name: "upstream expiry bounds serve-stale", res: Result{Value: []byte("v"), PTTL: 70 * time.Second}, p: valuePolicy, reply: bulk("v"),
			probes: []probe{
				{59999 * ms, false, StateStale},
				{60000 * ms, true, StateDead},
				{69999 * ms, true, StateDead},
				{70000 * ms, true, StateMiss},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := newClock(t0)
			c := newTestCache(t, clk, nil)
			if !fill(t, c, "k", tt.res, tt.p) {
				t.Fatal("fill not stored")
			}
			for _, pr := range tt.probes {
				now := t0.Add(pr.at)
				clk.Set(now)
				got, lk := c.AppendGet([]byte("prefix:"), []byte("k"), tt.p, now, pr.allowDead)
				if lk.State != pr.want {
					t.Errorf("at +%v allowDead=%v: state %v; want %v", pr.at, pr.allowDead, lk.State, pr.want)
					continue
				}
				want := "prefix:"
				if pr.want != StateMiss {
					want += tt.reply
					if lk.Age != pr.at {
						t.Errorf("at +%v: age %v; want %v", pr.at, lk.Age, pr.at)
					}
				}
				if string(got) != want {
					t.Errorf("at +%v: reply %q; want %q", pr.at, got, want)
				}
			}
		})
	}
}

// TestNotStored lists results and policies that must never be stored.
func TestNotStored(t *testing.T) {
	p := &Policy{SoftTTL: time.Second, HardTTL: 2 * time.Second, NegativeTTL: time.Second}
	tests := []struct {
		name string
		res  Result
		p    *Policy
	}{
		{"nil without negative ttl", Result{Nil: true}, &Policy{SoftTTL: time.Second, HardTTL: 2 * time.Second}},
		{"zero hard ttl", value("v"), &Policy{SoftTTL: time.Second, NegativeTTL: time.Second}},
		{"pttl zero", Result{Value: []byte("v")}, p},
		{"pttl -2", Result{Value: []byte("v"), PTTL: -2 * time.Millisecond}, p},
		{"pttl -5ms", Result{Value: []byte("v"), PTTL: -5 * time.Millisecond}, p},
		{"upstream error", Result{Value: []byte("v"), PTTL: -1, Err: errors.New("boom")}, p},
		{"no store", Result{Value: []byte("v"), PTTL: -1, NoStore: true, Reply: []byte("-WRONGTYPE\r\n")}, p},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newTestCache(t, newClock(t0), nil)
			if fill(t, c, "k", tt.res, tt.p) {
				t.Fatal("stored; want not stored")
			}
			if got, lk := c.AppendGet(nil, []byte("k"), tt.p, t0, true); lk.State != StateMiss || len(got) != 0 {
				t.Fatalf("lookup = %v %q; want a miss", lk.State, got)
			}
		})
	}
}

// TestFillOutlivesDeadlines: a fill that completes after every deadline it could have is not stored
// (freecache would take expire <= 0 as "never expires").
func TestFillOutlivesDeadlines(t *testing.T) {
	clk := newClock(t0)
	c := newTestCache(t, clk, nil)
	p := &Policy{SoftTTL: time.Second, HardTTL: 2 * time.Second}
	f, _ := c.Acquire([]byte("k"))
	clk.Add(2 * time.Second)
	if c.Complete(f, value("v"), p) {
		t.Fatal("stored a fill that completed at its hard deadline")
	}
}

func TestPTTLNoExpiry(t *testing.T) {
	p := &Policy{SoftTTL: time.Second, HardTTL: 2 * time.Second}
	for _, pttl := range []time.Duration{NoExpiry, -time.Millisecond} {
		c := newTestCache(t, newClock(t0), nil)
		if !fill(t, c, "k", Result{Value: []byte("v"), PTTL: pttl}, p) {
			t.Errorf("PTTL %v: not stored; want stored without upstream expiry", pttl)
		}
		if h, _, _, _ := c.Explain([]byte("k"), p, t0); h.ExpireAt != 0 {
			t.Errorf("PTTL %v: ExpireAt %d; want 0", pttl, h.ExpireAt)
		}
	}
}

func TestStricterPolicyAtLookup(t *testing.T) {
	clk := newClock(t0)
	c := newTestCache(t, clk, nil)
	loose := &Policy{SoftTTL: 10 * time.Second, HardTTL: 60 * time.Second, NegativeTTL: 30 * time.Second}
	strict := &Policy{SoftTTL: time.Second, HardTTL: 2 * time.Second, NegativeTTL: 500 * ms}
	noNil := &Policy{SoftTTL: time.Second, HardTTL: 2 * time.Second}
	fill(t, c, "v", value("x"), loose)
	fill(t, c, "n", Result{Nil: true}, loose)
	tests := []struct {
		key  string
		p    *Policy
		at   time.Duration
		want State
	}{
		{"v", strict, 999 * ms, StateFresh},
		{"v", strict, 1000 * ms, StateStale},
		{"v", strict, 2000 * ms, StateMiss},
		{"v", loose, 2000 * ms, StateFresh},
		{"n", strict, 499 * ms, StateFresh},
		{"n", strict, 500 * ms, StateMiss},
		{"n", noNil, 0, StateMiss},
		{"n", loose, 500 * ms, StateFresh},
	}
	for _, tt := range tests {
		_, lk := c.AppendGet(nil, []byte(tt.key), tt.p, t0.Add(tt.at), false)
		if lk.State != tt.want {
			t.Errorf("%s at +%v: state %v; want %v", tt.key, tt.at, lk.State, tt.want)
		}
	}
	// A looser policy than the fill's does not lengthen the stored deadlines.
	looser := &Policy{SoftTTL: time.Hour, HardTTL: time.Hour}
	if _, lk := c.AppendGet(nil, []byte("v"), looser, t0.Add(60*time.Second), false); lk.State != StateMiss {
		t.Errorf("looser policy at the stored hard deadline: state %v; want miss", lk.State)
	}
}

func TestJitterOnlyShortens(t *testing.T) {
	p := &Policy{SoftTTL: 10 * time.Second, HardTTL: 60 * time.Second, NegativeTTL: 4 * time.Second}
	tests := []struct {
		name             string
		draw, jitter     float64
		res              Result
		wantSoft, wantHd time.Duration
	}{
		{"draw 0", 0, 0.5, value("v"), 10 * time.Second, 60 * time.Second},
		{"draw 0.5 jitter 0.2", 0.5, 0.2, value("v"), 9 * time.Second, 54 * time.Second},
		{"draw 0.999 jitter 0.5", 0.999, 0.5, value("v"), 5005 * ms, 30030 * ms},
		{"no jitter", 0.999, 0, value("v"), 10 * time.Second, 60 * time.Second},
		{"nil draw 0.5 jitter 0.5", 0.5, 0.5, Result{Nil: true}, 3 * time.Second, 3 * time.Second},
		{"jitter then upstream expiry", 0.5, 0.2, Result{Value: []byte("v"), PTTL: 50 * time.Second}, 9 * time.Second, 50 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newTestCache(t, newClock(t0), func() float64 { return tt.draw })
			pp := *p
			pp.Jitter = tt.jitter
			if !fill(t, c, "k", tt.res, &pp) {
				t.Fatal("not stored")
			}
			h, _, st, ok := c.Explain([]byte("k"), &pp, t0)
			if !ok || st != StateFresh {
				t.Fatalf("Explain: ok %v state %v; want fresh", ok, st)
			}
			// Float rounding may take one more millisecond off, never add one.
			if got := time.Duration(h.SoftAt-h.FetchedAt) * ms; got > tt.wantSoft || got < tt.wantSoft-ms {
				t.Errorf("soft after %v; want %v", got, tt.wantSoft)
			}
			if got := time.Duration(h.HardAt-h.FetchedAt) * ms; got > tt.wantHd || got < tt.wantHd-ms {
				t.Errorf("hard after %v; want %v", got, tt.wantHd)
			}
		})
	}
}

// TestJitterSpread fills 1000 keys at the same instant and checks their hard deadlines are spread
// over the jitter window and never later than the unjittered one.
func TestJitterSpread(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	c := newTestCache(t, newClock(t0), rng.Float64)
	p := &Policy{SoftTTL: 10 * time.Second, HardTTL: 60 * time.Second, Jitter: 0.15}
	unjittered := t0.Add(p.HardTTL).UnixMilli()
	floor := t0.UnixMilli() + int64(float64(p.HardTTL.Milliseconds())*(1-p.Jitter))
	distinct := map[int64]bool{}
	lo, hi := unjittered, int64(0)
	for i := range 1000 {
		key := "k" + itoa(i)
		if !fill(t, c, key, value("v"), p) {
			t.Fatalf("%s not stored", key)
		}
		h, _, _, _ := c.Explain([]byte(key), p, t0)
		if h.HardAt > unjittered || h.HardAt < floor {
			t.Fatalf("%s: hard deadline %d outside [%d, %d]", key, h.HardAt, floor, unjittered)
		}
		if h.SoftAt > h.HardAt {
			t.Fatalf("%s: soft %d after hard %d", key, h.SoftAt, h.HardAt)
		}
		distinct[h.HardAt] = true
		lo, hi = min(lo, h.HardAt), max(hi, h.HardAt)
	}
	if len(distinct) < 900 {
		t.Errorf("%d distinct hard deadlines among 1000; want them spread", len(distinct))
	}
	if window := p.HardTTL.Milliseconds() * 15 / 100; hi-lo < window*9/10 {
		t.Errorf("deadlines span %d ms; want most of the %d ms jitter window", hi-lo, window)
	}
}

// TestFreecacheExpiry checks the whole-second freecache expiry never drops an entry that may still be
// served, from fill starts at different points within a second, and that it does drop it afterwards.
func TestFreecacheExpiry(t *testing.T) {
	tests := []struct {
		name  string
		start time.Duration // offset of the fill start from t0
		p     *Policy
		last  time.Duration // last servable instant after the start (with allowDead)
	}{
		{"start on a second", 0, &Policy{SoftTTL: 500 * ms, HardTTL: time.Second}, 999 * ms},
		{"start late in a second", 999 * ms, &Policy{SoftTTL: 500 * ms, HardTTL: time.Second}, 999 * ms},
		{"start early in a second", 1 * ms, &Policy{SoftTTL: 500 * ms, HardTTL: 1500 * ms}, 1499 * ms},
		{"serve-stale", 999 * ms, &Policy{SoftTTL: 500 * ms, HardTTL: time.Second, ServeStale: true, MaxStale: 2 * time.Second}, 2999 * ms},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := newClock(t0.Add(tt.start))
			c := newTestCache(t, clk, nil)
			if !fill(t, c, "k", value("v"), tt.p) {
				t.Fatal("not stored")
			}
			at := clk.Add(tt.last)
			if _, lk := c.AppendGet(nil, []byte("k"), tt.p, at, true); lk.State == StateMiss {
				t.Fatalf("miss at its last servable instant (+%v)", tt.last)
			}
			// Two seconds on, freecache has dropped it (GetFn deletes expired entries it meets).
			clk.Add(2 * time.Second)
			c.AppendGet(nil, []byte("k"), tt.p, clk.Now(), true)
			if n := c.Stats().Entries; n != 0 {
				t.Fatalf("%d entries two seconds past the last servable instant; want 0", n)
			}
		})
	}
}

func TestExplain(t *testing.T) {
	clk := newClock(t0)
	c := newTestCache(t, clk, nil)
	p := &Policy{SoftTTL: time.Second, HardTTL: 2 * time.Second, ServeStale: true, MaxStale: time.Hour}
	if _, _, _, ok := c.Explain([]byte("k"), p, t0); ok {
		t.Fatal("Explain found an entry in an empty cache")
	}
	fill(t, c, "k", value("hello"), p)
	before := c.Stats()
	tests := []struct {
		at   time.Duration
		want State
	}{{0, StateFresh}, {time.Second, StateStale}, {2 * time.Second, StateDead}, {2 * time.Hour, StateDead}}
	for _, tt := range tests {
		h, size, st, ok := c.Explain([]byte("k"), p, t0.Add(tt.at))
		if !ok || st != tt.want || size != 5 || h.Kind != KindValue || h.FetchedAt != t0.UnixMilli() {
			t.Errorf("Explain at +%v = %+v size %d %v ok %v; want %v, size 5", tt.at, h, size, st, ok, tt.want)
		}
	}
	if after := c.Stats(); after != before {
		t.Errorf("Explain changed stats: %+v -> %+v", before, after)
	}
	c.Flush()
	fill(t, c, "k", value("hello"), p)
	c.SetTrusted(false) // moves the epoch: the entry stays in freecache but is of an old epoch
	if _, _, st, ok := c.Explain([]byte("k"), p, t0); !ok || st != StateMiss {
		t.Errorf("Explain after an epoch move: state %v ok %v; want miss, true", st, ok)
	}
}

func TestLongKeyLookup(t *testing.T) {
	c := newTestCache(t, newClock(t0), nil)
	p := &Policy{SoftTTL: time.Second, HardTTL: 2 * time.Second}
	key := bytes.Repeat([]byte("k"), MaxKeyLen+1)
	if got, lk := c.AppendGet(nil, key, p, t0, false); lk.State != StateMiss || got != nil {
		t.Fatalf("lookup of an over-long key = %v %q; want miss", lk.State, got)
	}
}

func TestLookupStats(t *testing.T) {
	clk := newClock(t0)
	c := newTestCache(t, clk, nil)
	p := &Policy{SoftTTL: time.Second, HardTTL: 2 * time.Second, ServeStale: true, MaxStale: time.Second}
	fill(t, c, "k", value("v"), p)
	for _, at := range []time.Duration{0, 0, time.Second, 2 * time.Second, 3 * time.Second} {
		c.AppendGet(nil, []byte("k"), p, t0.Add(at), true)
	}
	c.AppendGet(nil, []byte("absent"), p, t0, true)
	s := c.Stats()
	if s.FillsStored != 1 || s.Entries != 1 {
		t.Errorf("stats %+v; want stored 1, entries 1", s)
	}
}

func TestStateAndKindNames(t *testing.T) {
	got := strings.Join([]string{StateMiss.String(), StateFresh.String(), StateStale.String(), StateDead.String(), State(9).String(),
		KindValue.String(), KindNil.String(), Kind(0).String()}, ",")
	if want := "miss,fresh,stale,dead,state(9),value,nil,kind(0)"; got != want {
		t.Errorf("names %q; want %q", got, want)
	}
}

// TestNotBefore: entries whose fill began before Policy.NotBefore are misses, for AppendGet and Explain alike;
// entries filled from that instant on are served.
func TestNotBefore(t *testing.T) {
	clk := newClock(t0)
	c := newTestCache(t, clk, nil)
	p := &Policy{SoftTTL: time.Hour, HardTTL: time.Hour, ServeStale: true, MaxStale: time.Hour}
	fill(t, c, "old", value("o"), p)
	clk.Add(10 * ms)
	guarded := *p
	guarded.NotBefore = clk.Now()
	fill(t, c, "new", value("n"), p)
	clk.Add(10 * ms)
	for _, tc := range []struct {
		key   string
		want  string
		state State
	}{{"old", "", StateMiss}, {"new", bulk("n"), StateFresh}} {
		for _, allowDead := range []bool{false, true} {
			got, look := c.AppendGet(nil, []byte(tc.key), &guarded, clk.Now(), allowDead)
			if string(got) != tc.want || look.State != tc.state {
				t.Errorf("AppendGet(%s, allowDead %v) = %q, %v; want %q, %v", tc.key, allowDead, got, look.State, tc.want, tc.state)
			}
		}
		if _, _, st, ok := c.Explain([]byte(tc.key), &guarded, clk.Now()); !ok || st != tc.state {
			t.Errorf("Explain(%s) = %v, %v; want %v, true", tc.key, st, ok, tc.state)
		}
	}
	// Without NotBefore the old entry is served again: nothing was deleted.
	if got, _ := c.AppendGet(nil, []byte("old"), p, clk.Now(), false); string(got) != bulk("o") {
		t.Errorf("AppendGet(old) without NotBefore = %q; want %q", got, bulk("o"))
	}
}

// TestStatsBytes: Bytes estimates the entries' size from the mean size of the entries stored.
func TestStatsBytes(t *testing.T) {
	clk := newClock(t0)
	c := newTestCache(t, clk, nil)
	p := &Policy{HardTTL: time.Hour}
	if st := c.Stats(); st.Bytes != 0 {
		t.Fatalf("Bytes of an empty cache = %d; want 0", st.Bytes)
	}
	val := strings.Repeat("v", 958) // key "k000" (4) + header (42) + value (958) + freecache header (24) = 1028
	for i := 0; i < 100; i++ {
		fill(t, c, "k"+strings.Repeat("0", 3-len(itoa(i)))+itoa(i), value(val), p)
	}
	if st := c.Stats(); st.Entries != 100 || st.Bytes != 100*1028 {
		t.Fatalf("Entries %d Bytes %d; want 100 and %d", st.Entries, st.Bytes, 100*1028)
	}
	c.Invalidate([]byte("k000"))
	if st := c.Stats(); st.Entries != 99 || st.Bytes != 99*1028 {
		t.Fatalf("after an invalidation: Entries %d Bytes %d; want 99 and %d", st.Entries, st.Bytes, 99*1028)
	}
}
