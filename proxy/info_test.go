package proxy

import (
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"featcache/internal/resp"
)

// infoPayload checks that frame is exactly one bulk string, its declared length that of its payload, and
// returns the payload.
func infoPayload(t *testing.T, frame string) string {
	t.Helper()
	var sc resp.Scanner
	n, err := sc.Next([]byte(frame))
	payload, isNil, ok := resp.BulkPayload([]byte(frame))
	if !ok || isNil {
		t.Fatalf("not a bulk string: %.200q", frame)
	}
	if err != nil || n != len(frame) {
		t.Fatalf("bulk string of %d bytes is not one whole frame (%d of %d bytes, %v)", len(payload), n, len(frame), err)
	}
	return string(payload)
}

// infoSections splits an INFO payload into its sections: header ("# Server") and lines, in order.
type infoSectionLines struct {
	header string
	lines  []string
}

func splitInfo(t *testing.T, payload string) []infoSectionLines {
	t.Helper()
	var out []infoSectionLines
	for _, block := range strings.Split(payload, "\r\n\r\n") {
		if block == "" {
			continue
		}
		lines := strings.Split(strings.TrimSuffix(block, "\r\n"), "\r\n")
		if !strings.HasPrefix(lines[0], "# ") {
			t.Fatalf("section without a header: %.200q", block)
		}
		out = append(out, infoSectionLines{header: lines[0], lines: lines[1:]})
	}
	return out
}

// stableInfoFields are fields of Redis's INFO whose values do not change between two calls a moment apart.
var stableInfoFields = map[string]bool{
	"redis_version": true, "redis_mode": true, "os": true, "arch_bits": true, "tcp_port": true, "run_id": true,
	"process_id": true, "executable": true, "config_file": true, "role": true, "maxmemory": true,
	"maxmemory_policy": true, "cluster_enabled": true, "aof_enabled": true, "connected_slaves": true,
	"gcc_version": true, "multiplexing_api": true, "mem_allocator": true,
}

// TestInfoSection: INFO featcache answers featcache's section; INFO, INFO default, all and everything, and a list
// that names featcache, answer what Redis answers for the same sections followed by featcache's, in one bulk
// string of the right length; other sections are Redis's alone, byte for byte where their values cannot move.
func TestInfoSection(t *testing.T) {
	p := startProxy(t, defaultTestConfig)
	p.redis.Do("SET", "k", "v")
	p.settle()
	c := p.dial()
	c.Do("GET", "k")
	c.Do("GET", "k")
	direct := p.redis.Dial()
	for _, tc := range []struct {
		sections []string
		ours     bool
	}{
		{nil, true},
		{[]string{"default"}, true},
		{[]string{"all"}, true},
		{[]string{"EVERYTHING"}, true},
		{[]string{"featcache"}, true},
		{[]string{"FeatCache"}, true},
		{[]string{"server", "featcache"}, true},
		{[]string{"clients", "featcache", "memory"}, true},
		{[]string{"nosuchsection", "featcache"}, true},
		{[]string{"server"}, false},
		{[]string{"keyspace"}, false},
		{[]string{"server", "clients"}, false},
		{[]string{"nosuchsection"}, false},
	} {
		name := "INFO " + strings.Join(tc.sections, " ")
		t.Run(name, func(t *testing.T) {
			args := append([]string{"INFO"}, tc.sections...)
			want := infoPayload(t, string(direct.Do(args...)))
			got := infoPayload(t, string(c.Do(args...)))
			redisPart, ours, found := strings.Cut(got, infoHeader)
			switch {
			case found != tc.ours:
				t.Fatalf("%s: featcache's section present %v; want %v:\n%s", name, found, tc.ours, got)
			case !found:
				ours = ""
			case redisPart != "":
				if !strings.HasSuffix(redisPart, "\r\n\r\n") {
					t.Fatalf("%s: featcache's section does not follow a blank line: %q", name, redisPart[max(0, len(redisPart)-40):])
				}
				redisPart = strings.TrimSuffix(redisPart, "\r\n")
			}
			if found && tc.sections != nil && len(tc.sections) == 1 && strings.EqualFold(tc.sections[0], "featcache") && redisPart != "" {
				t.Fatalf("%s: Redis's sections too: %q", name, redisPart)
			}
			compareInfo(t, name, splitInfo(t, want), splitInfo(t, redisPart))
			if found {
				checkFeatcacheSection(t, name, ours, p.cfg.Local.MaxMemory)
			}
		})
	}
}

