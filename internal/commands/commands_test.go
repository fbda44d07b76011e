package commands

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"unsafe"

	"featcache/internal/redistest"
	"featcache/internal/resp"
	"featcache/internal/testkit"
)

// capturedCommandReply is the file Embedded parses: a raw COMMAND reply of redis-server 7.0.15, for the tests and the
// fuzz target that run without Redis. Regenerate it with:
// go test -run TestCommandReplyLive -update-command-reply ./internal/commands/
const capturedCommandReply = "commands-redis-7.0.resp"

var updateCommandReply = flag.Bool("update-command-reply", false,
	"rewrite "+capturedCommandReply+" from the COMMAND reply of the local redis-server")

// loadCapturedCommands parses the captured COMMAND reply.
func loadCapturedCommands(tb testing.TB) Table {
	tb.Helper()
	cmds, err := Embedded()
	if err != nil {
		tb.Fatalf("Embedded: %v", err)
	}
	return cmds
}

// liveCommands starts a redis-server and returns a connection to it and its parsed COMMAND table.
func liveCommands(t *testing.T) (*redistest.Conn, []byte, Table) {
	t.Helper()
	srv := redistest.Start(t)
	conn := redistest.Dial(t, srv.Addr())
	reply := conn.Do("COMMAND")
	cmds, err := Parse(reply)
	if err != nil {
		t.Fatalf("Parse(COMMAND reply of %d bytes): %v", len(reply), err)
	}
	return conn, reply, cmds
}

// decodeTestReply decodes one raw reply frame of the test connection.
func decodeTestReply(tb testing.TB, b []byte) resp.Value {
	tb.Helper()
	v, n, err := resp.Decode(b)
	if err != nil || n != len(b) {
		tb.Fatalf("decode reply %.200q: %v (%d of %d bytes read)", b, err, n, len(b))
	}
	return v
}

func lineStrings(b [][]byte) []string {
	out := make([]string, len(b))
	for i, a := range b {
		out[i] = string(a)
	}
	return out
}

// knownCommandCases are facts of Redis 7.0's table that the request path relies on.
var knownCommandCases = []struct {
	name  string
	args  []string
	check func(ci *Info) string
}{
	{"get", []string{"get", "k"}, func(ci *Info) string {
		if ci.Name != "get" || ci.Arity != 2 || !ci.Flags.Has(FlagReadonly|FlagFast) || ci.Flags.Has(FlagWrite) {
			return fmt.Sprintf("name %q arity %d flags %b; want get, 2, readonly|fast", ci.Name, ci.Arity, ci.Flags)
		}
		if len(ci.KeySpecs) != 1 || !ci.KeySpecs[0].Flags.Has(KeyRO|KeyAccess) {
			return fmt.Sprintf("key specs %+v; want one RO access spec", ci.KeySpecs)
		}
		return ""
	}},
	{"set", []string{"SET", "k", "v"}, func(ci *Info) string {
		if ci.Name != "set" || ci.Arity != -3 || !ci.Flags.Has(FlagWrite|FlagDenyOOM) {
			return fmt.Sprintf("name %q arity %d flags %b; want set, -3, write|denyoom", ci.Name, ci.Arity, ci.Flags)
		}
		return ""
	}},
	{"blpop", []string{"blpop", "a", "b", "0"}, func(ci *Info) string {
		if !ci.Flags.Has(FlagWrite | FlagBlocking) {
			return fmt.Sprintf("flags %b; want write|blocking", ci.Flags)
		}
		return ""
	}},
	{"client setname", []string{"Client", "SETNAME", "x"}, func(ci *Info) string {
		if ci.Name != "client|setname" || ci.Arity != 3 || !ci.Flags.Has(FlagNoScript) {
			return fmt.Sprintf("name %q arity %d flags %b; want client|setname, 3, noscript", ci.Name, ci.Arity, ci.Flags)
		}
		return ""
	}},
	{"eval", []string{"eval", "return 1", "0"}, func(ci *Info) string {
		want := KeySpec{
			Flags:       KeyRW | KeyAccess | KeyUpdate,
			BeginSearch: BeginSearch{Type: BeginIndex, Index: 2},
			FindKeys:    FindKeys{Type: FindKeynum, KeyNumIdx: 0, FirstKey: 1, KeyStep: 1},
		}
		if len(ci.KeySpecs) != 1 || ci.KeySpecs[0] != want {
			return fmt.Sprintf("key specs %+v; want [%+v]", ci.KeySpecs, want)
		}
		if !ci.Flags.Has(FlagNoScript | FlagMovableKeys | FlagNoMandatoryKeys) {
			return fmt.Sprintf("flags %b; want noscript|movablekeys|no_mandatory_keys", ci.Flags)
		}
		return ""
	}},
	{"xread", []string{"xread", "streams", "s", "0"}, func(ci *Info) string {
		want := KeySpec{
			Flags:       KeyRO | KeyAccess,
			BeginSearch: BeginSearch{Type: BeginKeyword, Keyword: "STREAMS", StartFrom: 1},
			FindKeys:    FindKeys{Type: FindRange, LastKey: -1, KeyStep: 1, Limit: 2},
		}
		if len(ci.KeySpecs) != 1 || ci.KeySpecs[0] != want {
			return fmt.Sprintf("key specs %+v; want [%+v]", ci.KeySpecs, want)
		}
		return ""
	}},
	{"mset", []string{"mset", "a", "1"}, func(ci *Info) string {
		if ci.FirstKey != 1 || ci.LastKey != -1 || ci.KeyStep != 2 {
			return fmt.Sprintf("legacy keys %d %d %d; want 1 -1 2", ci.FirstKey, ci.LastKey, ci.KeyStep)
		}
		return ""
	}},
	{"sort", []string{"sort", "k"}, func(ci *Info) string {
		if len(ci.KeySpecs) != 3 || ci.KeySpecs[1].BeginSearch.Type != BeginUnknown ||
			ci.KeySpecs[2].FindKeys.Type != FindUnknown {
			return fmt.Sprintf("key specs %+v; want an index spec and two unknown ones", ci.KeySpecs)
		}
		return ""
	}},
	{"spublish", []string{"spublish", "ch", "msg"}, func(ci *Info) string {
		if len(ci.KeySpecs) != 1 || !ci.KeySpecs[0].Flags.Has(KeyNotKey) || !ci.Flags.Has(FlagPubSub) {
			return fmt.Sprintf("flags %b key specs %+v; want pubsub and one not_key spec", ci.Flags, ci.KeySpecs)
		}
		return ""
	}},
}

