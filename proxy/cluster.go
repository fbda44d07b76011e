package proxy

import (
	"bytes"
	"math/rand/v2"
	"strconv"
	"time"

	"featcache/internal/resp"
	"featcache/upstream"
)

// In front of a Redis Cluster, featcache keeps its clients' view of one Redis. Most commands need nothing from
// this file: the upstream router sends each to the master of its keys, and a command whose keys span slots gets
// Redis's own CROSSSLOT error. The commands with a clusterRule (table.go) are the exceptions, run here:
//
//   - DEL, UNLINK, EXISTS, TOUCH and MSET across slots are split into one command per slot (keys in request order
//     within each), sent in the segment's one round trip (the router sends the masters their parts in parallel),
//     and their replies merged: integers summed, +OK when every part said +OK, the first error otherwise. As with
//     twemproxy and Envoy this is not atomic: another client may see some parts applied and not others, and a
//     failure of one master leaves the other parts applied.
//   - Keyspace-wide commands run on every master (fanOut) and their replies are merged per rule; SCAN walks the
//     masters one after the other with a cursor that says which (scan).
//
// Transactions, WATCH sessions, blocking commands and subscriptions are bound to one master (tx.go, pinned.go,
// blocking.go, pubsub.go): their keys must share a slot.

// crossSlotError is Redis Cluster's error for a command or a transaction whose keys are in different slots.
const crossSlotError = "CROSSSLOT Keys in request don't hash to the same slot"

// clusterRule says how a command runs in front of a Redis Cluster, where its keys, or the keyspace it covers, may
// be spread over several masters (cluster.go). Commands without a rule go to the master of their keys (the first
// master when they have none), as the router sends them; a command whose keys span slots then gets Redis's own
// CROSSSLOT error.
type clusterRule uint8

const (
	ruleNone clusterRule = iota
	// ruleSplitSum commands (DEL, UNLINK, EXISTS, TOUCH) are split into one command per slot of their keys; the
	// integer replies are summed.
	ruleSplitSum
	// ruleSplitOK commands (MSET) are split into one command per slot; the reply is +OK when every part's is.
	ruleSplitOK
	// ruleFanSum commands (DBSIZE) run on every master; the integer replies are summed.
	ruleFanSum
	// ruleFanConcat commands (KEYS) run on every master; the arrays are concatenated, master by master.
	ruleFanConcat
	// ruleFanRandom commands (RANDOMKEY) run on every master; one of the keys they return is picked at random.
	ruleFanRandom
	// ruleFanSame commands (FLUSHALL, FLUSHDB, SCRIPT LOAD and FLUSH, FUNCTION LOAD, DELETE, FLUSH and RESTORE)
	// run on every master, which should all answer alike: the first error if any, else the first reply.
	ruleFanSame
	// ruleFanAnd commands (SCRIPT EXISTS) run on every master; an element is 1 only where every master says 1.
	ruleFanAnd
	// ruleScan (SCAN) walks the masters one after the other, the cursor saying which one.
	ruleScan
)

// fans reports whether the rule runs the command on every master.
func (r clusterRule) fans() bool { return r >= ruleFanSum }

// clusterRules are the rules of the commands that have one.
var clusterRules = map[string]clusterRule{
	"del": ruleSplitSum, "unlink": ruleSplitSum, "exists": ruleSplitSum, "touch": ruleSplitSum,
	"mset":   ruleSplitOK,
	"dbsize": ruleFanSum, "keys": ruleFanConcat, "randomkey": ruleFanRandom,
	"flushall": ruleFanSame, "flushdb": ruleFanSame,
	"script|load": ruleFanSame, "script|flush": ruleFanSame, "script|exists": ruleFanAnd,
	"function|load": ruleFanSame, "function|delete": ruleFanSame, "function|flush": ruleFanSame,
	"function|restore": ruleFanSame,
	"scan":             ruleScan,
}

