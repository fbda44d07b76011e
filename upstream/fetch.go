package upstream

import (
	"bytes"
	"fmt"
	"strconv"

	"featcache/internal/resp"
)

// Fetched is the upstream's answer for one key of a Fetch.
type Fetched struct {
	// Value is the payload of GET's bulk reply; it points into the Call's Replies.
	Value []byte
	// Nil is true when the key does not exist.
	Nil bool
	// Error is GET's whole error frame (for example WRONGTYPE), to be relayed verbatim; nil when GET succeeded.
	Error []byte
	// PTTL is the key's remaining time to live in milliseconds as PTTL reported it right after GET: -1 for no
	// expiry, -2 when the key vanished between the two commands, or when PTTL failed (PTTLRefused).
	PTTL int64
	// PTTLRefused is PTTL's error frame when Redis refused it (Refused: an ACL rule without +pttl, a renamed
	// command); the key's expiry is unknown, so what GET read is served and not stored. It points into the Call's
	// Replies; nil when PTTL answered or failed otherwise (a busy script: PTTL -2 alone).
	PTTLRefused []byte
	// Asked is true when the answer came in a Call with frames from the target of an ASK redirect (Call.Asked):
	// it is served, and not cached.
	Asked bool
}

// Fetch reads keys with one GET and one PTTL each, all in one round trip on a shared connection, and appends the
// answers to out in key order. When the connection fails part way, out holds the keys answered before the failure
// and the error says why the rest are missing.
//
// GET and PTTL are not atomic together: a write between them moves the key's generation (its invalidation arrives),
// so the value is not stored; a key that expired between them reports PTTL -2 and must not be stored either.
func (p *Pool) Fetch(call *Call, keys [][]byte, out []Fetched) ([]Fetched, error) {
	req := fetchPayload(call, keys)
	return fetched(call, p.Do(call, req.Bytes(), req.Len()), out)
}

// fetchPayload builds the payload of a Fetch of keys in call.Req.
func fetchPayload(call *Call, keys [][]byte) *Payload {
	if call.Req.Cap() > maxKeptBuf {
		call.Req = Payload{}
	}
	req := &call.Req
	req.Reset()
	for _, k := range keys {
		req.AppendFetch(k)
	}
	return req
}

// fetched appends the answers in call's frames to out; err is the round trip's.
func fetched(call *Call, err error, out []Fetched) ([]Fetched, error) {
	for i := 0; i+1 < call.Len(); i += 2 {
		f, perr := ParseFetched(call.Frame(i), call.Frame(i+1))
		if perr != nil {
			return out, perr
		}
		f.Asked = call.Asked
		out = append(out, f)
	}
	return out, err
}

// AppendFetch appends the two commands that fetch key, GET and PTTL, to a payload; their replies are read with
// ParseFetched.
func AppendFetch(dst, key []byte) []byte {
	dst = AppendKeyCommand(dst, "GET", key)
	return AppendKeyCommand(dst, "PTTL", key)
}

// AppendKeyCommand appends the command "name key"; unlike resp.AppendArgs it needs no slice of the arguments.
func AppendKeyCommand(dst []byte, name string, key []byte) []byte {
	return resp.AppendBulk(resp.AppendBulkString(resp.AppendArray(dst, 2), name), key)
}

// Refused reports whether error frame f says that Redis will not run the command for featcache's user at all: an
// ACL refusal (-NOPERM) or a command it does not have (renamed away: -ERR unknown command), also as the cause an
// -EXECABORT gives. Unlike -BUSY or -LOADING, asking again does not help until an operator changes something.
func Refused(f []byte) bool {
	f = bytes.TrimPrefix(bytes.TrimPrefix(f, []byte("-")), []byte("EXECABORT Transaction discarded because of: "))
	return bytes.HasPrefix(f, []byte("NOPERM ")) || bytes.HasPrefix(f, []byte("ERR unknown command"))
}

// ParseFetched reads the replies to the GET and PTTL that AppendFetch wrote.
func ParseFetched(get, pttl []byte) (Fetched, error) {
	var f Fetched
	switch get[0] {
	case resp.TypeBulk:
		v, isNil, ok := resp.BulkPayload(get)
		if !ok {
			return f, fmt.Errorf("%w: GET replied %q", resp.ErrBadFrame, truncate(get, 64))
		}
		f.Value, f.Nil = v, isNil
	case resp.TypeError:
		f.Error = get
	default:
		return f, fmt.Errorf("%w: GET replied %q", resp.ErrBadFrame, truncate(get, 64))
	}
	n, ok := resp.IntegerValue(pttl)
	if !ok {
		if pttl[0] == resp.TypeError {
			// PTTL itself failed (an ACL rule, a script busy): treat the expiry as unknown, so nothing is stored.
			n = -2
			if Refused(pttl) {
				f.PTTLRefused = pttl
			}
		} else {
			return f, fmt.Errorf("%w: PTTL replied %q", resp.ErrBadFrame, truncate(pttl, 64))
		}
	}
	f.PTTL = n
	return f, nil
}

