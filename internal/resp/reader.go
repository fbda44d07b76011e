package resp

// This file is the connection guard: the RESP request reader that every client byte meets first. It enforces
// Limits before it allocates anything for a command, parses without copying, and hands the request path a whole
// client pipeline per call so that its cache hits are answered and its misses fetched together.
//
// The parser follows Redis 7.0's processMultibulkBuffer and processInlineBuffer (networking.c) and sdssplitargs
// (sds.c) closely enough that a client sees the same protocol errors; where it differs on purpose, the comment at
// the difference says so.

import (
	"encoding/binary"
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
	// inline: SetDirect succeeded. drained: the last read inside ReadDirect left nothing in the socket, so the
	// next wait may skip the read that would find nothing (see ReadDirect).
	direct  bool
	drained bool
	inq     Inq

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
		// An empty buffer, what a client that waits for each reply leaves between its commands, has nothing to
		// parse: read first.
		if r.start < r.end {
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
	if len(r.buf) > readBufInitial {
		r.shrink(dst)
	}
}

// shrink is recycle's case of a buffer grown past its initial size: it goes back to that size once what it
// holds fits in half of it. It is kept out of recycle so that recycle, which runs twice per batch, is inlined.
//
//go:noinline
func (r *Reader) shrink(dst []Command) {
	if r.end-r.start > readBufInitial/2 {
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

// SetDirect makes ReadDirect available, and reports whether it is: for a TCP connection (after SetIdleRelease) on
// Linux, where each read can learn how many bytes it left in the socket (TCP_INQ).
func (r *Reader) SetDirect() bool {
	r.direct = r.raw != nil && EnableInq(r.raw)
	return r.direct
}

// ReadDirect is ReadBatch for a caller running inside the function it passed to the connection's
// syscall.RawConn.Read (the one given to SetIdleRelease; SetDirect must have reported true), with fd the descriptor
// that function was called with. It never waits: it returns the next batch as ReadBatch would, reading from fd
// without blocking, or wait true when the caller must return false from its function so that RawConn.Read waits
// for the socket to become readable.
//
// What it saves is a system call per request. A client that waits for each reply leaves the socket empty after
// every read, and ReadBatch, which returns between reads, must make a read that finds nothing before it waits: the
// wait's readiness is cleared each time RawConn.Read begins, so only a read can tell whether bytes arrived since.
// Inside one RawConn.Read, readiness is kept from one wait to the next: after a read that left nothing in the
// socket (TCP_INQ says so; a received FIN counts as something left), ReadDirect asks for the wait at once, and
// bytes that arrived later have made the socket ready since. The caller must call BeginDirect each time it calls
// RawConn.Read, before the first ReadDirect in it, since that Read cleared the readiness ReadDirect would trust.
//
// Reads go into the Reader's buffer as ReadBatch's do (taking one from the pool when it has none, giving it back
// when it waits with nothing buffered); deadlines are not looked at (RawConn.Read's wait applies them).
//
// Its parse step is ReadBatch's, written out in both on purpose: a helper both call cost a call per batch (1.4 ns
// more in BenchmarkReaderSET1KiB, 4 ns per 16 GETs), and one loop for both made the Reader escape from ReadBatch
// (Inq's message header points into itself), an allocation more in TestReaderHugeHeaders.
func (r *Reader) ReadDirect(dst []Command, fd uintptr) (cmds []Command, wait bool, err error) {
	dst = dst[:0]
	if r.perr != nil {
		return dst, false, r.perr
	}
	r.recycle(dst)
	for {
		if r.start < r.end {
			dst, err = r.parse(dst)
			if err != nil {
				r.perr = err
				if len(dst) > 0 {
					return dst, false, nil
				}
				return dst, false, err
			}
			if len(dst) > 0 {
				return dst, false, nil
			}
		}
		if r.rerr != nil {
			return dst, false, r.rerr
		}
		if r.drained {
			r.drained = false
			r.release()
			return dst, true, nil
		}
		if !r.readNow(int(fd)) && r.rerr == nil {
			r.release()
			return dst, true, nil
		}
	}
}

// BeginDirect starts a RawConn.Read in which ReadDirect is called: the readiness a drained socket relied on is
// gone.
func (r *Reader) BeginDirect() { r.drained = false }

// DirectError records err, what RawConn.Read returned around ReadDirect (a deadline, the connection closed), as
// the error of the underlying reader: ReadBatch and ReadDirect return it from now on, after the complete commands
// buffered before it, and ClearTimeout forgets a deadline as it forgets one ReadBatch met.
func (r *Reader) DirectError(err error) {
	if r.rerr == nil {
		r.rerr = err
	}
}

// readNow reads once from fd without waiting, into the free end of the buffer (taken from idleBuffers if the
// Reader holds none, made room in if full), and reports whether it read anything. It records EOF and errors in
// rerr; a read that finds nothing (EAGAIN) leaves the buffer as it was.
func (r *Reader) readNow(fd int) bool {
	if r.buf == nil {
		r.buf = idleBuffers.Get().(*[readBufInitial]byte)[:]
		r.start, r.end = 0, 0
	} else if r.end == len(r.buf) {
		if err := r.makeRoom(); err != nil {
			r.rerr = err
			return false
		}
	}
	n, left, err := r.inq.Recv(fd, r.buf[r.end:])
	switch {
	case err == syscall.EAGAIN:
		return false
	case err != nil:
		r.rerr = os.NewSyscallError("read", err)
		return false
	case n <= 0:
		r.rerr = io.EOF
		return false
	}
	r.end += n
	r.empties = 0
	r.drained = left == 0
	return true
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
			// The hit path's case: small commands, all of them buffered.
			var refused bool
			if dst, refused = r.quickRun(dst); !refused {
				continue
			}
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

// quickRun appends to dst the commands at the front of the buffer that quickMultibulk parses, one after another,
// consuming them, up to the bounds parse keeps (maxBatchCommands, one command under Unauthenticated limits; parse
// has checked that dst may take one more). It stops at the end of the buffered bytes, at the bound, at an inline
// command, or at a command quickMultibulk refuses, and reports refused in that last case only: the command at the
// front of the buffer is then parse's to judge. The buffer's bounds stay in locals across the run, which a loop
// over the Reader's fields would load again for every command.
func (r *Reader) quickRun(dst []Command) (_ []Command, refused bool) {
	buf, start := r.buf[:r.end], r.start
	limit := maxBatchCommands
	if r.next.Unauthenticated {
		limit = len(dst) + 1
	}
	work := 0
	for start < len(buf) && len(dst) < limit && buf[start] == '*' {
		// Not emptied first: quickMultibulk sets both Args and Raw of a command it takes, and a command it
		// refuses gives its slot back, to be taken again by parse.
		var c *Command
		dst, c = takeCommandSlot(dst)
		b := buf[start:]
		n := quickMultibulk(b, &r.next, &c.Args)
		if n == 0 {
			dst, refused = dst[:len(dst)-1], true
			break
		}
		c.Raw = b[:n:n]
		start += n
		work += len(c.Args)
	}
	r.start = start
	r.work += int64(work)
	return dst, refused
}

// Bounds of the commands quickMultibulk parses.
const (
	crlf          = '\r' | '\n'<<8 // "\r\n" read as a little-endian uint16
	quickMaxArgs  = 9              // a one-digit count
	quickMaxDigit = 5              // digits of an argument's length: up to 99,999 bytes
	quickMaxBulk  = 1e5            // 10^quickMaxDigit
	quickMinBytes = 4              // "*1\r\n"
)

// quickMultibulk parses the multi-bulk command at the start of b, setting args to its arguments (in args' array
// when it is large enough), when the whole command is buffered and written as clients write it: a count of 1 to 9
// and argument lengths of at most five digits without a leading zero ("0" itself allowed), each header line ending
// in "\r\n", within lim. It returns the command's length, or 0 for anything else, complete or not, valid or not,
// which multibulk then judges (args then has the capacity for n of them, and whatever length it had). For every
// command it accepts it decides exactly as multibulk would: the same arguments and the same length, and no limit
// of lim exceeded; like multibulk it does not look at the two bytes after each argument.
func quickMultibulk(b []byte, lim *Limits, args *[][]byte) int {
	if len(b) < quickMinBytes || b[1] < '1' || b[1] > '0'+quickMaxArgs || binary.LittleEndian.Uint16(b[2:]) != crlf {
		return 0
	}
	n := int(b[1] - '0')
	if n > lim.MaxArgs || quickMinBytes+n*minBulkArgBytes > lim.MaxRequestBytes {
		return 0
	}
	if cap(*args) < n {
		*args = make([][]byte, 0, n) // kept for multibulk, too, when the command is refused
	}
	a := (*args)[:n]
	i := quickMinBytes
	for k := range a {
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
		// j is at what must be the header's "\r\n".
		if j+1 >= len(b) || binary.LittleEndian.Uint16(b[j:]) != crlf || l >= quickMaxBulk {
			return 0
		}
		j += 2
		end := j + l
		if l > lim.MaxBulkBytes || end+2 > lim.MaxRequestBytes || end+2 > len(b) {
			return 0
		}
		a[k] = b[j:end:end]
		i = end + 2
	}
	*args = a
	return i
}

// nextCommandSlot extends dst by one empty Command, reusing the slot's Args array unless it is oversized.
func nextCommandSlot(dst []Command) ([]Command, *Command) {
	dst, c := takeCommandSlot(dst)
	c.Raw, c.Args = nil, c.Args[:0]
	return dst, c
}

// takeCommandSlot extends dst by one Command and returns the slot as an earlier batch left it, its Args array
// dropped if oversized.
func takeCommandSlot(dst []Command) ([]Command, *Command) {
	n := len(dst)
	if n < cap(dst) {
		dst = dst[:n+1]
	} else {
		dst = append(dst, Command{})
	}
	c := &dst[n]
	if cap(c.Args) > maxReusedArgsCap {
		c.Args = nil
	}
	return dst, c
}
