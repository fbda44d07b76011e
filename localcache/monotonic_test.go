package localcache

import (
	"errors"
	"testing"
	"time"
)

// errTest is an upstream failure: the fill hands out no value.
var errTest = errors.New("upstream: timeout")

// Fills of one key that overlap read the upstream in an order the cache cannot see: the one that completes last may
// have read first. These tests order Acquire and Complete by hand and check that no lookup, and no fill a later
// read joins, answers a value older than one already answered.

// TestKeepSame: a KeepSame result leaves an entry that holds what it read, and deletes one that does not (an older
// value, which a lookup after the result was answered must not serve).
func TestKeepSame(t *testing.T) {
	p := &Policy{SoftTTL: time.Minute, HardTTL: time.Hour, NegativeTTL: time.Minute}
	for _, tc := range []struct {
		name   string
		cached Result
		read   Result
		want   string // what a lookup serves afterwards; "" for a miss
	}{
		{"same value", value("37"), Result{Value: []byte("37"), PTTL: NoExpiry, KeepSame: true}, bulk("37")},
		{"older value", value("37"), Result{Value: []byte("38"), PTTL: NoExpiry, KeepSame: true}, ""},
		{"value, now missing", value("37"), Result{Nil: true, KeepSame: true}, ""},
		{"nil, now a value", Result{Nil: true}, Result{Value: []byte("38"), PTTL: NoExpiry, KeepSame: true}, ""},
		{"nil, still missing", Result{Nil: true}, Result{Nil: true, KeepSame: true}, "$-1\r\n"},
		{"value, now another type", value("37"), Result{Reply: []byte("-WRONGTYPE x\r\n"), KeepSame: true}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newTestCache(t, newClock(t0), nil)
			fill(t, c, "k", tc.cached, p)
			f, leader := c.Acquire([]byte("k"))
			if !leader {
				t.Fatal("not the leader")
			}
			if c.Complete(f, tc.read, p) {
				t.Error("a KeepSame result was stored")
			}
			if got := f.Result(); string(got.Value) != string(tc.read.Value) || got.Nil != tc.read.Nil {
				t.Errorf("waiters got %+v; want %+v", got, tc.read)
			}
			if got, _ := c.AppendGet(nil, []byte("k"), p, t0, false); string(got) != tc.want {
				t.Errorf("served %q; want %q", got, tc.want)
			}
		})
	}
}

// TestOvertakenFillNotJoined: once a fill of a key has completed, a read does not join a fill of the key that began
// before it (of other fields of a hash, or of an earlier tracking session): that fill may have read the upstream
// first, so its result may be older than what the completed one answered.
func TestOvertakenFillNotJoined(t *testing.T) {
	c := newTestCache(t, newClock(t0), nil)
	p := &Policy{SoftTTL: time.Minute, HardTTL: time.Hour}
	some := HashFillID([][]byte{[]byte("f0"), []byte("f1"), []byte("f2")}, false)
	older, _ := c.AcquireHash([]byte("h"), some)
	if again, leader := c.AcquireHash([]byte("h"), some); leader || again != older {
		t.Fatal("a read of the same fields did not join the fill in progress")
	}
	all, _ := c.AcquireHash([]byte("h"), HashFillID(nil, true))
	c.CompleteHash(all, Result{PTTL: NoExpiry}, &HashResult{All: true, KeyPolicy: p, Fields: []FieldRead{
		{Field: []byte("f0"), Value: []byte("692"), Policy: p}}})
	next, leader := c.AcquireHash([]byte("h"), some)
	if !leader || next == older {
		t.Fatal("a read after another fill of the key completed joined a fill that began before it")
	}
	c.CompleteHash(older, Result{Err: errTest}, nil)
	c.CompleteHash(next, Result{Err: errTest}, nil)

	// A failed fill hands out no value: it overtakes nothing.
	a, _ := c.AcquireHash([]byte("h"), some)
	b, _ := c.AcquireHash([]byte("h"), HashFillID(nil, true))
	c.CompleteHash(b, Result{Err: errTest}, nil)
	if again, leader := c.AcquireHash([]byte("h"), some); leader || again != a {
		t.Error("a failed fill kept reads from joining another fill of the key")
	}
	c.CompleteHash(a, Result{Err: errTest}, nil)
	if n := flightsHeld(c); n != 0 {
		t.Errorf("%d slots held with no fill outstanding", n)
	}
}

