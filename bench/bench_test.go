package main

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"featcache/internal/resp"
)

func readerConn(s string) *respConn {
	return &respConn{r: bufio.NewReader(strings.NewReader(s))}
}

func TestSkipReply(t *testing.T) {
	tests := []struct {
		name  string
		in    string
		want  replyKind
		msg   string
		after string // what must be left unread: the frame is consumed exactly
	}{
		{"status", "+OK\r\n+NEXT\r\n", replyValue, "", "+NEXT\r\n"},
		{"integer", ":42\r\n", replyValue, "", ""},
		{"bulk", "$5\r\nhello\r\n+NEXT\r\n", replyValue, "", "+NEXT\r\n"},
		{"bulk with CRLF inside", "$4\r\n\r\n\r\n\r\n", replyValue, "", ""},
		{"nil bulk", "$-1\r\n", replyNil, "", ""},
		{"nil array", "*-1\r\n", replyNil, "", ""},
		{"error", "-ERR boom\r\n", replyError, "ERR boom", ""},
		{"mget", "*2\r\n$1\r\na\r\n$1\r\nb\r\n", replyValue, "", ""},
		{"mget with nil", "*3\r\n$1\r\na\r\n$-1\r\n$1\r\nb\r\n+NEXT\r\n", replyNil, "", "+NEXT\r\n"},
		{"nested", "*2\r\n*1\r\n:1\r\n-WRONGTYPE x\r\n", replyError, "WRONGTYPE x", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := readerConn(tt.in)
			kind, msg, err := c.skipReply()
			if err != nil {
				t.Fatal(err)
			}
			if kind != tt.want || string(msg) != tt.msg {
				t.Errorf("got kind %d msg %q; want %d %q", kind, msg, tt.want, tt.msg)
			}
			rest, _ := c.r.Peek(c.r.Buffered())
			if string(rest) != tt.after {
				t.Errorf("left %q; want %q", rest, tt.after)
			}
		})
	}
}

func TestAppendCommands(t *testing.T) {
	var c respConn
	c.appendGet([]byte("feat:1"))
	c.appendSet([]byte("k"), []byte("vv"))
	c.appendMgetHeader(2)
	c.out = resp.AppendBulk(c.out, []byte("a"))
	c.out = resp.AppendBulk(c.out, []byte("bc"))
	want := "*2\r\n$3\r\nGET\r\n$6\r\nfeat:1\r\n" +
		"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\nvv\r\n" +
		"*3\r\n$4\r\nMGET\r\n$1\r\na\r\n$2\r\nbc\r\n"
	if string(c.out) != want {
		t.Errorf("got %q; want %q", c.out, want)
	}
}

func TestParseRBCSV(t *testing.T) {
	out := `"test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
"GET","155038.76","0.175","0.056","0.167","0.247","0.391","1.503"
`
	r, err := parseRBCSV([]byte(out))
	if err != nil {
		t.Fatal(err)
	}
	if r.RPS != 155038.76 || r.P50Ms != 0.167 || r.P99Ms != 0.391 {
		t.Errorf("got %+v", r)
	}
	if _, err := parseRBCSV([]byte("\"test\",\"rps\"\n\"GET\",\"0\"\n")); err == nil {
		t.Error("zero throughput: want an error")
	}
	if _, err := parseRBCSV([]byte("")); err == nil {
		t.Error("empty output: want an error")
	}
}

func TestLRU(t *testing.T) {
	c := newLRU(30, func(uint32) int64 { return 10 })
	for _, k := range []uint32{1, 2, 3} {
		if c.get(k) {
			t.Fatalf("first get of %d: got hit", k)
		}
	}
	if !c.get(1) { // 1 becomes the most recent; 2 is now the least
		t.Fatal("get 1: got miss")
	}
	c.get(4) // evicts 2
	if _, ok := c.m[2]; ok {
		t.Error("2 should have been evicted")
	}
	for _, k := range []uint32{1, 3, 4} {
		if _, ok := c.m[k]; !ok {
			t.Errorf("%d should be cached", k)
		}
	}
	c.remove(3)
	if c.used != 20 || len(c.m) != 2 {
		t.Errorf("after remove: used %d, %d entries; want 20, 2", c.used, len(c.m))
	}
	big := newLRU(5, func(uint32) int64 { return 10 })
	if big.get(1) || big.get(1) {
		t.Error("an entry larger than the cache must never be stored")
	}
}

