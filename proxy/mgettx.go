package proxy

import (
	"bytes"
	"strings"
	"time"

	"featcache/internal/resp"
	"featcache/localcache"
	"featcache/upstream"
)

// An MGET that is not answered from memory whole is answered from one transaction, so that its reply is one Redis
// could have given at a single instant, as Redis's own MGET is: MULTI, a GET of each of its keys (and a PTTL
// after each key whose fill it leads), EXEC. Hits are not served next to values fetched later (a write between
// the two would make a vector that never existed), nor are the misses fetched by GET/PTTL pairs, between which
// Redis may run other clients' commands when it reads a large pipeline in pieces.
//
// The transaction leads a fill for every cached key of the MGET, hits included, so that the entries it leaves
// were all read at its instant. When another read leads the fill of one of its keys, its own fills are completed
// (their waiters answered) but store nothing: storing them would pair, in memory, values read at two instants. The
// entries of its keys that were fresh (or not looked up: the MGET stops looking after its first miss) stay if
// they hold what the transaction read (localcache.Result.KeepSame), and are dropped if not: an entry that differs
// is older than the MGET's answer (a write whose invalidation has not arrived yet, or TTL-only freshness), and a
// later read served from it would go back in time. The entries of the others (missing, soft-stale, unverified) are
// dropped (localcache.Result.Drop). What the transaction read of the keys whose fill another read leads is handed
// to the cache before the MGET is answered (localcache.Cache.Answered): that fill may have read Redis before the
// transaction did, so it stores nothing that differs (its waiters still get what it read), later reads do not
// join it, and an entry that differs is dropped.

// mgetName is the command rereadTxs sends in place of a transaction Redis refused for want of memory.
var mgetName = []byte("MGET")

// mgetKey is one key of an MGET as its lookup found it.
type mgetKey struct {
	key    []byte             // the physical key; points into the client's read buffer or batch arena
	lp     *localcache.Policy // nil: no policy caches the key
	pc     *policyCounters
	looked bool             // it was looked up (the lookups stop at the first miss)
	state  localcache.State // what its lookup served
	age    time.Duration
}

// mgetTx is an MGET answered from one transaction.
type mgetTx struct {
	keys   []txKey // its distinct keys, in order of first appearance
	pos    []int   // per MGET argument, its key in keys
	frame  int     // the reply frame of MULTI; one +QUEUED per command follows, then EXEC's
	cmds   int     // commands between MULTI and EXEC
	alone  bool    // the transaction leads the fill of every cached key: its entries may be stored
	parsed bool
	elems  [][]byte // EXEC's replies, once parsed
	err    error    // why the transaction gave no replies, once parsed
	// pttlRefused is the refusal of a PTTL the transaction queued (an ACL user without +pttl, a renamed command),
	// copied, once parsed: Redis would answer the MGET itself, so rereadTxs reads it with a plain MGET.
	pttlRefused []byte
	// txRefused: the user may not run MULTI or EXEC (an ACL without @transaction), which Redis does not need
	// for the MGET itself: rereadTxs reads it with a plain MGET, as for OOM.
	txRefused bool
}

// txKey is one distinct key of an mgetTx.
type txKey struct {
	key  []byte
	lp   *localcache.Policy // nil: no policy caches the key
	pc   *policyCounters
	fill *localcache.Fill // the fill of the key this MGET leads, or nil
	get  int              // the index of its GET's reply in EXEC's; PTTL's follows when fill is set
	keep bool             // unless the MGET stores its entries, the key's entry stays: it was fresh, or not looked up
}