// TestOvertakenValueFill: a value fill that began before a tracking session moved (so stores unverified, under a
// policy that serves unverified entries) and completes after a fill of the new session stored a newer value does
// not put its value back over that one.
func TestOvertakenValueFill(t *testing.T) {
	c := newTestCache(t, newClock(t0), nil)
	p := &Policy{SoftTTL: time.Minute, HardTTL: time.Hour, Revalidate: true}
	older, _ := c.Acquire([]byte("k"))
	c.SetTrusted(false)
	c.SetTrusted(true)
	newer, leader := c.Acquire([]byte("k"))
	if !leader || newer == older {
		t.Fatal("a read of a new session joined a fill of the earlier one")
	}
	if !c.Complete(newer, value("38"), p) {
		t.Fatal("the new session's fill was not stored")
	}
	c.Complete(older, value("37"), p)
	if got, lk := c.AppendGet(nil, []byte("k"), p, t0, false); string(got) == bulk("37") {
		t.Errorf("served %q (%v) after %q was stored by a fill that completed first", got, lk.State, bulk("38"))
	}

	// The same value is kept: nothing went back.
	older, _ = c.Acquire([]byte("j"))
	c.SetTrusted(false)
	c.SetTrusted(true)
	newer, _ = c.Acquire([]byte("j"))
	c.Complete(newer, value("5"), p)
	c.Complete(older, value("5"), p)
	if got, _ := c.AppendGet(nil, []byte("j"), p, t0, false); string(got) != bulk("5") {
		t.Errorf("served %q; want %q, which both fills read", got, bulk("5"))
	}
}

// hashFill starts a fill of some fields of key h (all: the whole hash).
func hashFill(t *testing.T, c *Cache, all bool, fields ...string) *Fill {
	t.Helper()
	var fs [][]byte
	for _, f := range fields {
		fs = append(fs, []byte(f))
	}
	f, leader := c.AcquireHash([]byte("h"), HashFillID(fs, all))
	if !leader {
		t.Fatal("not the leader")
	}
	return f
}

// completeHash completes a hash fill with what it read: field, value pairs ("" = missing).
func completeHash(c *Cache, f *Fill, all bool, p *Policy, kv ...string) {
	var reads []FieldRead
	for i := 0; i+1 < len(kv); i += 2 {
		reads = append(reads, FieldRead{Field: []byte(kv[i]), Value: []byte(kv[i+1]), Missing: kv[i+1] == "", Policy: p})
	}
	c.CompleteHash(f, Result{PTTL: NoExpiry}, &HashResult{Fields: reads, All: all, KeyPolicy: p})
}

// hmget looks fields of h up as HMGET does: served only when every field is cached and read by one fill. It returns
// the values joined by commas, or "(miss)".
func hmget(c *Cache, p *Policy, fields ...string) string {
	out, tag, ok := "", uint32(0), true
	var fs [][]byte
	for _, f := range fields {
		fs = append(fs, []byte(f))
	}
	got := 0
	c.LookupHash([]byte("h"), t0, func(e HashEntry) {
		e.Fields(fs, func(int) *Policy { return p }, false, func(i int, v []byte, missing bool, lk Lookup) {
			if lk.State == StateMiss {
				return
			}
			if tag != 0 && lk.Fill != tag {
				ok = false
			}
			tag = lk.Fill
			if i > 0 {
				out += ","
			}
			if missing {
				v = []byte("(nil)")
			}
			out += string(v)
			got++
		})
	})
	if !ok || got != len(fields) {
		return "(miss)"
	}
	return out
}

