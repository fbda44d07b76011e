package proxy

import (
	"strings"
	"testing"

	"featcache/internal/redistest"
	"featcache/internal/resp"
)

// TestGetDispatchCountsAndLists: a GET answered without the general dispatch (execGet), in any case and pipelined,
// is served from memory, counted as a command and a hit before its reply, and named as the connection's last
// command in CLIENT LIST, as a GET that goes through exec is.
func TestGetDispatchCountsAndLists(t *testing.T) {
	p := startProxy(t, defaultTestConfig)
	p.redis.Do("SET", "k", "v")
	p.settle()
	if got := p.do("GET", "k"); got != bulk("v") {
		t.Fatalf("GET k = %q; want %q", got, bulk("v"))
	}
	before := p.srv.Stats()
	c := p.dial()
	defer c.Close()
	var batch []byte
	for _, name := range []string{"GET", "get", "gEt"} {
		batch = append(batch, redistest.Encode(name, "k")...)
	}
	if _, err := c.NetConn().Write(batch); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if got, err := c.Read(); err != nil || string(got) != bulk("v") {
			t.Fatalf("reply %d: %q, %v; want %q", i, got, err, bulk("v"))
		}
	}
	after := p.srv.Stats()
	if hits := after.Hits.Load() - before.Hits.Load(); hits != 3 {
		t.Errorf("hits counted for 3 GETs from memory = %d; want 3", hits)
	}
	if n := after.Commands.Load() - before.Commands.Load(); n != 3 {
		t.Errorf("commands counted for 3 GETs = %d; want 3", n)
	}
	list, _, _ := resp.BulkPayload(p.dial().Do("CLIENT", "LIST"))
	var line string
	for _, l := range strings.Split(strings.TrimSpace(string(list)), "\n") {
		if !strings.Contains(l, "cmd=client|list") {
			line = l
		}
	}
	if !strings.Contains(line, " cmd=get ") {
		t.Errorf("CLIENT LIST line of the connection that sent GET: %q; want cmd=get", line)
	}
}

// TestGetDispatchDenied: with GET in commands.deny, every spelling of GET gets featcache's refusal (the fast path
// steps aside for it), while MGET of the same key is still served.
func TestGetDispatchDenied(t *testing.T) {
	p := startProxy(t, "commands: {deny: [get]}\n"+defaultTestConfig)
	p.redis.Do("SET", "k", "v")
	p.settle()
	const refused = "-ERR command 'get' is disabled by featcache (commands.deny)\r\n"
	for _, name := range []string{"GET", "get", "gEt"} {
		if got := p.do(name, "k"); got != refused {
			t.Errorf("%s k = %q; want %q", name, got, refused)
		}
	}
	if got, want := p.do("MGET", "k"), "*1\r\n"+bulk("v"); got != want {
		t.Errorf("MGET k = %q; want %q", got, want)
	}
}
