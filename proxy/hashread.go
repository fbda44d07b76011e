package proxy

import (
	"bytes"
	"time"

	"featcache/config"
	"featcache/feast"
	"featcache/internal/resp"
	"featcache/localcache"
	"featcache/upstream"
)

// Cached hash reads: HGET, HMGET and HGETALL are answered from the local tier like GET, field by field. Each field
// follows its own policy: a field of a Feast feature view (config.Matcher.FieldPolicy) its view's, any other field
// its key's. Every reply is one Redis could have given at a single instant, as Redis's own HMGET and HGETALL are:
// it is answered from memory only when every field it needs was read by one fill (localcache.Lookup.Fill), at no
// upstream read and no allocation; otherwise the fill reads every field it needs, in the pipeline segment's round
// trip, and the reply comes from that read alone (never known fields next to fetched ones: a write between the two
// reads would make a feature vector that never existed). Feature views with max_event_age serve their features as
// missing (nil) when the row's event time ("_ts:<view>") is older.

// hashCmd is which hash read a command is.
type hashCmd uint8

const (
	hashGet hashCmd = iota
	hashMGet
	hashGetAll
)

func (c *client) readHGet(cmd *resp.Command)    { c.readHash(cmd, hashGet) }
func (c *client) readHMGet(cmd *resp.Command)   { c.readHash(cmd, hashMGet) }
func (c *client) readHGetAll(cmd *resp.Command) { c.readHash(cmd, hashGetAll) }

// hashRead is one hash read that waits for a fill: what the lookup knew, and what the fill reads.
type hashRead struct {
	cmd    hashCmd
	key    []byte
	fields [][]byte // the fields asked for (nil for HGETALL)
	fetch  [][]byte // the fields the fill reads: those and the event times they need (nil for HGETALL: all)
	// fieldTTL: the upstream has per-field expiry (HPTTL, Redis 7.4+): the fill reads each field's TTL too
	fieldTTL bool
	fill     *localcache.Fill
	ps       *policySet
	pol      *config.Policy
}

// eventTime is a feature view's row event time as one read saw it.
type eventTime struct {
	view  *config.FeatureView
	at    time.Time
	known bool   // the _ts field was read and parsed
	fill  uint32 // the fill that read it, when read from memory
}

// hashScratch is a client's reused space for hash lookups, so a fully cached read allocates nothing.
type hashScratch struct {
	pols  []*config.Policy     // each field's policy
	lps   []*localcache.Policy // and its local-tier form
	elems []byte               // reply elements known at lookup, concatenated in the entry's order
	spans []span               // each field's element in elems; start -1 when not known
	fetch [][]byte             // when not every field can be answered: what the fill reads
	times []eventTime
	fill  uint32 // the fill that read the fields served, when one did
	mixed bool   // fields served were read by different fills
	stale bool
	count *config.Policy // the policy the read is counted under (see countingPolicy)
	age   time.Duration  // the age of the oldest field served
}

// span is a field's reply element in hashScratch.elems.
type span struct{ start, end int }

// elem returns field i's reply element known at lookup, or nil.
func (hs *hashScratch) elem(i int) []byte {
	if s := hs.spans[i]; s.start >= 0 {
		return hs.elems[s.start:s.end]
	}
	return nil
}

// fieldPolicy returns a field's policy: its feature view's when the key is a Feast key and the field belongs to a
// configured view, else the key's.
func fieldPolicy(ps *policySet, keyPol *config.Policy, field []byte) (*config.Policy, *localcache.Policy) {
	if keyPol.Name == config.FeastKeyPolicy {
		if vp := ps.matcher.FieldPolicy(field); vp != nil {
			return vp, &ps.local[vp.Index]
		}
	}
	return keyPol, &ps.local[keyPol.Index]
}

// readHash answers a hash read from the local tier where it can, and starts one fill for the rest.
func (c *client) readHash(cmd *resp.Command, kind hashCmd) {
	ps, pol, key, ok := c.cachedKey(cmd)
	if !ok {
		return
	}
	args := cmd.Args
	var fields [][]byte
	switch kind {
	case hashGet:
		fields = args[2:3]
	case hashMGet:
		fields = args[2:]
	}
	now := c.clock()
	buf := c.replies.buf()
	served := false
	mark := len(*buf)
	if kind == hashGetAll {
		*buf, served = c.serveHashAll(*buf, key, ps, pol, now, false)
	} else if c.lookupFields(key, fields, ps, pol, now, false) {
		*buf = appendFieldsReply(*buf, kind, fields, c.hs.pols, c.hs.times, now, c.hs.elem)
		served = true
	}
	if served {
		*buf = c.seg.to3(*buf, mark, kind == hashGetAll)
	}
	pc := ps.counters[c.hs.count.Index]
	if served {
		if c.hs.stale {
			pc.stale.observe(c.hs.age)
			c.refreshHash(key, c.fetchFields(fields), kind == hashGetAll, ps, pol)
		} else {
			pc.hit.observe(c.hs.age)
		}
		return
	}
	c.fillHash(kind, key, fields, ps, pol, pc)
}