// TestHashFillsOutOfOrder: two fills of different fields of one hash overlap, and a write lands between their reads.
// Whichever completes first, and whichever began first, the field they read differently is kept by neither: the
// one merged last may be the older read, and a client may have been answered the newer one. Fields they read
// alike are kept.
func TestHashFillsOutOfOrder(t *testing.T) {
	p := &Policy{SoftTTL: time.Minute, HardTTL: time.Hour, NegativeTTL: time.Minute}
	for _, tc := range []struct {
		name        string
		firstAll    bool     // the fill that begins first reads the whole hash (else f0, f1, f2)
		firstDone   bool     // the fill that began first completes first
		first, then []string // what each read
	}{
		{"HMGET begins first, completes last, read older", false, false,
			[]string{"f0", "691", "f1", "691", "f2", "691"}, []string{"f0", "692", "f1", "692", "f2", "692"}},
		{"HMGET begins first, completes first, read newer", false, true,
			[]string{"f0", "692", "f1", "692", "f2", "692"}, []string{"f0", "691", "f1", "691", "f2", "691"}},
		{"HGETALL begins first, completes last, read older", true, false,
			[]string{"f0", "691", "f1", "691", "f2", "691"}, []string{"f0", "692", "f1", "692", "f2", "692"}},
		{"HGETALL begins first, completes first, read newer", true, true,
			[]string{"f0", "692", "f1", "692", "f2", "692"}, []string{"f0", "691", "f1", "691", "f2", "691"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newTestCache(t, newClock(t0), nil)
			thenAll := !tc.firstAll
			first := hashFill(t, c, tc.firstAll, "f0", "f1", "f2")
			then := hashFill(t, c, thenAll, "f0", "f1", "f2")
			done := []func(){
				func() { completeHash(c, first, tc.firstAll, p, tc.first...) },
				func() { completeHash(c, then, thenAll, p, tc.then...) },
			}
			if !tc.firstDone {
				done[0], done[1] = done[1], done[0]
			}
			done[0]()
			served := hmget(c, p, "f0", "f1", "f2")
			done[1]()
			if got := hmget(c, p, "f0", "f1", "f2"); got != "(miss)" {
				t.Errorf("after both merged: HMGET from memory %s (after %s); want a miss: either may be the older",
					got, served)
			}
			for _, f := range []string{"f0", "f1", "f2"} {
				if got, _ := hget(c, "h", f, p, t0); got != "(miss)" {
					t.Errorf("%s = %s; want a miss", f, got)
				}
			}
		})
	}
}

// TestHashFillsOverlapAlike: overlapping fills that read the same values keep them (the hit rate does not suffer
// from overlap alone), and a field neither disputes is merged as usual.
func TestHashFillsOverlapAlike(t *testing.T) {
	p := &Policy{SoftTTL: time.Minute, HardTTL: time.Hour, NegativeTTL: time.Minute}
	c := newTestCache(t, newClock(t0), nil)
	a := hashFill(t, c, false, "f0", "f1")
	b := hashFill(t, c, true)
	completeHash(c, b, true, p, "f0", "1", "f1", "1", "f2", "2")
	completeHash(c, a, false, p, "f0", "1", "f1", "1")
	if got := hmget(c, p, "f0", "f1"); got != "1,1" {
		t.Errorf("HMGET f0 f1 = %s; want 1,1", got)
	}
	if got, _ := hget(c, "h", "f2", p, t0); got != "2" {
		t.Errorf("f2 = %s; want 2", got)
	}
	if got, _ := hget(c, "h", "f9", p, t0); got != "(nil)" {
		t.Errorf("f9 = %s; want (nil): the image is still complete", got)
	}
}

