package resp

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"runtime"
	"strings"
	"testing"
	"time"
)

// readerCmd is a parsed command copied out of the Reader's buffer, for comparisons.
type readerCmd struct {
	Args   []string
	Raw    string
	Inline bool // Raw was nil
}

func (c readerCmd) String() string {
	if c.Inline {
		return fmt.Sprintf("inline%q", c.Args)
	}
	return fmt.Sprintf("%q raw=%q", c.Args, c.Raw)
}

// mb is the expected result of the multi-bulk encoding of args.
func mb(args ...string) readerCmd {
	return readerCmd{Args: args, Raw: string(AppendCommand(nil, args...))}
}

// inl is the expected result of an inline command.
func inl(args ...string) readerCmd {
	return readerCmd{Args: args, Inline: true}
}

// enc concatenates the multi-bulk encodings of commands, each given as its arguments.
func enc(cmds ...[]string) string {
	var b []byte
	for _, c := range cmds {
		b = AppendCommand(b, c...)
	}
	return string(b)
}

// readerChunks returns data in reads whose sizes size(i) gives (at least 1, at most what fits), then io.EOF.
type readerChunks struct {
	data []byte
	size func(i int) int
	n    int
}

func (c *readerChunks) Read(p []byte) (int, error) {
	if len(c.data) == 0 {
		return 0, io.EOF
	}
	k := min(len(p), len(c.data), max(1, c.size(c.n)))
	c.n++
	copy(p, c.data[:k])
	c.data = c.data[k:]
	return k, nil
}

// wholeReads delivers data in one read.
func wholeReads(data []byte) io.Reader { return bytes.NewReader(data) }

// byteReads delivers data one byte per read, so every byte boundary is a read boundary.
func byteReads(data []byte) io.Reader {
	return &readerChunks{data: data, size: func(int) int { return 1 }}
}

// sizedReads delivers data in reads of n bytes.
func sizedReads(data []byte, n int) io.Reader {
	return &readerChunks{data: data, size: func(int) int { return n }}
}

// randomReads delivers data in reads of 1 to maxChunk bytes chosen by seed.
func randomReads(data []byte, seed uint64, maxChunk int) io.Reader {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	return &readerChunks{data: data, size: func(int) int { return 1 + rng.IntN(maxChunk) }}
}

// readerCollect reads every command from rd until ReadBatch fails, checking the Reader's invariants after each
// call: the buffer stays within the limits' bound, an error comes with no commands, a batch is never empty
// without an error.
func readerCollect(tb testing.TB, rd io.Reader, lim Limits) ([]readerCmd, error) {
	tb.Helper()
	r := NewReader(rd, lim)
	bound := max(readBufInitial, lim.normalized().bufLimit())
	var out []readerCmd
	var batch []Command
	for calls := 0; ; calls++ {
		var err error
		batch, err = r.ReadBatch(batch)
		if len(r.buf) > bound {
			tb.Fatalf("buffer grew to %d bytes; bound %d", len(r.buf), bound)
		}
		if err == errReadBufferFull || err == errReaderBadCount {
			tb.Fatalf("ReadBatch: %v", err)
		}
		if err != nil && len(batch) > 0 {
			tb.Fatalf("ReadBatch returned %d commands with error %v", len(batch), err)
		}
		if err == nil && len(batch) == 0 {
			tb.Fatalf("ReadBatch returned no commands and no error")
		}
		if len(batch) > maxBatchCommands || (lim.Unauthenticated && len(batch) > 1) {
			tb.Fatalf("ReadBatch returned %d commands", len(batch))
		}
		for _, c := range batch {
			rc := readerCmd{Raw: string(c.Raw), Inline: c.Raw == nil}
			for _, a := range c.Args {
				if cap(a) != len(a) {
					tb.Fatalf("argument %q has capacity %d beyond its length", a, cap(a))
				}
				rc.Args = append(rc.Args, string(a))
			}
			out = append(out, rc)
		}
		if err != nil {
			if again, _ := r.ReadBatch(batch); len(again) != 0 {
				tb.Fatalf("ReadBatch after error %v returned commands", err)
			}
			if _, again := r.ReadBatch(batch); again != err {
				tb.Fatalf("ReadBatch after error %v returned %v", err, again)
			}
			return out, err
		}
		if calls > 1<<22 {
			tb.Fatalf("ReadBatch does not finish")
		}
	}
}

// checkErr checks the error that ended a read: want "" means a clean io.EOF, anything else a ProtocolError with
// that text.
func checkErr(tb testing.TB, err error, want string) {
	tb.Helper()
	if want == "" {
		if err != io.EOF {
			tb.Errorf("error %v; want io.EOF", err)
		}
		return
	}
	var pe *ProtocolError
	if !errors.As(err, &pe) {
		tb.Errorf("error %v (%T); want *ProtocolError %q", err, err, want)
		return
	}
	if got := pe.Error(); got != want {
		tb.Errorf("error got %q; want %q", got, want)
	}
}

// checkCmds compares parsed commands with the expected ones.
func checkCmds(tb testing.TB, got, want []readerCmd) {
	tb.Helper()
	if len(got) != len(want) {
		tb.Errorf("got %d commands %v; want %d %v", len(got), got, len(want), want)
		return
	}
	for i := range got {
		if got[i].String() != want[i].String() {
			tb.Errorf("command %d got %v; want %v", i, got[i], want[i])
		}
	}
}

