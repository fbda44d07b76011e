package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"featcache/internal/resp"
)

// respConn is the load generator's own RESP2 client: commands are appended to one write buffer and sent with a
// single write per batch, and each reply is read whole into one reused buffer (resp.ReadFrame) and looked at there,
// keeping no payload. It allocates nothing per request once its buffers have grown, so the load generator costs
// little of the core it shares with redis-benchmark's runs and the bench's own bookkeeping. A respConn is not safe
// for concurrent use.
type respConn struct {
	nc    net.Conn
	r     *bufio.Reader
	out   []byte
	frame []byte // the last reply read
}

// errNil is what do returns for a RESP nil reply.
var errNil = errors.New("bench: nil reply")

func dialRESP(addr string, timeout time.Duration) (*respConn, error) {
	nc, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return nil, err
	}
	if tc, ok := nc.(*net.TCPConn); ok {
		tc.SetNoDelay(true)
	}
	return &respConn{nc: nc, r: bufio.NewReaderSize(nc, 64<<10), out: make([]byte, 0, 16<<10)}, nil
}

func (c *respConn) Close() error { return c.nc.Close() }

// appendArgs appends one command to the write buffer.
func (c *respConn) appendArgs(args ...[]byte) { c.out = resp.AppendArgs(c.out, args) }

// appendGet, appendSet and appendMgetHeader are the hot-path forms of appendArgs: no variadic slice per call.
func (c *respConn) appendGet(key []byte) {
	c.out = resp.AppendBulk(resp.AppendBulkString(resp.AppendArray(c.out, 2), "GET"), key)
}

func (c *respConn) appendSet(key, value []byte) {
	c.out = resp.AppendBulk(resp.AppendBulk(resp.AppendBulkString(resp.AppendArray(c.out, 3), "SET"), key), value)
}

// appendMgetHeader starts an MGET of n keys; the caller appends the keys with resp.AppendBulk.
func (c *respConn) appendMgetHeader(n int) {
	c.out = resp.AppendBulkString(resp.AppendArray(c.out, n+1), "MGET")
}

// flush sends the write buffer in one write and empties it.
func (c *respConn) flush() error {
	_, err := c.nc.Write(c.out)
	c.out = c.out[:0]
	return err
}

// replyKind summarises a reply frame for the load generator, which only needs to know whether a value came back.
type replyKind uint8

const (
	replyValue replyKind = iota // a non-nil bulk, status, integer, or an array (MGET: its elements are checked too)
	replyNil                    // a nil bulk or array, or an MGET with a nil element
	replyError                  // "-..." error reply
)

// skipReply reads one complete reply frame and discards it. For an error reply it returns the message in msg (a
// slice of the read buffer, valid until the next read).
func (c *respConn) skipReply() (kind replyKind, msg []byte, err error) {
	if c.frame, err = resp.ReadFrame(c.r, c.frame[:0]); err != nil {
		return 0, nil, err
	}
	return replyOf(c.frame)
}

// replyOf summarises one whole frame: an array by its worst element.
func replyOf(f []byte) (kind replyKind, msg []byte, err error) {
	switch f[0] {
	case resp.TypeSimple, resp.TypeInteger:
		return replyValue, nil, nil
	case resp.TypeError:
		return replyError, f[1 : len(f)-2], nil
	case resp.TypeBulk:
		if _, isNil, _ := resp.BulkPayload(f); isNil {
			return replyNil, nil, nil
		}
		return replyValue, nil, nil
	case resp.TypeArray:
		n, body, ok := resp.ArrayHeader(f)
		if !ok {
			return replyNil, nil, nil
		}
		kind = replyValue
		for i := 0; i < n; i++ {
			var sc resp.Scanner
			m, _ := sc.Next(body) // whole: ReadFrame scanned the frame
			if k, em, _ := replyOf(body[:m]); k > kind {
				kind, msg = k, em
			}
			body = body[m:]
		}
		return kind, msg, nil
	}
	return 0, nil, fmt.Errorf("bench: unexpected reply %q", f)
}

// do sends one command and returns its reply decoded: string for status and bulk replies, int64 for integers,
// []any for arrays, errNil for nil and a resp.Error for an error reply. It is for set-up and statistics, not the
// measured path.
func (c *respConn) do(args ...string) (any, error) {
	c.out = resp.AppendCommand(c.out, args...)
	if err := c.flush(); err != nil {
		return nil, err
	}
	return c.readValue()
}

// readValue reads one reply and returns it decoded as do does.
func (c *respConn) readValue() (any, error) {
	var err error
	if c.frame, err = resp.ReadFrame(c.r, c.frame[:0]); err != nil {
		return nil, err
	}
	v, _, err := resp.Decode(c.frame)
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	return decoded(v)
}

// decoded turns a decoded reply into do's result.
func decoded(v resp.Value) (any, error) {
	switch {
	case v.Type == resp.TypeError:
		return nil, resp.Error(v.Str)
	case v.Type == resp.TypeInteger:
		return v.Int, nil
	case v.Null:
		return nil, errNil
	case v.Type != resp.TypeArray:
		return v.Str, nil
	}
	out := make([]any, len(v.Elems))
	for i, e := range v.Elems {
		x, err := decoded(e)
		if err != nil && !errors.Is(err, errNil) {
			return nil, err
		}
		out[i] = x
	}
	return out, nil
}

// parseInfo turns an INFO-style bulk ("name:value" lines, "#" section headers) into a map of integer fields;
// fields whose value is not an integer are left out.
func parseInfo(text string) map[string]int64 {
	m := make(map[string]int64)
	for _, line := range bytes.Split([]byte(text), []byte("\n")) {
		line = bytes.TrimSpace(line)
		name, val, ok := bytes.Cut(line, []byte(":"))
		if !ok || len(line) == 0 || line[0] == '#' {
			continue
		}
		if n, err := strconv.ParseInt(string(val), 10, 64); err == nil {
			m[string(name)] = n
		}
	}
	return m
}
