package warm

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"featcache/internal/resp"
	"featcache/upstream"
)

// Source is a list of keys to warm from, hottest first.
type Source interface {
	// String names the source as CACHE WARM takes it: "file PATH" or "zset KEY".
	String() string
	// Keys calls yield with the list's keys in order, at most batch at a time, until yield returns false or the
	// list ends. The slices are valid only during the call. A source that does not exist is ErrNoSource.
	Keys(ctx context.Context, batch int, yield func(keys [][]byte) bool) error
}

// ErrNoSource means a source does not exist: no such file, or no such sorted set.
var ErrNoSource = errors.New("warm: no such source")

// maxKeyLine bounds one line of a keys file: Redis keys can be longer, but the local tier never stores a key over
// 64 KiB (localcache.MaxKeyLen), so longer lines are an error rather than a reason to buffer megabytes.
const maxKeyLine = 1 << 20

// File is a keys file: one key per line, hottest first (see AppendKeyLine).
type File string

func (f File) String() string { return "file " + string(f) }

// Keys reads the file line by line. An empty line is skipped; a line starting with a double quote is a Go-quoted
// string; a trailing carriage return is dropped, so files written on Windows read the same. Only a regular file is
// read: a named pipe would block the warm-up (and the shutdown that waits for it) until some writer opened it, and
// a device never ends.
func (f File) Keys(ctx context.Context, batch int, yield func(keys [][]byte) bool) error {
	// O_NONBLOCK makes opening a named pipe return at once; it changes nothing for a regular file.
	fd, err := os.OpenFile(string(f), os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("%w: %v", ErrNoSource, err)
		}
		return err
	}
	defer fd.Close()
	if fi, err := fd.Stat(); err != nil {
		return err
	} else if !fi.Mode().IsRegular() {
		return fmt.Errorf("warm: %s: not a regular file (%s)", f, fi.Mode().Type())
	}
	sc := bufio.NewScanner(fd)
	sc.Buffer(make([]byte, 64<<10), maxKeyLine)
	keys := make([][]byte, 0, batch)
	arena := make([]byte, 0, 64<<10)
	line := 0
	var invalid int // lines that are not a key: skipped, so that one corrupt line costs only itself
	var first error // the first of them, for the error
	for sc.Scan() {
		line++
		key, ok, err := ParseKeyLine(sc.Bytes())
		if err != nil {
			if invalid++; first == nil {
				first = fmt.Errorf("line %d: %w", line, err)
			}
			continue
		}
		if !ok {
			continue
		}
		start := len(arena)
		arena = append(arena, key...)
		keys = append(keys, arena[start:len(arena):len(arena)])
		if len(keys) == batch {
			if !yield(keys) || ctx.Err() != nil {
				return ctx.Err()
			}
			keys, arena = keys[:0], arena[:0]
		}
	}
	if len(keys) > 0 && !yield(keys) {
		return ctx.Err()
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("warm: %s after line %d: %w", f, line, err)
	}
	if invalid > 0 {
		return fmt.Errorf("warm: %s: %d invalid lines skipped, the first at %w", f, invalid, first)
	}
	return nil
}

// ParseKeyLine decodes one line of a keys file (without its '\n'). ok is false for an empty line.
func ParseKeyLine(line []byte) (key []byte, ok bool, err error) {
	line = bytes.TrimSuffix(line, []byte("\r"))
	if len(line) == 0 {
		return nil, false, nil
	}
	if line[0] != '"' {
		return line, true, nil
	}
	s, err := strconv.Unquote(string(line))
	if err != nil {
		return nil, false, fmt.Errorf("invalid quoted key %.80q", line)
	}
	return []byte(s), true, nil
}

// AppendKeyLine appends key as one line of a keys file, with its '\n': as it is, or Go-quoted when it is empty,
// holds a newline or a carriage return, or starts with a double quote.
func AppendKeyLine(dst, key []byte) []byte {
	if len(key) == 0 || key[0] == '"' || bytes.ContainsAny(key, "\r\n") {
		dst = strconv.AppendQuote(dst, string(key))
	} else {
		dst = append(dst, key...)
	}
	return append(dst, '\n')
}

