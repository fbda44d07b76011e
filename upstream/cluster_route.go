package upstream

import (
	"bytes"
	"errors"
	"strconv"
	"sync"
	"time"

	"featcache/internal/resp"
)

// A Payload handed to Do is already cut into units, each with its slot, computed when its commands were appended:
// a command goes to the master of its first key's slot (a command without keys to the first master); a MULTI ...
// EXEC sequence travels whole, to the master of its first keyed command. The router never parses a payload. Commands for different masters are sent in parallel, one round trip each, and the replies are put back
// in request order, so a caller sees what one Redis would have answered. MOVED is followed (the map is patched and
// the command resent to the new master), ASK too (ASKING, then the command, on the target: a slot being migrated),
// TRYAGAIN (a multi-key command while its keys are split across a migration) is retried after a short pause, each
// at most maxRedirects times. Splitting multi-key commands across slots and fanning keyspace-wide commands out is
// the proxy's business: the router sends what it is given.
//
// A RESP3 client's commands travel between the HELLO 3 and HELLO 2 its payload holds (Payload.AppendHello). When
// they all go to one node the payload is sent as it is. Otherwise the HELLOs are not sent as they are: each
// node's part is wrapped in HELLO 3 ... HELLO 2 around its RESP3 commands (HELLO 3 before ASKING, which Redis
// applies to the next command only), and each of the payload's HELLO 3 is answered with the reply of one the
// router sent for the commands after it: a refusal if any node refused, else a node's map. Its HELLO 2 is
// answered +OK, which is not Redis's reply: nothing reads it.

// route is the scratch state of one Do: the payload's units, the groups each round sends, and the calls their
// replies arrived in. Routes are pooled.
type route struct {
	fwd    bool            // forwarded commands: waited for as Pool.Forward does, not within the timeout
	cancel <-chan struct{} // the caller's Call.Cancel, for every call of the route
	units  []unit
	groups []group
	calls  []*Call // every call used by this Do, released at the end
	idx    []int
	out    []byte
	ends   []int
}

// unit is what must go to one node together: one command, or a whole MULTI ... EXEC.
type unit struct {
	start, end int  // its bytes in the payload
	frames     int  // its reply frames
	slot       int  // the slot it is routed by, NoSlot for none
	tx         bool // a MULTI ... EXEC: sent again whole after a redirect
	hello      bool // a HELLO of the payload (Payload.AppendHello): not routed, answered by assemble
	resp3      bool // runs in RESP3 (for a HELLO: the units after it do)
	writes     bool // it may write: its group travels on the node's shared connections for writes
	helloAt    int  // the frame in src of the HELLO 3 send wrapped it in; -1 when none did
	nd         *clusterNode
	asking     bool // an ASK redirect: send ASKING first
	tries      int

	src   *Call // where its frames are once sent
	first int   // the index of its first frame in src
	err   error // its node failed before all its frames arrived
}

// group is the part of a round that goes to one node.
type group struct {
	nd      *clusterNode
	payload []byte
	frames  int
	call    *Call
	units   []int
	err     error
	resp3   bool // the payload so far leaves its connection in RESP3
	hello   int  // the frame of its last HELLO 3
	writes  bool // one of its units may write (Pool.route)
}

var (
	routePool = sync.Pool{New: func() any { return &route{} }}
	callPool  = sync.Pool{New: func() any { return NewCall() }}
)

var askingCmd = resp.AppendCommand(nil, "ASKING")

// Do sends p's commands to the masters of their slots and stores their p.Len() reply frames in call in request
// order (see the comment at the top of this file for redirects). Unlike Pool.Do, a node that fails does not cut
// the replies short: each command it did not answer gets a failure frame ("-ERR featcache upstream unavailable:
// ..." or "-ERR featcache upstream timeout: ..."), so that the other masters' replies still reach their clients,
// and call.Err is the first such failure. p may be reused as soon as Do returns. Each node's part is waited for
// as Pool.Do waits (featcache's own reads, within the timeout).
func (cl *Cluster) Do(call *Call, p *Payload) error { return cl.do(call, p, false) }

// Forward is Do for commands forwarded for clients: each node's part is waited for as Pool.Forward waits (as long
// as Redis takes, or the command timeout).
func (cl *Cluster) Forward(call *Call, p *Payload) error { return cl.do(call, p, true) }

