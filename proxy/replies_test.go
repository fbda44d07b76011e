package proxy

import "testing"

// TestRepliesOrder builds replies around holes by hand and checks where each byte lands: replies known now go to
// out until a hole is added, then to the tail behind it, and an MGET that gets a hole is moved whole behind a
// holeRegion, so that it can still be replaced by an error.
func TestRepliesOrder(t *testing.T) {
	var r replies
	r.add([]byte("+A\r\n"))
	if got := string(r.out); got != "+A\r\n" {
		t.Fatalf("out = %q; want %q", got, "+A\r\n")
	}

	// An MGET answered from memory stays in out: it has no region hole.
	rg := r.openMget()
	r.add([]byte("*1\r\n$1\r\nx\r\n"))
	r.closeMget(rg)
	if len(r.seg.holes) != 0 || string(r.out) != "+A\r\n*1\r\n$1\r\nx\r\n" {
		t.Fatalf("after a whole MGET: out %q, %d holes; want it in out and no hole", r.out, len(r.seg.holes))
	}

	// An MGET whose second key waits: what it built so far moves from out to the tail, behind its region hole.
	rg = r.openMget()
	r.add([]byte("*2\r\n$1\r\ny\r\n"))
	r.holdMget(&rg)
	r.seg.addHole(hole{kind: holeMgetKey})
	r.closeMget(rg)
	r.add([]byte("+B\r\n"))
	if got, want := string(r.out), "+A\r\n*1\r\n$1\r\nx\r\n"; got != want {
		t.Errorf("out = %q; want %q", got, want)
	}
	if got, want := string(r.seg.tail), "*2\r\n$1\r\ny\r\n+B\r\n"; got != want {
		t.Errorf("tail = %q; want %q", got, want)
	}
	if got, want := r.pending(), len(r.out)+len(r.seg.tail); got != want {
		t.Errorf("pending = %d; want %d", got, want)
	}
	if len(r.seg.holes) != 2 {
		t.Fatalf("%d holes; want the region and its key", len(r.seg.holes))
	}
	region, key := r.seg.holes[0], r.seg.holes[1]
	if region.kind != holeRegion || region.pos != 0 || region.end != 2 || region.stop != len("*2\r\n$1\r\ny\r\n") {
		t.Errorf("region hole = %+v; want pos 0, end 2, stop at the MGET's end", region)
	}
	if key.pos != len("*2\r\n$1\r\ny\r\n") {
		t.Errorf("key hole at %d; want %d, behind the MGET's bytes", key.pos, len("*2\r\n$1\r\ny\r\n"))
	}

	// CLIENT REPLY OFF: nothing built is sent, and the holes left are computed but muted.
	r.mute()
	if len(r.out) != 0 || len(r.seg.tail) != 0 {
		t.Errorf("after mute: out %q, tail %q; want both empty", r.out, r.seg.tail)
	}
	for i, h := range r.seg.holes {
		if !h.mute || h.pos != 0 || h.kind == holeRegion && h.stop != 0 {
			t.Errorf("hole %d after mute = %+v; want muted at 0", i, h)
		}
	}
}