// commandSlot returns the slot of a command's keys, upstream.NoSlot when it has none; ok is false when they are
// in different slots.
func (c *client) commandSlot(args [][]byte, tc *command) (slot int, ok bool) {
	if tc == nil || tc.info == nil {
		return upstream.NoSlot, true
	}
	keys, _ := tc.info.Keys(args, c.seg.keys[:0])
	c.seg.keys = keys
	slot = upstream.NoSlot
	for i, k := range keys {
		s := int(upstream.Slot(k))
		if i == 0 {
			slot = s
		} else if s != slot {
			return slot, false
		}
	}
	return slot, true
}

// execCluster runs a command that has a cluster rule.
func (c *client) execCluster(cmd *resp.Command, tc *command) {
	switch {
	case tc.cluster == ruleScan:
		c.scan(cmd)
	case tc.cluster.fans():
		c.fanOut(cmd, tc)
	default:
		c.split(cmd, tc)
	}
}

// split sends a multi-key command whose keys are in several slots as one command per slot, in the current
// segment, and leaves a hole that merges their replies. A command whose keys share a slot, or whose arguments are
// not "keys (each with its values) to the end", is sent as it is.
func (c *client) split(cmd *resp.Command, tc *command) {
	args := cmd.Args
	idx, complete := tc.info.KeyIndexes(args, c.splitIdx[:0])
	c.splitIdx = idx
	width := 1
	if len(idx) > 1 {
		width = idx[1] - idx[0]
	}
	shaped := complete && len(idx) > 0 && width >= 1 && idx[0]+len(idx)*width == len(args)
	for j := 1; shaped && j < len(idx); j++ {
		shaped = idx[j] == idx[0]+j*width
	}
	if !shaped && tc.cluster == ruleSplitOK {
		// MSET with a key left without its value. One Redis answers the arity error; a cluster node checks the
		// slots first and would answer CROSSSLOT for keys of different slots. Nothing is applied either way.
		c.rejectReply(tc, "ERR wrong number of arguments for '"+tc.name+"' command")
		return
	}
	slots := c.splitSlots[:0]
	cross := false
	for j := 0; shaped && j < len(idx); j++ {
		slots = append(slots, int(upstream.Slot(args[idx[j]])))
		cross = cross || slots[j] != slots[0]
	}
	c.splitSlots = slots
	if !cross {
		if isWrite(tc) {
			c.write(cmd, tc)
		} else {
			c.forward(cmd, tc)
		}
		return
	}
	// One command per slot, in the order each slot first appears; the keys of a slot keep their order.
	s := &c.seg
	first, parts := s.req.Len(), 0
	sub := c.splitArgs[:0]
	for j := range idx {
		if slots[j] < 0 {
			continue // already sent with an earlier key of its slot
		}
		slot := slots[j]
		sub = append(sub[:0], args[:idx[0]]...)
		for k := j; k < len(idx); k++ {
			if slots[k] == slot {
				sub = append(sub, args[idx[k]:idx[k]+width]...)
				slots[k] = -1
			}
		}
		s.req.AppendArgs(slot, sub)
		parts++
	}
	clear(sub)
	c.splitArgs = sub[:0]
	c.srv.stats.Forwarded.Add(int64(parts))
	s.addHole(hole{kind: holeMerge, frame: first, parts: parts, rule: tc.cluster})
	s.forward = true
	if isWrite(tc) {
		s.writes = append(s.writes, pendingWrite{args: args, tc: tc})
		c.runSegment()
	} else if s.full() {
		c.runSegment()
	}
}

// appendMerged appends the merged reply of a split command's parts: their integers summed (ruleSplitSum), or +OK
// when every part said +OK (ruleSplitOK); the first error reply of a part otherwise, as it came.
func (c *client) appendMerged(dst []byte, h *hole) []byte {
	var sum int64
	for i := h.frame; i < h.frame+h.parts; i++ {
		if i >= c.call.Len() {
			c.srv.stats.Errors.Add(1)
			return resp.AppendError(dst, upstreamErrorText(c.seg.doErr))
		}
		f := c.call.Frame(i)
		switch {
		case f[0] == resp.TypeError:
			return append(dst, f...)
		case h.rule == ruleSplitSum && f[0] == resp.TypeInteger:
			n, ok := resp.IntegerValue(f)
			if !ok {
				return append(dst, f...)
			}
			sum += n
		case h.rule == ruleSplitOK && bytes.Equal(f, okReply):
		default:
			return append(dst, f...) // a reply of another shape than the rule expects: relayed
		}
	}
	if h.rule == ruleSplitOK {
		return append(dst, okReply...)
	}
	return resp.AppendInt(dst, sum)
}

