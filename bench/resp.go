package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"time"
)

// respConn is the load generator's own RESP2 client: commands are appended to one write buffer and sent with a
// single write per batch, and replies are parsed frame by frame straight out of the read buffer, keeping no
// payload. It allocates nothing per request once its buffers have grown, so the load generator costs little of
// the core it shares with redis-benchmark's runs and the bench's own bookkeeping. A respConn is not safe for
// concurrent use.
type respConn struct {
	nc  net.Conn
	r   *bufio.Reader
	out []byte
}

// errNil is what do returns for a RESP nil reply.
var errNil = errors.New("bench: nil reply")

// redisError is an error reply from the server ("-ERR ..."), kept apart from I/O errors.
type redisError string

func (e redisError) Error() string { return string(e) }

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

// appendArgs appends one command in RESP array form to the write buffer.
func (c *respConn) appendArgs(args ...[]byte) {
	c.out = appendArrayHeader(c.out, len(args))
	for _, a := range args {
		c.out = appendBulk(c.out, a)
	}
}

// appendGet, appendSet and appendMget are the hot-path forms of appendArgs: no variadic slice per call.
func (c *respConn) appendGet(key []byte) {
	c.out = append(c.out, "*2\r\n$3\r\nGET\r\n"...)
	c.out = appendBulk(c.out, key)
}

func (c *respConn) appendSet(key, value []byte) {
	c.out = append(c.out, "*3\r\n$3\r\nSET\r\n"...)
	c.out = appendBulk(c.out, key)
	c.out = appendBulk(c.out, value)
}

// appendMgetHeader starts an MGET of n keys; the caller appends the keys with appendBulk.
func (c *respConn) appendMgetHeader(n int) {
	c.out = appendArrayHeader(c.out, n+1)
	c.out = append(c.out, "$4\r\nMGET\r\n"...)
}

func appendArrayHeader(b []byte, n int) []byte {
	b = append(b, '*')
	b = strconv.AppendInt(b, int64(n), 10)
	return append(b, '\r', '\n')
}

func appendBulk(b, s []byte) []byte {
	b = append(b, '$')
	b = strconv.AppendInt(b, int64(len(s)), 10)
	b = append(b, '\r', '\n')
	b = append(b, s...)
	return append(b, '\r', '\n')
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
	line, err := c.readLine()
	if err != nil {
		return 0, nil, err
	}
	switch line[0] {
	case '+', ':':
		return replyValue, nil, nil
	case '-':
		return replyError, line[1:], nil
	case '$':
		n, err := parseLen(line)
		if err != nil || n < 0 {
			return replyNil, nil, err
		}
		_, err = c.r.Discard(n + 2)
		return replyValue, nil, err
	case '*':
		n, err := parseLen(line)
		if err != nil || n < 0 {
			return replyNil, nil, err
		}
		kind = replyValue
		for i := 0; i < n; i++ {
			k, m, err := c.skipReply()
			if err != nil {
				return 0, nil, err
			}
			if k > kind {
				kind, msg = k, m
			}
		}
		return kind, msg, nil
	}
	return 0, nil, fmt.Errorf("bench: unexpected reply %q", line)
}

// readLine returns the next CRLF-terminated line without its CRLF, as a slice of the read buffer.
func (c *respConn) readLine() ([]byte, error) {
	line, err := c.r.ReadSlice('\n')
	if err != nil {
		return nil, err
	}
	if len(line) < 3 || line[len(line)-2] != '\r' {
		return nil, fmt.Errorf("bench: malformed reply line %q", line)
	}
	return line[:len(line)-2], nil
}

func parseLen(line []byte) (int, error) {
	n, err := strconv.Atoi(string(line[1:])) // the compiler does not allocate for this conversion
	if err != nil {
		return 0, fmt.Errorf("bench: malformed length %q", line)
	}
	return n, nil
}

// do sends one command and returns its reply decoded: string for status and bulk replies, int64 for integers,
// []any for arrays, errNil for nil and a redisError for an error reply. It is for set-up and statistics, not the
// measured path.
func (c *respConn) do(args ...string) (any, error) {
	bs := make([][]byte, len(args))
	for i, a := range args {
		bs[i] = []byte(a)
	}
	c.appendArgs(bs...)
	if err := c.flush(); err != nil {
		return nil, err
	}
	return c.readValue()
}

func (c *respConn) readValue() (any, error) {
	line, err := c.readLine()
	if err != nil {
		return nil, err
	}
	switch line[0] {
	case '+':
		return string(line[1:]), nil
	case '-':
		return nil, redisError(line[1:])
	case ':':
		return strconv.ParseInt(string(line[1:]), 10, 64)
	case '$':
		n, err := parseLen(line)
		if err != nil {
			return nil, err
		}
		if n < 0 {
			return nil, errNil
		}
		b := make([]byte, n+2)
		if _, err := io.ReadFull(c.r, b); err != nil {
			return nil, err
		}
		return string(b[:n]), nil
	case '*':
		n, err := parseLen(line)
		if err != nil {
			return nil, err
		}
		if n < 0 {
			return nil, errNil
		}
		out := make([]any, n)
		for i := range out {
			v, err := c.readValue()
			if err != nil && !errors.Is(err, errNil) {
				return nil, err
			}
			out[i] = v
		}
		return out, nil
	}
	return nil, fmt.Errorf("bench: unexpected reply %q", line)
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