// fillHash joins or starts the fill of a hash read that memory could not answer, and leaves a hole for its reply.
func (c *client) fillHash(kind hashCmd, key []byte, fields [][]byte, ps *policySet, pol *config.Policy, pc *policyCounters) {
	hr := &hashRead{cmd: kind, key: bytes.Clone(key), ps: ps, pol: pol, fieldTTL: c.srv.tbl.Load().fieldTTL}
	if kind != hashGetAll {
		hr.fields = cloneAll(fields)
		hr.fetch = cloneAll(c.fetchFields(fields))
	}
	f, leader := c.srv.cache.AcquireHash(hr.key, localcache.HashFillID(hr.fetch, kind == hashGetAll))
	hr.fill = f
	if leader {
		// Look again inside the single flight, as addFill does: a fill of these fields may have stored them and
		// ended between the lookup and AcquireHash, and what it read must not cost a second upstream read.
		if fresh, age := c.srv.freshHash(hr, c.clock()); fresh != nil {
			c.srv.cache.CompleteHash(f, localcache.Result{NoStore: true, Hash: fresh}, fresh)
			buf := c.replies.buf()
			*buf = c.emitHashRead(*buf, &hole{kind: holeHash, hash: hr, fill: f, pc: pc})
			pc.hit.observe(age)
			return
		}
		c.seg.upstream2()
		c.seg.fetches = append(c.seg.fetches, fetchItem{fill: f, frame: c.seg.req.Len(), hash: hr})
		c.seg.req.AppendHashFetch(hr.key, hr.fetch, kind == hashGetAll, hr.fieldTTL)
	}
	c.seg.addHole(hole{kind: holeHash, hash: hr, fill: f, pc: pc})
}

// lookupFields looks fields of key up. It reports whether all can be answered now, from one instant: every field,
// and the event time of each feature view with max_event_age they belong to, is cached and servable, and all were
// read by one fill. Then their reply elements are in c.hs (elems, spans). allowDead: serve_stale after an
// upstream failure, which answers from what it has, read by one fill or not.
func (c *client) lookupFields(key []byte, fields [][]byte, ps *policySet, pol *config.Policy, now time.Time, allowDead bool) bool {
	hs := &c.hs
	hs.elems, hs.spans, hs.times, hs.stale = hs.elems[:0], hs.spans[:0], hs.times[:0], false
	hs.pols, hs.lps, hs.age, hs.fill, hs.mixed = hs.pols[:0], hs.lps[:0], 0, 0, false
	for _, f := range fields {
		fp, flp := fieldPolicy(ps, pol, f)
		hs.pols, hs.lps, hs.spans = append(hs.pols, fp), append(hs.lps, flp), append(hs.spans, span{-1, -1})
	}
	hs.count = countingPolicy(pol, hs.pols)
	c.srv.cache.LookupHash(key, now, func(e localcache.HashEntry) {
		e.Fields(fields, func(i int) *localcache.Policy { return hs.lps[i] }, allowDead,
			func(i int, v []byte, missing bool, lk localcache.Lookup) {
				if lk.State == localcache.StateMiss {
					return
				}
				hs.stale = hs.stale || lk.State == localcache.StateStale || lk.State == localcache.StateUnverified
				hs.age = max(hs.age, lk.Age)
				hs.sameFill(lk.Fill)
				start := len(hs.elems)
				if missing {
					hs.elems = append(hs.elems, nullBulk...)
				} else {
					hs.elems = resp.AppendBulk(hs.elems, v)
				}
				hs.spans[i] = span{start, len(hs.elems)}
			})
		for i, f := range fields {
			if hs.spans[i].start >= 0 && needsEventTime(hs.pols[i], f) {
				hs.times = noteEventTime(hs.times, e, hs.pols[i].View, hs.lps[i], allowDead)
			}
		}
	})
	for i := range fields {
		if hs.spans[i].start < 0 {
			return false
		}
	}
	for _, et := range hs.times {
		if !et.known {
			return false
		}
		hs.sameFill(et.fill)
	}
	return !hs.mixed || allowDead
}

