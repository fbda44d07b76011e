package resp

// This file is the connection guard: the RESP request reader that every client byte meets first. It enforces
// Limits before it allocates anything for a command, parses without copying, and hands the request path a whole
// client pipeline per call so that its cache hits are answered and its misses fetched together.
//
// The parser follows Redis 7.0's processMultibulkBuffer and processInlineBuffer (networking.c) and sdssplitargs
// (sds.c) closely enough that a client sees the same protocol errors; where it differs on purpose, the comment at
// the difference says so.

import (
	"bytes"
	"errors"
	"io"
	"math"
	"os"
	"sync"
	"syscall"
)

// Default limits, used for Limits fields left at zero.
const (
	// DefaultMaxRequestBytes is the largest single command, all its bytes, that a client may send. Redis accepts
	// arguments up to 512 MiB (proto-max-bulk-len); a feature-serving client has no use for commands that large,
	// and every byte of one is held in memory until the command completes.
	DefaultMaxRequestBytes = 64 << 20
	// DefaultMaxArgs is the most arguments a multi-bulk command may have. Redis 6 used the same bound; Redis 7.0
	// accepts up to 2^31-1, which lets a client make a server reserve memory for arguments it never sends.
	DefaultMaxArgs = 1 << 20
	// DefaultMaxInlineBytes is the longest inline command line (Redis's PROTO_INLINE_MAX_SIZE).
	DefaultMaxInlineBytes = 64 << 10
)

// Limits Redis itself applies to a client that has not authenticated yet, and the request size they imply.
const (
	// UnauthenticatedMaxArgs is Redis's bound on the arguments of a multi-bulk command before AUTH.
	UnauthenticatedMaxArgs = 10
	// UnauthenticatedMaxBulkBytes is Redis's bound on one multi-bulk argument before AUTH.
	UnauthenticatedMaxBulkBytes = 16384
	// UnauthenticatedMaxRequestBytes is the size of the largest command Redis accepts before AUTH: ten arguments
	// of 16384 bytes with the shortest headers that can declare them (163945 bytes). Using exactly that size means
	// the request bound never rejects a command before Redis's own two limits would.
	UnauthenticatedMaxRequestBytes = len("*10\r\n") +
		UnauthenticatedMaxArgs*(len("$16384\r\n")+UnauthenticatedMaxBulkBytes+len("\r\n"))
)

const (
	// readBufInitial is the read buffer an idle connection keeps. It is also Redis's read size (PROTO_IOBUF_LEN).
	readBufInitial = 16 << 10
	// respHeaderMax bounds a "*<n>\r" or "$<n>\r" line, marker and '\r' included. The longest valid one,
	// "*-9223372036854775808\r", has 22 bytes; Redis waits for up to 64 KiB, which buys nothing for a header.
	respHeaderMax = 32
	// respHeaderSlack is what the buffer may hold beyond the request bound: the part of the next header line that is
	// read before that header can be judged (respHeaderMax and the byte after '\r').
	respHeaderSlack = 64
	// redisProtoMaxBulkLen is Redis's default proto-max-bulk-len. Redis checks it before the unauthenticated bound,
	// so an unauthenticated "$600000000" is an invalid bulk length and not an unauthenticated one.
	redisProtoMaxBulkLen = 512 << 20
	// minBulkArgBytes is the smallest encoding of one argument, "$0\r\n\r\n": a declared count that cannot fit in
	// the request bound even at that size is refused before its arguments arrive.
	minBulkArgBytes = len("$0\r\n\r\n")
	// limitCeiling keeps sums of limits and offsets from overflowing int.
	limitCeiling = math.MaxInt >> 2
	// maxBatchCommands bounds the commands one ReadBatch returns, so that a buffer full of tiny commands (two bytes each
	// for "a\n") cannot make the caller's slice hold millions of entries; the rest stay buffered and the next call
	// returns them without reading.
	maxBatchCommands = 1024
	// maxReusedArgsCap is the largest Args backing array kept for reuse. A Command slot that once held a command with
	// a million arguments would otherwise keep 24 MB, and pointers into an old read buffer, for the life of the
	// connection.
	maxReusedArgsCap = 512
	// readerMaxEmptyReads is how many (0, nil) results from the underlying reader count as no progress, as in bufio.
	readerMaxEmptyReads = 100
)

