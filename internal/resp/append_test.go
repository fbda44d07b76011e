package resp

import (
	"math"
	"strconv"
	"strings"
	"testing"
)

// TestEncoders pins the bytes each encoder writes: these are the frames featcache wrote before it used redcon's
// encoders, and the ones Redis writes (redis_test.go checks them against a real redis-server).
func TestEncoders(t *testing.T) {
	long := strings.Repeat("x", 12)
	tests := []struct {
		name string
		got  []byte
		want string
	}{
		{"array", AppendArray(nil, 3), "*3\r\n"},
		{"empty array", AppendArray(nil, 0), "*0\r\n"},
		{"array of 10", AppendArray(nil, 10), "*10\r\n"},
		{"bulk", AppendBulk(nil, []byte("a\r\nb")), "$4\r\na\r\nb\r\n"},
		{"empty bulk", AppendBulk(nil, nil), "$0\r\n\r\n"},
		{"bulk of 12", AppendBulk(nil, []byte(long)), "$12\r\n" + long + "\r\n"},
		{"bulk string", AppendBulkString(nil, "hello"), "$5\r\nhello\r\n"},
		{"int", AppendInt(nil, 7), ":7\r\n"},
		{"negative int", AppendInt(nil, -2), ":-2\r\n"},
		{"large int", AppendInt(nil, 1<<62), ":4611686018427387904\r\n"},
		{"simple", AppendString(nil, "PONG"), "+PONG\r\n"},
		{"simple with line breaks", AppendString(nil, "a\r\nb\nc"), "+a  b c\r\n"},
		{"ok", AppendOK(nil), "+OK\r\n"},
		{"error", AppendError(nil, "ERR x"), "-ERR x\r\n"},
		{"error with line breaks", AppendError(nil, "ERR a\r\nb\n"), "-ERR a  b \r\n"},
		{"null bulk", AppendNullBulk(nil), "$-1\r\n"},
		{"null array", AppendNullArray(nil), "*-1\r\n"},
		{"command", AppendCommand(nil, "SET", "k", ""), "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n"},
		{"args", AppendArgs(nil, [][]byte{[]byte("GET"), []byte("key:1")}), "*2\r\n$3\r\nGET\r\n$5\r\nkey:1\r\n"},
		{"appends", AppendInt([]byte("+OK\r\n"), 1), "+OK\r\n:1\r\n"},
		{"resp3 null", AppendNull(nil), "_\r\n"},
		{"resp3 map", AppendMap(nil, 7), "%7\r\n"},
		{"resp3 set", AppendSet(nil, 2), "~2\r\n"},
		{"resp3 push", AppendPush(nil, 3), ">3\r\n"},
		{"resp3 true", AppendBoolean(nil, true), "#t\r\n"},
		{"resp3 false", AppendBoolean(nil, false), "#f\r\n"},
		{"resp3 double", AppendDouble(nil, 1.5), ",1.5\r\n"},
		{"resp3 double 0.1", AppendDouble(nil, 0.1), ",0.10000000000000001\r\n"},
		{"resp3 double small", AppendDouble(nil, 1e-5), ",1.0000000000000001e-05\r\n"},
		{"resp3 double large", AppendDouble(nil, 1e20), ",1e+20\r\n"},
		{"resp3 double whole", AppendDouble(nil, 3), ",3\r\n"},
		{"resp3 inf", AppendDouble(nil, math.Inf(1)), ",inf\r\n"},
		{"resp3 -inf", AppendDouble(nil, math.Inf(-1)), ",-inf\r\n"},
		{"resp3 nan", AppendDouble(nil, math.NaN()), ",nan\r\n"},
		{"resp3 big number", AppendBigNumber(nil, "-12345678901234567890"), "(-12345678901234567890\r\n"},
		{"resp3 verbatim", AppendVerbatim(nil, "txt", "a\nb"), "=7\r\ntxt:a\nb\r\n"},
		{"null for 2", AppendNullFor(nil, 2), "$-1\r\n"},
		{"null for 3", AppendNullFor(nil, 3), "_\r\n"},
		{"null array for 2", AppendNullArrayFor(nil, 2), "*-1\r\n"},
		{"null array for 3", AppendNullArrayFor(nil, 3), "_\r\n"},
		{"map for 2", AppendMapFor(nil, 2, 2), "*4\r\n"},
		{"map for 3", AppendMapFor(nil, 2, 3), "%2\r\n"},
		{"set for 2", AppendSetFor(nil, 2, 2), "*2\r\n"},
		{"set for 3", AppendSetFor(nil, 2, 3), "~2\r\n"},
		{"push for 2", AppendPushFor(nil, 3, 2), "*3\r\n"},
		{"push for 3", AppendPushFor(nil, 3, 3), ">3\r\n"},
		{"verbatim for 2", AppendVerbatimFor(nil, "txt", "x", 2), "$1\r\nx\r\n"},
		{"verbatim for 3", AppendVerbatimFor(nil, "txt", "x", 3), "=5\r\ntxt:x\r\n"},
		{"double for 2", AppendDoubleFor(nil, 0.1, 2), "$19\r\n0.10000000000000001\r\n"},
		{"double for 3", AppendDoubleFor(nil, 0.1, 3), ",0.10000000000000001\r\n"},
		{"boolean for 2", AppendBooleanFor(nil, true, 2), ":1\r\n"},
		{"boolean for 3", AppendBooleanFor(nil, false, 3), "#f\r\n"},
	}
	for _, tt := range tests {
		if string(tt.got) != tt.want {
			t.Errorf("%s: got %q; want %q", tt.name, tt.got, tt.want)
		}
	}
}

