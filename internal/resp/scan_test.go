package resp

import (
	"bufio"
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

func FuzzFrameScanner(f *testing.F) {
	for _, s := range []string{"+OK\r\n", "*2\r\n$1\r\na\r\n:1\r\n", "$-1\r\n", "*1\r\n*1\r\n*0\r\n", "%1\r\n+a\r\n+b\r\n"} {
		f.Add([]byte(s), uint8(1))
	}
	f.Fuzz(func(t *testing.T, b []byte, step uint8) {
		var whole Scanner
		want, werr := whole.Next(b)
		// Feeding the same bytes in chunks must give the same answer.
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
	})
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