// Limits bound what a client may send. A field that is zero or negative means its default.
type Limits struct {
	// MaxRequestBytes is the largest single command, all its bytes including headers. If zero,
	// DefaultMaxRequestBytes is used. It also bounds the read buffer: it never grows beyond the larger of
	// MaxRequestBytes and MaxInlineBytes plus a few dozen bytes of header. A multi-bulk command that would exceed
	// it fails with "invalid bulk length" as soon as the argument header that crosses the bound is read (Redis has
	// no such limit of its own; it closes a client whose query buffer passes client-query-buffer-limit without
	// a reply).
	MaxRequestBytes int
	// MaxArgs is the most arguments in one multi-bulk command. If zero, DefaultMaxArgs is used. As in Redis,
	// inline commands have no argument bound of their own: MaxInlineBytes bounds them.
	MaxArgs int
	// MaxInlineBytes is the longest inline command line, not counting its '\n' (a '\r' before the '\n' counts).
	// If zero, DefaultMaxInlineBytes is used.
	MaxInlineBytes int
	// MaxBulkBytes is the largest single multi-bulk argument. If zero, MaxRequestBytes is used. Values above
	// Redis's default proto-max-bulk-len (512 MiB) act as 512 MiB.
	MaxBulkBytes int
	// Unauthenticated selects Redis's behaviour before AUTH: MaxArgs and MaxBulkBytes violations report
	// "unauthenticated multibulk length" and "unauthenticated bulk length", and ReadBatch returns one command per
	// call. Redis parses a command only after running the one before it, so "AUTH pw" followed in the same
	// pipeline by a SET of 20 KB succeeds there; returning one command at a time lets the server call SetLimits
	// after AUTH before the SET is parsed.
	Unauthenticated bool
}

// UnauthenticatedLimits returns the limits Redis applies before a client has authenticated: at most
// UnauthenticatedMaxArgs arguments per multi-bulk command and UnauthenticatedMaxBulkBytes bytes per argument,
// with MaxRequestBytes set to the largest command those two allow (UnauthenticatedMaxRequestBytes). Inline
// commands keep DefaultMaxInlineBytes and no argument bound, as in Redis, which parses an unauthenticated inline
// command of any argument count up to 64 KiB and then refuses to run it with NOAUTH.
func UnauthenticatedLimits() Limits {
	return Limits{
		MaxRequestBytes: UnauthenticatedMaxRequestBytes,
		MaxArgs:         UnauthenticatedMaxArgs,
		MaxInlineBytes:  DefaultMaxInlineBytes,
		MaxBulkBytes:    UnauthenticatedMaxBulkBytes,
		Unauthenticated: true,
	}
}

// normalized fills in defaults and clamps values so that sums of them cannot overflow.
func (l Limits) normalized() Limits {
	if l.MaxRequestBytes <= 0 {
		l.MaxRequestBytes = DefaultMaxRequestBytes
	}
	if l.MaxArgs <= 0 {
		l.MaxArgs = DefaultMaxArgs
	}
	if l.MaxInlineBytes <= 0 {
		l.MaxInlineBytes = DefaultMaxInlineBytes
	}
	if l.MaxBulkBytes <= 0 {
		l.MaxBulkBytes = l.MaxRequestBytes
	}
	l.MaxRequestBytes = min(l.MaxRequestBytes, limitCeiling)
	l.MaxInlineBytes = min(l.MaxInlineBytes, limitCeiling)
	l.MaxBulkBytes = min(l.MaxBulkBytes, redisProtoMaxBulkLen)
	return l
}

// bufLimit is the most the read buffer may hold while a command parsed under l is incomplete.
func (l Limits) bufLimit() int {
	return max(l.MaxRequestBytes, l.MaxInlineBytes+1) + respHeaderSlack
}

// Command is one parsed client command. Its slices point into the Reader's buffer (inline arguments too: they
// are unescaped in place) and are valid until the next ReadBatch on that Reader; the caller must copy anything it
// keeps longer. Each slice has its capacity set to its length, so appending to one copies it instead
// of overwriting the bytes that follow.
type Command struct {
	// Args holds the arguments; Args[0] is the command name as sent, in the client's case.
	Args [][]byte
	// Raw is the command's bytes exactly as received when it was sent as a multi-bulk array, so it can be
	// forwarded upstream unchanged; nil for inline commands.
	Raw []byte
}

// ProtocolError reports a request that breaks the RESP protocol or the Reader's Limits. Error returns Redis's own
// reply text without the "ERR " prefix: the server replies "-ERR " + Error() + "\r\n" and closes the connection,
// as Redis does. ProtocolErrors are never wrapped by the Reader; the sentinels below can be compared with ==.
type ProtocolError struct {
	msg string
}

// Error returns the error text Redis sends for the same violation, without the "ERR " prefix.
func (e *ProtocolError) Error() string { return e.msg }

