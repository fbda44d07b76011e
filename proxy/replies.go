package proxy

// replies is where a batch's replies are built, in the order of the client's commands. A reply known now (a hit,
// featcache's own answer) is bytes: appended to out while no reply before it waits, else to the segment's tail. A
// reply that waits for the segment's upstream round trip is a hole in the tail (segment.addHole), filled once the
// round trip is over, when client.assemble appends the tail and the holes, in order, to out. The request path goes
// through these methods rather than to the buffers, so that out, tail and holes always hold the batch's replies in
// the client's order.
//
// A client embeds its replies: c.out and c.seg are its fields.
type replies struct {
	out []byte  // replies ready to be written to the client, in order (client.flush)
	seg segment // the batch part waiting for its upstream round trip; its tail and holes hold what follows a hole
}

// buf returns the buffer a reply known now is appended to: out while no hole precedes it, else the segment's
// tail. It is valid until the next hole is added.
func (r *replies) buf() *[]byte { return r.seg.buf(&r.out) }

// add appends a reply known now.
func (r *replies) add(frame []byte) {
	buf := r.buf()
	*buf = append(*buf, frame...)
}

// pending is the size of the batch's replies built and not written yet, holes aside.
func (r *replies) pending() int { return len(r.out) + len(r.seg.tail) }

// region tracks an MGET's reply while it is being built: where it started and whether it has holes.
type region struct {
	outStart  int // start in out, when no hole preceded the MGET
	tailStart int // start in tail otherwise
	inOut     bool
	hole      int // index of its holeRegion, -1 until the first miss
}

// openMget opens the reply of an MGET whose keys may leave holes: one that fails is then replaced whole by an
// error (see holdMget).
func (r *replies) openMget() region {
	if len(r.seg.holes) == 0 {
		return region{outStart: len(r.out), inOut: true, hole: -1}
	}
	return region{tailStart: len(r.seg.tail), hole: -1}
}

// holdMget makes sure the MGET's reply so far sits in the tail behind a holeRegion, so that it can be replaced by
// an error when one of its keys fails. It is called before the MGET's first hole is added.
func (r *replies) holdMget(rg *region) {
	s := &r.seg
	if rg.hole >= 0 {
		return
	}
	if rg.inOut {
		// No hole precedes this MGET, so tail is empty: move its bytes so far from out to tail.
		s.tail = append(s.tail[:0], r.out[rg.outStart:]...)
		r.out = r.out[:rg.outStart]
		rg.tailStart = 0
	}
	rg.hole = len(s.holes)
	s.holes = append(s.holes, hole{kind: holeRegion, pos: rg.tailStart})
}

// closeMget closes the MGET's reply: its holeRegion, if it has one, ends here.
func (r *replies) closeMget(rg region) {
	if rg.hole < 0 {
		return
	}
	h := &r.seg.holes[rg.hole]
	h.end = len(r.seg.holes)
	h.stop = len(r.seg.tail)
}

// mute drops the replies built since the last flush, and marks the holes left to fill as computed but not sent:
// CLIENT REPLY OFF or SKIP (client.execMuted).
func (r *replies) mute() {
	r.out = r.out[:0]
	r.seg.tail = r.seg.tail[:0]
	for i := range r.seg.holes {
		h := &r.seg.holes[i]
		h.mute, h.pos = true, 0
		if h.kind == holeRegion {
			h.stop = 0
		}
	}
}