// TestEncodersDoNotAllocate: with room in dst, a reply is encoded without allocating (the hit path relies on it).
func TestEncodersDoNotAllocate(t *testing.T) {
	buf := make([]byte, 0, 256)
	v := []byte("value")
	allocs := testing.AllocsPerRun(100, func() {
		b := AppendArray(buf[:0], 2)
		b = AppendBulk(b, v)
		b = AppendNullBulk(b)
		b = AppendInt(b, 42)
		b = AppendError(b, "ERR no")
		b = AppendArgs(b, [][]byte{v})
		b = AppendCommand(b, "GET", "k")
		b = AppendNull(b)
		b = AppendMap(b, 2)
		b = AppendDouble(b, 0.1)
		b = AppendDoubleFor(b, 0.1, 2)
		_ = AppendVerbatim(b, "txt", "value")
	})
	if allocs != 0 {
		t.Errorf("%v allocations per run; want 0", allocs)
	}
}

func TestASCII(t *testing.T) {
	var buf [16]byte
	if got := string(AppendLower(buf[:0], []byte("GeT-Ü:ZZ"))); got != "get-Ü:zz" {
		t.Errorf("AppendLower: got %q", got)
	}
	for _, tc := range []struct {
		b, s string
		want bool
	}{
		{"GET", "get", true},
		{"get", "GET", true},
		{"MuLtI", "multi", true},
		{"GETX", "get", false},
		{"ge", "get", false},
		{"[", "{", false}, // '[' is 'Z'+1 and '{' is 'z'+1: only letters fold
		{"ä", "Ä", false},
	} {
		if got := EqualFold([]byte(tc.b), tc.s); got != tc.want {
			t.Errorf("EqualFold(%q, %q) = %v; want %v", tc.b, tc.s, got, tc.want)
		}
	}
}

func TestDecode(t *testing.T) {
	in := "*5\r\n+OK\r\n:-3\r\n$3\r\na\r\n\r\n*-1\r\n*1\r\n-ERR e\r\n:9\r\n"
	v, n, err := Decode([]byte(in))
	if err != nil || n != len(in)-len(":9\r\n") {
		t.Fatalf("Decode: %d, %v", n, err)
	}
	if v.Type != TypeArray || len(v.Elems) != 5 {
		t.Fatalf("got %+v", v)
	}
	e := v.Elems
	if s, ok := e[0].Text(); !ok || s != "OK" || e[1].Int != -3 || e[2].Str != "a\r\n" || !e[3].Null ||
		e[4].Elems[0].Type != TypeError || e[4].Elems[0].Str != "ERR e" {
		t.Fatalf("got %+v", v)
	}
	if _, ok := e[3].Text(); ok {
		t.Errorf("a null array has text")
	}
	for _, bad := range []string{
		"", "+OK", "?\r\n", ":1x\r\n", "$-2\r\n", "$3\r\nab\r\n", "$2\r\nabc\r\n", "*2\r\n:1\r\n",
		"*2147483647\r\n:1\r\n", strings.Repeat("*1\r\n", MaxDecodeDepth+2) + ":1\r\n",
	} {
		if _, _, err := Decode([]byte(bad)); err == nil {
			t.Errorf("Decode(%q): no error", bad)
		}
	}
}

// TestAppendBulkLengths: the lengths AppendBulk writes itself are the ones strconv writes, at every length it
// writes itself and on both sides of the larger powers of ten, after existing bytes.
func TestAppendBulkLengths(t *testing.T) {
	value := []byte(strings.Repeat("v", 100001))
	lengths := []int{99999, 100000, 100001}
	for n := 0; n <= 10001; n++ {
		lengths = append(lengths, n)
	}
	for _, n := range lengths {
		got := AppendBulk([]byte("+OK\r\n"), value[:n])
		want := "+OK\r\n$" + strconv.Itoa(n) + "\r\n" + string(value[:n]) + "\r\n"
		if string(got) != want {
			t.Errorf("AppendBulk of %d bytes = %.20q...; want %.20q...", n, got, want)
		}
	}
}