// fanOut runs a keyspace-wide command on every master, in parallel, and merges the replies by the command's rule.
// What came before it in the pipeline is answered first; a write among them (FLUSHALL, FLUSHDB) flushes the local
// tier as it does in front of a single node.
//
// A FLUSHALL or FLUSHDB makes every master send its null invalidation; the clients with CLIENT TRACKING on get one,
// as from one Redis: the masters' nulls are held until the write has settled (every stream has delivered what the
// masters announced), and then one goes out for them all.
func (c *client) fanOut(cmd *resp.Command, tc *command) {
	c.runSegment()
	req := c.seg.request(cmd)
	if tc.after == afterFlush && c.srv.ctrack.active.Load() {
		// Released however fanOut ends: a hold left behind would keep every later null invalidation (a
		// tracking loss's included) from the tracking clients.
		c.srv.ctrack.holdFlushes()
		defer c.srv.ctrack.releaseFlushes()
	}
	start := time.Now()
	n, err := c.srv.up.Cluster().FanOut(c.call, tc.info, req)
	c.srv.metrics.observeUpstream(upForward, start)
	c.seg.req.Reset()
	c.srv.stats.Forwarded.Add(int64(max(n, 1)))
	if isWrite(tc) {
		c.afterWrite(cmd.Args, tc)
	}
	if n == 0 {
		c.srv.stats.Errors.Add(1)
		c.errorReply(upstreamErrorText(err))
		return
	}
	buf := c.replies.buf()
	*buf = c.appendFanned(*buf, tc.cluster, n)
}

// appendFanned merges the n replies of a fanned-out command in c.call. An error reply of any master is the reply
// (the first one), except for RANDOMKEY, which answers with a key whenever a master has one.
func (c *client) appendFanned(dst []byte, rule clusterRule, n int) []byte {
	var firstErr []byte
	for i := 0; i < n; i++ {
		if f := c.call.Frame(i); f[0] == resp.TypeError && firstErr == nil {
			firstErr = f
		}
	}
	switch rule {
	case ruleFanRandom:
		var keys [][]byte
		for i := 0; i < n; i++ {
			if f := c.call.Frame(i); f[0] == resp.TypeBulk && !bytes.Equal(f, nullBulk) {
				keys = append(keys, f)
			}
		}
		switch {
		case len(keys) > 0:
			return append(dst, keys[rand.IntN(len(keys))]...)
		case firstErr != nil:
			return append(dst, firstErr...)
		}
		return append(dst, c.seg.null()...)
	case ruleFanSame:
		if firstErr != nil {
			return append(dst, firstErr...)
		}
		return append(dst, c.call.Frame(0)...)
	}
	if firstErr != nil {
		return append(dst, firstErr...)
	}
	switch rule {
	case ruleFanSum:
		var sum int64
		for i := 0; i < n; i++ {
			f := c.call.Frame(i)
			v, ok := resp.IntegerValue(f)
			if !ok {
				return append(dst, f...)
			}
			sum += v
		}
		return resp.AppendInt(dst, sum)
	case ruleFanConcat:
		total := 0
		for i := 0; i < n; i++ {
			cnt, _, ok := resp.ArrayHeader(c.call.Frame(i))
			if !ok {
				return append(dst, c.call.Frame(i)...)
			}
			total += cnt
		}
		dst = resp.AppendArray(dst, total)
		for i := 0; i < n; i++ {
			_, body, _ := resp.ArrayHeader(c.call.Frame(i))
			dst = append(dst, body...)
		}
		return dst
	case ruleFanAnd:
		var and []bool
		for i := 0; i < n; i++ {
			elems, err := upstreamIntArray(c.call.Frame(i))
			if err != nil || i > 0 && len(elems) != len(and) {
				return append(dst, c.call.Frame(i)...)
			}
			if i == 0 {
				and = make([]bool, len(elems))
				for j := range and {
					and[j] = true
				}
			}
			for j, v := range elems {
				and[j] = and[j] && v == 1
			}
		}
		dst = resp.AppendArray(dst, len(and))
		for _, v := range and {
			if v {
				dst = resp.AppendInt(dst, 1)
			} else {
				dst = resp.AppendInt(dst, 0)
			}
		}
		return dst
	}
	return append(dst, c.call.Frame(0)...)
}