func TestStreamsRepeat(t *testing.T) {
	w := &workload{Keys: 1000, Zipf: 1.1, Writes: 0.2, Mget: 3, Seed: 7}
	seq := func(conn int) []uint32 {
		s := newStream(w, conn)
		var req request
		var out []uint32
		for range 100 {
			s.next(&req)
			if req.Write {
				out = append(out, 1<<31|req.Keys[0])
				continue
			}
			out = append(out, req.Keys...)
		}
		return out
	}
	if a, b := seq(3), seq(3); !slices.Equal(a, b) {
		t.Error("the same connection's stream differs between two runs")
	}
	if a, b := seq(3), seq(4); slices.Equal(a, b) {
		t.Error("two connections got the same stream")
	}
}

func TestValueSizes(t *testing.T) {
	w := &workload{Keys: 10000, EmbShare: 0.05, Seed: 1}
	emb := 0
	for i := range w.Keys {
		n := w.valueLen(i)
		key := string(w.appendKey(nil, i))
		switch {
		case w.isEmbedding(i):
			emb++
			if n != embeddingSize || !strings.HasPrefix(key, "emb:") {
				t.Fatalf("key %d: %q of %d bytes; want an emb: key of %d", i, key, n, embeddingSize)
			}
		case n < featMinSize || n > featMaxSize || !strings.HasPrefix(key, "feat:"):
			t.Fatalf("key %d: %q of %d bytes; want a feat: key of 1-2 KiB", i, key, n)
		}
	}
	if emb < 400 || emb > 600 {
		t.Errorf("got %d embeddings of 10000; want about 500", emb)
	}
	w.ValueSize = 1024
	if n := w.valueLen(0); !w.isEmbedding(0) && n != 1024 {
		t.Errorf("-value-size 1024: got %d", n)
	}
}

func TestSizeFlag(t *testing.T) {
	tests := []struct {
		in      string
		want    int64
		wantErr bool
	}{
		{"256MB", 256 << 20, false},
		{"64kb", 64 << 10, false},
		{"1.5GB", 3 << 29, false},
		{"4096", 4096, false},
		{"0MB", 0, true},
		{"lots", 0, true},
	}
	for _, tt := range tests {
		var z size
		err := z.Set(tt.in)
		if (err != nil) != tt.wantErr || (err == nil && z.bytes != tt.want) {
			t.Errorf("%q: got %d, %v; want %d (error %v)", tt.in, z.bytes, err, tt.want, tt.wantErr)
		}
	}
}

func TestPresetsValidate(t *testing.T) {
	for name := range profileTitles {
		s := defaultSettings()
		if err := applyPreset(name, &s); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if err := s.validate(); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	for i, step := range standardSteps() {
		s := defaultSettings()
		step(&s)
		if err := s.validate(); err != nil {
			t.Errorf("standard step %d (%s): %v", i, s.Profile, err)
		}
	}
	if err := applyPreset("nope", &settings{}); err == nil {
		t.Error("unknown profile: want an error")
	}
}

// TestFeastProfileRuns runs the Feast profile end to end on a small key space: it starts Redis and featcache,
// seeds entities in Feast's layout, drives both targets and writes its table with a hit ratio for featcache.
func TestFeastProfileRuns(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Redis and builds featcache")
	}
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Skip("redis-server not installed")
	}
	out := filepath.Join(t.TempDir(), "feast.md")
	err := runFeast([]string{"-entities", "300", "-duration", "300ms", "-rounds", "1", "-conns", "2", "-batch", "2", "-out", out})
	if err != nil {
		t.Fatal(err)
	}
	table, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`\| featcache \| \d+ \| \d+ \| .* \| \d+\.\d%`).Match(table) || !strings.Contains(string(table), "| redis | ") {
		t.Fatalf("the Feast table lacks a row per target with featcache's hit ratio:\n%s", table)
	}
}
