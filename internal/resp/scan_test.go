package resp

import (
	"bufio"
	"bytes"
	"errors"
	"strings"
	"testing"
)

func TestFrameScanner(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want int // length of the first frame; 0 = incomplete
		bad  bool
	}{
		{"simple", "+OK\r\n", 5, false},
		{"error", "-ERR x\r\n:1\r\n", 8, false},
		{"int", ":-12\r\n", 6, false},
		{"bulk", "$3\r\nabc\r\n", 9, false},
		{"empty bulk", "$0\r\n\r\n", 6, false},
		{"null bulk", "$-1\r\n", 5, false},
		{"null array", "*-1\r\n", 5, false},
		{"empty array", "*0\r\n+x\r\n", 4, false},
		{"nested", "*2\r\n*2\r\n:1\r\n$1\r\na\r\n$-1\r\n+next\r\n", 24, false},
		{"binary bulk with CRLF inside", "$4\r\n\r\n\r\n\r\n", 10, false},
		{"partial header", "$3", 0, false},
		{"partial payload", "$3\r\nab", 0, false},
		{"partial nested", "*2\r\n:1\r\n", 0, false},
		{"resp3 map", "%1\r\n+a\r\n:1\r\n", 12, false},
		{"resp3 null", "_\r\n", 3, false},
		{"resp3 null with text", "_x\r\n", 0, true},
		{"resp3 true", "#t\r\n:1\r\n", 4, false},
		{"resp3 false", "#f\r\n", 4, false},
		{"resp3 bad boolean", "#x\r\n", 0, true},
		{"resp3 double", ",1.0000000000000001e-05\r\n", 25, false},
		{"resp3 inf", ",-inf\r\n", 7, false},
		{"resp3 big number", "(-3492890328409238509324850943850943825024385\r\n", 47, false},
		{"resp3 bad big number", "(12a\r\n", 0, true},
		{"resp3 empty big number", "(\r\n", 0, true},
		{"resp3 blob error", "!21\r\nSYNTAX invalid syntax\r\n", 28, false},
		{"resp3 negative blob error", "!-1\r\n", 0, true},
		{"resp3 verbatim", "=15\r\ntxt:Some string\r\n", 22, false},
		{"resp3 verbatim without format", "=3\r\ntxt\r\n", 0, true},
		{"resp3 verbatim partial", "=15\r\ntxt:Some", 0, false},
		{"resp3 set", "~2\r\n+a\r\n_\r\n", 11, false},
		{"resp3 push", ">3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$1\r\nm\r\n+next\r\n", 31, false},
		{"resp3 nested map", "%2\r\n+a\r\n%1\r\n+b\r\n#t\r\n+c\r\n~1\r\n,1\r\n", 32, false},
		{"resp3 empty map", "%0\r\n:1\r\n", 4, false},
		{"resp3 negative map", "%-1\r\n", 0, true},
		{"resp3 negative set", "~-1\r\n", 0, true},
		{"resp3 negative push", ">-1\r\n", 0, true},
		{"attribute and its value are one frame", "|1\r\n+ttl\r\n:3600\r\n$1\r\nv\r\n+next\r\n", 24, false},
		{"attribute inside an array", "*2\r\n|1\r\n+a\r\n+b\r\n:1\r\n:2\r\n+next\r\n", 24, false},
		{"attribute waits for its value", "|1\r\n+ttl\r\n:3600\r\n", 0, false},
		{"empty attribute", "|0\r\n:1\r\n", 8, false},
		{"nested attributes", "|1\r\n+a\r\n|1\r\n+b\r\n+c\r\n:1\r\n:2\r\n", 28, false},
		{"bad type", "?x\r\n", 0, true},
		{"bad length", "$x\r\n", 0, true},
		{"bulk without CRLF", "$1\r\nabc\r\n", 0, true},
		{"LF without CR", "+OK\n", 0, true},
		{"line without a type byte", "\r\n", 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var sc Scanner
			n, err := sc.Next([]byte(tt.in))
			if (err != nil) != tt.bad {
				t.Fatalf("err = %v; want bad=%v", err, tt.bad)
			}
			if n != tt.want {
				t.Fatalf("got %d; want %d", n, tt.want)
			}
		})
	}
}