// AppendHashFetch appends the commands that read a hash for the local tier: HMGET key fields..., or HGETALL key
// when all is true, then PTTL key, and with fieldTTL (an upstream with per-field expiry, Redis 7.4 and later)
// HPTTL key FIELDS n fields... after an HMGET. Their replies (HashFetchFrames of them) are read with
// ParseHashFetched.
func AppendHashFetch(dst, key []byte, fields [][]byte, all, fieldTTL bool) []byte {
	dst = appendHashRead(dst, key, fields, all)
	dst = AppendKeyCommand(dst, "PTTL", key)
	if fieldTTL && !all {
		dst = appendFieldTTL(dst, key, fields)
	}
	return dst
}

// appendFieldTTL appends HPTTL key FIELDS n fields...
func appendFieldTTL(dst, key []byte, fields [][]byte) []byte {
	dst = resp.AppendArray(dst, 4+len(fields))
	dst = resp.AppendBulkString(resp.AppendBulk(resp.AppendBulkString(dst, "HPTTL"), key), "FIELDS")
	dst = resp.AppendBulk(dst, strconv.AppendInt(nil, int64(len(fields)), 10))
	for _, f := range fields {
		dst = resp.AppendBulk(dst, f)
	}
	return dst
}

// HashFetchFrames is how many reply frames AppendHashFetch's commands produce.
func HashFetchFrames(all, fieldTTL bool) int {
	if fieldTTL && !all {
		return 3
	}
	return 2
}

// appendHashRead appends HMGET key fields... or HGETALL key.
func appendHashRead(dst, key []byte, fields [][]byte, all bool) []byte {
	if all {
		dst = AppendKeyCommand(dst, "HGETALL", key)
	} else {
		dst = resp.AppendBulk(resp.AppendBulkString(resp.AppendArray(dst, 2+len(fields)), "HMGET"), key)
		for _, f := range fields {
			dst = resp.AppendBulk(dst, f)
		}
	}
	return dst
}

// HashFetched is the upstream's answer to AppendHashFetch.
type HashFetched struct {
	// Fields and Values are the fields read and their values, in order (for HMGET the fields asked for; for
	// HGETALL every field of the hash). They point into the reply. Missing[i] marks a field that does not exist.
	Fields, Values [][]byte
	Missing        []bool
	// Error is the whole error frame of HMGET/HGETALL (WRONGTYPE, LOADING...), nil when it succeeded.
	Error []byte
	// PTTL is the key's remaining time to live (ms): -1 for no expiry, -2 when the key does not exist or PTTL
	// failed (PTTLRefused).
	PTTL int64
	// PTTLRefused is PTTL's error frame when Redis refused it, as Fetched.PTTLRefused.
	PTTLRefused []byte
	// FieldPTTL, with per-field expiry, is each field's own remaining time to live (ms, as HPTTL: -1 none, -2 no
	// such field); nil otherwise.
	FieldPTTL []int64
}

// ParseHashFetched reads the replies to AppendHashFetch into out, reusing its slices. hpttl is HPTTL's reply, or
// nil when it was not asked; a field whose own TTL cannot be read gets -3 (unknown: not to be stored).
func ParseHashFetched(reply, pttl, hpttl []byte, fields [][]byte, all bool, out *HashFetched) error {
	out.Fields, out.Values, out.Missing, out.Error, out.PTTLRefused = out.Fields[:0], out.Values[:0], out.Missing[:0], nil, nil
	// FieldPTTL is nil unless the TTLs were asked for (callers test it for nil), its storage kept for the next time.
	keep := out.FieldPTTL[:0]
	out.FieldPTTL = nil
	if hpttl != nil {
		out.FieldPTTL = keep
		elems, err := resp.ArrayElements(hpttl, nil)
		for i := range fields {
			ttl := int64(-3)
			if err == nil && len(elems) == len(fields) {
				if n, ok := resp.IntegerValue(elems[i]); ok {
					ttl = n
				}
			}
			out.FieldPTTL = append(out.FieldPTTL, ttl)
		}
	}
	n, ok := resp.IntegerValue(pttl)
	if !ok {
		n = -2 // PTTL failed: treat the expiry as unknown, so nothing is stored
		if Refused(pttl) {
			out.PTTLRefused = pttl
		}
	}
	out.PTTL = n
	if len(reply) > 0 && reply[0] == resp.TypeError {
		out.Error = reply
		return nil
	}
	elems, err := resp.ArrayElements(reply, nil)
	if err != nil {
		return err
	}
	if all {
		if len(elems)%2 != 0 {
			return fmt.Errorf("%w: HGETALL replied %d elements", resp.ErrBadFrame, len(elems))
		}
		for i := 0; i+1 < len(elems); i += 2 {
			f, _, ok1 := resp.BulkPayload(elems[i])
			v, _, ok2 := resp.BulkPayload(elems[i+1])
			if !ok1 || !ok2 {
				return fmt.Errorf("%w: HGETALL element %q", resp.ErrBadFrame, truncate(elems[i], 64))
			}
			out.Fields, out.Values, out.Missing = append(out.Fields, f), append(out.Values, v), append(out.Missing, false)
		}
		return nil
	}
	if len(elems) != len(fields) {
		return fmt.Errorf("%w: HMGET of %d fields replied %d elements", resp.ErrBadFrame, len(fields), len(elems))
	}
	for i, e := range elems {
		v, isNil, ok := resp.BulkPayload(e)
		if !ok {
			return fmt.Errorf("%w: HMGET element %q", resp.ErrBadFrame, truncate(e, 64))
		}
		out.Fields, out.Values, out.Missing = append(out.Fields, fields[i]), append(out.Values, v), append(out.Missing, isNil)
	}
	return nil
}