func checkKnownCommands(t *testing.T, cmds Table) {
	t.Helper()
	for _, tc := range knownCommandCases {
		ci := cmds.Lookup(testkit.Args(tc.args...))
		if ci == nil {
			t.Errorf("%s: Lookup(%q) = nil", tc.name, tc.args)
			continue
		}
		if msg := tc.check(ci); msg != "" {
			t.Errorf("%s: %s", tc.name, msg)
		}
	}
	client := cmds["client"]
	if client == nil || client.Subcommands["setname"] == nil || client.Subcommands["getname"] == nil {
		t.Errorf("client subcommands missing: %v", client)
	}
}

// TestCommandReplyLive parses a real COMMAND reply: every command COMMAND COUNT reports is in the table.
func TestCommandReplyLive(t *testing.T) {
	conn, reply, cmds := liveCommands(t)
	count := decodeTestReply(t, conn.Do("COMMAND", "COUNT"))
	if count.Type != resp.TypeInteger || int(count.Int) != len(cmds) {
		t.Errorf("table has %d commands; COMMAND COUNT says %q", len(cmds), count.Str+strconv.FormatInt(count.Int, 10))
	}
	// Every name COMMAND LIST gives, subcommands included, is in the table.
	list := decodeTestReply(t, conn.Do("COMMAND", "LIST"))
	for _, e := range list.Elems {
		if cmds.Lookup(testkit.Args(strings.Split(e.Str, "|")...)).Name != e.Str {
			t.Errorf("COMMAND LIST has %q; the table does not", e.Str)
		}
	}
	checkKnownCommands(t, cmds)

	// COMMAND INFO answers a null entry for an unknown name.
	info, err := Parse(conn.Do("COMMAND", "INFO", "GET", "nosuch", "client"))
	if err != nil || len(info) != 2 || info["get"] == nil || info["client"].Subcommands["setname"] == nil {
		t.Errorf("Parse(COMMAND INFO GET nosuch client) = %v, %v; want get and client", info, err)
	}

	if *updateCommandReply {
		info := decodeTestReply(t, conn.Do("INFO", "server"))
		if !strings.Contains(info.Str, "redis_version:7.0.") {
			t.Fatalf("-update-command-reply needs redis-server 7.0.x; INFO says %.200q", info.Str)
		}
		if err := os.MkdirAll(filepath.Dir(capturedCommandReply), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(capturedCommandReply, reply, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote %s (%d bytes)", capturedCommandReply, len(reply))
	}
}

// TestCommandReplyCaptured checks the captured Redis 7.0 table without Redis.
func TestCommandReplyCaptured(t *testing.T) {
	cmds := loadCapturedCommands(t)
	if len(cmds) != 240 {
		t.Errorf("captured table has %d commands; want 240 (Redis 7.0.15)", len(cmds))
	}
	checkKnownCommands(t, cmds)

	// The commands whose keys Redis 7.0 cannot name in advance, as listed at the top of commands.go.
	var partial []string
	for _, ci := range allCommands(cmds) {
		for _, ks := range ci.KeySpecs {
			if ks.Flags.Has(KeyIncomplete) || ks.BeginSearch.Type == BeginUnknown || ks.FindKeys.Type == FindUnknown {
				partial = append(partial, ci.Name)
				break
			}
		}
	}
	if want := []string{"migrate", "sort", "sort_ro"}; !slices.Equal(partial, want) {
		t.Errorf("commands with incomplete or unknown key specs: %q; want %q", partial, want)
	}

	// Write commands without key specs change keys Keys cannot name: the request path must know them.
	var keyless []string
	for _, ci := range allCommands(cmds) {
		if ci.Flags.Has(FlagWrite) && len(ci.KeySpecs) == 0 {
			keyless = append(keyless, ci.Name)
		}
	}
	want := []string{"flushall", "flushdb", "function|delete", "function|flush", "function|load", "function|restore", "swapdb"}
	if !slices.Equal(keyless, want) {
		t.Errorf("write commands without key specs: %q; want %q", keyless, want)
	}
}

// TestMayWrite lists the commands of Redis 7.0's table that the key-spec rule makes writes although Redis does not
// flag them write.
func TestMayWrite(t *testing.T) {
	cmds := loadCapturedCommands(t)
	var byKeySpecs []string
	for _, info := range allCommands(cmds) {
		if info.Flags.Has(FlagWrite) != info.MayWrite() && !info.MayWrite() {
			t.Errorf("%s: flagged write, and MayWrite says no", info.Name)
		}
		if !info.Flags.Has(FlagWrite) && info.MayWrite() {
			byKeySpecs = append(byKeySpecs, info.Name)
		}
	}
	// EVAL, EVALSHA and FCALL declare keys they may write; PFCOUNT rewrites the cached cardinality of its key.
	if want := []string{"eval", "evalsha", "fcall", "pfcount"}; !slices.Equal(byKeySpecs, want) {
		t.Errorf("commands written by key specs only: got %q; want %q", byKeySpecs, want)
	}
	for _, name := range []string{"get", "eval_ro", "fcall_ro", "sort_ro", "xrange", "object"} {
		if cmds[name].MayWrite() {
			t.Errorf("%s: MayWrite = true; Redis's flags and key specs say it only reads", name)
		}
	}
	if (*Info)(nil).MayWrite() {
		t.Errorf("nil Info: MayWrite = true; want false")
	}
}

// allCommands returns every command and subcommand of cmds, sorted by name.
func allCommands(cmds Table) []*Info {
	var all []*Info
	for _, ci := range cmds {
		all = append(all, ci)
		for _, sub := range ci.Subcommands {
			all = append(all, sub)
		}
	}
	sort.Slice(all, func(i, j int) bool { return all[i].Name < all[j].Name })
	return all
}

func TestParseErrors(t *testing.T) {
	entry := func(specs string) string {
		return "*1\r\n*10\r\n$3\r\nget\r\n:2\r\n*0\r\n:1\r\n:1\r\n:1\r\n*0\r\n*0\r\n" + specs + "*0\r\n"
	}
	spec := func(begin, find string) string {
		return "*1\r\n*6\r\n$5\r\nflags\r\n*1\r\n+RO\r\n$12\r\nbegin_search\r\n" + begin + "$9\r\nfind_keys\r\n" + find
	}
	index1 := "*4\r\n$4\r\ntype\r\n$5\r\nindex\r\n$4\r\nspec\r\n*2\r\n$5\r\nindex\r\n:1\r\n"
	rangeSpec := func(last, step, limit string) string {
		return "*4\r\n$4\r\ntype\r\n$5\r\nrange\r\n$4\r\nspec\r\n*6\r\n$7\r\nlastkey\r\n:" + last +
			"\r\n$7\r\nkeystep\r\n:" + step + "\r\n$5\r\nlimit\r\n:" + limit + "\r\n"
	}
	tests := []struct {
		name     string
		reply    string
		shouldOK bool
	}{
		{"valid", entry(spec(index1, rangeSpec("0", "1", "0"))), true},
		{"empty table", "*0\r\n", true},
		{"null entry skipped", "*1\r\n*-1\r\n", true},
		{"empty input", "", false},
		{"error reply", "-ERR unknown command 'COMMAND'\r\n", false},
		{"not an array", "+OK\r\n", false},
		{"null array", "*-1\r\n", false},
		{"truncated", entry(spec(index1, rangeSpec("0", "1", "0")))[:40], false},
		{"trailing bytes", "*0\r\n+OK\r\n", false},
		{"lying array length", "*1000000000\r\n", false},
		{"lying bulk length", "*1\r\n$1000\r\nget\r\n", false},
		{"bulk without CRLF", "*1\r\n$3\r\ngetxx\r\n", false},
		{"bad integer", "*1\r\n*6\r\n$3\r\nget\r\n:two\r\n*0\r\n:1\r\n:1\r\n:1\r\n", false},
		{"short entry", "*1\r\n*3\r\n$3\r\nget\r\n:2\r\n*0\r\n", false},
		{"name not a string", "*1\r\n*6\r\n:3\r\n:2\r\n*0\r\n:1\r\n:1\r\n:1\r\n", false},
		{"arity beyond int32", "*1\r\n*6\r\n$3\r\nget\r\n:4294967296\r\n*0\r\n:1\r\n:1\r\n:1\r\n", false},
		{"keystep 0", entry(spec(index1, rangeSpec("0", "0", "0"))), false},
		{"limit without lastkey -1", entry(spec(index1, rangeSpec("-2", "1", "2"))), false},
		{"index 0", entry(spec(strings.Replace(index1, ":1", ":0", 1), rangeSpec("0", "1", "0"))), false},
		{"spec not pairs", entry("*1\r\n*1\r\n$5\r\nflags\r\n"), false},
		{"unknown type kept as unknown", entry(spec(strings.Replace(index1, "$5\r\nindex\r\n$4", "$5\r\nnewer\r\n$4", 1),
			rangeSpec("0", "1", "0"))), true},
		{"deep nesting", strings.Repeat("*1\r\n", 100) + "*0\r\n", false},
		{"unknown type byte", "*1\r\n%1\r\n", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.reply))
			if tc.shouldOK && err != nil {
				t.Fatalf("Parse: %v; want no error", err)
			}
			if !tc.shouldOK && !errors.Is(err, ErrBadReply) {
				t.Fatalf("Parse error %v; want ErrBadReply", err)
			}
		})
	}
}