// Protocol errors with fixed text. The "expected '$', got 'c'" error depends on the byte and has no sentinel.
var (
	// ErrInvalidMultibulkLength means a "*<n>" count is not a number, is above 2^31-1 or MaxArgs, or declares
	// more arguments than MaxRequestBytes could hold.
	ErrInvalidMultibulkLength = &ProtocolError{"Protocol error: invalid multibulk length"}
	// ErrTooBigMultibulkCount means a "*" line had no '\r' within its first 32 bytes.
	ErrTooBigMultibulkCount = &ProtocolError{"Protocol error: too big mbulk count string"}
	// ErrInvalidBulkLength means a "$<n>" length is not a number, is negative, is above MaxBulkBytes, or makes
	// the command larger than MaxRequestBytes.
	ErrInvalidBulkLength = &ProtocolError{"Protocol error: invalid bulk length"}
	// ErrTooBigBulkCount means a "$" line had no '\r' within its first 32 bytes.
	ErrTooBigBulkCount = &ProtocolError{"Protocol error: too big bulk count string"}
	// ErrTooBigInlineRequest means an inline line had no '\n' within MaxInlineBytes+1 bytes.
	ErrTooBigInlineRequest = &ProtocolError{"Protocol error: too big inline request"}
	// ErrUnbalancedQuotes means an inline line has an unterminated quote, or a closing quote followed by
	// something other than whitespace.
	ErrUnbalancedQuotes = &ProtocolError{"Protocol error: unbalanced quotes in request"}
	// ErrUnauthenticatedMultibulkLength means a "*<n>" count is above MaxArgs under Unauthenticated limits.
	ErrUnauthenticatedMultibulkLength = &ProtocolError{"Protocol error: unauthenticated multibulk length"}
	// ErrUnauthenticatedBulkLength means a "$<n>" length is above MaxBulkBytes under Unauthenticated limits.
	ErrUnauthenticatedBulkLength = &ProtocolError{"Protocol error: unauthenticated bulk length"}
)

// errReadBufferFull would mean the buffer bound and the parser's limits disagree; the limits keep every incomplete
// command below the bound, so it is never expected.
var errReadBufferFull = errors.New("resp: incomplete request fills the read buffer")

// errReaderBadCount means the underlying io.Reader returned a count outside its buffer.
var errReaderBadCount = errors.New("resp: reader returned an invalid count")

// errExpectedDollar builds Redis's error for an argument header that does not start with '$'. Redis formats the
// byte with %c (the raw byte, not a UTF-8 rune) and then replaces '\r' and '\n' with spaces so the error line
// stays one line.
func errExpectedDollar(c byte) *ProtocolError {
	if c == '\r' || c == '\n' {
		c = ' '
	}
	return &ProtocolError{"Protocol error: expected '$', got '" + string([]byte{c}) + "'"}
}

// Kinds of command being parsed.
const (
	cmdKindNone      = 0
	cmdKindMultibulk = '*'
	cmdKindInline    = 'i'
)

// readState is where parsing of the command at the start of the unconsumed bytes stopped. Offsets are relative to
// that start, so moving the buffer does not disturb them.
type readState struct {
	kind byte
	off  int // next byte to examine (inline: the '\n' is not in [0, off))
	n    int // declared argument count (multi-bulk)
	left int // arguments not yet read; -1 until the "*<n>" line is read
	bulk int // length declared by the argument header just read, or -1 when a header comes next
}

// Reader reads client commands from a connection, enforcing Limits. It is not safe for concurrent use; one
// goroutine owns each connection's Reader.
type Reader struct {
	rd   io.Reader
	next Limits // installed by SetLimits; the next command that starts uses them
	lim  Limits // limits of the command being parsed

	buf        []byte
	start, end int // buf[start:end] is received but not yet returned as commands
	st         readState

	perr    error // protocol error found behind commands that were returned first
	rerr    error // error from rd, returned once the complete commands before it are consumed
	empties int   // consecutive (0, nil) reads

	// grow, if set, is asked before the buffer grows by extra bytes; when it returns an error, ReadBatch fails with
	// that error instead of allocating.
	grow func(extra int) error

	// raw, if set (SetIdleRelease), is the connection rd reads from: an empty buffer waits for input on it and is
	// given back to idleBuffers while it waits.
	raw  syscall.RawConn
	idle struct {
		read func(fd uintptr) bool // r.readIdle
		n    int                   // what the last read returned
		err  error
	}

	// work counts parser steps (argument headers, bytes searched for '\n'); tests use it to prove that parsing
	// costs O(bytes) however the bytes are split into reads.
	work int64
}

// NewReader returns a Reader of commands from rd under lim (zero fields take their defaults). It allocates its
// initial 16 KiB buffer now and grows it only while an incomplete command needs more.
func NewReader(rd io.Reader, lim Limits) *Reader {
	lim = lim.normalized()
	return &Reader{rd: rd, next: lim, lim: lim, buf: make([]byte, readBufInitial)}
}

// SetLimits installs lim (zero fields take their defaults) for the next command that starts after the call; a
// command already partly received keeps the limits it started under. The server calls it after AUTH succeeds.
func (r *Reader) SetLimits(lim Limits) {
	r.next = lim.normalized()
}

// SetGrowth installs grow, which is asked before the read buffer grows beyond its current size by extra bytes. When
// it returns an error the buffer does not grow and ReadBatch returns that error (after the complete commands before
// it), as it returns an error of the underlying reader. featcache's server charges the growth to the memory all
// clients share, and refuses it with its own error when that memory is spent.
func (r *Reader) SetGrowth(grow func(extra int) error) { r.grow = grow }

// idleBuffers holds read buffers of readBufInitial bytes given back by Readers waiting for input (SetIdleRelease).
// They are arrays behind pointers, so that putting one back allocates nothing.
var idleBuffers = sync.Pool{New: func() any { return new([readBufInitial]byte) }}