const (
	errInvalidMbulk   = "Protocol error: invalid multibulk length"
	errTooBigMbulk    = "Protocol error: too big mbulk count string"
	errInvalidBulk    = "Protocol error: invalid bulk length"
	errTooBigBulk     = "Protocol error: too big bulk count string"
	errTooBigInline   = "Protocol error: too big inline request"
	errUnbalanced     = "Protocol error: unbalanced quotes in request"
	errUnauthMbulk    = "Protocol error: unauthenticated multibulk length"
	errUnauthBulk     = "Protocol error: unauthenticated bulk length"
	errExpectedPrefix = "Protocol error: expected '$', got '"
)

// allBytes is the 256 byte values in order.
func allBytes() string {
	b := make([]byte, 256)
	for i := range b {
		b[i] = byte(i)
	}
	return string(b)
}

// tightLimits are small limits for testing each bound exactly at and one past it.
var tightLimits = Limits{MaxRequestBytes: 40, MaxArgs: 3, MaxInlineBytes: 8, MaxBulkBytes: 5}

type readerCase struct {
	name string
	in   string
	lim  Limits
	want []readerCmd
	err  string // "" means the input ends cleanly (io.EOF)
}

var readerCases = []readerCase{
	// Valid input.
	{name: "multibulk", in: enc([]string{"PING"}), want: []readerCmd{mb("PING")}},
	{name: "multibulk two args", in: enc([]string{"GET", "key"}), want: []readerCmd{mb("GET", "key")}},
	{name: "inline crlf", in: "GET key\r\n", want: []readerCmd{inl("GET", "key")}},
	{name: "inline lf", in: "GET key\n", want: []readerCmd{inl("GET", "key")}},
	{name: "inline cr cr lf strips one cr, the other separates", in: "PING\r\r\n", want: []readerCmd{inl("PING")}},
	{name: "inline cr inside the line separates", in: "ECHO a\rb\n", want: []readerCmd{inl("ECHO", "a", "b")}},
	{
		name: "pipeline of mixed multibulk and inline",
		in:   enc([]string{"SET", "k", "v"}) + "GET k\r\n" + enc([]string{"DEL", "k"}) + "PING\n" + enc([]string{"GET", "k"}),
		want: []readerCmd{mb("SET", "k", "v"), inl("GET", "k"), mb("DEL", "k"), inl("PING"), mb("GET", "k")},
	},
	{
		name: "empty multibulk skipped",
		in:   "*0\r\n*-1\r\n" + enc([]string{"PING"}) + "*0\r\n",
		want: []readerCmd{mb("PING")},
	},
	{name: "most negative count skipped", in: "*-9223372036854775808\r\nPING\n", want: []readerCmd{inl("PING")}},
	{name: "empty and blank lines skipped", in: "\r\n\n   \t\r\n\v\f\nPING\n\n", want: []readerCmd{inl("PING")}},
	{
		name: "binary argument of all 256 byte values",
		in:   enc([]string{"SET", allBytes(), allBytes()}),
		want: []readerCmd{mb("SET", allBytes(), allBytes())},
	},
	{name: "empty arguments", in: enc([]string{"SET", "", ""}), want: []readerCmd{mb("SET", "", "")}},
	{
		name: "payload with crlf inside",
		in:   enc([]string{"ECHO", "a\r\nb\r\n*1\r\n"}),
		want: []readerCmd{mb("ECHO", "a\r\nb\r\n*1\r\n")},
	},
	{
		name: "line ends are not checked, as in Redis",
		in:   "*1\rX$4\rXPINGXY" + "*1\r\n$4\r\nPINGxx",
		want: []readerCmd{
			{Args: []string{"PING"}, Raw: "*1\rX$4\rXPINGXY"},
			{Args: []string{"PING"}, Raw: "*1\r\n$4\r\nPINGxx"},
		},
	},
	{
		name: "partial command stays buffered",
		in:   enc([]string{"PING"}) + "*2\r\n$3\r\nGET",
		want: []readerCmd{mb("PING")},
	},
	{name: "partial inline stays buffered", in: "PING\nGET ke", want: []readerCmd{inl("PING")}},
	{name: "inline starting with a blank is inline", in: " *1\n", want: []readerCmd{inl("*1")}},
	{name: "inline nul is an ordinary byte", in: "ECHO a\x00b\n", want: []readerCmd{inl("ECHO", "a\x00b")}},

	// Inline quoting, as sdssplitargs.
	{name: "double quotes with escapes", in: `ECHO "a\x41\n" x` + "\r\n", want: []readerCmd{inl("ECHO", "aA\n", "x")}},
	{
		name: "all double quote escapes",
		in:   `ECHO "\n\r\t\b\a\\\"\q\x4a\x4A"` + "\n",
		want: []readerCmd{inl("ECHO", "\n\r\t\b\a\\\"qJJ")},
	},
	{name: "bad hex escape keeps x", in: `ECHO "\xzz" "\x4"` + "\n", want: []readerCmd{inl("ECHO", "xzz", "x4")}},
	{name: "single quotes", in: `SET "k v" 'it\'s' '\n'` + "\n", want: []readerCmd{inl("SET", "k v", "it's", `\n`)}},
	{name: "quote starting mid-argument", in: `ECHO ab"c d"` + "\n", want: []readerCmd{inl("ECHO", "abc d")}},
	{name: "empty quotes", in: `ECHO "" ''` + "\n", want: []readerCmd{inl("ECHO", "", "")}},
	{name: "closing quote followed by vertical tab", in: "ECHO \"a\"\vb\n", want: []readerCmd{inl("ECHO", "a", "b")}},
	{name: "vertical tab does not end an unquoted argument", in: "ECHO a\vb\n", want: []readerCmd{inl("ECHO", "a\vb")}},
	{name: "leading vertical tab is skipped", in: "\vECHO \fa\n", want: []readerCmd{inl("ECHO", "a")}},
	{name: "many blanks", in: "  ECHO \t \"a b\"   'c'\t d  \r\n", want: []readerCmd{inl("ECHO", "a b", "c", "d")}},
	{
		name: "quoted newline escape",
		in:   `SET k "line1\r\nline2"` + "\n",
		want: []readerCmd{inl("SET", "k", "line1\r\nline2")},
	},

	// Errors, with Redis's exact text.
	{name: "count above int32", in: "*2147483648\r\n", err: errInvalidMbulk},
	{name: "count above MaxArgs", in: "*1048577\r\n", err: errInvalidMbulk},
	{name: "count at MaxArgs", in: "*1048576\r\n", err: ""},
	{name: "count 2^31-1 fails at once", in: "*2147483647\r\n", err: errInvalidMbulk},
	{name: "empty count", in: "*\r\n", err: errInvalidMbulk},
	{name: "minus zero count", in: "*-0\r\n", err: errInvalidMbulk},
	{name: "leading zero count", in: "*01\r\n", err: errInvalidMbulk},
	{name: "plus count", in: "*+1\r\n", err: errInvalidMbulk},
	{name: "non-numeric count", in: "*1x\r\n", err: errInvalidMbulk},
	{name: "count of 21 digits", in: "*000000000000000000001\r\n", err: errInvalidMbulk},
	{name: "count beyond int64", in: "*9223372036854775808\r\n", err: errInvalidMbulk},
	{name: "count line of 31 bytes and cr is judged", in: "*" + strings.Repeat("1", 30) + "\r\n", err: errInvalidMbulk},
	{name: "count line of 32 bytes without cr", in: "*" + strings.Repeat("1", 31), err: errTooBigMbulk},
	{name: "count line of 31 bytes waits", in: "*" + strings.Repeat("1", 30), err: ""},
	{name: "count line ended by lf only", in: "*1\n$4\nPING\n" + strings.Repeat("x", 40), err: errTooBigMbulk},
	{name: "expected dollar", in: "*1\r\nX\r\n", err: errExpectedPrefix + "X'"},
	{name: "expected dollar got cr", in: "*1\r\n\r\n", err: errExpectedPrefix + " '"},
	{name: "expected dollar got lf", in: "*1\r\n\n\r\n", err: errExpectedPrefix + " '"},
	{name: "expected dollar got tab", in: "*1\r\n\t\r\n", err: errExpectedPrefix + "\t'"},
	{name: "expected dollar got 0xff raw", in: "*1\r\n\xff\r\n", err: errExpectedPrefix + "\xff'"},
	{name: "expected dollar waits for the line", in: "*1\r\nX", err: ""},
	{name: "expected dollar in second argument", in: "*2\r\n$4\r\nECHO\r\n:1\r\n", err: errExpectedPrefix + ":'"},
	{name: "negative bulk length", in: "*1\r\n$-1\r\n", err: errInvalidBulk},
	{name: "bulk length with space", in: "*1\r\n$ 4\r\n", err: errInvalidBulk},
	{name: "empty bulk length", in: "*1\r\n$\r\n", err: errInvalidBulk},
	{name: "bulk length above proto-max-bulk-len", in: "*1\r\n$536870913\r\n", err: errInvalidBulk},
	{name: "bulk length above MaxBulkBytes", in: "*1\r\n$67108865\r\n", err: errInvalidBulk},
	{name: "bulk length 2000000000 fails at once", in: "*1\r\n$2000000000\r\n", err: errInvalidBulk},
	{name: "bulk line of 32 bytes without cr", in: "*1\r\n$" + strings.Repeat("1", 31), err: errTooBigBulk},
	{
		name: "bulk line without cr checked before the marker",
		in:   "*1\r\n" + strings.Repeat("X", 32),
		err:  errTooBigBulk,
	},
	{name: "inline line too long", in: strings.Repeat("a", DefaultMaxInlineBytes+1), err: errTooBigInline},
	{
		name: "inline line at the bound",
		in:   strings.Repeat("a", DefaultMaxInlineBytes) + "\n",
		want: []readerCmd{inl(strings.Repeat("a", DefaultMaxInlineBytes))},
	},
	{name: "unbalanced text after double quote", in: `ECHO "a"b` + "\r\n", err: errUnbalanced},
	{name: "unbalanced text after single quote", in: "ECHO 'a'b\r\n", err: errUnbalanced},
	{name: "unterminated double quote", in: "ECHO \"a\r\n", err: errUnbalanced},
	{name: "unterminated single quote", in: `ECHO 'a\'` + "\r\n", err: errUnbalanced},
	{name: "backslash at end of double quote", in: `ECHO "\` + "\r\n", err: errUnbalanced},
	{
		name: "error after good commands",
		in:   "PING\r\n" + enc([]string{"ECHO", "a"}) + "*1\r\nX\r\n",
		want: []readerCmd{inl("PING"), mb("ECHO", "a")},
		err:  errExpectedPrefix + "X'",
	},
	{
		name: "error after good command in same line",
		in:   "PING\nECHO \"a\n",
		want: []readerCmd{inl("PING")},
		err:  errUnbalanced,
	},

	// Limits exactly at and one past each bound.
	{name: "MaxArgs at", lim: tightLimits, in: enc([]string{"a", "b", "c"}), want: []readerCmd{mb("a", "b", "c")}},
	{name: "MaxArgs past", lim: tightLimits, in: "*4\r\n", err: errInvalidMbulk},
	{name: "MaxBulkBytes at", lim: tightLimits, in: enc([]string{"12345"}), want: []readerCmd{mb("12345")}},
	{name: "MaxBulkBytes past", lim: tightLimits, in: "*1\r\n$6\r\n", err: errInvalidBulk},
	// "*3\r\n" (4 bytes) + "$5\r\n12345\r\n" (11) + "$5\r\n12345\r\n" (11) + "$1\r\na\r\n" (7) is 33 bytes.
	{
		name: "MaxRequestBytes at",
		lim:  Limits{MaxRequestBytes: 33},
		in:   enc([]string{"12345", "12345", "a"}),
		want: []readerCmd{mb("12345", "12345", "a")},
	},
	{
		name: "MaxRequestBytes past",
		lim:  Limits{MaxRequestBytes: 33},
		in:   "*3\r\n$5\r\n12345\r\n$5\r\n12345\r\n$2\r\n",
		err:  errInvalidBulk,
	},
	{
		name: "MaxRequestBytes too small for the count",
		lim:  Limits{MaxRequestBytes: 21},
		in:   "*3\r\n",
		err:  errInvalidMbulk,
	},
	{name: "MaxRequestBytes just fits the count", lim: Limits{MaxRequestBytes: 22}, in: "*3\r\n", err: ""},
	{
		name: "MaxInlineBytes at",
		lim:  tightLimits,
		in:   "GET abcd\nGET abc\r\n",
		want: []readerCmd{inl("GET", "abcd"), inl("GET", "abc")},
	},
	{name: "MaxInlineBytes past", lim: tightLimits, in: "GET abcde\n", err: errTooBigInline},
	{name: "MaxInlineBytes past with cr", lim: tightLimits, in: "GET abcd\r\n", err: errTooBigInline},
	{
		name: "MaxInlineBytes does not bound multibulk",
		lim:  tightLimits,
		in:   enc([]string{"a", "b"}),
		want: []readerCmd{mb("a", "b")},
	},

	// Unauthenticated limits: Redis's numbers and texts.
	{
		name: "unauth 10 args",
		lim:  UnauthenticatedLimits(),
		in:   enc(strings.Fields("a b c d e f g h i j")),
		want: []readerCmd{mb(strings.Fields("a b c d e f g h i j")...)},
	},
	{name: "unauth 11 args", lim: UnauthenticatedLimits(), in: "*11\r\n", err: errUnauthMbulk},
	{name: "unauth count above int32", lim: UnauthenticatedLimits(), in: "*2147483648\r\n", err: errInvalidMbulk},
	{
		name: "unauth bulk 16384",
		lim:  UnauthenticatedLimits(),
		in:   enc([]string{"AUTH", strings.Repeat("p", 16384)}),
		want: []readerCmd{mb("AUTH", strings.Repeat("p", 16384))},
	},
	{name: "unauth bulk 16385", lim: UnauthenticatedLimits(), in: "*1\r\n$16385\r\n", err: errUnauthBulk},
	{
		name: "unauth bulk above proto-max-bulk-len",
		lim:  UnauthenticatedLimits(),
		in:   "*1\r\n$536870913\r\n",
		err:  errInvalidBulk,
	},
	{name: "unauth negative bulk", lim: UnauthenticatedLimits(), in: "*1\r\n$-1\r\n", err: errInvalidBulk},
	{
		name: "unauth inline has no argument bound",
		lim:  UnauthenticatedLimits(),
		in:   "a b c d e f g h i j k l m\r\n",
		want: []readerCmd{inl(strings.Fields("a b c d e f g h i j k l m")...)},
	},
	{
		name: "unauth largest command",
		lim:  UnauthenticatedLimits(),
		in:   enc(strings.Fields(strings.Repeat(strings.Repeat("x", 16384)+" ", 10))),
		want: []readerCmd{mb(strings.Fields(strings.Repeat(strings.Repeat("x", 16384)+" ", 10))...)},
	},
	{
		name: "unauth pipeline",
		lim:  UnauthenticatedLimits(),
		in:   "PING\nPING\n" + enc([]string{"PING"}),
		want: []readerCmd{inl("PING"), inl("PING"), mb("PING")},
	},
}

func TestReaderCases(t *testing.T) {
	feeds := []struct {
		name string
		rd   func([]byte) io.Reader
	}{
		{"whole", wholeReads},
		{"one byte per read", byteReads},
		{"7 bytes per read", func(b []byte) io.Reader { return sizedReads(b, 7) }},
		{"random reads", func(b []byte) io.Reader { return randomReads(b, uint64(len(b)), 64) }},
	}
	for _, tc := range readerCases {
		t.Run(tc.name, func(t *testing.T) {
			if got := UnauthenticatedMaxRequestBytes; len(tc.in) > 150000 && len(tc.in) != got {
				t.Fatalf("largest unauthenticated command is %d bytes; UnauthenticatedMaxRequestBytes %d", len(tc.in), got)
			}
			for _, f := range feeds {
				if f.name == "one byte per read" && len(tc.in) > 1<<16 {
					continue // covered by the other feeds; one byte per read of 160 KiB is slow under -race
				}
				got, err := readerCollect(t, f.rd([]byte(tc.in)), tc.lim)
				checkCmds(t, got, tc.want)
				checkErr(t, err, tc.err)
				if t.Failed() {
					t.Fatalf("feed %s, input %q", f.name, trimForLog(tc.in))
				}
			}
		})
	}
}

// trimForLog shortens long inputs in failure messages.
func trimForLog(s string) string {
	if len(s) > 200 {
		return s[:200] + fmt.Sprintf("... (%d bytes)", len(s))
	}
	return s
}

// TestReaderLengths checks ParseInt, which reads header numbers, against the rules of Redis's string2ll.
func TestReaderLengths(t *testing.T) {
	cases := []struct {
		in   string
		want int64
		ok   bool
	}{
		{"0", 0, true},
		{"1", 1, true},
		{"-1", -1, true},
		{"16384", 16384, true},
		{"9223372036854775807", 9223372036854775807, true},
		{"-9223372036854775808", -9223372036854775808, true},
		{"9223372036854775808", 0, false},
		{"-9223372036854775809", 0, false},
		{"18446744073709551615", 0, false},
		{"18446744073709551616", 0, false},
		{"99999999999999999999", 0, false},
		{"000000000000000000001", 0, false},
		{"", 0, false},
		{"-", 0, false},
		{"-0", 0, false},
		{"00", 0, false},
		{"01", 0, false},
		{"+1", 0, false},
		{" 1", 0, false},
		{"1 ", 0, false},
		{"1x", 0, false},
		{"0x10", 0, false},
		{"1\x00", 0, false},
	}
	for _, tc := range cases {
		got, ok := ParseInt([]byte(tc.in))
		if got != tc.want || ok != tc.ok {
			t.Errorf("ParseInt(%q) = %d, %v; want %d, %v", tc.in, got, ok, tc.want, tc.ok)
		}
		// The fast path of readHeader must decide exactly as the general one.
		line := []byte("$" + tc.in + "\r\n")
		n, eol, ok, err := readHeader(line, 0, ErrTooBigBulkCount)
		if err != nil || eol != len(line)-2 || ok != tc.ok || n != tc.want {
			t.Errorf("readHeader(%q) = %d, %d, %v, %v; want %d, %d, %v, nil", line, n, eol, ok, err, tc.want,
				len(line)-2, tc.ok)
		}
	}
}

// TestReaderSplitEverywhere feeds a pipeline as two reads split at every byte boundary, and as reads of every size.
func TestReaderSplitEverywhere(t *testing.T) {
	in := enc([]string{"SET", "key:1", allBytes()}) + "GET key:1\r\n" + `SET k "a \"b\"" 'c'` + "\n" +
		"*0\r\n\n" + enc([]string{"MGET", "a", "", "c"}) + enc([]string{"PING"})
	want := []readerCmd{
		mb("SET", "key:1", allBytes()), inl("GET", "key:1"), inl("SET", "k", `a "b"`, "c"),
		mb("MGET", "a", "", "c"), mb("PING"),
	}
	for i := 0; i <= len(in); i++ {
		sizes := []int{i, len(in)}
		rd := &readerChunks{data: []byte(in), size: func(n int) int { return sizes[min(n, 1)] }}
		got, err := readerCollect(t, rd, Limits{})
		checkCmds(t, got, want)
		checkErr(t, err, "")
		if t.Failed() {
			t.Fatalf("split at %d", i)
		}
	}
	for n := 1; n <= len(in); n++ {
		got, err := readerCollect(t, sizedReads([]byte(in), n), Limits{})
		checkCmds(t, got, want)
		checkErr(t, err, "")
		if t.Failed() {
			t.Fatalf("reads of %d bytes", n)
		}
	}
}

// TestReaderBatches checks that one ReadBatch returns every complete command already buffered, and no more.
func TestReaderBatches(t *testing.T) {
	in := []byte(enc([]string{"GET", "a"}, []string{"GET", "b"}) + "GET c\n" + "*2\r\n$3\r\nGET")
	r := NewReader(bytes.NewReader(in), Limits{})
	cmds, err := r.ReadBatch(nil)
	if err != nil || len(cmds) != 3 {
		t.Fatalf("ReadBatch = %d commands, %v; want 3, nil", len(cmds), err)
	}
	if got, want := r.Buffered(), len("*2\r\n$3\r\nGET"); got != want {
		t.Errorf("Buffered() = %d; want %d", got, want)
	}
	cmds, err = r.ReadBatch(cmds)
	if err != io.EOF || len(cmds) != 0 {
		t.Errorf("ReadBatch = %d commands, %v; want 0, io.EOF", len(cmds), err)
	}
}

// readerCounting counts the reads made on it.
type readerCounting struct {
	io.Reader
	reads int
}

func (c *readerCounting) Read(p []byte) (int, error) {
	c.reads++
	return c.Reader.Read(p)
}

func TestReaderMaxBatch(t *testing.T) {
	const n = 3000
	in := bytes.Repeat([]byte("a\n"), n)
	rd := &readerCounting{Reader: bytes.NewReader(in)}
	r := NewReader(rd, Limits{})
	var cmds []Command
	total := 0
	for total < n {
		var err error
		cmds, err = r.ReadBatch(cmds)
		if err != nil {
			t.Fatalf("ReadBatch after %d commands: %v", total, err)
		}
		if len(cmds) > maxBatchCommands {
			t.Fatalf("batch of %d commands", len(cmds))
		}
		total += len(cmds)
	}
	if total != n || rd.reads != 1 {
		t.Errorf("%d commands in %d reads; want %d in 1 read", total, rd.reads, n)
	}
}

func TestReaderErrorAfterCommands(t *testing.T) {
	in := enc([]string{"SET", "k", "v"}, []string{"GET", "k"}) + "*1\r\n$-5\r\n" + enc([]string{"PING"})
	r := NewReader(strings.NewReader(in), Limits{})
	cmds, err := r.ReadBatch(nil)
	if err != nil || len(cmds) != 2 {
		t.Fatalf("first ReadBatch = %d commands, %v; want 2, nil", len(cmds), err)
	}
	for i := 0; i < 3; i++ {
		cmds, err = r.ReadBatch(cmds)
		if len(cmds) != 0 || err != ErrInvalidBulkLength {
			t.Fatalf("ReadBatch %d after the violation = %d commands, %v; want 0, %v", i, len(cmds), err, ErrInvalidBulkLength)
		}
	}
}

// readerErrAfter returns its data with err in the same Read, as a connection that delivers its last bytes and is
// closed.
type readerErrAfter struct {
	data []byte
	err  error
}

func (e *readerErrAfter) Read(p []byte) (int, error) {
	if len(e.data) == 0 {
		return 0, e.err
	}
	n := copy(p, e.data)
	e.data = e.data[n:]
	if len(e.data) == 0 {
		return n, e.err
	}
	return n, nil
}

type readerZero struct{}

func (readerZero) Read([]byte) (int, error) { return 0, nil }

func TestReaderIOErrors(t *testing.T) {
	errClosed := errors.New("use of closed network connection")
	cases := []struct {
		name     string
		rd       io.Reader
		wantCmds int
		wantErr  error
	}{
		{"eof on empty", strings.NewReader(""), 0, io.EOF},
		{"eof after commands", strings.NewReader("PING\nPING\n"), 2, io.EOF},
		{"eof in a command", strings.NewReader("*1\r\n$4\r\nPI"), 0, io.EOF},
		{"error with last bytes", &readerErrAfter{data: []byte("PING\n*1\r\n"), err: errClosed}, 1, errClosed},
		{"error with no bytes", &readerErrAfter{err: errClosed}, 0, errClosed},
		{"no progress", readerZero{}, 0, io.ErrNoProgress},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := NewReader(tc.rd, Limits{})
			var cmds []Command
			total := 0
			var err error
			for err == nil {
				cmds, err = r.ReadBatch(cmds)
				total += len(cmds)
			}
			if total != tc.wantCmds || err != tc.wantErr {
				t.Errorf("got %d commands, %v; want %d, %v", total, err, tc.wantCmds, tc.wantErr)
			}
			if _, again := r.ReadBatch(cmds); again != tc.wantErr {
				t.Errorf("second error %v; want %v", again, tc.wantErr)
			}
		})
	}
}

// TestReaderSetLimits follows a connection through AUTH: before it the reader returns one command per batch under
// Redis's unauthenticated limits, so a large command pipelined behind AUTH is judged by the limits installed after
// AUTH, as Redis judges it.
func TestReaderSetLimits(t *testing.T) {
	big := strings.Repeat("v", 20000)
	in := enc([]string{"AUTH", "pw"}, []string{"SET", "k", big}, []string{"GET", "k"}, []string{"GET", "k"})
	t.Run("after AUTH", func(t *testing.T) {
		r := NewReader(strings.NewReader(in), UnauthenticatedLimits())
		cmds, err := r.ReadBatch(nil)
		if err != nil || len(cmds) != 1 || string(cmds[0].Args[0]) != "AUTH" {
			t.Fatalf("first batch = %d commands, %v; want AUTH alone", len(cmds), err)
		}
		r.SetLimits(Limits{})
		var got []string
		for err == nil {
			cmds, err = r.ReadBatch(cmds)
			for _, c := range cmds {
				got = append(got, string(c.Args[0]))
			}
		}
		if err != io.EOF || strings.Join(got, " ") != "SET GET GET" {
			t.Errorf("after SetLimits got %q, %v; want SET GET GET, io.EOF", got, err)
		}
	})
	t.Run("without AUTH", func(t *testing.T) {
		got, err := readerCollect(t, strings.NewReader(in), UnauthenticatedLimits())
		checkCmds(t, got, []readerCmd{mb("AUTH", "pw")})
		checkErr(t, err, errUnauthBulk)
	})
	t.Run("partial command keeps its limits", func(t *testing.T) {
		steps := []string{"PING\n*1\r\n$5\r\nab", "cde\r\n" + enc([]string{"abcde"})}
		rd := &readerChunks{data: []byte(strings.Join(steps, "")), size: func(i int) int { return len(steps[min(i, 1)]) }}
		r := NewReader(rd, Limits{MaxBulkBytes: 5})
		cmds, err := r.ReadBatch(nil)
		if err != nil || len(cmds) != 1 {
			t.Fatalf("first batch = %d commands, %v; want PING", len(cmds), err)
		}
		r.SetLimits(Limits{MaxBulkBytes: 4})
		cmds, err = r.ReadBatch(cmds)
		if err != nil || len(cmds) != 1 || string(cmds[0].Args[0]) != "abcde" {
			t.Fatalf("second batch = %d commands, %v; want the command begun under the old limits", len(cmds), err)
		}
		if _, err = r.ReadBatch(cmds); err != ErrInvalidBulkLength {
			t.Fatalf("third batch error %v; want %v under the new limits", err, ErrInvalidBulkLength)
		}
	})
}

// TestReaderHugeHeaders checks that headers declaring gigabytes fail at once, before anything is allocated for
// what they declare.
func TestReaderHugeHeaders(t *testing.T) {
	cases := []struct {
		name, in, err string
	}{
		{"count 2^31-1", "*2147483647\r\n", errInvalidMbulk},
		{"bulk 2000000000", "*1\r\n$2000000000\r\n", errInvalidBulk},
		{"bulk 2000000000 behind a small argument", "*2\r\n$3\r\nSET\r\n$2000000000\r\n", errInvalidBulk},
		{"unauthenticated count 2^31-1", "*2147483647\r\n", errUnauthMbulk},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			lim := Limits{}
			if strings.HasPrefix(tc.name, "unauth") {
				lim = UnauthenticatedLimits()
			}
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			start := time.Now()
			r := NewReader(strings.NewReader(tc.in), lim)
			_, err := r.ReadBatch(nil)
			elapsed := time.Since(start)
			runtime.ReadMemStats(&after)
			checkErr(t, err, tc.err)
			if elapsed > time.Second {
				t.Errorf("took %v", elapsed)
			}
			if d := after.TotalAlloc - before.TotalAlloc; d > 1<<20 {
				t.Errorf("allocated %d bytes", d)
			}
			allocs := testing.AllocsPerRun(10, func() {
				r := NewReader(strings.NewReader(tc.in), lim)
				r.ReadBatch(nil)
			})
			// The Reader, its 16 KiB buffer, the strings.Reader, and nothing for what the header declares.
			if allocs > 4 {
				t.Errorf("%v allocations per run", allocs)
			}
		})
	}
}

// hostileReader produces head, then body repeated forever.
type hostileReader struct {
	head, body []byte
	off        int
	total      int
}

func (h *hostileReader) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		if h.off < len(h.head) {
			k := copy(p[n:], h.head[h.off:])
			h.off += k
			n += k
			continue
		}
		k := copy(p[n:], h.body[(h.off-len(h.head))%len(h.body):])
		h.off += k
		n += k
	}
	h.total += n
	return n, nil
}

// TestReaderEndlessInput sends streams that never complete a command; each must end in a protocol error with the
// buffer and the bytes read within the limits.
func TestReaderEndlessInput(t *testing.T) {
	small := Limits{MaxRequestBytes: 100000}
	cases := []struct {
		name       string
		lim        Limits
		head, body string
		err        string
	}{
		{"inline without newline", Limits{}, "", "a", errTooBigInline},
		{"count digits", Limits{}, "*", "1", errTooBigMbulk},
		{"bulk length digits", Limits{}, "*1\r\n$", "1", errTooBigBulk},
		{"payload then garbage", small, "*3\r\n$60000\r\n", "x", errTooBigBulk},
		{"arguments past MaxRequestBytes", small, "*200\r\n", "$1000\r\n" + strings.Repeat("y", 1000) + "\r\n",
			errInvalidBulk},
		{"largest unauthenticated command", UnauthenticatedLimits(), "*10\r\n",
			"$16384\r\n" + strings.Repeat("y", 16384) + "\r\n", ""},
		{"spaces", Limits{}, "", " ", errTooBigInline},
		{"unauthenticated inline", UnauthenticatedLimits(), "", "x", errTooBigInline},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := &hostileReader{head: []byte(tc.head), body: []byte(tc.body)}
			r := NewReader(h, tc.lim)
			bound := max(readBufInitial, tc.lim.normalized().bufLimit())
			var cmds []Command
			var err error
			for i := 0; err == nil; i++ {
				cmds, err = r.ReadBatch(cmds)
				if len(r.buf) > bound {
					t.Fatalf("buffer %d bytes; bound %d", len(r.buf), bound)
				}
				if h.total > 100*bound {
					t.Fatalf("read %d bytes without an error", h.total)
				}
				if tc.err == "" && len(cmds) > 0 {
					return // the command fitted; the bound held while it arrived
				}
			}
			checkErr(t, err, tc.err)
		})
	}
}

// TestReaderLinear feeds a 64 MB command of a million arguments in 16 KiB reads: parsing must cost O(size), not
// O(size^2), so the parser's step count stays within a small multiple of the argument count.
func TestReaderLinear(t *testing.T) {
	const n = 1_000_000
	arg := strings.Repeat("a", 57) // "$57\r\n" + 57 + "\r\n" = 64 bytes per argument
	var b bytes.Buffer
	fmt.Fprintf(&b, "*%d\r\n", n)
	for i := 0; i < n; i++ {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(arg), arg)
	}
	in := b.Bytes()
	start := time.Now()
	r := NewReader(sizedReads(in, 16<<10), Limits{})
	cmds, err := r.ReadBatch(nil)
	elapsed := time.Since(start)
	if err != nil || len(cmds) != 1 || len(cmds[0].Args) != n || len(cmds[0].Raw) != len(in) {
		t.Fatalf("ReadBatch = %d commands, %v", len(cmds), err)
	}
	if string(cmds[0].Args[n-1]) != arg {
		t.Fatalf("last argument %q", cmds[0].Args[n-1])
	}
	// One step per argument while it arrives, one more per argument to collect them, and one for the first
	// read's partial pass.
	if r.work > 3*n {
		t.Errorf("%d parser steps for %d arguments; want at most %d", r.work, n, 3*n)
	}
	// The step count above is the linearity check; the time is only a guard against a hang, so a loaded
	// machine or -race cannot make it flaky.
	if elapsed > time.Minute {
		t.Errorf("took %v", elapsed)
	}
	t.Logf("%d bytes, %d arguments, %d parser steps, %v", len(in), n, r.work, elapsed)
	if len(r.buf) > DefaultMaxRequestBytes+respHeaderSlack {
		t.Errorf("buffer %d bytes", len(r.buf))
	}
	// A long inline line arriving one byte at a time is scanned once too.
	line := append(bytes.Repeat([]byte("a "), DefaultMaxInlineBytes/2-1), '\n')
	r = NewReader(byteReads(line), Limits{})
	if cmds, err = r.ReadBatch(cmds); err != nil || len(cmds[0].Args) != DefaultMaxInlineBytes/2-1 {
		t.Fatalf("inline: %d commands, %v", len(cmds), err)
	}
	if r.work > int64(len(line)) {
		t.Errorf("%d bytes scanned for a %d-byte line", r.work, len(line))
	}
}

// TestReaderShrink checks that the buffer grows for a large command and returns to its initial size once the
// command is consumed, and that the caller's reused slots no longer point into the large buffer.
func TestReaderShrink(t *testing.T) {
	big := strings.Repeat("v", 1<<20)
	in := enc([]string{"SET", "k", big})
	r := NewReader(io.MultiReader(sizedReads([]byte(in), 4096), strings.NewReader(enc([]string{"GET", "k"}))), Limits{})
	cmds, err := r.ReadBatch(nil)
	if err != nil || len(cmds) != 1 || len(cmds[0].Args[2]) != len(big) {
		t.Fatalf("ReadBatch = %d commands, %v", len(cmds), err)
	}
	if len(r.buf) < len(big) || len(r.buf) > 4<<20 {
		t.Errorf("buffer %d bytes for a %d-byte command", len(r.buf), len(in))
	}
	cmds, err = r.ReadBatch(cmds)
	if err != nil || len(cmds) != 1 || string(cmds[0].Args[0]) != "GET" {
		t.Fatalf("second ReadBatch = %d commands, %v", len(cmds), err)
	}
	if len(r.buf) != readBufInitial {
		t.Errorf("buffer %d bytes after the large command; want %d", len(r.buf), readBufInitial)
	}
	if stale := cmds[:cap(cmds)][0].Args[:3][2]; stale != nil {
		t.Errorf("reused slot still holds %d bytes of the old buffer", len(stale))
	}
	if _, err = r.ReadBatch(cmds); err != io.EOF {
		t.Errorf("error %v; want io.EOF", err)
	}
}

// readerRepeat returns data again on every Read, forever.
type readerRepeat struct{ data []byte }

func (r *readerRepeat) Read(p []byte) (int, error) {
	// One copy per Read, like a client that waits for the replies to its pipeline before sending the next.
	return copy(p, r.data), nil
}

// pipelineGET16 is a pipeline of 16 GET key:NNNNNN commands, as redis-benchmark -P 16 sends.
func pipelineGET16() []byte {
	var p []byte
	for i := 0; i < 16; i++ {
		p = append(p, AppendCommand(nil, "GET", fmt.Sprintf("key:%06d", i))...)
	}
	return p
}

func TestReaderZeroAllocs(t *testing.T) {
	cases := []struct {
		name string
		data []byte
		cmds int
	}{
		{"pipeline of 16 GET", pipelineGET16(), 16},
		{"SET of 1 KiB", AppendCommand(nil, "SET", "key:000001", strings.Repeat("v", 1024)), 1},
		{"inline with quotes", []byte(`SET "key 1" "a\x41\n"` + "\r\n"), 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := NewReader(&readerRepeat{data: tc.data}, Limits{})
			var cmds []Command
			var err error
			read := func() {
				if cmds, err = r.ReadBatch(cmds); err != nil || len(cmds) != tc.cmds {
					t.Fatalf("ReadBatch = %d commands, %v", len(cmds), err)
				}
			}
			read()
			if allocs := testing.AllocsPerRun(1000, read); allocs != 0 {
				t.Errorf("%v allocations per ReadBatch; want 0", allocs)
			}
		})
	}
}

func BenchmarkReaderPipelineGET16(b *testing.B) {
	benchmarkReader(b, pipelineGET16(), 16)
}

func BenchmarkReaderSET1KiB(b *testing.B) {
	benchmarkReader(b, AppendCommand(nil, "SET", "key:000001", strings.Repeat("v", 1024)), 1)
}

func BenchmarkReaderInlineGET(b *testing.B) {
	benchmarkReader(b, []byte("GET key:000001\r\n"), 1)
}

// benchmarkReader measures ReadBatch on a connection that sends data again after every batch.
func benchmarkReader(b *testing.B, data []byte, want int) {
	r := NewReader(&readerRepeat{data: data}, Limits{})
	var cmds []Command
	var err error
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		if cmds, err = r.ReadBatch(cmds); err != nil || len(cmds) != want {
			b.Fatalf("ReadBatch = %d commands, %v", len(cmds), err)
		}
	}
}

func TestParseCommand(t *testing.T) {
	payload := AppendCommand(AppendCommand(nil, "SET", "k", "v"), "GET", "k")
	args, n := ParseCommand(payload, nil)
	if n != len(AppendCommand(nil, "SET", "k", "v")) || len(args) != 3 || string(args[2]) != "v" {
		t.Fatalf("ParseCommand: %q, %d", args, n)
	}
	for _, bad := range []string{"", "*1\r\n", "*1\r\n$3\r\nGE", "+OK\r\n", "*0\r\n", "*1\r\n$-1\r\n",
		"*1\r\n$-2\r\n", "*1\r\n:1\r\n", "*01\r\n$1\r\na\r\n"} {
		if _, n := ParseCommand([]byte(bad), nil); n != 0 {
			t.Errorf("ParseCommand(%q) = %d; want 0", bad, n)
		}
	}
}