// TestParseLegacy reads a Redis 6 style reply (no key specs): the legacy range becomes a spec, and a
// movablekeys command is incomplete rather than keyless.
func TestParseLegacy(t *testing.T) {
	reply := "*3\r\n" +
		"*7\r\n$4\r\nmset\r\n:-3\r\n*2\r\n+write\r\n+denyoom\r\n:1\r\n:-1\r\n:2\r\n*0\r\n" +
		"*7\r\n$4\r\nEVAL\r\n:-3\r\n*2\r\n+noscript\r\n+movablekeys\r\n:0\r\n:0\r\n:0\r\n*0\r\n" +
		"*6\r\n$6\r\nrename\r\n:3\r\n*1\r\n+write\r\n:1\r\n:2\r\n:1\r\n"
	cmds, err := Parse([]byte(reply))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		args     []string
		want     []string
		complete bool
	}{
		{[]string{"mset", "a", "1", "b", "2"}, []string{"a", "b"}, true},
		{[]string{"eval", "s", "1", "a"}, nil, false},
		{[]string{"RENAME", "a", "b"}, []string{"a", "b"}, true},
	}
	for _, tc := range tests {
		ci := cmds.Lookup(testkit.Args(tc.args...))
		got, complete := ci.Keys(testkit.Args(tc.args...), nil)
		if !slices.Equal(lineStrings(got), tc.want) && !(len(got) == 0 && len(tc.want) == 0) || complete != tc.complete {
			t.Errorf("Keys(%q) = %q, %v; want %q, %v", tc.args, lineStrings(got), complete, tc.want, tc.complete)
		}
	}
}