// SetIdleRelease makes the Reader hold no read buffer while it waits for input with nothing buffered: it reads
// from raw (the connection rd reads from, which must be the same file descriptor) and takes a buffer from a pool
// shared by all Readers only once input has arrived, giving it back when a read finds nothing and the Reader is to
// wait. Ten thousand idle connections then hold no 16 KiB buffer each, and busy ones reuse a few buffers that stay
// in the processor's caches. Deadlines set on the connection apply as they do to its Read. A buffer that a large
// command grew is not given back; it is shrunk once consumed, as without SetIdleRelease. It must be called before
// the first ReadBatch.
func (r *Reader) SetIdleRelease(raw syscall.RawConn) {
	r.raw = raw
	r.idle.read = r.readIdle
	if r.start == r.end && len(r.buf) == readBufInitial {
		r.buf, r.start, r.end = nil, 0, 0
	}
}

// Buffered returns the number of bytes received but not yet returned as commands.
func (r *Reader) Buffered() int { return r.end - r.start }

// Footprint returns the size of the read buffer: the memory the Reader holds for its connection, which SetGrowth's
// function was asked for before it grew.
func (r *Reader) Footprint() int { return cap(r.buf) }

// ReadBatch blocks until at least one complete command is buffered, reading from the underlying reader as
// needed, then returns the complete commands already in the buffer, in order, appended to dst[:0]: at most 1024
// of them, and only one under Unauthenticated limits. Commands left out by those bounds, and an incomplete command
// at the end, stay buffered; the next call returns them without reading if they are complete. Empty commands
// ("*0", a negative count, an empty line) are skipped.
//
// The returned slices are valid until the next ReadBatch. Passing the previous result back as dst reuses both
// it and each Command's Args array, so a steady stream of commands parses without allocating.
//
// When a protocol violation follows complete commands in the buffer, ReadBatch returns those commands with a nil
// error and the *ProtocolError on the next call, so the replies to the good commands are not lost (Redis too
// runs the commands before a protocol error, then replies with the error and closes). An error from the
// underlying reader, io.EOF included, is returned unchanged in the same way: after the complete commands received
// before it. Once ReadBatch has returned an error it returns the same error on every later call.
func (r *Reader) ReadBatch(dst []Command) ([]Command, error) {
	dst = dst[:0]
	if r.perr != nil {
		return dst, r.perr
	}
	r.recycle(dst)
	for {
		var err error
		dst, err = r.parse(dst)
		if err != nil {
			r.perr = err
			if len(dst) > 0 {
				return dst, nil
			}
			return dst, err
		}
		if len(dst) > 0 {
			return dst, nil
		}
		if r.rerr != nil {
			return dst, r.rerr
		}
		r.fill()
	}
}

// ClearTimeout forgets a read deadline error (os.ErrDeadlineExceeded), which the server uses to interrupt the
// wait for a client's next command, so that reading can go on; a command partly received stays as it was. It
// reports whether there was such an error to forget.
func (r *Reader) ClearTimeout() bool {
	if r.rerr == nil || !errors.Is(r.rerr, os.ErrDeadlineExceeded) {
		return false
	}
	r.rerr = nil
	r.empties = 0
	return true
}

// Shrink gives back the memory a large command grew the buffer to, once the caller is done with prev, the
// commands the last ReadBatch returned (their slices are cleared). ReadBatch does the same at its start; calling it
// at the end of a batch returns the memory before the client's next command, however long that takes.
func (r *Reader) Shrink(prev []Command) { r.recycle(prev) }

// recycle runs when the commands of the previous batch are no longer in use: it rewinds an empty buffer and
// shrinks one that a large command grew, once that command has been consumed, so an idle connection does not keep
// megabytes.
func (r *Reader) recycle(dst []Command) {
	if r.start == r.end {
		r.start, r.end = 0, 0
	}
	if len(r.buf) <= readBufInitial || r.end-r.start > readBufInitial/2 {
		return
	}
	nb := make([]byte, readBufInitial)
	r.end = copy(nb, r.buf[r.start:r.end])
	r.start = 0
	r.buf = nb
	// The caller's slots beyond this batch still point into the old buffer; clearing them lets it be collected.
	for i := range dst[:cap(dst)] {
		c := &dst[:cap(dst)][i]
		c.Raw = nil
		if cap(c.Args) > maxReusedArgsCap {
			c.Args = nil
		} else {
			clear(c.Args[:cap(c.Args)])
		}
	}
}

// fill reads once from the underlying reader into the free end of the buffer, making room first if there is none.
func (r *Reader) fill() {
	if r.raw != nil && r.start == r.end && len(r.buf) <= readBufInitial {
		r.fillIdle()
		return
	}
	if r.end == len(r.buf) {
		if err := r.makeRoom(); err != nil {
			r.rerr = err
			return
		}
	}
	n, err := r.rd.Read(r.buf[r.end:])
	if n < 0 || n > len(r.buf)-r.end {
		r.rerr = errReaderBadCount
		return
	}
	r.end += n
	if err != nil {
		r.rerr = err
		return
	}
	if n > 0 {
		r.empties = 0
	} else if r.empties++; r.empties >= readerMaxEmptyReads {
		r.rerr = io.ErrNoProgress
	}
}