// upstreamIntArray reads an array of integer replies.
func upstreamIntArray(f []byte) ([]int64, error) {
	if _, _, ok := resp.ArrayHeader(f); !ok {
		return nil, errInternal
	}
	elems, err := resp.ArrayElements(f, nil)
	if err != nil {
		return nil, errInternal
	}
	out := make([]int64, 0, len(elems))
	for _, e := range elems {
		v, ok := resp.IntegerValue(e)
		if !ok {
			return nil, errInternal
		}
		out = append(out, v)
	}
	return out, nil
}

// SCAN walks the masters in the router's order (by the lowest slot each serves, which a failover does not change),
// each with its own cursor. featcache's cursor packs both: master index + node cursor * scanMasters. Cursor 0
// starts at the first master; when a master's cursor comes back 0 the next call starts the next master at 0, and
// after the last master the cursor is 0 again. SCAN's guarantee (a key present during the whole iteration is
// returned) holds while the slot map does not change; a key whose slot moves to a master already walked during
// the iteration may be missed, one moved to a master not yet walked may be returned twice.
const scanMasters = 1024

func (c *client) scan(cmd *resp.Command) {
	c.runSegment()
	if len(cmd.Args) < 2 {
		c.errorReply("ERR wrong number of arguments for 'scan' command")
		return
	}
	cl := c.srv.up.Cluster()
	cur, err := strconv.ParseUint(string(cmd.Args[1]), 10, 64)
	masters := uint64(cl.Masters())
	if err != nil || cur%scanMasters >= max(masters, 1) {
		c.errorReply("ERR invalid cursor")
		return
	}
	node, nodeCur := int(cur%scanMasters), cur/scanMasters
	args := append(c.splitArgs[:0], cmd.Args...)
	args[1] = strconv.AppendUint(nil, nodeCur, 10)
	c.seg.req.Reset()
	c.seg.req.AppendArgs(upstream.NoSlot, args) // SCAN goes to the master of its cursor, not of a slot
	clear(args)
	c.splitArgs = args[:0]
	start := time.Now()
	err = cl.DoMaster(c.call, node, c.seg.req.Bytes(), 1)
	c.srv.metrics.observeUpstream(upForward, start)
	c.seg.req.Reset()
	c.srv.stats.Forwarded.Add(1)
	if c.call.Len() < 1 {
		c.srv.stats.Errors.Add(1)
		c.errorReply(upstreamErrorText(err))
		return
	}
	f := c.call.Frame(0)
	// *2 $cursor <keys array>
	n, body, ok := resp.ArrayHeader(f)
	var next uint64
	if ok && n == 2 {
		var v []byte
		var isNil bool
		if v, isNil, ok = resp.BulkPayload(body); ok && !isNil {
			next, err = strconv.ParseUint(string(v), 10, 64)
			ok = err == nil && next < 1<<54
			body = body[bytes.IndexByte(body, '\n')+1+len(v)+2:]
		}
	}
	if !ok {
		c.rawReply(f) // an error (or a shape SCAN does not have): relayed
		return
	}
	var out uint64
	switch {
	case next != 0:
		out = next*scanMasters + uint64(node)
	case uint64(node)+1 < masters:
		out = uint64(node) + 1
	}
	buf := c.replies.buf()
	*buf = resp.AppendArray(*buf, 2)
	*buf = resp.AppendBulk(*buf, strconv.AppendUint(nil, out, 10))
	*buf = append(*buf, body...)
}