// addMgetTx adds the transaction answering an MGET of keys to the payload, and its hole to the replies.
func (s *segment) addMgetTx(cache *localcache.Cache, keys []mgetKey) {
	s.upstream2()
	tx := &mgetTx{pos: make([]int, len(keys)), frame: s.req.Len(), alone: true}
	var index map[string]int // distinct keys, for a long MGET
	if len(keys) > 16 {
		index = make(map[string]int, len(keys))
	}
	s.req.Multi()
	for i := range keys {
		k := &keys[i]
		at := -1
		if index != nil {
			if j, ok := index[string(k.key)]; ok {
				at = j
			}
		} else {
			for j := range tx.keys {
				if bytes.Equal(tx.keys[j].key, k.key) {
					at = j
					break
				}
			}
		}
		if at < 0 {
			at = len(tx.keys)
			if index != nil {
				index[string(k.key)] = at
			}
			tk := txKey{key: k.key, lp: k.lp, pc: k.pc, get: tx.cmds, keep: !k.looked || k.state == localcache.StateFresh}
			s.req.AppendKey("GET", k.key)
			tx.cmds++
			if k.lp != nil {
				f, leader := cache.Acquire(k.key)
				if leader {
					tk.fill = f
					s.fetches = append(s.fetches, fetchItem{fill: f, lp: k.lp, tx: tx, txKey: at})
					s.req.AppendKey("PTTL", k.key)
					tx.cmds++
				} else {
					tx.alone = false // another read leads it: its value is of another instant
				}
			}
			tx.keys = append(tx.keys, tk)
		}
		tx.pos[i] = at
	}
	s.req.Exec()
	s.addHole(hole{kind: holeMgetTx, tx: tx})
}

// parseTx reads the replies of an MGET's transaction once: EXEC's array, or why there is none.
func (c *client) parseTx(tx *mgetTx) {
	if tx.parsed {
		return
	}
	tx.parsed = true
	exec := tx.frame + tx.cmds + 1
	if exec >= c.call.Len() {
		tx.err = c.seg.doErr
		if tx.err == nil {
			tx.err = errInternal
		}
		return
	}
	if f := c.call.Frame(exec); f[0] == resp.TypeArray {
		elems, err := resp.ArrayElements(f, tx.elems[:0])
		if err == nil && len(elems) == tx.cmds {
			tx.elems = elems
			return
		}
		tx.err = errInternal
		return
	}
	// No transaction ran: the first error says why (MULTI's, LOADING say, or a command's refused when queued, BUSY
	// say), else EXEC's own.
	for i := tx.frame; i <= exec; i++ {
		if f := c.call.Frame(i); f[0] == resp.TypeError {
			// Copied (ParseError keeps no part of it): the frame is in the reply buffer, which the client's next
			// request reuses, while waiters of the transaction's fills may still turn this error into their replies.
			tx.err = resp.ParseError(f)
			switch {
			case !upstream.Refused(f):
			case tx.queuedPTTL(i - tx.frame - 1):
				tx.pttlRefused = bytes.Clone(f)
			case i == tx.frame || i == exec:
				// MULTI refused (the GETs then ran alone, EXEC answers NOPERM or "without MULTI"), or EXEC
				// refused (Redis discards the transaction: -EXECABORT ... NOPERM).
				tx.txRefused = true
			}
			return
		}
	}
	tx.err = errInternal
}

// queuedPTTL reports whether the transaction's command at index i (0 for the first after MULTI) is a PTTL.
func (tx *mgetTx) queuedPTTL(i int) bool {
	for _, k := range tx.keys {
		if k.fill != nil && k.get+1 == i {
			return true
		}
	}
	return false
}