// fillIdle is fill for a Reader with SetIdleRelease and nothing buffered: one read from the connection, into a
// buffer taken from idleBuffers when the read has something to return, the buffer given back while the Reader waits
// for the connection to become readable.
func (r *Reader) fillIdle() {
	r.start, r.end = 0, 0
	r.idle.n, r.idle.err = 0, nil
	err := r.raw.Read(r.idle.read)
	switch n, rerr := r.idle.n, r.idle.err; {
	case err != nil: // a deadline, or the connection closed
		r.rerr = err
	case rerr != nil:
		r.rerr = os.NewSyscallError("read", rerr)
	case n <= 0:
		r.release()
		r.rerr = io.EOF
	default:
		r.end = n
		r.empties = 0
	}
}

// readIdle is the function fillIdle passes to syscall.RawConn.Read, made once (SetIdleRelease) so that a read
// allocates nothing: it reads into the Reader's buffer, taking one from idleBuffers first if it has none, and
// reports false, to wait for input, after giving the buffer back when there is nothing to read.
func (r *Reader) readIdle(fd uintptr) bool {
	if r.buf == nil {
		r.buf = idleBuffers.Get().(*[readBufInitial]byte)[:]
	}
	for {
		r.idle.n, r.idle.err = syscall.Read(int(fd), r.buf)
		if r.idle.err != syscall.EINTR {
			break
		}
	}
	if r.idle.err == syscall.EAGAIN {
		r.release()
		return false
	}
	return true
}

// release gives an empty buffer of the initial size back to idleBuffers.
func (r *Reader) release() {
	if len(r.buf) == readBufInitial && r.start == r.end {
		idleBuffers.Put((*[readBufInitial]byte)(r.buf))
		r.buf, r.start, r.end = nil, 0, 0
	}
}

// makeRoom frees space at the end of a full buffer. Moving the unconsumed bytes to the front is preferred when it
// frees at least half the buffer; otherwise the buffer doubles, up to the bound the current command's limits
// allow. Either way each byte is copied O(1) times on average.
func (r *Reader) makeRoom() error {
	used := r.end - r.start
	limit := r.lim.bufLimit()
	if r.st.kind == cmdKindNone {
		limit = r.next.bufLimit()
	}
	switch {
	case r.start > 0 && used <= len(r.buf)/2:
	case len(r.buf) < limit:
		size := min(2*len(r.buf), limit)
		if r.grow != nil {
			if err := r.grow(size - len(r.buf)); err != nil {
				return err
			}
		}
		nb := make([]byte, size)
		r.end = copy(nb, r.buf[r.start:r.end])
		r.start = 0
		r.buf = nb
		return nil
	case r.start > 0:
	default:
		return errReadBufferFull
	}
	r.end = copy(r.buf, r.buf[r.start:r.end])
	r.start = 0
	return nil
}

// parse appends to dst the complete commands at the front of the buffer, consuming them. It stops at an
// incomplete command, after maxBatchCommands commands, after one command under Unauthenticated limits, or at a
// protocol error, which it returns with the commands before it.
func (r *Reader) parse(dst []Command) ([]Command, error) {
	for r.start < r.end && len(dst) < maxBatchCommands {
		if len(dst) > 0 && r.next.Unauthenticated {
			break
		}
		fresh := r.st.kind == cmdKindNone
		if fresh && r.buf[r.start] == '*' {
			// The hit path's case: a small command, all of it buffered.
			var c *Command
			dst, c = nextCommandSlot(dst)
			if n := quickMultibulk(r.buf[r.start:r.end], &r.next, &c.Args); n > 0 {
				c.Raw = r.buf[r.start : r.start+n : r.start+n]
				r.start += n
				r.work += int64(len(c.Args))
				continue
			}
			dst = dst[:len(dst)-1]
		}
		if fresh {
			r.lim = r.next
			r.st = readState{kind: cmdKindInline}
			if r.buf[r.start] == '*' {
				r.st = readState{kind: cmdKindMultibulk, left: -1, bulk: -1}
			}
		}
		var c *Command
		dst, c = nextCommandSlot(dst)
		var done bool
		var err error
		switch {
		case r.st.kind == cmdKindInline:
			done, err = r.inline(&c.Args)
		case fresh:
			// The common case: the whole command is usually here already, so parse it once, collecting its
			// arguments as it goes.
			done, err = r.multibulk(&c.Args, false)
		default:
			// The command arrived in several reads: validate only the new bytes, and collect the arguments in
			// one more pass once all of it is here, because the buffer may have moved since the first part
			// was read.
			if done, err = r.multibulk(nil, false); done && err == nil {
				r.st = readState{kind: cmdKindMultibulk, left: -1, bulk: -1}
				done, err = r.multibulk(&c.Args, true)
			}
		}
		if err != nil || !done {
			return dst[:len(dst)-1], err
		}
		n := r.st.off
		switch {
		case len(c.Args) == 0:
			dst = dst[:len(dst)-1]
		case r.st.kind == cmdKindMultibulk:
			c.Raw = r.buf[r.start : r.start+n : r.start+n]
		}
		r.start += n
		r.st = readState{}
	}
	return dst, nil
}