// TestFrameScannerResumes feeds a frame one byte at a time: the scanner must find the same end as in one go.
func TestFrameScannerResumes(t *testing.T) {
	frame := "*3\r\n$5\r\nhello\r\n*2\r\n:1\r\n$-1\r\n-ERR oops\r\n"
	var sc Scanner
	for i := 1; i < len(frame); i++ {
		n, err := sc.Next([]byte(frame[:i]))
		if err != nil || n != 0 {
			t.Fatalf("prefix %d: n=%d err=%v; want incomplete", i, n, err)
		}
	}
	n, err := sc.Next([]byte(frame + "+more\r\n"))
	if err != nil || n != len(frame) {
		t.Fatalf("got %d, %v; want %d", n, err, len(frame))
	}
}

// FuzzFrameScanner checks two properties. Arbitrary bytes: the scanner never panics, never reports a frame longer
// than its input, and finds the same end (or the same error) whether the bytes arrive at once or in chunks. Built
// frames: b read as a recipe (genFrame) builds a valid RESP2/RESP3 frame of every type, attributes and pushes
// included, whose length the scanner must find exactly, in one go and in chunks, with IsPush telling a push.
func FuzzFrameScanner(f *testing.F) {
	for _, s := range []string{"+OK\r\n", "*2\r\n$1\r\na\r\n:1\r\n", "$-1\r\n", "*1\r\n*1\r\n*0\r\n", "%1\r\n+a\r\n+b\r\n",
		"_\r\n", "#t\r\n", ",1.5\r\n", "(12345678901234567890\r\n", "!3\r\nERR\r\n", "=5\r\ntxt:a\r\n", "~1\r\n:1\r\n",
		">2\r\n+a\r\n+b\r\n", "|1\r\n+k\r\n+v\r\n:1\r\n", "*2\r\n|1\r\n+k\r\n+v\r\n:1\r\n:2\r\n", "\x07\x13\x2a\x09\x0b\x05\x01"} {
		f.Add([]byte(s), uint8(1))
	}
	f.Fuzz(func(t *testing.T, b []byte, step uint8) {
		checkScannerChunks(t, b, step)
		g := &frameGen{recipe: b}
		frame, push := g.frame(0)
		frame = append(frame, "+next\r\n"...)
		var whole Scanner
		n, err := whole.Next(frame)
		if err != nil || n != len(frame)-len("+next\r\n") {
			t.Fatalf("built frame %q: scanned %d, %v; want %d", frame, n, err, len(frame)-len("+next\r\n"))
		}
		if got := IsPush(frame[:n]); got != push {
			t.Fatalf("built frame %q: IsPush %v; want %v", frame[:n], got, push)
		}
		checkScannerChunks(t, frame, step)
	})
}

// frameGen builds a valid frame from a recipe of bytes, each choosing the next type or length; a spent recipe
// ends in simple strings, so every recipe builds a finite frame.
type frameGen struct {
	recipe []byte
	pos    int
}

func (g *frameGen) next() byte {
	if g.pos >= len(g.recipe) {
		return 0
	}
	g.pos++
	return g.recipe[g.pos-1]
}

// frame appends one frame at nesting depth and reports whether it is a push (after its attributes).
func (g *frameGen) frame(depth int) ([]byte, bool) {
	c := g.next()
	n := int(g.next() % 4)
	if depth >= 4 {
		c %= 13 // no aggregates below depth 4
	}
	var b []byte
	switch c % 19 {
	case 0:
		return []byte("+OK\r\n"), false
	case 1:
		return []byte("-ERR x\r\n"), false
	case 2:
		return AppendInt(nil, int64(n)-2), false
	case 3:
		return AppendBulk(nil, bytes.Repeat([]byte("\r\n"), n)), false
	case 4:
		return AppendNullBulk(nil), false
	case 5:
		return AppendNull(nil), false
	case 6:
		return AppendBoolean(nil, n%2 == 0), false
	case 7:
		return AppendDouble(nil, float64(n)/3), false
	case 8:
		return AppendBigNumber(nil, "-123456789012345678901234567890"), false
	case 9:
		return []byte("!5\r\nERR x\r\n"), false
	case 10:
		return AppendVerbatim(nil, "txt", strings.Repeat("\r\n", n)), false
	case 11:
		return AppendNullArray(nil), false
	case 12:
		return []byte("*0\r\n"), false
	case 13:
		b = AppendArray(nil, n)
	case 14:
		b = AppendSet(nil, n)
	case 15:
		b = AppendPush(nil, n)
	case 16:
		b = AppendMap(nil, n)
		n *= 2
	case 17, 18:
		// An attribute of n pairs, then the value it annotates, which decides whether the frame is a push.
		b = appendHeader(nil, TypeAttribute, n)
		for range 2 * n {
			e, _ := g.frame(depth + 1)
			b = append(b, e...)
		}
		e, push := g.frame(depth + 1)
		return append(b, e...), push
	}
	for range n {
		e, _ := g.frame(depth + 1)
		b = append(b, e...)
	}
	return b, c%19 == 15
}