// rereadTxs reads again, in one more round trip, the MGETs whose transactions Redis refused where it would have
// answered the MGET itself:
//
//   - OOM: past maxmemory under noeviction (a feature store that must not lose data), Redis refuses every command
//     queued inside MULTI, reads included, yet answers a plain MGET. featcache answers from a plain MGET of the keys,
//     one instant as Redis's own, followed by a PTTL of each key whose fill the transaction leads. Its values are not
//     stored (tx.alone is cleared: KeepSame or Drop), so no entry pairs them with a TTL read at another instant.
//   - TRYAGAIN: Redis Cluster refused the transaction because its keys' slot is being migrated and they are split
//     between two masters (the router has retried meanwhile). Redis would answer TRYAGAIN; featcache answers from GET
//     and PTTL of each key. Such a reply is not one instant's, and its values are not stored: the exception to MGET's
//     atomicity, for the length of a migration.
//   - a PTTL refused (an ACL user without +pttl): Redis would answer the MGET, which featcache's user may run. It
//     answers from a plain MGET; its fills complete with the refusal as their PTTL, so nothing is stored, under
//     localcache.NotStoredTTLRefused.
//   - MULTI or EXEC refused (an ACL user without @transaction): read as for OOM, a plain MGET and the PTTLs, and
//     not stored.
//
// Other errors (BUSY, LOADING, a lost connection ...) are Redis's answer to the MGET too, and stand.
func (c *client) rereadTxs() {
	s := &c.seg
	var req upstream.Payload
	var txs []*mgetTx
	var whole []bool // per tx: read again with one MGET (OOM) rather than key by key (TRYAGAIN)
	for i := range s.holes {
		tx := s.holes[i].tx
		if tx == nil {
			continue
		}
		c.parseTx(tx)
		re, ok := tx.err.(resp.Error)
		if !ok {
			continue
		}
		switch {
		case strings.HasPrefix(string(re), "OOM "), tx.txRefused, tx.pttlRefused != nil:
			args := make([][]byte, 0, 1+len(tx.keys))
			args = append(args, mgetName)
			for _, k := range tx.keys {
				args = append(args, k.key)
			}
			req.AppendArgs(int(upstream.Slot(tx.keys[0].key)), args)
			for _, k := range tx.keys {
				if k.fill != nil && tx.pttlRefused == nil {
					req.AppendKey("PTTL", k.key)
				}
			}
			whole = append(whole, true)
		case c.srv.clustered() && strings.HasPrefix(string(re), "TRYAGAIN"):
			for _, k := range tx.keys {
				req.AppendFetch(k.key)
			}
			whole = append(whole, false)
		default:
			continue
		}
		txs = append(txs, tx)
	}
	if len(txs) == 0 {
		return
	}
	// A call of its own: the segment's replies are still being read. The frames it holds stay as long as the
	// transactions point into them.
	call := upstream.NewCall()
	err := c.srv.up.Do(call, &req)
	c.srv.stats.RoundTrips.Add(1)
	frame := 0
	for i, tx := range txs {
		n := 2 * len(tx.keys)
		if whole[i] {
			n = 1
			for _, k := range tx.keys {
				if k.fill != nil && tx.pttlRefused == nil {
					n++
				}
			}
		}
		at := frame
		frame += n
		if at+n > call.Len() {
			if err != nil {
				tx.err = err
			}
			continue
		}
		elems := make([][]byte, tx.cmds)
		if whole[i] {
			values, perr := resp.ArrayElements(call.Frame(at), nil)
			if perr != nil || len(values) != len(tx.keys) {
				if f := call.Frame(at); f[0] == resp.TypeError {
					tx.err = resp.ParseError(f) // Redis's answer to the MGET, for the client as from Redis
				}
				continue
			}
			at++
			for j, k := range tx.keys {
				elems[k.get] = values[j]
				switch {
				case k.fill == nil:
				case tx.pttlRefused != nil:
					elems[k.get+1] = tx.pttlRefused
				default:
					elems[k.get+1] = call.Frame(at)
					at++
				}
			}
			if tx.pttlRefused != nil {
				// One MGET, one instant: only the expiry is unknown, and completeTxFetch stores nothing for that
				// reason alone.
				tx.elems, tx.err = elems, nil
				continue
			}
		} else {
			for _, k := range tx.keys {
				elems[k.get] = call.Frame(at)
				if k.fill != nil {
					elems[k.get+1] = call.Frame(at + 1)
				}
				at += 2
			}
		}
		tx.elems, tx.err, tx.alone = elems, nil, false
	}
}

