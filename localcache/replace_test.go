package localcache

import (
	"bytes"
	"errors"
	"testing"
	"time"
)

// refill runs a second fill of key, after one stored "old", and completes it with res.
func refill(t *testing.T, c *Cache, key string, res Result, p *Policy) {
	t.Helper()
	f, leader := c.Acquire([]byte(key))
	if !leader {
		t.Fatalf("Acquire(%q): joined a fill; want to lead one", key)
	}
	c.Complete(f, res, p)
}

// served returns what an ordinary lookup and a serve-stale lookup of key answer at now ("" for a miss).
func served(c *Cache, key string, p *Policy, now time.Time) (ordinary, stale string) {
	got, _ := c.AppendGet(nil, []byte(key), p, now, false)
	dead, _ := c.AppendGet(nil, []byte(key), p, now, true)
	return string(got), string(dead)
}

// TestAnswerReplacesEntry: a fill's answer replaces the key's entry also when it cannot be stored (a nil without
// negative TTL, WRONGTYPE, a key that expired between GET and PTTL, a value too large): the entry is deleted, so
// neither a lookup nor serve-stale answers with the value the upstream no longer holds. An upstream failure, and a
// result that was not read from the upstream (NoStore), leave the entry as it was.
func TestAnswerReplacesEntry(t *testing.T) {
	p := &Policy{SoftTTL: 10 * time.Second, HardTTL: 60 * time.Second, ServeStale: true, MaxStale: time.Hour}
	tests := []struct {
		name     string
		res      Result
		wantKept bool
	}{
		{"deleted (nil, no negative ttl)", Result{Nil: true}, false},
		{"another type (WRONGTYPE)", Result{Reply: []byte("-WRONGTYPE Operation against a key holding the wrong kind of value\r\n")}, false},
		{"expired between GET and PTTL", Result{Value: []byte("new"), PTTL: -2 * time.Millisecond}, false},
		{"expiry unknown", Result{Value: []byte("new")}, false},
		{"grown past the size limit", Result{Value: bytes.Repeat([]byte("v"), 8<<10), PTTL: NoExpiry}, false},
		{"read with keys it cannot be stored with (Drop)", Result{Value: []byte("new"), PTTL: NoExpiry, Drop: true}, false},
		{"upstream failure", Result{Err: errors.New("LOADING")}, true},
		{"not read from the upstream", Result{Value: []byte("other"), NoStore: true}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newTestCache(t, newClock(t0), nil)
			fill(t, c, "k", value("old"), p)
			refill(t, c, "k", tt.res, p)
			ordinary, stale := served(c, "k", p, t0)
			if tt.wantKept {
				if ordinary != bulk("old") || stale != bulk("old") {
					t.Fatalf("served %q, serve-stale %q; want the old entry kept", ordinary, stale)
				}
				return
			}
			if ordinary != "" || stale != "" {
				t.Fatalf("served %q, serve-stale %q; want the old entry gone", ordinary, stale)
			}
		})
	}
}

// TestRefreshOfUnverifiedEntryReplacesIt: on_tracking_loss revalidate: after tracking comes back, the re-fetch of
// an unverified entry replaces it whatever it read, also what cannot be stored.
func TestRefreshOfUnverifiedEntryReplacesIt(t *testing.T) {
	p := &Policy{SoftTTL: 10 * time.Second, HardTTL: 60 * time.Second, Revalidate: true}
	for _, res := range []Result{{Nil: true}, {Reply: []byte("-WRONGTYPE\r\n")}, {Value: bytes.Repeat([]byte("v"), 8<<10), PTTL: NoExpiry}} {
		c := newTestCache(t, newClock(t0), nil)
		fill(t, c, "k", value("old"), p)
		c.SetTrusted(false)
		c.SetTrusted(true)
		if got, lk := c.AppendGet(nil, []byte("k"), p, t0, false); lk.State != StateUnverified || string(got) != bulk("old") {
			t.Fatalf("before the re-fetch: %v %q; want unverified old", lk.State, got)
		}
		refill(t, c, "k", res, p)
		if got, lk := c.AppendGet(nil, []byte("k"), p, t0, false); lk.State != StateMiss {
			t.Fatalf("after a re-fetch answered %+v: %v %q; want a miss", res, lk.State, got)
		}
	}
}

