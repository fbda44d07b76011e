package config

import (
	"bytes"
	"sort"
	"strings"
	"testing"
	"time"

	"featcache/internal/redistest"
	"featcache/internal/resp"
)

// globCases are pattern, key, match triples; each was checked against redis-server (KEYS) and TestGlobAgainstRedis
// keeps checking the printable ones.
var globCases = []struct {
	pattern, key string
	want         bool
}{
	// Literals.
	{"abc", "abc", true},
	{"abc", "abd", false},
	{"abc", "ab", false},
	{"abc", "abcd", false},
	{"ABC", "abc", false}, // case-sensitive
	// Star.
	{"*", "x", true},
	{"*", "anything at all", true},
	{"a*", "a", true},
	{"a*", "abc", true},
	{"a*", "ba", false},
	{"*c", "abc", true},
	{"*c", "abd", false},
	{"a*c", "ac", true},
	{"a*c", "abbbc", true},
	{"a*c", "abbbd", false},
	{"a**c", "abc", true},
	{"*a*b*", "xxaxxbxx", true},
	{"*a*b*", "xxbxxaxx", false},
	{"a*b*c", "abcabc", true},
	{"customer:*:credit_features:*", "customer:42:credit_features:limit", true},
	{"customer:*:credit_features:*", "customer:42:credit_features:", true},
	{"customer:*:credit_features:*", "customer:42:risk_features:limit", false},
	{"customer:*:credit_features:*", "customer::credit_features:x", true},
	// Question mark.
	{"?", "a", true},
	{"?", "ab", false},
	{"a?c", "abc", true},
	{"a?c", "ac", false},
	{"??", "ab", true},
	{"*?", "a", true},
	{"?*", "ab", true},
	// Sets.
	{"[abc]", "b", true},
	{"[abc]", "d", false},
	{"[^abc]", "d", true},
	{"[^abc]", "a", false},
	{"[a-c]", "b", true},
	{"[a-c]", "d", false},
	{"[c-a]", "b", true}, // reversed ranges are swapped
	{"[^a-c]x", "dx", true},
	{"[a-c0-9]", "5", true},
	{"[]", "]", false}, // "[]" is an empty set
	{"[]", "a", false},
	{"[^]", "a", true}, // and "[^]" any byte
	{"[^]", "]", true},
	{"[]]", "]", false}, // an empty set, then a literal "]"
	{"[]]", "a]", false},
	{`[\]]`, "]", true},
	{`[\-]`, "-", true},
	{`[a\-z]`, "b", false},
	{`[a\-z]`, "-", true},
	{"[-a]", "-", true}, // a "-" first is a literal
	{"[-a]", "b", false},
	{"[a-]]", "]", true},  // the range is "]" to "a"
	{"[a-]]", "^", true},  // inside "]".."a"
	{"[a-]]", "b", false}, // outside it
	{`[\a-z]`, "-", true}, // an escaped range start is a literal, so is the "-"
	{`[\a-z]`, "b", false},
	{"[a-c-e]", "-", true}, // after a range, a "-" is a literal
	{"[a-c-e]", "d", false},
	{"[*?]", "*", true},
	{"[*?]", "a", false},
	{"[[]", "[", true},
	{"[^]]", "]", false}, // "[^]" then a literal "]"
	{"[^]]", "a]", true},
	// Escapes.
	{`\*`, "*", true},
	{`\*`, "a", false},
	{`a\?c`, "a?c", true},
	{`a\?c`, "abc", false},
	{`\[a]`, "[a]", true},
	{`\\`, `\`, true},
	{`\a`, "a", true},
	// The empty key matches no pattern but the empty one.
	{"", "", true},
	{"", "a", false},
	{"*", "", false},
	{"**", "", false},
	{"?", "", false},
	{"[^]", "", false},
}

func TestGlob(t *testing.T) {
	for _, tc := range globCases {
		g, err := compileGlob(tc.pattern)
		if err != nil {
			t.Errorf("compileGlob(%q): %v", tc.pattern, err)
			continue
		}
		if got := g.match([]byte(tc.key)); got != tc.want {
			t.Errorf("pattern %q key %q: got %v; want %v", tc.pattern, tc.key, got, tc.want)
		}
		if got := refMatch(tc.pattern, tc.key); got != tc.want {
			t.Errorf("reference: pattern %q key %q: got %v; want %v", tc.pattern, tc.key, got, tc.want)
		}
	}
}

func TestGlobBinary(t *testing.T) {
	tests := []struct {
		pattern string
		key     []byte
		want    bool
	}{
		{"a?b", []byte{'a', 0, 'b'}, true},
		{"a?b", []byte{'a', 0xff, 'b'}, true},
		{"\x00*", []byte{0, 1, 2}, true},
		{"\x00*", []byte{1, 0}, false},
		{"*\xff", []byte{'x', 0xff}, true},
		{"[\x00-\x10]", []byte{0x05}, true},
		{"[\x80-\xff]", []byte{0x90}, true}, // unsigned ranges (see glob.go)
		{"[\x80-\xff]", []byte{0x10}, false},
		{"[^\x00]", []byte{0}, false},
		{"[^\x00]", []byte{0xff}, true},
		{"k:\xc3*", []byte("k:\xc3\xa9t\xc3\xa9"), true},
		{"k:?t*", []byte("k:\xc3\xa9t\xc3\xa9"), false}, // "?" is one byte, not one UTF-8 character
		{"k:??t*", []byte("k:\xc3\xa9t\xc3\xa9"), true},
	}
	for _, tc := range tests {
		g, err := compileGlob(tc.pattern)
		if err != nil {
			t.Fatalf("compileGlob(%q): %v", tc.pattern, err)
		}
		if got := g.match(tc.key); got != tc.want {
			t.Errorf("pattern %q key %q: got %v; want %v", tc.pattern, tc.key, got, tc.want)
		}
	}
}

func TestCompileGlobErrors(t *testing.T) {
	tests := []struct {
		pattern   string
		errSubstr string
	}{
		{"[", `pattern "[": "[" at byte 0 is never closed`},
		{"a[bc", `pattern "a[bc": "[" at byte 1 is never closed (write "\\[" for a literal "[")`},
		{"a[^", `"[" at byte 1 is never closed`},
		{`a[\]`, `"[" at byte 1 is never closed`},
		{`a[b\`, `"[" at byte 1 is never closed`},
		{"[a-]", `"[" at byte 0 is never closed: a "-" before "]" makes the "]" the end of a range (write "\\-" for a literal "-")`},
		{"[a-]x", `"[" at byte 0 is never closed: a "-" before "]"`},
		{`a\`, `pattern "a\\": trailing "\\" escapes nothing (write "\\\\" for a literal backslash)`},
		{`a*\`, `trailing "\\" escapes nothing`},
		{`\`, `trailing "\\" escapes nothing`},
	}
	for _, tc := range tests {
		_, err := compileGlob(tc.pattern)
		if err == nil || !strings.Contains(err.Error(), tc.errSubstr) {
			t.Errorf("compileGlob(%q) = %v; want an error containing %q", tc.pattern, err, tc.errSubstr)
		}
	}
}

func TestGlobLiteralPrefix(t *testing.T) {
	for p, want := range map[string]string{
		"customer:*:credit_features:*": "customer:",
		"abc":                          "abc",
		"*abc":                         "",
		"ab?":                          "ab",
		"ab[cd]":                       "ab",
		`ab\*c`:                        "ab",
		"":                             "",
	} {
		if got := globLiteralPrefix(p); got != want {
			t.Errorf("globLiteralPrefix(%q) = %q; want %q", p, got, want)
		}
	}
}

// TestGlobNoBlowup matches patterns that take exponential time in a naive backtracking matcher against long keys.
func TestGlobNoBlowup(t *testing.T) {
	long := bytes.Repeat([]byte("a"), 100_000)
	for _, p := range []string{
		"*a*a*a*a*a*b",
		strings.Repeat("*a", 50) + "*b",
		strings.Repeat("*?", 40) + "b",
		strings.Repeat("*[a]", 40) + "*[b]",
		"a*" + strings.Repeat("a*", 30) + "b",
	} {
		g, err := compileGlob(p)
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		ok, steps := g.matchSteps(long)
		if ok {
			t.Errorf("pattern %q matched a key without b", p)
		}
		if bound := stepBound(g, long); steps > bound {
			t.Errorf("pattern %q: %d steps; want at most %d", p, steps, bound)
		}
		if d := time.Since(start); d > time.Second {
			t.Errorf("pattern %q took %v", p, d)
		}
	}
}

// stepBound is the most steps matchSteps may take: each backtrack moves the star's start one byte on, and between
// two backtracks each step moves one token on.
func stepBound(g *glob, key []byte) int {
	return (len(key)+1)*(len(g.tokens)+1) + len(g.tokens) + 1
}

func TestGlobAllocs(t *testing.T) {
	g, err := compileGlob("customer:*:credit_[a-z]eatures:?*")
	if err != nil {
		t.Fatal(err)
	}
	key := []byte("customer:123456:credit_features:limit")
	if n := testing.AllocsPerRun(1000, func() { g.match(key) }); n != 0 {
		t.Errorf("match allocates %v times per run; want 0", n)
	}
}

// TestGlobAgainstRedis asks a real redis-server which keys each pattern matches (KEYS) and compares. It covers the
// printable cases of globCases and a set of generated patterns over a small alphabet, in a handful of round trips.
func TestGlobAgainstRedis(t *testing.T) {
	srv := redistest.Start(t)
	conn := redistest.Dial(t, srv.Addr())

	keySet := map[string]bool{}
	var patterns []string
	for _, tc := range globCases {
		if tc.key != "" {
			keySet[tc.key] = true
		}
		if tc.pattern != "" && tc.pattern != "*" && !contains(patterns, tc.pattern) { // KEYS special-cases a lone "*"
			patterns = append(patterns, tc.pattern)
		}
	}
	// Generated keys and patterns over an alphabet that exercises every glob feature.
	alphabet := []string{"a", "b", "-", "]", "[", "^", `\`, "*", "?"}
	for _, a := range alphabet {
		for _, b := range alphabet {
			keySet[a+b] = true
			keySet["a"+a+b] = true
		}
	}
	seed := uint64(1)
	next := func(n int) int {
		seed = seed*6364136223846793005 + 1442695040888963407
		return int(seed>>33) % n
	}
	for len(patterns) < 400 {
		var sb strings.Builder
		for n := 1 + next(5); n > 0; n-- {
			sb.WriteString(alphabet[next(len(alphabet))])
		}
		p := sb.String()
		if _, err := compileGlob(p); err == nil && p != "*" && !contains(patterns, p) {
			patterns = append(patterns, p)
		}
	}
	keys := make([]string, 0, len(keySet))
	for k := range keySet {
		keys = append(keys, k)
	}
	sort.Strings(keys)

	// One pipeline for every write and every query.
	w := conn.NetConn()
	var out bytes.Buffer
	for _, k := range keys {
		out.Write(redistest.Encode("SET", k, "1"))
	}
	for _, p := range patterns {
		out.Write(redistest.Encode("KEYS", p))
	}
	if _, err := w.Write(out.Bytes()); err != nil {
		t.Fatal(err)
	}
	for range keys {
		if reply, err := conn.Read(); err != nil || string(reply) != "+OK\r\n" {
			t.Fatalf("SET: %q %v", reply, err)
		}
	}
	for _, p := range patterns {
		reply, err := conn.Read()
		if err != nil {
			t.Fatalf("KEYS %q: %v", p, err)
		}
		got := parseArray(t, reply)
		g, err := compileGlob(p)
		if err != nil {
			t.Fatal(err)
		}
		var want []string
		for _, k := range keys {
			if g.match([]byte(k)) {
				want = append(want, k)
			}
		}
		sort.Strings(got)
		if strings.Join(got, "\x00") != strings.Join(want, "\x00") {
			t.Errorf("pattern %q: redis matches %q; featcache matches %q", p, got, want)
		}
	}
}

// parseArray decodes a RESP array of bulk strings.
func parseArray(t *testing.T, reply []byte) []string {
	t.Helper()
	elems, err := resp.ParseBulkArray(reply, nil)
	if err != nil {
		t.Fatalf("not an array of bulk strings: %q: %v", reply, err)
	}
	out := make([]string, 0, len(elems))
	for _, e := range elems {
		out = append(out, string(e))
	}
	return out
}

// refMatch is a direct transcription of stringmatchlen from Redis 7's util.c (case-sensitive, unsigned range
// bounds), recursion and all. It is the reference the compiled matcher is fuzzed against. Reads past the end of the
// pattern see the NUL byte that terminates Redis's strings.
func refMatch(pattern, key string) bool {
	skip := false
	return refMatchImpl(pattern, key, &skip, 0)
}

func refMatchImpl(pattern, str string, skipLonger *bool, nesting int) bool {
	if nesting > 1000 {
		return false
	}
	at := func(s string, i int) byte {
		if i < len(s) {
			return s[i]
		}
		return 0
	}
	for len(pattern) > 0 && len(str) > 0 {
		switch pattern[0] {
		case '*':
			for len(pattern) > 0 && at(pattern, 1) == '*' {
				pattern = pattern[1:]
			}
			if len(pattern) == 1 {
				return true
			}
			for len(str) > 0 {
				if refMatchImpl(pattern[1:], str, skipLonger, nesting+1) {
					return true
				}
				if *skipLonger {
					return false
				}
				str = str[1:]
			}
			*skipLonger = true
			return false
		case '?':
			str = str[1:]
		case '[':
			pattern = pattern[1:]
			not := at(pattern, 0) == '^'
			if not {
				pattern = pattern[1:]
			}
			match := false
			for {
				if at(pattern, 0) == '\\' && len(pattern) >= 2 {
					pattern = pattern[1:]
					if pattern[0] == str[0] {
						match = true
					}
				} else if at(pattern, 0) == ']' {
					break
				} else if len(pattern) == 0 {
					// Redis steps back so that the pattern++ below lands on the end again.
					pattern = "\x00" // stands in for the terminator; consumed below
					break
				} else if len(pattern) >= 3 && pattern[1] == '-' {
					lo, hi, c := pattern[0], pattern[2], str[0]
					if lo > hi {
						lo, hi = hi, lo
					}
					pattern = pattern[2:]
					if c >= lo && c <= hi {
						match = true
					}
				} else if pattern[0] == str[0] {
					match = true
				}
				pattern = pattern[1:]
			}
			if not {
				match = !match
			}
			if !match {
				return false
			}
			str = str[1:]
		case '\\':
			if len(pattern) >= 2 {
				pattern = pattern[1:]
			}
			fallthrough
		default:
			if pattern[0] != str[0] {
				return false
			}
			str = str[1:]
		}
		pattern = pattern[1:]
		if len(str) == 0 {
			for at(pattern, 0) == '*' {
				pattern = pattern[1:]
			}
			break
		}
	}
	return len(pattern) == 0 && len(str) == 0
}

// FuzzGlob checks that compiling and matching never panic, never take more steps than the linear-per-star bound
// nor more than a moment, and that on short inputs the compiled matcher agrees with the transcription of Redis's
// own matcher.
func FuzzGlob(f *testing.F) {
	for _, tc := range globCases {
		f.Add(tc.pattern, []byte(tc.key))
	}
	f.Add("*a*a*a*a*a*b", bytes.Repeat([]byte("a"), 2000))
	f.Add("[\x00-\xff]*", []byte{0xff, 0})
	f.Fuzz(func(t *testing.T, pattern string, key []byte) {
		start := time.Now()
		g, err := compileGlob(pattern)
		if err != nil {
			if !strings.Contains(err.Error(), "never closed") && !strings.Contains(err.Error(), "escapes nothing") {
				t.Fatalf("compileGlob(%q): unexpected error %v", pattern, err)
			}
			return
		}
		ok, steps := g.matchSteps(key)
		if bound := stepBound(g, key); steps > bound {
			t.Fatalf("pattern %q key %q: %d steps; want at most %d", pattern, key, steps, bound)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("pattern %q key of %d bytes took %v", pattern, len(key), d)
		}
		if len(pattern) <= 24 && len(key) <= 48 {
			if want := refMatch(pattern, string(key)); ok != want {
				t.Fatalf("pattern %q key %q: got %v; Redis's matcher says %v", pattern, key, ok, want)
			}
		}
		if ok && !bytes.HasPrefix(key, []byte(globLiteralPrefix(pattern))) {
			t.Fatalf("pattern %q matched %q without its literal prefix %q", pattern, key, globLiteralPrefix(pattern))
		}
	})
}