// WriteKeysFile replaces the file at path with keys, one per line, atomically: a reader sees the old list or the
// new one, never a part. The directory must exist.
func WriteKeysFile(path string, keys []HotKey) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // after the rename this fails harmlessly
	w := bufio.NewWriterSize(tmp, 64<<10)
	var line []byte
	for _, k := range keys {
		line = AppendKeyLine(line[:0], []byte(k.Key))
		w.Write(line)
	}
	if err := w.Flush(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// Upstream is what warm needs of featcache's upstream: the upstream.Client, which sends each command to the master
// of its key in front of a Redis Cluster.
type Upstream interface {
	// Do sends p's commands and waits for their replies (upstream.Client.Do).
	Do(call *upstream.Call, p *upstream.Payload) error
	// DedicatedKey returns a dedicated connection to the node that holds key.
	DedicatedKey(key []byte) (*upstream.Conn, error)
	// Timeout bounds the waits for replies.
	Timeout() time.Duration
}

// Zset is a Redis sorted set whose members are keys, read highest score first.
type Zset struct {
	Key  string
	Pool Upstream
}

func (z Zset) String() string { return "zset " + z.Key }

// Keys pages through the set with ZREVRANGE, batch members per round trip (ZREVRANGE works on Redis 6.0 too,
// where ZRANGE has no REV). Members added or removed meanwhile may be seen twice or missed, which costs nothing:
// warming is idempotent. While the upstream cannot be reached (at start it may not be up yet) a page is asked
// again with a growing pause until ctx ends; an error reply (WRONGTYPE) ends the list.
func (z Zset) Keys(ctx context.Context, batch int, yield func(keys [][]byte) bool) error {
	call := upstream.NewCall()
	var keys [][]byte
	for start := 0; ; start += batch {
		req := &call.Req
		req.Reset()
		req.AppendCommand(int(upstream.Slot([]byte(z.Key))), "ZREVRANGE", z.Key, strconv.Itoa(start), strconv.Itoa(start+batch-1))
		for backoff := 100 * time.Millisecond; ; backoff = min(2*backoff, 5*time.Second) {
			if err := ctx.Err(); err != nil {
				return err
			}
			if z.Pool.Do(call, req) == nil {
				break
			}
			t := time.NewTimer(backoff)
			select {
			case <-ctx.Done():
				t.Stop()
				return ctx.Err()
			case <-t.C:
			}
		}
		var err error
		if keys, err = resp.ParseBulkArray(call.Frame(0), keys[:0]); err != nil {
			return fmt.Errorf("warm: %s: %w", z, err)
		}
		if start == 0 && len(keys) == 0 {
			return fmt.Errorf("%w: %s is empty or missing", ErrNoSource, z)
		}
		if len(keys) > 0 && !yield(keys) {
			return nil
		}
		if len(keys) < batch {
			return nil
		}
	}
}

// WriteZset replaces the sorted set key with keys (score: count) in one MULTI/EXEC, so that a reader sees the
// old list or the new one, never an empty or partial set.
func WriteZset(pool Upstream, key string, keys []HotKey) error {
	req := resp.AppendCommand(nil, "MULTI")
	req = resp.AppendCommand(req, "DEL", key)
	n := 3
	const chunk = 1000 // members per ZADD, so no single command is huge
	for i := 0; i < len(keys); i += chunk {
		args := [][]byte{[]byte("ZADD"), []byte(key)}
		for _, k := range keys[i:min(i+chunk, len(keys))] {
			args = append(args, strconv.AppendUint(nil, k.Count, 10), []byte(k.Key))
		}
		req = resp.AppendArgs(req, args)
		n++
	}
	req = resp.AppendCommand(req, "EXEC")
	conn, err := pool.DedicatedKey([]byte(key))
	if err != nil {
		return err
	}
	call := upstream.NewCall()
	if err := conn.Do(call, req, n, time.Now().Add(writeTimeoutFactor*pool.Timeout())); err != nil {
		conn.Close()
		return err
	}
	conn.Release()
	for i := 0; i < n; i++ {
		if f := call.Frame(i); len(f) > 0 && f[0] == resp.TypeError {
			return fmt.Errorf("warm: writing zset %s: %s", key, resp.ParseError(f))
		}
	}
	if exec := call.Frame(n - 1); len(exec) > 0 && exec[0] != resp.TypeArray {
		return fmt.Errorf("warm: writing zset %s: EXEC replied %q", key, bytes.TrimSpace(exec))
	}
	return nil
}

// writeTimeoutFactor bounds a write of the hot-key list, in multiples of the upstream timeout: a list of many
// keys is a large transaction.
const writeTimeoutFactor = 5