// Bounds of the commands quickMultibulk parses.
const (
	quickMaxArgs  = 9   // a one-digit count
	quickMaxDigit = 5   // digits of an argument's length: up to 99,999 bytes
	quickMaxBulk  = 1e5 // 10^quickMaxDigit
	quickMinBytes = 4   // "*1\r\n"
)

// quickMultibulk parses the multi-bulk command at the start of b, appending its arguments to args, when the whole
// command is buffered and written as clients write it: a count of 1 to 9 and argument lengths of at most five
// digits without a leading zero ("0" itself allowed), each header line ending in "\r\n", within lim. It returns
// the command's length, or 0 for anything else, complete or not, valid or not, which multibulk then judges
// (args may hold part of the arguments then). For every command it accepts it decides exactly as multibulk would:
// the same arguments and the same length, and no limit of lim exceeded; like multibulk it does not look at the
// two bytes after each argument.
func quickMultibulk(b []byte, lim *Limits, args *[][]byte) int {
	if len(b) < quickMinBytes || b[1] < '1' || b[1] > '0'+quickMaxArgs || b[2] != '\r' || b[3] != '\n' {
		return 0
	}
	n := int(b[1] - '0')
	if n > lim.MaxArgs || quickMinBytes+n*minBulkArgBytes > lim.MaxRequestBytes {
		return 0
	}
	i := quickMinBytes
	for range n {
		// "$<length>\r\n<bytes>" and two bytes: i is at the '$'.
		if i+3 >= len(b) || b[i] != '$' {
			return 0
		}
		j := i + 1
		l := int(b[j] - '0')
		switch {
		case l == 0:
			j++
		case l > 0 && l <= 9:
			for j++; j < len(b) && j-i <= quickMaxDigit && b[j] >= '0' && b[j] <= '9'; j++ {
				l = l*10 + int(b[j]-'0')
			}
		default:
			return 0
		}
		// j is at what must be the header's '\r'.
		if j+1 >= len(b) || b[j] != '\r' || b[j+1] != '\n' || l >= quickMaxBulk {
			return 0
		}
		j += 2
		end := j + l
		if l > lim.MaxBulkBytes || end+2 > lim.MaxRequestBytes || end+2 > len(b) {
			return 0
		}
		*args = append(*args, b[j:end:end])
		i = end + 2
	}
	return i
}

// nextCommandSlot extends dst by one Command, reusing the slot's Args array unless it is oversized.
func nextCommandSlot(dst []Command) ([]Command, *Command) {
	n := len(dst)
	if n < cap(dst) {
		dst = dst[:n+1]
	} else {
		dst = append(dst, Command{})
	}
	c := &dst[n]
	c.Raw = nil
	if cap(c.Args) > maxReusedArgsCap {
		c.Args = nil
	} else {
		c.Args = c.Args[:0]
	}
	return dst, c
}

// multibulk continues the multi-bulk command at r.start from r.st, and reports whether it is complete. With args
// non-nil it appends each argument; with presize it first reserves room for all of them, which is done only once
// the whole command is known to be buffered, so a declared count never reserves memory on its own.
//
// Every bound is checked when the header declaring a size is read, before the buffer grows for what it
// declares. As in Redis, a header line ends at its first '\r' and the byte after it is skipped unchecked, and so
// are the two bytes after an argument's payload: Redis accepts "*1\rX$4\rXPINGXY", so featcache does too, and the
// same bytes forwarded as Raw mean the same to Redis.
func (r *Reader) multibulk(args *[][]byte, presize bool) (bool, error) {
	b := r.buf[r.start:r.end]
	st := &r.st
	lim := &r.lim
	if st.left < 0 {
		n, eol, ok, err := readHeader(b, 0, ErrTooBigMultibulkCount)
		if eol < 0 || err != nil {
			return false, err
		}
		if !ok || n > math.MaxInt32 {
			return false, ErrInvalidMultibulkLength
		}
		if n > int64(lim.MaxArgs) {
			if lim.Unauthenticated {
				return false, ErrUnauthenticatedMultibulkLength
			}
			return false, ErrInvalidMultibulkLength
		}
		st.off = eol + 2
		if n <= 0 {
			st.left = 0
			return true, nil
		}
		if int64(st.off)+n*int64(minBulkArgBytes) > int64(lim.MaxRequestBytes) {
			return false, ErrInvalidMultibulkLength
		}
		st.n, st.left, st.bulk = int(n), int(n), -1
		if args != nil && presize && cap(*args) < st.n {
			*args = make([][]byte, 0, st.n)
		}
	}
	for st.left > 0 {
		r.work++
		if st.bulk < 0 {
			n, eol, ok, err := readHeader(b, st.off, ErrTooBigBulkCount)
			if eol < 0 || err != nil {
				return false, err
			}
			// Redis checks the marker only once the whole line is in, so "X" alone waits for its '\r'.
			if b[st.off] != '$' {
				return false, errExpectedDollar(b[st.off])
			}
			if !ok || n < 0 || n > redisProtoMaxBulkLen {
				return false, ErrInvalidBulkLength
			}
			if n > int64(lim.MaxBulkBytes) {
				if lim.Unauthenticated {
					return false, ErrUnauthenticatedBulkLength
				}
				return false, ErrInvalidBulkLength
			}
			if int64(eol)+2+n+2 > int64(lim.MaxRequestBytes) {
				return false, ErrInvalidBulkLength
			}
			st.off, st.bulk = eol+2, int(n)
		}
		if len(b)-st.off < st.bulk+2 {
			return false, nil
		}
		if args != nil {
			end := st.off + st.bulk
			*args = append(*args, b[st.off:end:end])
		}
		st.off += st.bulk + 2
		st.bulk = -1
		st.left--
	}
	return true, nil
}