func (cl *Cluster) do(call *Call, p *Payload, fwd bool) error {
	n := p.Len()
	call.reset(n)
	if n == 0 {
		return nil
	}
	payload := p.Bytes()
	r := routePool.Get().(*route)
	defer r.release()
	r.fwd, r.cancel = fwd, call.Cancel
	r.plan(p)
	m := cl.smap.Load()
	first := -1
	for i := range r.units {
		if u := &r.units[i]; !u.hello {
			u.nd = m.node(u.slot)
			if first < 0 {
				first = i
			}
		}
	}
	if first < 0 {
		// Nothing but HELLOs: they are sent as commands of their own, to the first master.
		first = 0
		for i := range r.units {
			r.units[i].hello, r.units[i].nd = false, m.node(NoSlot)
		}
	}
	if r.units[first].nd == nil {
		err := ErrNoClusterNode
		for i := 0; i < n; i++ {
			call.Replies = failureFrame(call.Replies, err)
			call.Ends = append(call.Ends, len(call.Replies))
		}
		call.Err = err
		return err
	}
	// Most payloads (a single miss, a client's pipeline of keys that share a hash tag) go to one master: send
	// the payload as it is, and return its frames where they arrived unless one of them asks for a redirect.
	if r.oneNode(first) {
		nd := r.units[first].nd
		err := nd.pool.route(call, payload, n, fwd, p.Writes())
		if err == nil && !hasRedirect(call) {
			return nil
		}
		if err != nil {
			cl.refreshSoon()
		}
		r.attribute(call, 0, len(r.units), err)
	} else {
		r.idx = r.idx[:0]
		for i := range r.units {
			if !r.units[i].hello {
				r.idx = append(r.idx, i)
			}
		}
		r.send(cl, payload, r.idx)
	}
	pause := tryAgainPause
	for round := 0; round < maxRedirects; round++ {
		again, wait := r.redirects(cl)
		if len(again) == 0 {
			break
		}
		if wait {
			time.Sleep(pause)
			pause *= 2
		}
		r.send(cl, payload, again)
	}
	return r.assemble(call)
}

// oneNode reports whether every unit goes to the same node as units[first], the first that is not a HELLO.
func (r *route) oneNode(first int) bool {
	nd := r.units[first].nd
	for i := first + 1; i < len(r.units); i++ {
		if u := &r.units[i]; !u.hello && u.nd != nd {
			return false
		}
	}
	return true
}

// plan takes p's units, which the payload recorded as its commands were appended.
func (r *route) plan(p *Payload) {
	r.units = r.units[:0]
	start := 0
	for _, s := range p.units {
		r.units = append(r.units, unit{start: start, end: s.end, frames: s.frames, slot: s.slot, tx: s.tx,
			hello: s.hello, resp3: s.resp3, writes: s.writes, helloAt: -1})
		start = s.end
	}
}

// attribute records that units [from, to), sent together in this order, have their frames in call.
func (r *route) attribute(call *Call, from, to int, err error) {
	f := 0
	for i := from; i < to; i++ {
		u := &r.units[i]
		u.src, u.first, u.err = call, f, nil
		if call.Len() < f+u.frames {
			u.err = err
			if u.err == nil {
				u.err = resp.ErrBadFrame
			}
		}
		f += u.frames
	}
}

// send sends the units idx, grouped by node, one round trip per node, in parallel.
func (r *route) send(cl *Cluster, payload []byte, idx []int) {
	r.groups = r.groups[:0]
	for _, i := range idx {
		u := &r.units[i]
		g := r.group(u.nd)
		if u.resp3 != g.resp3 {
			g.switchProto(u.resp3)
		}
		u.helloAt = -1
		if u.resp3 {
			u.helloAt = g.hello
		}
		if u.asking {
			g.payload = append(g.payload, askingCmd...)
			g.frames++
		}
		u.first = g.frames
		g.payload = append(g.payload, payload[u.start:u.end]...)
		g.frames += u.frames
		g.units = append(g.units, i)
		g.writes = g.writes || u.writes
	}
	for gi := range r.groups {
		if g := &r.groups[gi]; g.resp3 {
			g.switchProto(false) // a shared connection is left in RESP2
		}
	}
	var wg sync.WaitGroup
	for gi := 1; gi < len(r.groups); gi++ {
		wg.Add(1)
		go func(g *group) {
			defer wg.Done()
			g.err = g.nd.pool.route(g.call, g.payload, g.frames, r.fwd, g.writes)
		}(&r.groups[gi])
	}
	g0 := &r.groups[0]
	g0.err = g0.nd.pool.route(g0.call, g0.payload, g0.frames, r.fwd, g0.writes)
	wg.Wait()
	for gi := range r.groups {
		g := &r.groups[gi]
		if g.err != nil {
			cl.refreshSoon()
		}
		for _, i := range g.units {
			u := &r.units[i]
			u.src, u.err = g.call, nil
			if g.call.Len() < u.first+u.frames {
				u.err = g.err
				if u.err == nil {
					u.err = resp.ErrBadFrame
				}
			}
		}
	}
}

