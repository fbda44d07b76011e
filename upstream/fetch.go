package upstream

import (
	"fmt"
	"strconv"
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
	// expiry, -2 when the key vanished between the two commands.
	PTTL int64
}

// Fetch reads keys with one GET and one PTTL each, all in one round trip on a shared connection, and appends the
// answers to out in key order. When the connection fails part way, out holds the keys answered before the failure
// and the error says why the rest are missing.
//
// GET and PTTL are not atomic together: a write between them moves the key's generation (its invalidation arrives),
// so the value is not stored; a key that expired between them reports PTTL -2 and must not be stored either.
func (p *Pool) Fetch(call *Call, keys [][]byte, out []Fetched) ([]Fetched, error) {
	req := call.Req[:0]
	for _, k := range keys {
		req = AppendFetch(req, k)
	}
	call.Req = req
	err := p.Do(call, req, 2*len(keys))
	for i := 0; i+1 < call.Len(); i += 2 {
		f, perr := ParseFetched(call.Frame(i), call.Frame(i+1))
		if perr != nil {
			return out, perr
		}
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

// AppendKeyCommand appends "name key" as a RESP command.
func AppendKeyCommand(dst []byte, name string, key []byte) []byte {
	dst = append(dst, "*2\r\n$"...)
	dst = strconv.AppendInt(dst, int64(len(name)), 10)
	dst = append(dst, '\r', '\n')
	dst = append(dst, name...)
	dst = append(dst, "\r\n$"...)
	dst = strconv.AppendInt(dst, int64(len(key)), 10)
	dst = append(dst, '\r', '\n')
	dst = append(dst, key...)
	return append(dst, '\r', '\n')
}

// ParseFetched reads the replies to the GET and PTTL that AppendFetch wrote.
func ParseFetched(get, pttl []byte) (Fetched, error) {
	var f Fetched
	switch get[0] {
	case '$':
		v, isNil, ok := bulkPayload(get)
		if !ok {
			return f, fmt.Errorf("%w: GET replied %q", ErrBadFrame, truncate(get, 64))
		}
		f.Value, f.Nil = v, isNil
	case '-':
		f.Error = get
	default:
		return f, fmt.Errorf("%w: GET replied %q", ErrBadFrame, truncate(get, 64))
	}
	n, ok := parseInt(pttl)
	if !ok {
		if pttl[0] == '-' {
			// PTTL itself failed (an ACL rule, a script busy): treat the expiry as unknown, so nothing is stored.
			n = -2
		} else {
			return f, fmt.Errorf("%w: PTTL replied %q", ErrBadFrame, truncate(pttl, 64))
		}
	}
	f.PTTL = n
	return f, nil
}