// readHeader reads the header line at b[off:], whose first byte is its marker ('*' or '$', checked by the caller).
// It returns eol = -1 while the line is incomplete, the tooBig error for a line without '\r' in its first 32 bytes,
// and otherwise the index of its '\r' and the number after the marker, with ok false if that is not a valid
// string2ll number.
func readHeader(b []byte, off int, tooBig error) (n int64, eol int, ok bool, err error) {
	// Fast path for the header every client sends: one to 18 digits, no sign, no leading zero (or "0"), then '\r'
	// and the byte after it. It scans and converts in one pass; anything else, including every error, takes the
	// general path below, which decides exactly as Redis does.
	i := off + 1
	switch {
	case off >= len(b):
		return 0, -1, false, nil
	case b[off] != '$' && b[off] != '*':
		// A wrong marker, possibly '\r' itself, which ends the line at once: the general path judges it.
	case i+2 < len(b) && b[i] == '0' && b[i+1] == '\r':
		return 0, i + 1, true, nil
	case i < len(b) && b[i] >= '1' && b[i] <= '9':
		for end := min(len(b)-1, off+19); i < end; i++ {
			c := b[i]
			if c == '\r' {
				return n, i, true, nil
			}
			if c < '0' || c > '9' {
				break
			}
			n = n*10 + int64(c-'0')
		}
	}
	if eol, err = respHeaderEnd(b, off, tooBig); eol < 0 || err != nil {
		return 0, eol, false, err
	}
	if eol == off {
		return 0, eol, false, nil // a line that is only "\r": no marker, which the caller reports
	}
	n, ok = ParseInt(b[off+1 : eol])
	return n, eol, ok, nil
}

// respHeaderEnd finds the '\r' ending the header line at b[off:]. It returns -1 while the line, or the byte after its
// '\r', has not arrived, and tooBig once respHeaderMax bytes have arrived without a '\r'.
//
// Redis searches up to 64 KiB for the '\r' and then judges the number, so a 40-byte line ending in '\r' is an
// "invalid length" there and a "too big count string" here. No valid header is longer than 22 bytes, so the two
// differ only in which text a broken client gets.
func respHeaderEnd(b []byte, off int, tooBig error) (int, error) {
	line := b[off:]
	if len(line) > respHeaderMax {
		line = line[:respHeaderMax]
	}
	i := bytes.IndexByte(line, '\r')
	switch {
	case i < 0 && len(b)-off >= respHeaderMax:
		return -1, tooBig
	case i < 0 || off+i+1 >= len(b):
		return -1, nil
	}
	return off + i, nil
}

// inline parses the inline command at r.start once its '\n' has arrived, appending its arguments to args. The
// search for '\n' resumes where the previous one stopped, so a long line arriving in small reads costs O(length).
//
// Redis finds the line end with strchr, which stops at a NUL byte, so a line containing NUL never completes there
// and the connection waits until 64 KiB have accumulated. featcache treats NUL as an ordinary byte.
func (r *Reader) inline(args *[][]byte) (bool, error) {
	b := r.buf[r.start:r.end]
	st := &r.st
	// The '\n' may come at most MaxInlineBytes bytes after the line start. Redis's test is "more than 64 KiB
	// buffered and no '\n'", whose outcome depends on how the bytes were split into reads; a bound on the line
	// itself gives the same answer for every split.
	window := b[:min(len(b), r.lim.MaxInlineBytes+1)]
	i := bytes.IndexByte(window[st.off:], '\n')
	if i < 0 {
		r.work += int64(len(window) - st.off)
		if len(window) > r.lim.MaxInlineBytes {
			return false, ErrTooBigInlineRequest
		}
		st.off = len(window)
		return false, nil
	}
	r.work += int64(i + 1)
	nl := st.off + i
	line := b[:nl]
	if len(line) > 0 && line[len(line)-1] == '\r' {
		line = line[:len(line)-1]
	}
	var ok bool
	if *args, ok = splitInline(*args, line); !ok {
		return false, ErrUnbalancedQuotes
	}
	st.off = nl + 1
	return true, nil
}