// sameFill notes the fill that read a field served: fields of several fills are not served together.
func (hs *hashScratch) sameFill(fill uint32) {
	switch hs.fill {
	case 0:
		hs.fill = fill
	case fill:
	default:
		hs.mixed = true
	}
}

// fetchFields returns what a fill of fields reads: each field once, and the event time of each feature view with
// max_event_age a field belongs to. It needs the fields' policies in c.hs (lookupFields); the slice is scratch.
func (c *client) fetchFields(fields [][]byte) [][]byte {
	hs := &c.hs
	hs.fetch = hs.fetch[:0]
	for i, f := range fields {
		hs.fetch = appendUnique(hs.fetch, f)
		if fp := hs.pols[i]; needsEventTime(fp, f) {
			hs.fetch = appendUnique(hs.fetch, []byte(fp.View.EventTimeField))
		}
	}
	return hs.fetch
}

// countingPolicy returns the policy a hash read of fields with policies pols is counted under, in
// featcache_requests_total and featcache_served_age_seconds: the feature view's when every field belongs to one
// view (Feast reads one view's features and its event time per HMGET), else the key's.
func countingPolicy(keyPol *config.Policy, pols []*config.Policy) *config.Policy {
	if len(pols) == 0 {
		return keyPol
	}
	for _, p := range pols[1:] {
		if p != pols[0] {
			return keyPol
		}
	}
	return pols[0]
}

// needsEventTime reports whether field is a feature of a view with max_event_age (the row's event time decides
// whether it is served).
func needsEventTime(fp *config.Policy, field []byte) bool {
	return fp.View != nil && fp.View.MaxEventAge > 0 && string(field) != fp.View.EventTimeField
}

// noteEventTime records a feature view's row event time as the entry holds it, once per read.
func noteEventTime(times []eventTime, e localcache.HashEntry, v *config.FeatureView, lp *localcache.Policy, allowDead bool) []eventTime {
	for _, et := range times {
		if et.view == v {
			return times
		}
	}
	et := eventTime{view: v}
	if raw, missing, lk := e.Field([]byte(v.EventTimeField), lp, allowDead); lk.State != localcache.StateMiss {
		et.known, et.fill = true, lk.Fill
		if !missing {
			et.at, _ = feast.ParseTimestamp(raw)
		}
	}
	return append(times, et)
}

// tooOld reports whether field, of a feature view with max_event_age, belongs to a row whose event time is unknown
// or older than that at now: Feast's per-row TTL, per feature view.
func tooOld(fp *config.Policy, field []byte, times []eventTime, now time.Time) bool {
	if !needsEventTime(fp, field) {
		return false
	}
	for _, et := range times {
		if et.view == fp.View {
			return !et.known || et.at.IsZero() || now.Sub(et.at) > fp.View.MaxEventAge
		}
	}
	return true
}

// appendFieldsReply appends the reply of HGET or HMGET: each field's element as elem gives it, nil for features of
// rows older than their view's max_event_age. pols are the fields' policies.
func appendFieldsReply(dst []byte, kind hashCmd, fields [][]byte, pols []*config.Policy,
	times []eventTime, now time.Time, elem func(i int) []byte) []byte {
	if kind == hashMGet {
		dst = resp.AppendArray(dst, len(fields))
	}
	for i, f := range fields {
		if tooOld(pols[i], f, times, now) {
			dst = append(dst, nullBulk...)
			continue
		}
		dst = append(dst, elem(i)...)
	}
	return dst
}