// switchProto appends HELLO 3 (resp3) or HELLO 2 to the group's payload.
func (g *group) switchProto(resp3 bool) {
	if resp3 {
		g.payload = append(g.payload, hello3Cmd...)
		g.hello = g.frames
	} else {
		g.payload = append(g.payload, hello2Cmd...)
	}
	g.frames++
	g.resp3 = resp3
}

// group returns the group of this round for nd, starting one with a fresh call.
func (r *route) group(nd *clusterNode) *group {
	for i := range r.groups {
		if r.groups[i].nd == nd {
			return &r.groups[i]
		}
	}
	call := callPool.Get().(*Call)
	call.Cancel = r.cancel
	r.calls = append(r.calls, call)
	if len(r.groups) < cap(r.groups) {
		// Reuse the buffers a group of an earlier Do left in this route.
		r.groups = r.groups[:len(r.groups)+1]
		g := &r.groups[len(r.groups)-1]
		g.nd, g.payload, g.frames, g.call, g.units, g.err = nd, g.payload[:0], 0, call, g.units[:0], nil
		g.resp3, g.hello, g.writes = false, 0, false
		return g
	}
	r.groups = append(r.groups, group{nd: nd, call: call})
	return &r.groups[len(r.groups)-1]
}

// redirects finds the units whose replies ask to be sent again (MOVED, ASK, TRYAGAIN), points them at their new
// node, and returns them; wait is true when one of them was TRYAGAIN.
func (r *route) redirects(cl *Cluster) (again []int, wait bool) {
	r.idx = r.idx[:0]
	for i := range r.units {
		u := &r.units[i]
		if u.hello || u.err != nil || u.tries >= maxRedirects {
			continue
		}
		kind, slot, addr := unitRedirect(u)
		switch kind {
		case redirectNone:
			if u.frames == 1 && isClusterDown(u.src.Frame(u.first)) {
				cl.refreshSoon()
			}
			continue
		case redirectMoved:
			u.nd, u.asking = cl.moved(slot, addr, u.nd), false
			cl.moves.Add(1)
		case redirectAsk:
			u.nd, u.asking = cl.askTarget(addr, u.nd), true
			cl.asks.Add(1)
		case redirectTryAgain:
			wait = true
			cl.tryAgains.Add(1)
		}
		u.tries++
		r.idx = append(r.idx, i)
	}
	return r.idx, wait
}

type redirectKind uint8

const (
	redirectNone redirectKind = iota
	redirectMoved
	redirectAsk
	redirectTryAgain
)

// unitRedirect reads whether a unit's replies ask for it to be sent again. A transaction is sent again whole when
// EXEC itself was redirected, or when it aborted because a queued command was (MOVED or ASK at queue time make
// Redis discard the transaction at EXEC).
func unitRedirect(u *unit) (redirectKind, int, string) {
	if u.frames > 1 && !u.tx {
		return redirectNone, 0, ""
	}
	last := u.src.Frame(u.first + u.frames - 1)
	if k, slot, addr := parseRedirect(last); k != redirectNone || u.frames == 1 {
		return k, slot, addr
	}
	if !bytes.HasPrefix(last, []byte("-EXECABORT")) {
		return redirectNone, 0, ""
	}
	for j := u.first; j < u.first+u.frames-1; j++ {
		if k, slot, addr := parseRedirect(u.src.Frame(j)); k == redirectMoved || k == redirectAsk {
			return k, slot, addr
		}
	}
	return redirectNone, 0, ""
}

// parseRedirect reads "-MOVED slot host:port", "-ASK slot host:port" and "-TRYAGAIN ...".
func parseRedirect(f []byte) (redirectKind, int, string) {
	if len(f) < 5 || f[0] != '-' {
		return redirectNone, 0, ""
	}
	var kind redirectKind
	var rest []byte
	switch {
	case bytes.HasPrefix(f, []byte("-MOVED ")):
		kind, rest = redirectMoved, f[7:]
	case bytes.HasPrefix(f, []byte("-ASK ")):
		kind, rest = redirectAsk, f[5:]
	case bytes.HasPrefix(f, []byte("-TRYAGAIN")):
		return redirectTryAgain, 0, ""
	default:
		return redirectNone, 0, ""
	}
	rest = bytes.TrimRight(rest, "\r\n")
	sp := bytes.IndexByte(rest, ' ')
	if sp < 0 {
		return redirectNone, 0, ""
	}
	slot, err := strconv.Atoi(string(rest[:sp]))
	if err != nil || slot < 0 || slot >= SlotCount {
		return redirectNone, 0, ""
	}
	return kind, slot, string(rest[sp+1:])
}

