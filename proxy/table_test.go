package proxy

import (
	"slices"
	"testing"

	"featcache/internal/commands"

	"featcache/internal/redistest"
)

// TestWritesByKeySpecs lists the commands of Redis 7.0's table that the key-spec rule makes writes although
// Redis does not flag them write, and checks that each is classified so.
func TestWritesByKeySpecs(t *testing.T) {
	cmds := embeddedCommands(t)
	tbl := newTable(cmds, nil, false)
	var byKeySpecs []string
	for _, info := range allCommands(cmds) {
		if info.Flags.Has(commands.FlagWrite) || !info.MayWrite() {
			continue
		}
		byKeySpecs = append(byKeySpecs, info.Name)
	}
	// EVAL, EVALSHA and FCALL were writes already (scripts wait for the tracking barrier); PFCOUNT is the one
	// command the write flag alone missed.
	want := []string{"eval", "evalsha", "fcall", "pfcount"}
	if !slices.Equal(byKeySpecs, want) {
		t.Errorf("commands written by key specs only: got %q; want %q", byKeySpecs, want)
	}
	for _, name := range want {
		if tc := tbl.cmds[name]; tc == nil || tc.class != classWrite {
			t.Errorf("%s: classified %+v; want classWrite", name, tc)
		}
	}
	for _, name := range []string{"get", "pfadd", "eval_ro", "fcall_ro", "sort_ro", "xrange", "object"} {
		tc := tbl.cmds[name]
		if tc == nil {
			t.Fatalf("%s: not in the table", name)
		}
		if name != "pfadd" && tc.class == classWrite {
			t.Errorf("%s: classified write; Redis's key specs say it only reads", name)
		}
	}
}

// TestPFCountInvalidates: PFCOUNT rewrites the HyperLogLog's cached cardinality, so a cached copy of the key must
// not be served after it, with tracking (where Redis's own invalidation may come after the reply) and without.
func TestPFCountInvalidates(t *testing.T) {
	for _, cfg := range []struct{ name, yaml string }{
		{"tracking", defaultTestConfig},
		{"ttl only", ttlOnlyConfig},
	} {
		t.Run(cfg.name, func(t *testing.T) {
			p := startProxy(t, cfg.yaml)
			rc := redistest.Dial(t, p.redis.Addr())
			c := p.dial()
			expectDo(t, c, ":1\r\n", "PFADD", "hll", "a", "b", "c")
			p.settle()
			first := string(c.Do("GET", "hll"))
			hits := p.srv.Stats().Hits.Load()
			if got := string(c.Do("GET", "hll")); got != first {
				t.Fatalf("GET hll twice: %q, then %q", first, got)
			}
			if p.srv.Stats().Hits.Load() == hits {
				t.Fatalf("the second GET hll was not served from memory: the test proves nothing")
			}
			expectDo(t, c, ":3\r\n", "PFCOUNT", "hll")
			want := string(rc.Do("GET", "hll"))
			if want == first {
				t.Fatalf("PFCOUNT did not change the HyperLogLog's bytes in Redis: the test proves nothing")
			}
			if got := string(c.Do("GET", "hll")); got != want {
				t.Errorf("GET hll after PFCOUNT: got %q; want Redis's %q", got, want)
			}
		})
	}
}