// serveHashAll answers HGETALL from a complete cached image of the hash, if there is one whose every field may
// be served and was read by the fill that read the image (unless allowDead: serve-stale answers from what it has);
// it reports whether it did.
func (c *client) serveHashAll(dst, key []byte, ps *policySet, pol *config.Policy, now time.Time, allowDead bool) ([]byte, bool) {
	hs := &c.hs
	hs.elems, hs.times, hs.stale, hs.count, hs.age = hs.elems[:0], hs.times[:0], false, pol, 0
	lp := &ps.local[pol.Index]
	ok := false
	n := 0
	c.srv.cache.LookupHash(key, now, func(e localcache.HashEntry) {
		lk, complete := e.Complete(lp, allowDead)
		byFields := false
		if !complete {
			if !allowDead || !e.IsComplete() {
				return
			}
			// Serve-stale while the upstream fails: the key's own policy no longer vouches for the image (a
			// tracking loss made it unverified, or it is past the key policy's hard TTL), but a hash is served
			// field by field, and every field the image lists is checked below under its own policy, whose
			// serve_stale decides, as for HMGET. An image that lists no field has no field policy to speak for
			// it and is not served.
			lk, byFields = localcache.Lookup{State: localcache.StateStale}, true
		}
		ok = true
		hs.stale = lk.State == localcache.StateStale || lk.State == localcache.StateUnverified
		hs.age, hs.fill = lk.Age, lk.Fill
		fields := 0
		e.EachField(func(f []byte) *localcache.Policy { _, flp := fieldPolicy(ps, pol, f); return flp }, allowDead,
			func(f, v []byte, missing bool, lk localcache.Lookup) bool {
				fields++
				if lk.State == localcache.StateMiss {
					ok = false
					return false
				}
				hs.stale = hs.stale || lk.State == localcache.StateStale
				hs.age = max(hs.age, lk.Age)
				if lk.Fill != hs.fill && !allowDead {
					// A field merged in by a later fill of some fields: not of the instant of the image.
					ok = false
					return false
				}
				if fp, flp := fieldPolicy(ps, pol, f); needsEventTime(fp, f) {
					hs.times = noteEventTime(hs.times, e, fp.View, flp, allowDead)
				}
				return true
			})
		if byFields && fields == 0 {
			ok = false
		}
		if !ok {
			return
		}
		e.EachField(func(f []byte) *localcache.Policy { _, flp := fieldPolicy(ps, pol, f); return flp }, allowDead,
			func(f, v []byte, missing bool, _ localcache.Lookup) bool {
				if fp, _ := fieldPolicy(ps, pol, f); missing || tooOld(fp, f, hs.times, now) {
					return true
				}
				hs.elems = resp.AppendBulk(resp.AppendBulk(hs.elems, f), v)
				n++
				return true
			})
	})
	if !ok {
		return dst, false
	}
	dst = resp.AppendArray(dst, 2*n)
	return append(dst, hs.elems...), true
}

// completeHashFetch completes a hash fill this client leads from the segment's replies (or err).
func (c *client) completeHashFetch(it *fetchItem, err error) {
	hr := it.hash
	res := localcache.Result{Err: err}
	if n := upstream.HashFetchFrames(hr.cmd == hashGetAll, hr.fieldTTL); it.frame+n-1 < c.call.Len() {
		var hpttl []byte
		if n == 3 {
			hpttl = c.call.Frame(it.frame + 2)
		}
		res = c.srv.hashFetchedResult(c.call.Frame(it.frame), c.call.Frame(it.frame+1), hpttl, hr, &c.hashFetched, c.call.Asked)
	}
	c.srv.cache.CompleteHash(it.fill, res, res.Hash)
	it.fill = nil
	c.srv.stats.UpstreamReads.Add(1)
}

// hashFetchedResult turns the replies of a hash fetch into a fill result whose Hash holds copies of the fields
// read, each with its policy. With asked (the replies came from the target of an ASK redirect, see
// upstream.Call.Asked) the fields are served and not stored.
func (s *Server) hashFetchedResult(reply, pttl, hpttl []byte, hr *hashRead, hf *upstream.HashFetched, asked bool) localcache.Result {
	if err := upstream.ParseHashFetched(reply, pttl, hpttl, hr.fetch, hr.cmd == hashGetAll, hf); err != nil {
		return localcache.Result{Err: err}
	}
	if hf.PTTLRefused != nil {
		s.warnTTLRefused(hf.PTTLRefused)
	}
	if hf.Error != nil {
		if isUpstreamFailure(hf.Error) {
			return localcache.Result{Err: resp.ParseError(hf.Error)}
		}
		return localcache.Result{Reply: bytes.Clone(hf.Error)} // WRONGTYPE: relayed, and the key's entry dropped
	}
	out := &localcache.HashResult{All: hr.cmd == hashGetAll, KeyPolicy: &hr.ps.local[hr.pol.Index]}
	out.Fields = make([]localcache.FieldRead, len(hf.Fields))
	for i := range hf.Fields {
		_, flp := fieldPolicy(hr.ps, hr.pol, hf.Fields[i])
		out.Fields[i] = localcache.FieldRead{Field: bytes.Clone(hf.Fields[i]), Value: bytes.Clone(hf.Values[i]),
			Missing: hf.Missing[i], Policy: flp}
		switch {
		case hf.FieldPTTL != nil:
			out.Fields[i].PTTL = pttlDuration(hf.FieldPTTL[i])
		case hr.fieldTTL:
			// HGETALL against an upstream with per-field expiry: the fields' own TTLs were not read, so none is
			// stored (the reply is served all the same).
			out.Fields[i].Policy = nil
		}
	}
	if hr.fieldTTL && hr.cmd == hashGetAll {
		out.All = false
	}
	return localcache.Result{PTTL: pttlDuration(hf.PTTL), TTLRefused: hf.PTTLRefused != nil, Hash: out, NoStore: asked}
}

