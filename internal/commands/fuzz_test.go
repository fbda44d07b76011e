package commands

import (
	"bytes"
	"slices"
	"testing"
	"unsafe"
)

// FuzzKeys runs Keys over random command lines against every command of the captured Redis 7.0 table. line holds the
// arguments separated by '\n' (NUL bytes and anything else allowed inside); if its first argument names no command,
// which picks one. Keys must not panic, must append after what dst held, must return only the caller's own argument
// slices (never the command name), and must give the same answer twice; RoutingKey must be the first of them.
func FuzzKeys(f *testing.F) {
	cmds := loadCapturedCommands(f)
	all := allCommands(cmds)
	seeds := []string{
		"get\nk",
		"MSET\na\n1\nb\n2",
		"mset\na\n1\nb",
		"eval\ns\n2\na\nb\nx",
		"EVAL\ns\n0",
		"eval\ns\n-1\na",
		"eval\ns\n01\na",
		"eval\ns\n+1\na",
		"eval\ns\n9223372036854775807\na",
		"eval\ns\n-9223372036854775808\na",
		"eval\ns\n99999999999999999999\na",
		"eval\ns\n4294967297\na",
		"fcall\nf\n3\na\nb",
		"xread\nCOUNT\n1\nSTREAMS\na\nb\n0\n0",
		"xread\nstreams",
		"xread\nSTREAMS\na",
		"xreadgroup\nGROUP\ng\nc\nSTREAMS\nstreams\n>",
		"xread\nstreams\x00junk\na\n0",
		"migrate\nh\n1\n\n0\n5\nKEYS\na\nb",
		"migrate\nh\n1\nk\n0\n5\nAUTH\nKEYS\nKEYS\nx",
		"migrate\nh\n1\nk\n0\n5\nKEYS",
		"sort\nk\nBY\np\nSTORE\nd",
		"georadius\nk\n1\n2\n3\nm\nSTORE\nd\nSTOREDIST\ne",
		"zunionstore\nd\n2\na\nb\nWEIGHTS\n1\n2",
		"zunionstore\nd\n0",
		"lmpop\n2\na\nb\nLEFT",
		"blmpop\n0\n1\na\nRIGHT\nCOUNT\n2",
		"bitfield\nk\nGET\nu8\n0",
		"client\nsetname\nx",
		"object\nencoding\nk",
		"spublish\nch\nmsg",
		"memory\nusage\nk\nSAMPLES\n5",
		"",
		"\n\n\n",
		"GeT",
	}
	for i, s := range seeds {
		f.Add(uint16(i), []byte(s))
	}
	f.Fuzz(func(t *testing.T, which uint16, line []byte) {
		args := bytes.Split(line, []byte("\n"))
		ci := cmds.Lookup(args)
		if ci == nil {
			ci = all[int(which)%len(all)]
		}
		_ = ci.ArityOK(len(args))

		sentinel := []byte("held")
		keys, complete := ci.Keys(args, [][]byte{sentinel})
		if len(keys) == 0 || &keys[0][0] != &sentinel[0] {
			t.Fatalf("%s: Keys dropped what dst held: %q", ci.Name, keys)
		}
		for _, k := range keys[1:] {
			if !aliasesArg(k, args[1:]) {
				t.Fatalf("%s %q: key %q is not one of the argument slices after the name", ci.Name, args, k)
			}
		}
		rk := ci.RoutingKey(args)
		if len(keys) == 1 && rk != nil ||
			len(keys) > 1 && (rk == nil || len(rk) != len(keys[1]) || unsafe.SliceData(rk) != unsafe.SliceData(keys[1])) {
			t.Fatalf("%s %q: RoutingKey = %q; Keys' first is %q", ci.Name, args, rk, keys[1:min(2, len(keys))])
		}
		again, complete2 := ci.Keys(args, nil)
		if complete2 != complete || !slices.EqualFunc(again, keys[1:], bytes.Equal) {
			t.Fatalf("%s %q: Keys gave %q, %v then %q, %v", ci.Name, args, keys[1:], complete, again, complete2)
		}
	})
}