// TestUntrustedFillReplacesEntry: a value read while tracking is down (or while it goes down or comes back) is
// stored unverified: an ordinary lookup of a flush policy does not serve it, serve-stale does, and it replaces the
// entry from before the loss, so serve-stale never answers with a value older than one a client has read.
func TestUntrustedFillReplacesEntry(t *testing.T) {
	stale := &Policy{SoftTTL: 10 * time.Second, HardTTL: 60 * time.Second, ServeStale: true, MaxStale: time.Hour}
	revalidate := &Policy{SoftTTL: 10 * time.Second, HardTTL: 60 * time.Second, Revalidate: true}
	fail := &Policy{SoftTTL: 10 * time.Second, HardTTL: 60 * time.Second}
	tests := []struct {
		name          string
		p             *Policy
		during        func(c *Cache) // between the second fill's Acquire and its Complete
		before        func(c *Cache) // before it
		wantOrdinary  string
		wantStale     string
		wantUnverfied bool
	}{
		{"serve_stale, fill while untrusted", stale, nil, func(c *Cache) { c.SetTrusted(false) }, "", bulk("new"), false},
		{"serve_stale, tracking lost during the fill", stale, func(c *Cache) { c.SetTrusted(false) }, nil, "", bulk("new"), false},
		{"serve_stale, tracking back during the fill", stale, func(c *Cache) { c.SetTrusted(true) }, func(c *Cache) { c.SetTrusted(false) }, "", bulk("new"), false},
		{"serve_stale, lost and back during the fill", stale, func(c *Cache) { c.SetTrusted(false); c.SetTrusted(true) }, nil, "", bulk("new"), false},
		{"revalidate, fill while untrusted", revalidate, nil, func(c *Cache) { c.SetTrusted(false) }, bulk("new"), bulk("new"), true},
		{"fail, fill while untrusted", fail, nil, func(c *Cache) { c.SetTrusted(false) }, "", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newTestCache(t, newClock(t0), nil)
			fill(t, c, "k", value("old"), tt.p)
			if tt.before != nil {
				tt.before(c)
			}
			f, _ := c.Acquire([]byte("k"))
			if tt.during != nil {
				tt.during(c)
			}
			if c.Complete(f, value("new"), tt.p) {
				t.Fatal("Complete reported a verified store")
			}
			ordinary, st := served(c, "k", tt.p, t0)
			if ordinary != tt.wantOrdinary || st != tt.wantStale {
				t.Fatalf("served %q, serve-stale %q; want %q, %q", ordinary, st, tt.wantOrdinary, tt.wantStale)
			}
			if _, lk := c.AppendGet(nil, []byte("k"), tt.p, t0, false); (lk.State == StateUnverified) != tt.wantUnverfied {
				t.Fatalf("state %v; want unverified %v", lk.State, tt.wantUnverfied)
			}
			// Unverified it stays after tracking is back: no invalidation vouched for it.
			c.SetTrusted(true)
			if ordinary, st := served(c, "k", tt.p, t0); ordinary != tt.wantOrdinary || st != tt.wantStale {
				t.Fatalf("after tracking is back: served %q, serve-stale %q; want %q, %q", ordinary, st, tt.wantOrdinary, tt.wantStale)
			}
			if s := c.Stats(); s.FillsUntrusted != 1 || s.FillsStored != 1 {
				t.Fatalf("stats %+v; want 1 stored (the first fill) and 1 untrusted", s)
			}
		})
	}
	// A flush still hides what was stored unverified.
	c := newTestCache(t, newClock(t0), nil)
	c.SetTrusted(false)
	fill(t, c, "k", value("new"), stale)
	c.Flush()
	if ordinary, st := served(c, "k", stale, t0); ordinary != "" || st != "" {
		t.Fatalf("after a flush: served %q, serve-stale %q; want nothing", ordinary, st)
	}
}

// TestHashAnswerReplacesEntry: a hash fill replaces what the entry held for the fields it read; an entry left with
// nothing to serve (the fields deleted, no negative TTL) or a hash of another type is deleted.
func TestHashAnswerReplacesEntry(t *testing.T) {
	p := &Policy{SoftTTL: 10 * time.Second, HardTTL: 60 * time.Second, ServeStale: true, MaxStale: time.Hour}
	c := newTestCache(t, newClock(t0), nil)
	fillHash(t, c, "h", false, p, nil, "f1", "a", "f2", "b")
	fillHash(t, c, "h", false, p, nil, "f1", "") // HDEL h f1
	if got, st := hget(c, "h", "f1", p, t0); st != StateMiss {
		t.Fatalf("f1 after it was read missing: %q %v; want a miss", got, st)
	}
	if got, _ := hget(c, "h", "f2", p, t0); got != "b" {
		t.Fatalf("f2: %q; want b", got)
	}
	fillHash(t, c, "h", false, p, nil, "f2", "") // HDEL h f2: nothing left
	if c.LookupHash([]byte("h"), t0, func(HashEntry) {}) {
		t.Fatal("an entry with nothing to serve was kept")
	}

	fillHash(t, c, "h", false, p, nil, "f1", "a")
	f, _ := c.AcquireHash([]byte("h"), HashFillID([][]byte{[]byte("f1")}, false))
	c.CompleteHash(f, Result{Reply: []byte("-WRONGTYPE\r\n")}, nil)
	if c.LookupHash([]byte("h"), t0, func(HashEntry) {}) {
		t.Fatal("the entry of a key that is no longer a hash was kept")
	}
}

// TestHashFillTags: fields read by one fill share its tag; a merge keeps the tags of the fields it did not read,
// and the tag of the fill that read a complete image.
func TestHashFillTags(t *testing.T) {
	p := &Policy{SoftTTL: 10 * time.Second, HardTTL: 60 * time.Second, NegativeTTL: 10 * time.Second}
	c := newTestCache(t, newClock(t0), nil)
	fillHash(t, c, "h", true, p, nil, "f1", "a", "f2", "b")
	fillHash(t, c, "h", false, p, nil, "f2", "c")
	var tags = map[string]uint32{}
	c.LookupHash([]byte("h"), t0, func(e HashEntry) {
		lk, ok := e.Complete(p, false)
		if !ok {
			t.Fatal("the merge of a subset lost the complete image")
		}
		tags["image"] = lk.Fill
		e.Fields([][]byte{[]byte("f1"), []byte("f2"), []byte("absent")}, func(int) *Policy { return p }, false,
			func(i int, _ []byte, _ bool, lk Lookup) { tags[[]string{"f1", "f2", "absent"}[i]] = lk.Fill })
	})
	if tags["image"] == 0 || tags["f1"] != tags["image"] || tags["absent"] != tags["image"] {
		t.Fatalf("tags %v: want f1 and the absent field answered with the image's tag", tags)
	}
	if tags["f2"] == 0 || tags["f2"] == tags["f1"] {
		t.Fatalf("tags %v: want f2, read by another fill, with another tag", tags)
	}
}