// TestHashImageDisputed: a fill of the whole hash that overlaps a fill which found a field the image does not list
// (created between the two reads, or deleted) does not claim that field missing, and the other way round.
func TestHashImageDisputed(t *testing.T) {
	p := &Policy{SoftTTL: time.Minute, HardTTL: time.Hour, NegativeTTL: time.Minute}
	t.Run("field found by the partial fill, absent from the image", func(t *testing.T) {
		c := newTestCache(t, newClock(t0), nil)
		all := hashFill(t, c, true)
		some := hashFill(t, c, false, "new")
		completeHash(c, some, false, p, "new", "x")
		completeHash(c, all, true, p, "f0", "1")
		if got, _ := hget(c, "h", "new", p, t0); got != "(miss)" {
			t.Errorf("new = %s; want a miss", got)
		}
		if got, _ := hget(c, "h", "f0", p, t0); got != "1" {
			t.Errorf("f0 = %s; want 1, which nothing disputes", got)
		}
		wantIncomplete(t, c, p)
	})
	t.Run("field absent from the image, found by the partial fill merged later", func(t *testing.T) {
		c := newTestCache(t, newClock(t0), nil)
		some := hashFill(t, c, false, "new")
		all := hashFill(t, c, true)
		completeHash(c, all, true, p, "f0", "1")
		completeHash(c, some, false, p, "new", "x")
		if got, _ := hget(c, "h", "new", p, t0); got != "(miss)" {
			t.Errorf("new = %s; want a miss", got)
		}
		wantIncomplete(t, c, p)
	})
}

// wantIncomplete fails t when the image of the hash "h" counts as complete for p, as one with a disputed field
// must not.
func wantIncomplete(t *testing.T, c *Cache, p *Policy) {
	t.Helper()
	c.LookupHash([]byte("h"), t0, func(e HashEntry) {
		if _, ok := e.Complete(p, false); ok {
			t.Error("an image with a disputed field is complete")
		}
	})
}

// TestHashFillAfterOverlapStores: a fill that begins after overlapping fills completed reads after both, and stores
// the fields they disputed.
func TestHashFillAfterOverlapStores(t *testing.T) {
	p := &Policy{SoftTTL: time.Minute, HardTTL: time.Hour}
	c := newTestCache(t, newClock(t0), nil)
	a := hashFill(t, c, false, "f0")
	b := hashFill(t, c, true)
	completeHash(c, b, true, p, "f0", "2")
	completeHash(c, a, false, p, "f0", "1")
	if got, _ := hget(c, "h", "f0", p, t0); got != "(miss)" {
		t.Fatalf("f0 = %s; want a miss", got)
	}
	completeHash(c, hashFill(t, c, false, "f0"), false, p, "f0", "2")
	if got, _ := hget(c, "h", "f0", p, t0); got != "2" {
		t.Errorf("f0 = %s; want 2", got)
	}
}