// TestKeysSpecs pins the search rules of getKeysUsingKeySpecs on hand-made specs, without Redis.
func TestKeysSpecs(t *testing.T) {
	idx := func(i int) BeginSearch { return BeginSearch{Type: BeginIndex, Index: i} }
	kw := func(k string, from int) BeginSearch {
		return BeginSearch{Type: BeginKeyword, Keyword: k, StartFrom: from}
	}
	rng := func(last, step, limit int) FindKeys {
		return FindKeys{Type: FindRange, LastKey: last, KeyStep: step, Limit: limit}
	}
	keynum := func(numIdx, first, step int) FindKeys {
		return FindKeys{Type: FindKeynum, KeyNumIdx: numIdx, FirstKey: first, KeyStep: step}
	}
	tests := []struct {
		name     string
		specs    []KeySpec
		args     []string
		want     []string
		complete bool
	}{
		{"single", []KeySpec{{BeginSearch: idx(1), FindKeys: rng(0, 1, 0)}}, []string{"get", "a"}, []string{"a"}, true},
		{"pairs to the end", []KeySpec{{BeginSearch: idx(1), FindKeys: rng(-1, 2, 0)}},
			[]string{"mset", "a", "1", "b", "2"}, []string{"a", "b"}, true},
		{"all but the last", []KeySpec{{BeginSearch: idx(1), FindKeys: rng(-2, 1, 0)}},
			[]string{"blpop", "a", "b", "0"}, []string{"a", "b"}, true},
		{"range past the end", []KeySpec{{BeginSearch: idx(1), FindKeys: rng(1, 1, 0)}}, []string{"rename", "a"}, nil, false},
		{"index past the end", []KeySpec{{BeginSearch: idx(2), FindKeys: rng(0, 1, 0)}}, []string{"x", "a"}, nil, false},
		{"limit halves the rest", []KeySpec{{BeginSearch: kw("STREAMS", 1), FindKeys: rng(-1, 1, 2)}},
			[]string{"xread", "count", "1", "streams", "a", "b", "0", "0"}, []string{"a", "b"}, true},
		{"limit with odd rest", []KeySpec{{BeginSearch: kw("STREAMS", 1), FindKeys: rng(-1, 1, 2)}},
			[]string{"xread", "streams", "a"}, nil, false},
		{"keyword any case", []KeySpec{{BeginSearch: kw("STREAMS", 1), FindKeys: rng(-1, 1, 2)}},
			[]string{"xread", "StReAmS", "a", "0"}, []string{"a"}, true},
		{"keyword before a NUL", []KeySpec{{BeginSearch: kw("STREAMS", 1), FindKeys: rng(-1, 1, 2)}},
			[]string{"xread", "streams\x00junk", "a", "0"}, []string{"a"}, true},
		{"keyword with a NUL first", []KeySpec{{BeginSearch: kw("STREAMS", 1), FindKeys: rng(-1, 1, 2)}},
			[]string{"xread", "\x00streams", "a", "0"}, nil, true},
		{"keyword absent", []KeySpec{{BeginSearch: kw("STORE", 2), FindKeys: rng(0, 1, 0)}},
			[]string{"georadius", "k", "1"}, nil, true},
		{"keyword last is not searched", []KeySpec{{BeginSearch: kw("STORE", 1), FindKeys: rng(0, 1, 0)}},
			[]string{"x", "a", "STORE"}, nil, true},
		{"keyword before startfrom is not searched", []KeySpec{{BeginSearch: kw("STORE", 3), FindKeys: rng(0, 1, 0)}},
			[]string{"x", "STORE", "a", "b"}, nil, true},
		{"first keyword from the start", []KeySpec{{BeginSearch: kw("KEYS", 1), FindKeys: rng(0, 1, 0)}},
			[]string{"x", "KEYS", "a", "KEYS", "b"}, []string{"a"}, true},
		{"last keyword from the end", []KeySpec{{BeginSearch: kw("KEYS", -2), FindKeys: rng(-1, 1, 0)}},
			[]string{"x", "KEYS", "a", "KEYS", "b"}, []string{"b"}, true},
		{"backward search stops at index 2", []KeySpec{{BeginSearch: kw("KEYS", -2), FindKeys: rng(-1, 1, 0)}},
			[]string{"x", "KEYS", "a"}, nil, true},
		{"keynum", []KeySpec{{BeginSearch: idx(2), FindKeys: keynum(0, 1, 1)}},
			[]string{"eval", "s", "2", "a", "b", "arg"}, []string{"a", "b"}, true},
		{"keynum zero", []KeySpec{{BeginSearch: idx(2), FindKeys: keynum(0, 1, 1)}},
			[]string{"eval", "s", "0", "arg"}, nil, true},
		{"keynum zero at the end", []KeySpec{{BeginSearch: idx(2), FindKeys: keynum(0, 1, 1)}},
			[]string{"eval", "s", "0"}, nil, true},
		{"keynum past the end", []KeySpec{{BeginSearch: idx(2), FindKeys: keynum(0, 1, 1)}},
			[]string{"eval", "s", "3", "a", "b"}, nil, false},
		{"keynum not a number", []KeySpec{{BeginSearch: idx(2), FindKeys: keynum(0, 1, 1)}},
			[]string{"eval", "s", "two", "a", "b"}, nil, false},
		{"keynum leading zero", []KeySpec{{BeginSearch: idx(2), FindKeys: keynum(0, 1, 1)}},
			[]string{"eval", "s", "01", "a"}, nil, false},
		{"keynum plus sign", []KeySpec{{BeginSearch: idx(2), FindKeys: keynum(0, 1, 1)}},
			[]string{"eval", "s", "+1", "a"}, nil, false},
		{"keynum negative", []KeySpec{{BeginSearch: idx(2), FindKeys: keynum(0, 1, 1)}},
			[]string{"eval", "s", "-1", "a"}, nil, false},
		{"keynum overflow", []KeySpec{{BeginSearch: idx(2), FindKeys: keynum(0, 1, 1)}},
			[]string{"eval", "s", "99999999999999999999", "a"}, nil, false},
		{"keynum index missing", []KeySpec{{BeginSearch: idx(2), FindKeys: keynum(0, 1, 1)}},
			[]string{"eval", "s"}, nil, false},
		{"keynum after a keyword", []KeySpec{{BeginSearch: kw("KEYS", 1), FindKeys: keynum(0, 1, 1)}},
			[]string{"x", "v", "KEYS", "2", "a", "b", "c"}, []string{"a", "b"}, true},
		// Redis 7.0 ends a keynum spec at first+count-1 whatever its step (no built-in command has a step above 1),
		// so a step of 2 over a count of 2 finds one key; Keys does the same, as ACL checks and cluster routing do.
		{"keynum step counts arguments", []KeySpec{{BeginSearch: kw("KEYS", 1), FindKeys: keynum(0, 1, 2)}},
			[]string{"x", "v", "KEYS", "2", "a", "1", "b", "2"}, []string{"a"}, true},
		{"not_key skipped", []KeySpec{{Flags: KeyNotKey, BeginSearch: idx(1), FindKeys: rng(0, 1, 0)}},
			[]string{"spublish", "ch", "m"}, nil, true},
		{"unknown begin", []KeySpec{{BeginSearch: idx(1), FindKeys: rng(0, 1, 0)}, {}},
			[]string{"sort", "a", "STORE", "b"}, []string{"a"}, false},
		{"unknown find", []KeySpec{{BeginSearch: idx(1), FindKeys: FindKeys{}}}, []string{"x", "a"}, nil, false},
		{"incomplete keeps its keys", []KeySpec{{BeginSearch: idx(3), FindKeys: rng(0, 1, 0)},
			{Flags: KeyIncomplete, BeginSearch: kw("KEYS", -2), FindKeys: rng(-1, 1, 0)}},
			[]string{"migrate", "h", "p", "", "0", "5", "KEYS", "a", "b"}, []string{"", "a", "b"}, false},
		{"incomplete spec that does not apply", []KeySpec{{BeginSearch: idx(3), FindKeys: rng(0, 1, 0)},
			{Flags: KeyIncomplete, BeginSearch: kw("KEYS", -2), FindKeys: rng(-1, 1, 0)}},
			[]string{"migrate", "h", "p", "k", "0", "5"}, []string{"k"}, true},
		{"invalid spec keeps the others", []KeySpec{{BeginSearch: idx(1), FindKeys: rng(0, 1, 0)},
			{BeginSearch: idx(2), FindKeys: keynum(0, 1, 1)}},
			[]string{"zunionstore", "d", "x", "a"}, []string{"d"}, false},
		{"same key twice", []KeySpec{{BeginSearch: idx(1), FindKeys: rng(0, 1, 0)}, {BeginSearch: idx(1), FindKeys: rng(0, 1, 0)}},
			[]string{"x", "a"}, []string{"a", "a"}, true},
		// Hand-built nonsense Parse refuses: Keys must still neither panic nor loop.
		{"step 0", []KeySpec{{BeginSearch: idx(1), FindKeys: rng(-1, 0, 0)}}, []string{"x", "a", "b"}, nil, false},
		{"index 0", []KeySpec{{BeginSearch: idx(0), FindKeys: rng(0, 1, 0)}}, []string{"x", "a"}, nil, false},
		{"negative index", []KeySpec{{BeginSearch: idx(-5), FindKeys: rng(0, 1, 0)}}, []string{"x", "a"}, nil, false},
		{"huge lastkey", []KeySpec{{BeginSearch: idx(1), FindKeys: rng(1<<62, 1, 0)}}, []string{"x", "a"}, nil, false},
		{"huge step", []KeySpec{{BeginSearch: idx(1), FindKeys: rng(-1, 1<<62, 0)}}, []string{"x", "a", "b"}, []string{"a"}, true},
		{"negative limit", []KeySpec{{BeginSearch: idx(1), FindKeys: rng(-1, 1, -3)}}, []string{"x", "a"}, []string{"a"}, true},
		{"negative keynum index", []KeySpec{{BeginSearch: idx(1), FindKeys: keynum(-9, 1, 1)}}, []string{"x", "1", "a"}, nil, false},
		{"negative firstkey", []KeySpec{{BeginSearch: idx(1), FindKeys: keynum(0, -9, 1)}}, []string{"x", "1", "a"}, nil, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ci := &Info{Name: tc.args[0], Arity: -1, KeySpecs: tc.specs}
			args := testkit.Args(tc.args...)
			got, complete := ci.Keys(args, nil)
			if !slices.Equal(lineStrings(got), tc.want) && !(len(got) == 0 && len(tc.want) == 0) || complete != tc.complete {
				t.Errorf("Keys(%q) = %q, %v; want %q, %v", tc.args, lineStrings(got), complete, tc.want, tc.complete)
			}
			for _, k := range got {
				if !aliasesArg(k, args) {
					t.Errorf("key %q is not one of the argument slices", k)
				}
			}
			var first []byte
			if len(got) > 0 {
				first = got[0]
			}
			if rk := ci.RoutingKey(args); len(rk) != len(first) || (rk == nil) != (first == nil) ||
				rk != nil && unsafe.SliceData(rk) != unsafe.SliceData(first) {
				t.Errorf("RoutingKey(%q) = %q; want %q, Keys' first", tc.args, rk, first)
			}
		})
	}
	if got, complete := (*Info)(nil).Keys(testkit.Args("x", "a"), nil); got != nil || complete {
		t.Errorf("nil Info: Keys = %q, %v; want nil, false", got, complete)
	}
}

