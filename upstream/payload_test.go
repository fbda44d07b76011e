package upstream

import (
	"bytes"
	"slices"
	"testing"

	"featcache/internal/commands"
	"featcache/internal/resp"
	"featcache/internal/testkit"
)

// TestPayloadUnits: each command appended is a unit routed by its first key's slot, found by the command table's
// key specs or given by its key; a transaction is one unit, routed by its first keyed command; the bytes are the
// commands' RESP encoding, in order.
func TestPayloadUnits(t *testing.T) {
	cmds, err := commands.Embedded()
	if err != nil {
		t.Fatal(err)
	}
	slot := func(key string) int { return int(Slot([]byte(key))) }

	var p Payload
	var want []byte
	p.Append(cmds["set"], testkit.Args("SET", "a", "1"), nil)
	want = resp.AppendCommand(want, "SET", "a", "1")
	raw := resp.AppendCommand(nil, "MSET", "b", "1", "c", "2")
	p.Append(cmds["mset"], testkit.Args("MSET", "b", "1", "c", "2"), raw) // raw goes as it is: the first key routes it
	want = append(want, raw...)
	p.Append(cmds["ping"], testkit.Args("PING"), nil)
	want = resp.AppendCommand(want, "PING")
	p.Append(nil, testkit.Args("NOSUCH", "x"), nil) // unknown: no keys known
	want = resp.AppendCommand(want, "NOSUCH", "x")
	p.AppendFetch([]byte("d"))
	want = AppendFetch(want, []byte("d"))
	p.Multi()
	p.AppendCommand(NoSlot, "PING")
	p.AppendKey("INCR", []byte("e"))
	p.AppendKey("INCR", []byte("f"))
	p.Exec()
	want = resp.AppendCommand(want, "MULTI")
	want = resp.AppendCommand(want, "PING")
	want = AppendKeyCommand(want, "INCR", []byte("e"))
	want = AppendKeyCommand(want, "INCR", []byte("f"))
	want = resp.AppendCommand(want, "EXEC")
	p.AppendTx(slot("g"), resp.AppendCommand(nil, "GET", "g"), 1)
	want = resp.AppendCommand(want, "MULTI")
	want = resp.AppendCommand(want, "GET", "g")
	want = resp.AppendCommand(want, "EXEC")
	p.AppendHashFetch([]byte("h"), testkit.Args("f1", "f2"), false, true)
	want = AppendHashFetch(want, []byte("h"), testkit.Args("f1", "f2"), false, true)

	if !bytes.Equal(p.Bytes(), want) {
		t.Fatalf("Bytes() = %q; want %q", p.Bytes(), want)
	}
	if got := p.Len(); got != 17 {
		t.Errorf("Len() = %d; want 17", got)
	}
	type u struct {
		frames, slot int
		tx           bool
	}
	var got []u
	end := 0
	for _, s := range p.units {
		if s.end <= end {
			t.Fatalf("unit ends at %d, after one that ends at %d", s.end, end)
		}
		end = s.end
		got = append(got, u{s.frames, s.slot, s.tx})
	}
	wantUnits := []u{
		{1, slot("a"), false}, {1, slot("b"), false}, {1, NoSlot, false}, {1, NoSlot, false},
		{1, slot("d"), false}, {1, slot("d"), false},
		{5, slot("e"), true},
		{3, slot("g"), true},
		{1, slot("h"), false}, {1, slot("h"), false}, {1, slot("h"), false},
	}
	if !slices.Equal(got, wantUnits) || end != len(want) {
		t.Errorf("units %+v ending at %d; want %+v ending at %d", got, end, wantUnits, len(want))
	}

	p.Reset()
	if p.Len() != 0 || p.Size() != 0 || len(p.units) != 0 || p.Cap() == 0 {
		t.Errorf("after Reset: Len %d, Size %d, %d units, Cap %d; want empty with its memory", p.Len(), p.Size(),
			len(p.units), p.Cap())
	}
}