// checkScannerChunks scans b at once and in chunks of step%16+1 bytes: the answers must agree.
func checkScannerChunks(t *testing.T, b []byte, step uint8) {
	t.Helper()
	var whole Scanner
	want, werr := whole.Next(b)
	var sc Scanner
	chunk := int(step%16) + 1
	got, gerr := 0, error(nil)
	for end := chunk; ; end += chunk {
		if end > len(b) {
			end = len(b)
		}
		got, gerr = sc.Next(b[:end])
		if gerr != nil || got != 0 || end == len(b) {
			break
		}
	}
	if werr == nil && gerr == nil && got != want {
		t.Fatalf("chunked %d; whole %d", got, want)
	}
	if got > len(b) {
		t.Fatalf("frame end %d past input %d", got, len(b))
	}
}

func TestParseBulkArray(t *testing.T) {
	tests := []struct {
		frame   string
		want    []string
		wantErr string
	}{
		{"*0\r\n", nil, ""},
		{"*3\r\n$1\r\na\r\n$0\r\n\r\n$-1\r\n", []string{"a", "", ""}, ""},
		{"*2\r\n$4\r\na\r\nb\r\n$2\r\nxy\r\n", []string{"a\r\nb", "xy"}, ""},
		{"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n", nil, "WRONGTYPE Operation"},
		{"*1\r\n:1\r\n", nil, "want a bulk string"},
		{"*2\r\n$1\r\na\r\n", nil, "want a bulk string"},
		{"*1\r\n$5\r\nab\r\n", nil, "bad bulk string"},
		{"+OK\r\n", nil, "want an array"},
	}
	for _, tc := range tests {
		got, err := ParseBulkArray([]byte(tc.frame), nil)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("ParseBulkArray(%q) error = %v; want %q", tc.frame, err, tc.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParseBulkArray(%q): %v", tc.frame, err)
			continue
		}
		var s []string
		for _, g := range got {
			s = append(s, string(g))
		}
		if strings.Join(s, "|") != strings.Join(tc.want, "|") || len(s) != len(tc.want) {
			t.Errorf("ParseBulkArray(%q) = %q; want %q", tc.frame, s, tc.want)
		}
	}
}

// TestReadFrame reads frames one at a time from a stream, as redistest and the bench's client do: each call returns
// one whole frame, nested arrays and payloads holding CRLF included, and leaves the next frame unread.
func TestReadFrame(t *testing.T) {
	frames := []string{
		"+OK\r\n",
		"$4\r\na\r\nb\r\n",
		"*3\r\n$1\r\nx\r\n*2\r\n:1\r\n$-1\r\n-ERR e\r\n",
		"$-1\r\n",
		"*0\r\n",
		"$70000\r\n" + strings.Repeat("v", 70000) + "\r\n", // longer than the bufio buffer
	}
	r := bufio.NewReaderSize(strings.NewReader(strings.Join(frames, "")), 16)
	var buf []byte
	for _, want := range frames {
		var err error
		buf, err = ReadFrame(r, buf[:0])
		if err != nil || string(buf) != want {
			t.Fatalf("got %.60q, %v; want %.60q", buf, err, want)
		}
	}
	if _, err := ReadFrame(r, nil); err == nil {
		t.Fatal("ReadFrame at the end of the stream: no error")
	}
	if _, err := ReadFrame(bufio.NewReader(strings.NewReader("?x\r\n")), nil); err != ErrBadFrame {
		t.Fatalf("ReadFrame of a bad type byte: %v; want ErrBadFrame", err)
	}
}