func TestCommandLookup(t *testing.T) {
	cmds := loadCapturedCommands(t)
	long := strings.Repeat("x", 1000)
	tests := []struct {
		args []string
		want string // "" means nil
	}{
		{[]string{"get", "k"}, "get"},
		{[]string{"GET", "k"}, "get"},
		{[]string{"gEt"}, "get"},
		{[]string{"client", "setname", "n"}, "client|setname"},
		{[]string{"CLIENT", "SetName", "n"}, "client|setname"},
		{[]string{"client", "nosuch"}, "client"},
		{[]string{"client"}, "client"},
		{[]string{"object", "ENCODING", "k"}, "object|encoding"},
		{[]string{"get", "setname"}, "get"},
		{[]string{"nosuch", "x"}, ""},
		{[]string{""}, ""},
		{[]string{long}, ""},
		{[]string{"client", long}, "client"},
		{[]string{"get\x00"}, ""},
		{nil, ""},
	}
	for _, tc := range tests {
		ci := cmds.Lookup(testkit.Args(tc.args...))
		got := ""
		if ci != nil {
			got = ci.Name
		}
		if got != tc.want {
			t.Errorf("Lookup(%.40q) = %q; want %q", tc.args, got, tc.want)
		}
	}

	// A table with a name longer than the lowering buffer, as a module could register.
	longCmds := Table{long: {Name: long}}
	if ci := longCmds.Lookup(testkit.Args(strings.ToUpper(long))); ci == nil {
		t.Errorf("Lookup of a %d-byte name in upper case = nil; want it found", len(long))
	}

	for _, args := range [][][]byte{
		testkit.Args("GET", "k"), testkit.Args("Client", "SETNAME", "n"), testkit.Args("client", "nosuch"), testkit.Args("NOSUCH"),
		testkit.Args(long), testkit.Args("client", long),
	} {
		if n := testing.AllocsPerRun(100, func() { cmds.Lookup(args) }); n != 0 {
			t.Errorf("Lookup(%.40q) allocates %v times; want 0", args, n)
		}
	}
}