// splitInline splits an inline command line into arguments like Redis's sdssplitargs and appends them to args.
// It unescapes in place: every output byte consumes at least one input byte, so the write position never passes
// the read position, and the line is never read again (inline commands have no Raw). The arguments therefore
// live in the read buffer like multi-bulk ones and need no storage of their own.
//
// Rules, from sdssplitargs: blanks (isspace: space, \t, \n, \v, \f, \r) separate arguments, but inside an
// unquoted argument only space, \t, \n and \r end it (so "a\vb" is one argument). A quote may start in the middle
// of an argument ("ab\"c d\"" is "abc d"). Double quotes take \xHH and the escapes \n \r \t \b \a; any other
// escaped byte stands for itself. Single quotes take only \'. A closing quote must be followed by a blank or the
// end of the line, and an unterminated quote is an error; both report false.
func splitInline(args [][]byte, line []byte) ([][]byte, bool) {
	n := len(line)
	p, w := 0, 0
	for {
		for p < n && isInlineSpace(line[p]) {
			p++
		}
		if p == n {
			return args, true
		}
		start := w
		inDouble, inSingle := false, false
		for done := false; !done; {
			switch {
			case inDouble:
				if p == n {
					return args, false
				}
				c := line[p]
				switch {
				case c == '\\' && p+3 < n && line[p+1] == 'x' && isInlineHex(line[p+2]) && isInlineHex(line[p+3]):
					line[w] = inlineUnhex(line[p+2])<<4 | inlineUnhex(line[p+3])
					w++
					p += 3
				case c == '\\' && p+1 < n:
					p++
					line[w] = inlineUnescape(line[p])
					w++
				case c == '"':
					if p+1 < n && !isInlineSpace(line[p+1]) {
						return args, false
					}
					done = true
				default:
					line[w] = c
					w++
				}
			case inSingle:
				if p == n {
					return args, false
				}
				c := line[p]
				switch {
				case c == '\\' && p+1 < n && line[p+1] == '\'':
					p++
					line[w] = '\''
					w++
				case c == '\'':
					if p+1 < n && !isInlineSpace(line[p+1]) {
						return args, false
					}
					done = true
				default:
					line[w] = c
					w++
				}
			case p == n:
				done = true
			default:
				switch c := line[p]; c {
				case ' ', '\n', '\r', '\t':
					done = true
				case '"':
					inDouble = true
				case '\'':
					inSingle = true
				default:
					line[w] = c
					w++
				}
			}
			if p < n {
				p++
			}
		}
		args = append(args, line[start:w:w])
	}
}

// isInlineSpace is C's isspace in the C locale.
func isInlineSpace(c byte) bool {
	return c == ' ' || (c >= '\t' && c <= '\r')
}

func isInlineHex(c byte) bool {
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')
}

func inlineUnhex(c byte) byte {
	switch {
	case c >= 'a':
		return c - 'a' + 10
	case c >= 'A':
		return c - 'A' + 10
	}
	return c - '0'
}

// inlineUnescape maps the byte after a backslash inside double quotes.
func inlineUnescape(c byte) byte {
	switch c {
	case 'n':
		return '\n'
	case 'r':
		return '\r'
	case 't':
		return '\t'
	case 'b':
		return '\b'
	case 'a':
		return '\a'
	}
	return c
}

// ParseCommand reads the whole multi-bulk command at the start of b, appending its arguments (slices of b) to args,
// and returns its length in bytes; 0 when b does not start with a whole multi-bulk command of at least one
// argument. It is for requests already read or built (a pipeline featcache splits between cluster nodes), and has
// no limits of its own beyond the length of b. redcon's ReadNextCommand is not used for this: it panics on a
// negative argument length such as "$-2" (it slices b[i:i-2]).
func ParseCommand(b []byte, args [][]byte) ([][]byte, int) {
	i := bytes.IndexByte(b, '\n')
	if len(b) < 4 || b[0] != TypeArray || i < 2 || b[i-1] != '\r' {
		return args, 0
	}
	n, ok := ParseInt(b[1 : i-1])
	if !ok || n < 1 {
		return args, 0
	}
	pos := i + 1
	for j := int64(0); j < n; j++ {
		if pos >= len(b) || b[pos] != TypeBulk {
			return args, 0
		}
		k := bytes.IndexByte(b[pos:], '\n')
		if k < 2 || b[pos+k-1] != '\r' {
			return args, 0
		}
		l, ok := ParseInt(b[pos+1 : pos+k-1])
		start := pos + k + 1
		if !ok || l < 0 || l > int64(len(b)-start-2) {
			return args, 0
		}
		end := start + int(l)
		args = append(args, b[start:end])
		pos = end + 2
	}
	return args, pos
}