func TestFrameParts(t *testing.T) {
	for _, tc := range []struct {
		frame   string
		payload string
		isNil   bool
		ok      bool
	}{
		{"$3\r\nabc\r\n", "abc", false, true},
		{"$0\r\n\r\n", "", false, true},
		{"$-1\r\n", "", true, true},
		{"$5\r\nab\r\n", "", false, false},
		{"$x\r\n\r\n", "", false, false},
		{"+OK\r\n", "", false, false},
		{"$\n\r\n\r\n", "", false, false},
	} {
		p, isNil, ok := BulkPayload([]byte(tc.frame))
		if string(p) != tc.payload || isNil != tc.isNil || ok != tc.ok {
			t.Errorf("BulkPayload(%q) = %q, %v, %v; want %q, %v, %v", tc.frame, p, isNil, ok, tc.payload, tc.isNil, tc.ok)
		}
	}
	for _, tc := range []struct {
		frame string
		want  int64
		ok    bool
	}{
		{":0\r\n", 0, true},
		{":-2\r\n", -2, true},
		{":9223372036854775807\r\n", 1<<63 - 1, true},
		{":01\r\n", 0, false},
		{"+1\r\n", 0, false},
	} {
		if n, ok := IntegerValue([]byte(tc.frame)); n != tc.want || ok != tc.ok {
			t.Errorf("IntegerValue(%q) = %d, %v; want %d, %v", tc.frame, n, ok, tc.want, tc.ok)
		}
	}
	if n, body, ok := ArrayHeader([]byte("*2\r\n:1\r\n:2\r\n")); n != 2 || string(body) != ":1\r\n:2\r\n" || !ok {
		t.Errorf("ArrayHeader: %d, %q, %v", n, body, ok)
	}
	for _, bad := range []string{"*-1\r\n", "$1\r\na\r\n", "*x\r\n", "*2147483648\r\n"} {
		if _, _, ok := ArrayHeader([]byte(bad)); ok {
			t.Errorf("ArrayHeader(%q) ok", bad)
		}
	}
	elems, err := ArrayElements([]byte("*3\r\n$1\r\na\r\n*1\r\n:1\r\n-ERR x\r\n"), nil)
	if err != nil || len(elems) != 3 || string(elems[1]) != "*1\r\n:1\r\n" || string(elems[2]) != "-ERR x\r\n" {
		t.Errorf("ArrayElements: %q, %v", elems, err)
	}
	if elems, err := ArrayElements([]byte("*-1\r\n"), nil); err != nil || len(elems) != 0 {
		t.Errorf("ArrayElements of the null array: %q, %v; want none", elems, err)
	}
	if _, err := ArrayElements([]byte("*2\r\n:1\r\n"), nil); !errors.Is(err, ErrBadFrame) {
		t.Errorf("ArrayElements of a short array: %v; want ErrBadFrame", err)
	}
}

func TestParseError(t *testing.T) {
	err := error(ParseError([]byte("-WRONGTYPE Operation against a key\r\n")))
	var re Error
	if !errors.As(err, &re) || err.Error() != "WRONGTYPE Operation against a key" {
		t.Fatalf("got %v (%T)", err, err)
	}
	if got := string(AppendError(nil, re.Error())); got != "-WRONGTYPE Operation against a key\r\n" {
		t.Fatalf("relayed as %q", got)
	}
}

func TestIsPush(t *testing.T) {
	tests := []struct {
		frame string
		want  bool
	}{
		{">2\r\n+a\r\n+b\r\n", true},
		{"*2\r\n+a\r\n+b\r\n", false},
		{"|1\r\n+k\r\n+v\r\n>1\r\n+a\r\n", true},
		{"|1\r\n+k\r\n>1\r\n+x\r\n*1\r\n+a\r\n", false},
		{"|x\r\n", false},
		{"", false},
	}
	for _, tt := range tests {
		if got := IsPush([]byte(tt.frame)); got != tt.want {
			t.Errorf("IsPush(%q) = %v; want %v", tt.frame, got, tt.want)
		}
	}
}