// hasRedirect reports whether any frame of call is a redirect (MOVED, ASK, TRYAGAIN): only then does Do look at
// units one by one.
func hasRedirect(call *Call) bool {
	for i := 0; i < call.Len(); i++ {
		f := call.Frame(i)
		if len(f) > 4 && f[0] == '-' && (f[1] == 'M' || f[1] == 'A' || f[1] == 'T' || f[1] == 'E' || f[1] == 'C') {
			if k, _, _ := parseRedirect(f); k != redirectNone {
				return true
			}
			if bytes.HasPrefix(f, []byte("-EXECABORT")) || isClusterDown(f) {
				return true
			}
		}
	}
	return false
}

func isClusterDown(f []byte) bool { return bytes.HasPrefix(f, []byte("-CLUSTERDOWN")) }

// assemble writes every unit's frames into call in request order, failure frames for those that did not arrive,
// and returns the first failure.
func (r *route) assemble(call *Call) error {
	out, ends := r.out[:0], r.ends[:0]
	var first error
	asked := false
	for i := range r.units {
		u := &r.units[i]
		asked = asked || u.asking
		if u.hello {
			out = r.helloReply(out, i)
			ends = append(ends, len(out))
			continue
		}
		for j := 0; j < u.frames; j++ {
			if k := u.first + j; k < u.src.Len() {
				out = append(out, u.src.Frame(k)...)
			} else {
				out = failureFrame(out, u.err)
			}
			ends = append(ends, len(out))
		}
		if u.err != nil && first == nil {
			first = u.err
		}
	}
	// The call takes the assembled buffers; the route keeps the call's old ones for its next use.
	call.Replies, r.out = out, call.Replies[:0]
	call.Ends, r.ends = ends, call.Ends[:0]
	call.Err = first
	call.Asked = asked
	return first
}

// helloReply appends the reply to the payload's HELLO at unit i (see the comment at the top of this file): for a
// HELLO 3, the first refusal of a HELLO 3 the router sent for the units after it, else the reply to the payload's
// own HELLO when it was sent as it is, else a map a node answered; for a HELLO 2, its reply when it was sent, else
// +OK.
func (r *route) helloReply(dst []byte, i int) []byte {
	h := &r.units[i]
	var accepted []byte
	var failed error
	for j := i + 1; j < len(r.units) && h.resp3 && !r.units[j].hello; j++ {
		u := &r.units[j]
		if failed == nil {
			failed = u.err
		}
		if u.helloAt < 0 || u.src == nil || u.helloAt >= u.src.Len() {
			continue
		}
		f := u.src.Frame(u.helloAt)
		if f[0] != resp.TypeMap {
			return append(dst, f...)
		}
		if accepted == nil {
			accepted = f
		}
	}
	switch {
	case h.src != nil && h.first < h.src.Len():
		return append(dst, h.src.Frame(h.first)...)
	case !h.resp3:
		return append(dst, "+OK\r\n"...)
	case accepted != nil:
		return append(dst, accepted...)
	}
	// No node answered the commands after it: they have failure frames of their own.
	return failureFrame(dst, failed)
}

func (r *route) release() {
	r.cancel = nil
	for i, c := range r.calls {
		c.reset(0)
		c.Cancel = nil
		callPool.Put(c)
		r.calls[i] = nil
	}
	r.calls = r.calls[:0]
	for i := range r.units {
		r.units[i] = unit{}
	}
	for i := range r.groups {
		r.groups[i].nd, r.groups[i].call = nil, nil
		if cap(r.groups[i].payload) > maxKeptBuf {
			r.groups[i].payload = nil
		}
	}
	r.units, r.groups = r.units[:0], r.groups[:0]
	if cap(r.out) > maxKeptBuf {
		r.out = nil
	}
	routePool.Put(r)
}

// failureFrame appends the error reply that stands for a command whose node failed: the same text the proxy gives
// such failures, which it recognises as an upstream failure (serve_stale applies).
func failureFrame(dst []byte, err error) []byte {
	msg := "ERR featcache upstream unavailable: "
	switch {
	case errors.Is(err, ErrTimeout):
		msg = "ERR featcache upstream timeout: Redis did not answer in time (the command may have been applied)"
	case errors.Is(err, ErrCommandTimeout):
		msg = "ERR featcache upstream timeout: Redis did not answer within upstream.command_timeout (the command " +
			"may have been applied)"
	case err != nil:
		msg += err.Error()
	default:
		msg += "no reply"
	}
	dst = append(dst, '-')
	for i := 0; i < len(msg); i++ {
		if c := msg[i]; c != '\r' && c != '\n' {
			dst = append(dst, c)
		}
	}
	return append(dst, '\r', '\n')
}