func TestKeysAllocs(t *testing.T) {
	cmds := loadCapturedCommands(t)
	dst := make([][]byte, 0, 16)
	for _, args := range [][][]byte{
		testkit.Args("mset", "a", "1", "b", "2"),
		testkit.Args("EVAL", "s", "2", "a", "b", "x"),
		testkit.Args("xread", "COUNT", "1", "STREAMS", "a", "b", "0", "0"),
		testkit.Args("migrate", "h", "1", "", "0", "5", "KEYS", "a", "b"),
		testkit.Args("eval", "s", "notanumber", "a"),
	} {
		ci := cmds.Lookup(args)
		if n := testing.AllocsPerRun(100, func() { ci.Keys(args, dst[:0]) }); n != 0 {
			t.Errorf("Keys(%q) allocates %v times; want 0", args, n)
		}
		if n := testing.AllocsPerRun(100, func() { ci.RoutingKey(args) }); n != 0 {
			t.Errorf("RoutingKey(%q) allocates %v times; want 0", args, n)
		}
	}
}

// TestCommandArity compares ArityOK with the arity check of a real Redis, and the table's names with the names
// Redis uses in its wrong-arity error.
func TestCommandArity(t *testing.T) {
	srv := redistest.Start(t)
	conn := redistest.Dial(t, srv.Addr())
	cmds, err := Parse(conn.Do("COMMAND"))
	if err != nil {
		t.Fatal(err)
	}
	tests := [][]string{
		{"get"}, {"get", "a"}, {"get", "a", "b"},
		{"set", "a"}, {"set", "a", "b"}, {"set", "a", "b", "NX"},
		{"mget"}, {"mget", "a"}, {"mget", "a", "b"},
		{"del"}, {"del", "a", "b"},
		{"echo"}, {"echo", "a"}, {"echo", "a", "b"},
		{"hset", "h"}, {"hset", "h", "f"}, {"hset", "h", "f", "v"},
		{"lpush", "l"}, {"lpush", "l", "a"},
		{"xadd", "s", "*"}, {"xadd", "s", "*", "f"}, {"xadd", "s", "*", "f", "v"},
		{"eval"}, {"eval", "return 1"}, {"eval", "return 1", "0"},
		{"client"}, {"client", "setname"}, {"client", "setname", "n"}, {"client", "setname", "n", "x"},
		{"CLIENT", "GETNAME"}, {"client", "getname", "x"},
		{"config", "get"}, {"config", "get", "maxmemory"},
		{"object", "encoding"}, {"object", "encoding", "k"}, {"object", "encoding", "k", "x"},
		{"exists"}, {"exists", "a", "b", "c"},
	}
	for _, args := range tests {
		ci := cmds.Lookup(testkit.Args(args...))
		if ci == nil {
			t.Errorf("Lookup(%q) = nil", args)
			continue
		}
		reply := string(conn.Do(args...))
		want := !strings.HasPrefix(reply, "-ERR wrong number of arguments")
		if got := ci.ArityOK(len(args)); got != want {
			t.Errorf("%q: ArityOK(%d) = %v; Redis replied %q", args, len(args), got, reply)
		}
		if !want {
			if msg := "-ERR wrong number of arguments for '" + ci.Name + "' command\r\n"; reply != msg {
				t.Errorf("%q: Redis replied %q; want %q", args, reply, msg)
			}
		}
	}
	if (*Info)(nil).ArityOK(1) {
		t.Errorf("nil Info: ArityOK = true; want false")
	}
}

