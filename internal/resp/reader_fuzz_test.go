package resp

import (
	"bytes"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

var updateReaderCorpus = flag.Bool("update-reader-corpus", false,
	"rewrite the seed-* files of testdata/fuzz/FuzzReader from the Reader's table tests")

// fuzzLimitSets are the limits FuzzReader chooses from with seed%len: the defaults, Redis's unauthenticated ones,
// and small ones whose every bound a short input can reach.
var fuzzLimitSets = []Limits{
	{},
	UnauthenticatedLimits(),
	tightLimits,
	{MaxRequestBytes: 33},
	{MaxRequestBytes: 21},
	{MaxRequestBytes: 22},
	{MaxBulkBytes: 5},
	{MaxArgs: 1, MaxBulkBytes: 3, MaxInlineBytes: 3, MaxRequestBytes: 16, Unauthenticated: true},
}

// FuzzReader checks two properties on every input.
//
// Arbitrary bytes, under limits chosen by seed: the Reader never panics or spins, its buffer stays within the
// limits' bound (readerCollect checks after each call), and the commands and the error are the same whether the
// bytes arrive at once, one per read, or in random reads.
//
// Round trip: data read as a list of argument vectors, encoded as multi-bulk or as quoted inline commands,
// concatenated with empty commands between them and fed in random reads, parses back to exactly those arguments,
// with Raw equal to each multi-bulk encoding and nil for inline commands.
func FuzzReader(f *testing.F) {
	for _, tc := range readerCases {
		if len(tc.in) <= 4096 {
			f.Add([]byte(tc.in), uint64(fuzzLimitIndex(tc.lim)))
		}
	}
	f.Fuzz(func(t *testing.T, data []byte, seed uint64) {
		checkHeaderPaths(t, data)
		lim := fuzzLimitSets[seed%uint64(len(fuzzLimitSets))]
		whole, wholeErr := readerCollect(t, wholeReads(data), lim)
		for _, c := range whole {
			if !c.Inline && !strings.HasPrefix(c.Raw, "*") {
				t.Fatalf("multi-bulk Raw %q does not start with '*'", c.Raw)
			}
			if len(c.Args) == 0 {
				t.Fatalf("command without arguments")
			}
		}
		feeds := map[string]func() ([]readerCmd, error){
			"one byte per read": func() ([]readerCmd, error) { return readerCollect(t, byteReads(data), lim) },
			"random reads": func() ([]readerCmd, error) {
				return readerCollect(t, randomReads(data, seed, 1+int((seed>>8)%512)), lim)
			},
		}
		for name, feed := range feeds {
			got, err := feed()
			if fmt.Sprint(got) != fmt.Sprint(whole) || fmt.Sprint(err) != fmt.Sprint(wholeErr) {
				t.Fatalf("%s: got %v, %v; all at once %v, %v", name, got, err, whole, wholeErr)
			}
		}

		in, want := roundTripInput(data, seed)
		got, err := readerCollect(t, randomReads(in, seed^0x5bd1e995, 1+int(seed%97)), Limits{})
		checkCmds(t, got, want)
		checkErr(t, err, "")
		if t.Failed() {
			t.Fatalf("round trip of %q", in)
		}
	})
}

// checkHeaderPaths checks that readHeader's fast path decides a header line exactly as the general path.
func checkHeaderPaths(t *testing.T, data []byte) {
	if len(data) == 0 {
		return
	}
	n, eol, ok, err := readHeader(data, 0, ErrTooBigBulkCount)
	geol, gerr := respHeaderEnd(data, 0, ErrTooBigBulkCount)
	var gn int64
	var gok bool
	if geol > 0 && gerr == nil {
		gn, gok = ParseInt(data[1:geol])
	}
	if eol != geol || err != gerr || ok != gok || (ok && n != gn) {
		t.Fatalf("readHeader(%q) = %d, %d, %v, %v; general path %d, %d, %v, %v", data, n, eol, ok, err, gn, geol, gok, gerr)
	}
}

// fuzzLimitIndex is the index of lim in fuzzLimitSets.
func fuzzLimitIndex(lim Limits) int {
	for i, l := range fuzzLimitSets {
		if l == lim {
			return i
		}
	}
	panic(fmt.Sprintf("limits %+v are not in fuzzLimitSets", lim))
}

// roundTripInput reads data as argument vectors and returns their encoding and the commands it must parse to. Each
// command starts with a byte c: c%6+1 arguments, bit 7 inline, bit 6 an empty command before it; each argument is
// a length byte and that many bytes (fewer at the end of data).
func roundTripInput(data []byte, seed uint64) ([]byte, []readerCmd) {
	rng := rand.New(rand.NewPCG(seed, 7))
	var in []byte
	var want []readerCmd
	for len(data) > 0 {
		c := data[0]
		data = data[1:]
		var args []string
		for j := 0; j < int(c%6)+1 && len(data) > 0; j++ {
			l := min(int(data[0]), len(data)-1)
			args = append(args, string(data[1:1+l]))
			data = data[1+l:]
		}
		if len(args) == 0 {
			args = []string{""}
		}
		if c&0x40 != 0 {
			in = append(in, []string{"*0\r\n", "*-1\r\n", "\n", "\r\n", " \t\r\n"}[rng.IntN(5)]...)
		}
		if c&0x80 != 0 {
			in = appendInline(in, args, rng)
			want = append(want, inl(args...))
		} else {
			in = append(in, enc(args)...)
			want = append(want, mb(args...))
		}
	}
	return in, want
}

// appendInline appends args as an inline command, each argument in double or single quotes, with blanks between.
func appendInline(b []byte, args []string, rng *rand.Rand) []byte {
	blanks := []string{" ", "\t", "  ", " \v", "\f "}
	for i, a := range args {
		if i > 0 || rng.IntN(4) == 0 {
			b = append(b, blanks[rng.IntN(len(blanks))]...)
		}
		if !strings.ContainsAny(a, "\\'\n") && rng.IntN(3) == 0 {
			b = append(b, '\'')
			b = append(b, a...)
			b = append(b, '\'')
			continue
		}
		b = append(b, '"')
		for j := 0; j < len(a); j++ {
			switch ch := a[j]; {
			case ch == '"' || ch == '\\':
				b = append(b, '\\', ch)
			case ch == '\n' && rng.IntN(2) == 0:
				b = append(b, `\n`...)
			case ch < 0x20 || ch >= 0x7f:
				b = append(b, fmt.Sprintf(`\x%02x`, ch)...)
			default:
				b = append(b, ch)
			}
		}
		b = append(b, '"')
	}
	return append(b, []string{"\n", "\r\n"}[rng.IntN(2)]...)
}

// TestReaderSeedCorpus keeps testdata/fuzz/FuzzReader in step with the table tests: every short case has a seed
// file there. Regenerate them with: go test ./internal/resp/ -run TestReaderSeedCorpus -update-reader-corpus
func TestReaderSeedCorpus(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzReader")
	for _, tc := range readerCases {
		if len(tc.in) > 4096 {
			continue
		}
		name := "seed-" + strings.Map(func(r rune) rune {
			if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
				return r
			}
			return '-'
		}, strings.ToLower(tc.name))
		content := fmt.Sprintf("go test fuzz v1\n[]byte(%s)\nuint64(%d)\n", strconv.Quote(tc.in), fuzzLimitIndex(tc.lim))
		path := filepath.Join(dir, name)
		if *updateReaderCorpus {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(path)
		if err != nil || !bytes.Equal(got, []byte(content)) {
			t.Errorf("%s is missing or stale; run go test ./internal/resp/ -run TestReaderSeedCorpus -update-reader-corpus", path)
		}
	}
}