// TestPayloadAppendAllocs: appending to a payload that has room allocates nothing, key extraction included.
func TestPayloadAppendAllocs(t *testing.T) {
	cmds, err := commands.Embedded()
	if err != nil {
		t.Fatal(err)
	}
	args := [][]byte{[]byte("MSET"), []byte("a"), []byte("1"), []byte("b"), []byte("2")}
	var p Payload
	for i := 0; i < 100; i++ {
		p.Append(cmds["mset"], args, nil)
		p.AppendFetch([]byte("k"))
	}
	if n := testing.AllocsPerRun(100, func() {
		p.Reset()
		p.Append(cmds["mset"], args, nil)
		p.AppendFetch([]byte("k"))
	}); n != 0 {
		t.Errorf("Append and AppendFetch allocate %v times; want 0", n)
	}
}

// TestPayloadWrites: a payload is taken for one that may write (and travels on the writes' shared connections) as
// soon as it holds a command CLIENT PAUSE WRITE may hold: one Redis does not flag readonly, one whose key specs
// modify (PFCOUNT), an unknown one, a transaction; featcache's own reads and plain reads are not writes.
func TestPayloadWrites(t *testing.T) {
	cmds, err := commands.Embedded()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		add    func(p *Payload)
		writes bool
	}{
		{"GET", func(p *Payload) { p.Append(cmds.Lookup(testkit.Args("GET", "k")), testkit.Args("GET", "k"), nil) }, false},
		{"MGET", func(p *Payload) { p.Append(cmds["mget"], testkit.Args("MGET", "a", "b"), nil) }, false},
		{"EVAL_RO", func(p *Payload) { p.Append(cmds["eval_ro"], testkit.Args("EVAL_RO", "return 1", "0"), nil) }, false},
		{"fill", func(p *Payload) { p.AppendFetch([]byte("k")) }, false},
		{"forwarded cached read", func(p *Payload) { p.AppendKey("GET", []byte("k")) }, false},
		{"SET", func(p *Payload) { p.Append(cmds["set"], testkit.Args("SET", "k", "v"), nil) }, true},
		{"PFCOUNT", func(p *Payload) { p.Append(cmds["pfcount"], testkit.Args("PFCOUNT", "h"), nil) }, true},
		{"EVAL", func(p *Payload) { p.Append(cmds["eval"], testkit.Args("EVAL", "return 1", "0"), nil) }, true},
		{"PUBLISH", func(p *Payload) { p.Append(cmds["publish"], testkit.Args("PUBLISH", "c", "m"), nil) }, true},
		{"unknown", func(p *Payload) { p.Append(nil, testkit.Args("NOSUCH"), nil) }, true},
		{"transaction", func(p *Payload) { p.AppendTx(NoSlot, resp.AppendCommand(nil, "GET", "k"), 1) }, true},
	} {
		var p Payload
		p.AppendFetch([]byte("first"))
		tc.add(&p)
		if p.Writes() != tc.writes {
			t.Errorf("%s: Writes() = %v; want %v", tc.name, p.Writes(), tc.writes)
		}
		p.Reset()
		if p.Writes() {
			t.Errorf("%s: Writes() after Reset", tc.name)
		}
	}
}

// TestRefused: only a refusal that stands until an operator acts (an ACL's, a renamed command's, also as an
// EXECABORT's cause) is one; a busy or loading Redis is not.
func TestRefused(t *testing.T) {
	for f, want := range map[string]bool{
		"-NOPERM this user has no permissions to run the 'pttl' command\r\n":                                             true,
		"-EXECABORT Transaction discarded because of: NOPERM this user has no permissions to run the 'exec' command\r\n": true,
		"-ERR unknown command 'PTTL', with args beginning with: 'k' \r\n":                                                true,
		"-BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE.\r\n":                    false,
		"-EXECABORT Transaction discarded because of: BUSY Redis is busy running a script.\r\n":                          false,
		"-LOADING Redis is loading the dataset in memory\r\n":                                                            false,
		":-2\r\n": false,
	} {
		if got := Refused([]byte(f)); got != want {
			t.Errorf("Refused(%q) = %v; want %v", f, got, want)
		}
	}
}