// TestKeysAgainstGetkeys is the key test: for every command and subcommand with key specs it builds argument
// vectors from COMMAND DOCS and compares Keys with COMMAND GETKEYS of a real Redis.
//
// A vector GETKEYS refuses ("Invalid arguments specified for command", "The command has no key arguments", ...)
// agrees when Keys finds no keys; otherwise it is skipped and counted. A vector for which Keys says complete=false
// is not compared: Redis then answers GETKEYS with the command's hand-written getkeys function (SORT, MIGRATE
// KEYS), which is exactly what the key specs cannot express; those are counted and logged.
func TestKeysAgainstGetkeys(t *testing.T) {
	conn, _, cmds := liveCommands(t)
	docs := parseCommandDocs(t, decodeTestReply(t, conn.Do("COMMAND", "DOCS")))

	var compared, refusedAgreed, skipped, incomplete, vectors int
	covered := map[string]bool{}
	var noVector []string
	for _, ci := range allCommands(cmds) {
		if len(ci.KeySpecs) == 0 {
			continue
		}
		doc, ok := docs[ci.Name]
		if !ok {
			t.Errorf("%s: no COMMAND DOCS entry", ci.Name)
			continue
		}
		prefix := strings.Split(ci.Name, "|")
		for _, vec := range commandVectors(doc.args) {
			args := append(slices.Clone(prefix), vec...)
			vectors++
			bargs := testkit.Args(args...)
			if got := cmds.Lookup(bargs); got != ci {
				t.Errorf("Lookup(%q) = %v; want %s", args, got, ci.Name)
				continue
			}
			got, complete := ci.Keys(bargs, nil)
			reply := decodeTestReply(t, conn.Do(append([]string{"COMMAND", "GETKEYS"}, args...)...))
			switch {
			case reply.Type == resp.TypeError && len(got) == 0:
				refusedAgreed++
				covered[ci.Name] = true
				t.Logf("refused %q: GETKEYS %q; Keys found none, complete=%v", args, reply.Str, complete)
			case reply.Type == resp.TypeError:
				skipped++
				t.Logf("skipped %q: GETKEYS refused (%s); Keys found %q, complete=%v", args, reply.Str, lineStrings(got), complete)
			case !complete:
				incomplete++
				if want := replyStrings(reply); !slices.Equal(lineStrings(got), want) {
					t.Logf("incomplete %q: Keys %q, GETKEYS %q", args, lineStrings(got), want)
				}
			default:
				compared++
				covered[ci.Name] = true
				if want := replyStrings(reply); !slices.Equal(lineStrings(got), want) && !(len(got) == 0 && len(want) == 0) {
					t.Errorf("%s %q: Keys = %q; GETKEYS = %q", ci.Name, args, lineStrings(got), want)
				}
			}
		}
		if !covered[ci.Name] && ci.Flags.Has(FlagWrite) {
			noVector = append(noVector, ci.Name)
		}
	}
	// SORT has only unknown specs besides its first key, so every vector is incomplete: its keys are covered by
	// the incomplete count, and the request path treats it as a command whose keys are not all known.
	if noVector = slices.DeleteFunc(noVector, func(n string) bool { return n == "sort" }); len(noVector) > 0 {
		t.Errorf("write commands with key specs and no compared vector: %q", noVector)
	}
	withSpecs := 0
	var uncovered []string
	for _, ci := range allCommands(cmds) {
		if len(ci.KeySpecs) > 0 {
			withSpecs++
			if !covered[ci.Name] {
				uncovered = append(uncovered, ci.Name)
			}
		}
	}
	t.Logf("GETKEYS comparison: %d of %d commands with key specs covered, %d vectors: %d compared equal, "+
		"%d refused by GETKEYS with no keys found, %d incomplete (not compared), %d skipped; not covered: %q",
		len(covered), withSpecs, vectors, compared, refusedAgreed, incomplete, skipped, uncovered)
	if vectors == 0 || compared == 0 {
		t.Fatalf("no vectors compared")
	}
}

func replyStrings(v resp.Value) []string {
	out := make([]string, len(v.Elems))
	for i, e := range v.Elems {
		out[i] = e.Str
	}
	return out
}

// docArg is one argument of COMMAND DOCS.
type docArg struct {
	name, typ, token                string
	optional, multiple, multipleTok bool
	args                            []docArg
}

type commandDoc struct{ args []docArg }

// parseCommandDocs reads the COMMAND DOCS reply into full names ("client|setname") and argument trees.
func parseCommandDocs(t *testing.T, v resp.Value) map[string]commandDoc {
	t.Helper()
	out := map[string]commandDoc{}
	var walk func(name string, doc resp.Value)
	walk = func(name string, doc resp.Value) {
		m, err := pairs(doc)
		if err != nil {
			t.Fatalf("docs of %s: %v", name, err)
		}
		out[string(resp.AppendLower(nil, []byte(name)))] = commandDoc{args: parseDocArgs(t, m["arguments"])}
		if subs, ok := m["subcommands"]; ok {
			for i := 0; i+1 < len(subs.Elems); i += 2 {
				walk(subs.Elems[i].Str, subs.Elems[i+1])
			}
		}
	}
	for i := 0; i+1 < len(v.Elems); i += 2 {
		walk(v.Elems[i].Str, v.Elems[i+1])
	}
	return out
}