// emitHashRead appends a hash read's reply once its fill is done: from what the fill read alone, or serve_stale's
// answer, or the upstream's error; in the client's protocol.
func (c *client) emitHashRead(dst []byte, h *hole) []byte {
	mark := len(dst)
	return c.seg.to3(c.emitHashRead2(dst, h), mark, h.hash.cmd == hashGetAll)
}

// emitHashRead2 is emitHashRead's reply in RESP2.
func (c *client) emitHashRead2(dst []byte, h *hole) []byte {
	hr := h.hash
	<-hr.fill.Done()
	res := hr.fill.Result()
	switch {
	case res.Reply != nil:
		return append(dst, res.Reply...)
	case res.Err != nil || res.Hash == nil:
		// serve_stale: answer from entries past their hard deadline, if every field's policy allows it.
		if hr.cmd == hashGetAll {
			if out, ok := c.serveHashAll(dst, hr.key, hr.ps, hr.pol, c.clock(), true); ok {
				h.stale = true
				h.pc.stale.observe(c.hs.age)
				return out
			}
		} else if now := c.clock(); c.lookupFields(hr.key, hr.fields, hr.ps, hr.pol, now, true) {
			h.stale = true
			h.pc.stale.observe(c.hs.age)
			return appendFieldsReply(dst, hr.cmd, hr.fields, c.hs.pols, c.hs.times, now, c.hs.elem)
		}
		c.srv.stats.Errors.Add(1)
		err := res.Err
		if err == nil {
			err = errInternal
		}
		return resp.AppendError(dst, upstreamErrorText(err))
	}
	if hr.cmd == hashGetAll {
		times := timesFrom(nil, res.Hash, hr.ps, hr.pol)
		n := 0
		mark := len(dst) // the fields go here first; the array header, once their count is known, goes before them
		for _, fr := range res.Hash.Fields {
			if fp, _ := fieldPolicy(hr.ps, hr.pol, fr.Field); tooOld(fp, fr.Field, times, c.clock()) {
				continue
			}
			dst = resp.AppendBulk(resp.AppendBulk(dst, fr.Field), fr.Value)
			n++
		}
		body := append([]byte(nil), dst[mark:]...)
		return append(resp.AppendArray(dst[:mark], 2*n), body...)
	}
	times := timesFrom(nil, res.Hash, hr.ps, hr.pol)
	pols := make([]*config.Policy, len(hr.fields))
	for i, f := range hr.fields {
		pols[i], _ = fieldPolicy(hr.ps, hr.pol, f)
	}
	return appendFieldsReply(dst, hr.cmd, hr.fields, pols, times, c.clock(), func(i int) []byte {
		return fieldElement(res.Hash, hr.fields[i])
	})
}

// timesFrom adds to known the event times a fill read.
func timesFrom(known []eventTime, res *localcache.HashResult, ps *policySet, pol *config.Policy) []eventTime {
	times := append([]eventTime(nil), known...)
	for _, fr := range res.Fields {
		vp, _ := fieldPolicy(ps, pol, fr.Field)
		if vp.View == nil || string(fr.Field) != vp.View.EventTimeField || vp.View.MaxEventAge <= 0 {
			continue
		}
		et := eventTime{view: vp.View, known: true}
		if !fr.Missing {
			et.at, _ = feast.ParseTimestamp(fr.Value)
		}
		replaced := false
		for i := range times {
			if times[i].view == vp.View {
				times[i], replaced = et, true
			}
		}
		if !replaced {
			times = append(times, et)
		}
	}
	return times
}

// fieldElement returns the reply element of field from a fill's result.
func fieldElement(res *localcache.HashResult, field []byte) []byte {
	for i := range res.Fields {
		if bytes.Equal(res.Fields[i].Field, field) {
			if res.Fields[i].Missing {
				return nullBulk
			}
			return resp.AppendBulk(nil, res.Fields[i].Value)
		}
	}
	return nullBulk
}