// TestFillAcrossInvalidation: a fill that began before an invalidation and one that began after it may reach Redis
// in either order (they go out on different shared connections), so neither is taken to have read last. When they
// read differently, neither value stays, whichever completes first: the one that completes first may have been
// served already, and the other may be the older read. Both read alike: it stays. A hash read after the earlier
// fill completed does not join the later one either.
func TestFillAcrossInvalidation(t *testing.T) {
	p := &Policy{SoftTTL: time.Minute, HardTTL: time.Hour}
	for _, tc := range []struct {
		name, old, new string
		want           string
	}{
		{"another value", "2", "1", ""},
		{"the same value", "1", "1", bulk("1")},
	} {
		for _, oldFirst := range []bool{false, true} {
			order := "later completes first"
			if oldFirst {
				order = "earlier completes first"
			}
			t.Run("value, "+tc.name+", "+order, func(t *testing.T) {
				c := newTestCache(t, newClock(t0), nil)
				old, _ := c.Acquire([]byte("k"))
				c.Invalidate([]byte("k"))
				next, _ := c.Acquire([]byte("k"))
				if oldFirst && c.Complete(old, value(tc.old), p) {
					t.Fatal("the fill from before the invalidation was stored")
				}
				if stored := c.Complete(next, value(tc.new), p); stored != (!oldFirst || tc.want != "") {
					t.Fatalf("the fill after the invalidation stored: %v", stored)
				}
				if !oldFirst && c.Complete(old, value(tc.old), p) {
					t.Fatal("the fill from before the invalidation was stored")
				}
				if got, _ := c.AppendGet(nil, []byte("k"), p, t0, false); string(got) != tc.want {
					t.Errorf("served %q; want %q", got, tc.want)
				}
			})
			t.Run("hash, "+tc.name+", "+order, func(t *testing.T) {
				c := newTestCache(t, newClock(t0), nil)
				old := hashFill(t, c, false, "f0")
				c.Invalidate([]byte("h"))
				next := hashFill(t, c, false, "f0")
				if oldFirst {
					completeHash(c, old, false, p, "f0", tc.old)
				}
				completeHash(c, next, false, p, "f0", tc.new)
				if !oldFirst {
					completeHash(c, old, false, p, "f0", tc.old)
				}
				want := "(miss)"
				if tc.want != "" {
					want = tc.new
				}
				if got, _ := hget(c, "h", "f0", p, t0); got != want {
					t.Errorf("f0 = %s; want %s", got, want)
				}
			})
		}
	}
	t.Run("hash join", func(t *testing.T) {
		c := newTestCache(t, newClock(t0), nil)
		old := hashFill(t, c, false, "f0")
		c.Invalidate([]byte("h"))
		next := hashFill(t, c, false, "f0")
		completeHash(c, old, false, p, "f0", "2")
		id := HashFillID([][]byte{[]byte("f0")}, false)
		if again, leader := c.AcquireHash([]byte("h"), id); !leader || again == next {
			t.Error("a read after the earlier fill answered joined the later one, which may have read before it")
		} else {
			c.CompleteHash(again, Result{Err: errTest}, nil)
		}
		c.CompleteHash(next, Result{Err: errTest}, nil)
	})
}

// TestAnswered: a read of a key that no fill made (an MGET's transaction that did not lead the key's fill) hands
// its answer to the fills in flight: they store it only if they read the same, later reads do not join them, and
// an entry that differs is dropped.
func TestAnswered(t *testing.T) {
	p := &Policy{SoftTTL: time.Minute, HardTTL: time.Hour}
	t.Run("fill in flight", func(t *testing.T) {
		for _, tc := range []struct {
			read   string
			stored bool
		}{{"37", false}, {"38", true}} {
			c := newTestCache(t, newClock(t0), nil)
			f, _ := c.Acquire([]byte("k"))
			c.Answered([]byte("k"), Result{Value: []byte("38")})
			if g, leader := c.Acquire([]byte("k")); !leader || g == f {
				t.Fatal("a read after the answer joined a fill that began before it")
			} else {
				c.Complete(g, Result{Err: errTest}, p)
			}
			if got := c.Complete(f, value(tc.read), p); got != tc.stored {
				t.Errorf("fill that read %s after the answer 38: stored %v; want %v", tc.read, got, tc.stored)
			}
			want := ""
			if tc.stored {
				want = bulk(tc.read)
			}
			if got, _ := c.AppendGet(nil, []byte("k"), p, t0, false); string(got) != want {
				t.Errorf("served %q; want %q", got, want)
			}
		}
	})
	t.Run("entry", func(t *testing.T) {
		c := newTestCache(t, newClock(t0), nil)
		fill(t, c, "old", value("37"), p)
		fill(t, c, "same", value("38"), p)
		fill(t, c, "gone", value("38"), p)
		c.Answered([]byte("old"), Result{Value: []byte("38")})
		c.Answered([]byte("same"), Result{Value: []byte("38")})
		c.Answered([]byte("gone"), Result{Nil: true})
		for key, want := range map[string]string{"old": "", "same": bulk("38"), "gone": ""} {
			if got, _ := c.AppendGet(nil, []byte(key), p, t0, false); string(got) != want {
				t.Errorf("%s: served %q; want %q", key, got, want)
			}
		}
	})
}