// TestInfoRedisPy: redis-py's info() (one dict of every section's fields) finds Redis's fields unchanged and
// featcache's next to them; info("featcache") has featcache's alone.
func TestInfoRedisPy(t *testing.T) {
	p := startProxy(t, defaultTestConfig)
	python := "/usr/bin/python3"
	if out, err := exec.Command(python, "-c", "import redis").CombinedOutput(); err != nil {
		t.Fatalf("%s with the redis module is needed (apt-get install -y python3-redis): %v %s", python, err, out)
	}
	_, port, _ := strings.Cut(p.addr, ":")
	script := `
import redis, sys
r = redis.Redis(host="127.0.0.1", port=int(sys.argv[1]))
r.set("k", "v")
r.get("k"); r.get("k")
i = r.info()
f = r.info("featcache")
print(i["redis_version"], i["tcp_port"], i["featcache_hits"], i["featcache_tracking"], sorted(f) == sorted(k for k in i if k.startswith("featcache_")), "redis_version" in f)
`
	out, err := exec.Command(python, "-B", "-c", script, port).CombinedOutput()
	if err != nil {
		t.Fatalf("redis-py: %v\n%s", err, out)
	}
	_, upPort, _ := strings.Cut(p.redis.Addr(), ":")
	version := parseServerInfo(infoPayload(t, string(p.redis.Do("INFO", "server")))).version
	if got, want := strings.TrimSpace(string(out)), version+" "+upPort+" 1 up True False"; got != want {
		t.Fatalf("redis-py info(): %q; want %q (Redis's version and port, featcache's hits and tracking)", got, want)
	}
}

// compareInfo checks that featcache relayed the Redis sections of want: the same sections in the same order with
// the same fields, and the same values for the fields that cannot change between two calls. Sections whose lines
// count commands or keys that featcache's own connections add to are compared by header only.
func compareInfo(t *testing.T, name string, want, got []infoSectionLines) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d Redis sections; Redis answers %d", name, len(got), len(want))
	}
	for i := range want {
		w, g := want[i], got[i]
		if g.header != w.header {
			t.Fatalf("%s: section %d is %q; Redis answers %q", name, i, g.header, w.header)
		}
		switch w.header {
		case "# Commandstats", "# Errorstats", "# Latencystats", "# Keyspace":
			continue
		}
		if len(g.lines) != len(w.lines) {
			t.Fatalf("%s: %s has %d fields; Redis answers %d", name, w.header, len(g.lines), len(w.lines))
		}
		for j := range w.lines {
			wk, wv, _ := strings.Cut(w.lines[j], ":")
			gk, gv, _ := strings.Cut(g.lines[j], ":")
			if gk != wk || stableInfoFields[wk] && gv != wv {
				t.Errorf("%s: %s field %d is %q; Redis answers %q", name, w.header, j, g.lines[j], w.lines[j])
			}
		}
	}
}

// checkFeatcacheSection checks featcache's section: "# Featcache" and featcache_<name>:<value> lines, with the
// reads the test made.
func checkFeatcacheSection(t *testing.T, name, section string, maxMemory int64) {
	t.Helper()
	if !strings.HasSuffix(section, "\r\n") {
		t.Fatalf("%s: featcache's section does not end with CRLF: %q", name, section)
	}
	fields := map[string]string{}
	for _, line := range strings.Split(strings.TrimSuffix(section, "\r\n"), "\r\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok || !strings.HasPrefix(k, "featcache_") || strings.ContainsAny(k, " \t") {
			t.Fatalf("%s: featcache's section has the line %q; want featcache_<name>:<value>", name, line)
		}
		if _, dup := fields[k]; dup {
			t.Fatalf("%s: field %s twice", name, k)
		}
		fields[k] = v
	}
	for k, want := range map[string]string{
		"featcache_hits": "1", "featcache_misses": "1", "featcache_hit_ratio": "0.5000", "featcache_entries": "1",
		"featcache_maxmemory": strconv.FormatInt(maxMemory, 10), "featcache_tracking": "up", "featcache_upstream_up": "1",
		"featcache_connected_clients": "1", "featcache_ready": "1", "featcache_version": "unknown",
	} {
		if fields[k] != want {
			t.Errorf("%s: %s:%s; want %s", name, k, fields[k], want)
		}
	}
	for _, k := range []string{"featcache_used_memory", "featcache_evictions", "featcache_stale_hits", "featcache_upstream_addr", "featcache_uptime_in_seconds"} {
		if _, ok := fields[k]; !ok {
			t.Errorf("%s: featcache's section lacks %s", name, k)
		}
	}
}

// TestInfoInTransaction: inside MULTI, INFO is queued and EXEC relays Redis's reply as it is.
func TestInfoInTransaction(t *testing.T) {
	p := startProxy(t, defaultTestConfig)
	c := p.dial()
	expectExec(t, c, "*1\r\n$0\r\n\r\n", []string{"INFO", "featcache"}) // Redis knows no featcache section
}