// refreshHash starts a background refresh of a hash read's fields unless one is in flight.
func (c *client) refreshHash(key []byte, fields [][]byte, all bool, ps *policySet, pol *config.Policy) {
	hr := &hashRead{key: bytes.Clone(key), fetch: cloneAll(fields), ps: ps, pol: pol, cmd: hashMGet,
		fieldTTL: c.srv.tbl.Load().fieldTTL}
	if all {
		hr.cmd, hr.fetch = hashGetAll, nil
	}
	f, leader := c.srv.cache.AcquireHash(hr.key, localcache.HashFillID(hr.fetch, all))
	if !leader {
		return
	}
	// Look again inside the single flight, as a string refresh does: a refresh of these fields may have stored
	// them fresh and ended between the caller's lookup and AcquireHash.
	if fresh, _ := c.srv.freshHash(hr, c.clock()); fresh != nil {
		c.srv.cache.CompleteHash(f, localcache.Result{NoStore: true, Hash: fresh}, fresh)
		return
	}
	c.srv.stats.Refreshes.Add(1)
	go func() {
		call := upstream.NewCall()
		n := upstream.HashFetchFrames(all, hr.fieldTTL)
		call.Req.AppendHashFetch(hr.key, hr.fetch, all, hr.fieldTTL)
		err := c.srv.up.Do(call, &call.Req)
		res := localcache.Result{Err: err}
		if call.Len() == n {
			var hf upstream.HashFetched
			var hpttl []byte
			if n == 3 {
				hpttl = call.Frame(2)
			}
			res = c.srv.hashFetchedResult(call.Frame(0), call.Frame(1), hpttl, hr, &hf, call.Asked)
		}
		c.srv.stats.UpstreamReads.Add(1)
		c.srv.cache.CompleteHash(f, res, res.Hash)
	}()
}

// freshHash returns what memory holds, fresh, for the fields a fill of hr reads (for HGETALL, the image of the
// whole hash), as a fill of them would have read it: every one fresh and read by one fill; and the age of the
// oldest. It returns nil when memory cannot answer so. A leader that finds them completes its fill with them,
// unstored, so that its waiters are answered without an upstream read.
func (s *Server) freshHash(hr *hashRead, now time.Time) (*localcache.HashResult, time.Duration) {
	var out *localcache.HashResult
	var age time.Duration
	fieldPol := func(f []byte) *localcache.Policy { _, flp := fieldPolicy(hr.ps, hr.pol, f); return flp }
	keyPol := &hr.ps.local[hr.pol.Index]
	s.cache.LookupHash(hr.key, now, func(e localcache.HashEntry) {
		var reads []localcache.FieldRead
		var fill uint32
		ok := true
		same := func(lk localcache.Lookup) bool {
			if lk.State != localcache.StateFresh || (fill != 0 && lk.Fill != fill) {
				ok = false
			}
			fill, age = lk.Fill, max(age, lk.Age)
			return ok
		}
		if hr.cmd == hashGetAll {
			if lk, complete := e.Complete(keyPol, false); !complete || !same(lk) {
				return
			}
			e.EachField(fieldPol, false, func(f, v []byte, missing bool, lk localcache.Lookup) bool {
				if same(lk) && !missing {
					reads = append(reads, localcache.FieldRead{Field: bytes.Clone(f), Value: bytes.Clone(v), Policy: fieldPol(f)})
				}
				return ok
			})
		} else {
			reads = make([]localcache.FieldRead, len(hr.fetch))
			found := 0
			e.Fields(hr.fetch, func(i int) *localcache.Policy { return fieldPol(hr.fetch[i]) }, false,
				func(i int, v []byte, missing bool, lk localcache.Lookup) {
					if same(lk) {
						reads[i] = localcache.FieldRead{Field: hr.fetch[i], Value: bytes.Clone(v), Missing: missing,
							Policy: fieldPol(hr.fetch[i])}
						found++
					}
				})
			ok = ok && found == len(hr.fetch)
		}
		if ok {
			out = &localcache.HashResult{Fields: reads, All: hr.cmd == hashGetAll, KeyPolicy: keyPol}
		}
	})
	return out, age
}

func cloneAll(in [][]byte) [][]byte {
	out := make([][]byte, len(in))
	for i, b := range in {
		out[i] = bytes.Clone(b)
	}
	return out
}

func appendUnique(list [][]byte, b []byte) [][]byte {
	for _, x := range list {
		if bytes.Equal(x, b) {
			return list
		}
	}
	return append(list, b)
}