func parseDocArgs(t *testing.T, v resp.Value) []docArg {
	var out []docArg
	for _, e := range v.Elems {
		m, err := pairs(e)
		if err != nil {
			t.Fatalf("argument docs: %v", err)
		}
		a := docArg{name: m["name"].Str, typ: m["type"].Str, token: m["token"].Str}
		for _, f := range m["flags"].Elems {
			switch f.Str {
			case "optional":
				a.optional = true
			case "multiple":
				a.multiple = true
			case "multiple_token":
				a.multipleTok = true
			}
		}
		a.args = parseDocArgs(t, m["arguments"])
		out = append(out, a)
	}
	return out
}

// Placeholders of generated vectors, replaced once a whole vector is known.
const (
	keyMark     = "\x00key"
	numkeysMark = "\x00numkeys"
)

// commandVectors builds argument vectors (without the command name) from an argument tree: a base vector (every
// optional argument absent, the first alternative of every oneof, one repetition of every multiple argument), the
// base with one choice changed at a time, and the richest vector. Keys become "k1", "k2", ... and a numkeys argument
// counts the keys that follow it.
func commandVectors(args []docArg) [][]string {
	var out [][]string
	seen := map[string]bool{}
	for _, v := range seqVariants(args, true) {
		n := 0
		vec := slices.Clone(v)
		for i, a := range vec {
			if a == keyMark {
				n++
				vec[i] = "k" + strconv.Itoa(n)
			}
		}
		for i, a := range v {
			if a == numkeysMark {
				vec[i] = strconv.Itoa(countKeyMarks(v[i+1:]))
			}
		}
		if key := strings.Join(vec, "\x01"); !seen[key] {
			seen[key] = true
			out = append(out, vec)
		}
	}
	return out
}

func countKeyMarks(v []string) int {
	n := 0
	for _, a := range v {
		if a == keyMark {
			n++
		}
	}
	return n
}

// seqVariants returns the variants of a sequence of arguments: the base, one change at a time, two changes at a
// time if pairs is set (the top level only, which keeps the count near a few thousand vectors), the richest.
func seqVariants(args []docArg, pairs bool) [][]string {
	vars := make([][][]string, len(args))
	for i, a := range args {
		vars[i] = argVariants(a)
	}
	concat := func(pick func(i int) []string) []string {
		var out []string
		for i := range args {
			out = append(out, pick(i)...)
		}
		return out
	}
	out := [][]string{concat(func(i int) []string { return vars[i][0] })}
	for i := range args {
		for j := 1; j < len(vars[i]); j++ {
			out = append(out, concat(func(k int) []string {
				if k == i {
					return vars[i][j]
				}
				return vars[k][0]
			}))
		}
	}
	for i := 0; pairs && i < len(args); i++ {
		for j := i + 1; j < len(args); j++ {
			for vi := 1; vi < len(vars[i]); vi++ {
				for vj := 1; vj < len(vars[j]); vj++ {
					out = append(out, concat(func(k int) []string {
						switch k {
						case i:
							return vars[i][vi]
						case j:
							return vars[j][vj]
						}
						return vars[k][0]
					}))
				}
			}
		}
	}
	out = append(out, concat(func(i int) []string { return vars[i][len(vars[i])-1] }))
	return out
}

// argVariants returns the token sequences one argument can stand for; the first is the simplest, the last the
// richest.
func argVariants(a docArg) [][]string {
	var one [][]string
	switch a.typ {
	case "key":
		one = [][]string{{keyMark}}
	case "integer":
		if a.name == "numkeys" {
			one = [][]string{{numkeysMark}}
		} else {
			one = [][]string{{"1"}}
		}
	case "double":
		one = [][]string{{"1.5"}}
	case "unix-time":
		one = [][]string{{"1700000000"}}
	case "pure-token":
		one = [][]string{{a.token}}
	case "oneof":
		for _, alt := range a.args {
			one = append(one, argVariants(alt)...)
		}
	case "block":
		one = seqVariants(a.args, false)
	default: // string, pattern
		one = [][]string{{"v"}}
	}
	withToken := func(v []string) []string {
		if a.token == "" || a.typ == "pure-token" {
			return v
		}
		return append([]string{a.token}, v...)
	}
	var out [][]string
	if a.optional {
		out = append(out, nil)
	}
	for _, v := range one {
		out = append(out, withToken(v))
	}
	if a.multiple {
		base, rich := one[0], one[len(one)-1]
		if a.multipleTok {
			out = append(out, append(withToken(base), withToken(rich)...))
		} else {
			out = append(out, withToken(append(slices.Clone(base), rich...)))
		}
	}
	return out
}

// aliasesArg reports whether k is one of args itself (the same bytes in memory), not a copy.
func aliasesArg(k []byte, args [][]byte) bool {
	for _, a := range args {
		if len(a) == len(k) && unsafe.SliceData(a) == unsafe.SliceData(k) {
			return true
		}
	}
	return false
}

func BenchmarkCommandLookup(b *testing.B) {
	cmds := loadCapturedCommands(b)
	args := testkit.Args("Client", "SETNAME", "n")
	b.ReportAllocs()
	for b.Loop() {
		if cmds.Lookup(args) == nil {
			b.Fatal("nil")
		}
	}
}

func BenchmarkKeys(b *testing.B) {
	cmds := loadCapturedCommands(b)
	args := testkit.Args("xread", "COUNT", "10", "STREAMS", "a", "b", "c", "0", "0", "0")
	ci := cmds.Lookup(args)
	dst := make([][]byte, 0, 8)
	b.ReportAllocs()
	for b.Loop() {
		dst, _ = ci.Keys(args, dst[:0])
	}
}