// completeTxFetch completes a fill an MGET's transaction leads, from its replies to the key's GET and PTTL.
func (c *client) completeTxFetch(it *fetchItem) {
	tx := it.tx
	c.parseTx(tx)
	res := localcache.Result{Err: tx.err}
	if tx.err == nil {
		k := &tx.keys[it.txKey]
		if f, err := upstream.ParseFetched(tx.elems[k.get], tx.elems[k.get+1]); err != nil {
			res.Err = err
		} else {
			f.Asked = c.call.Asked
			res = c.srv.fetchedResult(f)
			if !tx.alone && !f.Asked {
				res.KeepSame, res.Drop = k.keep, !k.keep
			}
		}
	}
	c.srv.cache.Complete(it.fill, res, it.lp)
	it.fill = nil
}

// answerJoined hands the cache what an MGET's transaction read of its cached keys whose fill another read leads
// (see addMgetTx): that fill, or the entry it stored already, may hold a value Redis read before the transaction,
// and the MGET is about to answer the newer one.
func (c *client) answerJoined(tx *mgetTx) {
	for i := range tx.keys {
		k := &tx.keys[i]
		if k.lp == nil || k.fill != nil {
			continue
		}
		// Copied: the cache keeps it until the fills it is handed to complete, and the frame is in the reply
		// buffer, which the client's next request reuses.
		var res localcache.Result
		switch v, isNil, ok := resp.BulkPayload(tx.elems[k.get]); {
		case !ok:
			res.Reply = bytes.Clone(tx.elems[k.get]) // WRONGTYPE: the key is of another type
		case isNil:
			res.Nil = true
		default:
			res.Value = bytes.Clone(v)
		}
		c.srv.cache.Answered(k.key, res)
	}
}

// emitMgetTx appends the reply of an MGET answered from a transaction: its GETs' values (nil for a key of another
// type, as MGET answers). When the transaction failed, serve-stale answers from the keys' entries if every key
// has one it may serve (each its own, so this reply is not one instant's), else the MGET gets the error. Each
// cached key's outcome is counted here.
func (c *client) emitMgetTx(dst []byte, h *hole) []byte {
	tx := h.tx
	c.parseTx(tx)
	if tx.err == nil {
		if !tx.alone {
			c.answerJoined(tx)
		}
		dst = resp.AppendArray(dst, len(tx.pos))
		for _, at := range tx.pos {
			if e := tx.elems[tx.keys[at].get]; e[0] == resp.TypeBulk && !bytes.Equal(e, nullBulk) {
				dst = append(dst, e...)
			} else {
				dst = append(dst, c.seg.null()...)
			}
		}
		for _, at := range tx.pos {
			if pc := tx.keys[at].pc; pc != nil {
				pc.results[resultMiss].Add(1)
			}
		}
		return dst
	}
	mark := len(dst)
	dst = resp.AppendArray(dst, len(tx.pos))
	now := c.clock()
	ages := make([]time.Duration, len(tx.pos))
	ok := true
	for i, at := range tx.pos {
		k := &tx.keys[at]
		var look localcache.Lookup
		if k.lp != nil && k.lp.ServeStale {
			dst, look = c.srv.cache.AppendGet(dst, k.key, k.lp, now, true)
		}
		if look.State == localcache.StateMiss {
			ok = false
			break
		}
		ages[i] = look.Age
	}
	for i, at := range tx.pos {
		switch pc := tx.keys[at].pc; {
		case pc == nil:
		case ok:
			pc.stale.observe(ages[i])
			pc.staleOnError.Add(1)
		default:
			pc.results[resultError].Add(1)
		}
	}
	if ok {
		return c.seg.to3(dst, mark, false)
	}
	c.srv.stats.Errors.Add(1)
	return resp.AppendError(dst[:mark], upstreamErrorText(tx.err))
}
