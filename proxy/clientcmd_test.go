package proxy

import (
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"featcache/internal/redistest"
)

// CLIENT LIST, INFO, KILL, UNBLOCK and the rest of CLIENT answered by featcache about its own clients (clientcmd.go),
// in Redis's format, with Redis's errors, compared with a redis-server.

// clientFields returns the field names of a CLIENT LIST line, in order.
func clientFields(line string) []string {
	var names []string
	for _, f := range strings.Fields(line) {
		name, _, _ := strings.Cut(f, "=")
		names = append(names, name)
	}
	return names
}

// TestClientErrorsAsRedis: CLIENT's syntax, errors and reply shapes, sent to featcache and to a redis-server.
func TestClientErrorsAsRedis(t *testing.T) {
	p := startProxy(t, defaultTestConfig)
	ref := redistest.Start(t)
	for _, args := range [][]string{
		{"CLIENT", "KILL"},
		{"CLIENT", "KILL", "1.2.3.4:5"},
		{"CLIENT", "KILL", "ID"},
		{"CLIENT", "KILL", "ID", "x"},
		{"CLIENT", "KILL", "ID", "0"},
		{"CLIENT", "KILL", "ID", "-3"},
		{"CLIENT", "KILL", "ID", "999999"},
		{"CLIENT", "KILL", "TYPE", "foo"},
		{"CLIENT", "KILL", "TYPE", "master"},
		{"CLIENT", "KILL", "TYPE", "replica"},
		{"CLIENT", "KILL", "TYPE", "slave", "SKIPME", "yes"},
		{"CLIENT", "KILL", "USER", "nosuch"},
		{"CLIENT", "KILL", "SKIPME", "maybe"},
		{"CLIENT", "KILL", "ADDR", "1.2.3.4:5"},
		{"CLIENT", "KILL", "LADDR", "1.2.3.4:5"},
		{"CLIENT", "KILL", "foo", "bar"},
		{"CLIENT", "KILL", "ID", "999999", "TYPE"},
		{"CLIENT", "KILL", "ID", "x", "TYPE", "foo"},
		{"CLIENT", "LIST", "foo"},
		{"CLIENT", "LIST", "TYPE"},
		{"CLIENT", "LIST", "TYPE", "foo"},
		{"CLIENT", "LIST", "TYPE", "master"},
		{"CLIENT", "LIST", "TYPE", "pubsub"},
		{"CLIENT", "LIST", "TYPE", "normal", "x"},
		{"CLIENT", "LIST", "ID"},
		{"CLIENT", "LIST", "ID", "x"},
		{"CLIENT", "LIST", "ID", "0", "999999", "-1"},
		{"CLIENT", "INFO", "x"},
		{"CLIENT", "ID", "x"},
		{"CLIENT", "UNBLOCK"},
		{"CLIENT", "UNBLOCK", "x"},
		{"CLIENT", "UNBLOCK", "1", "foo"},
		{"CLIENT", "UNBLOCK", "999999"},
		{"CLIENT", "UNBLOCK", "999999", "ERROR"},
		{"CLIENT", "UNBLOCK", "1", "2", "3"},
		{"CLIENT", "NO-EVICT"},
		{"CLIENT", "NO-EVICT", "maybe"},
		{"CLIENT", "NO-EVICT", "on"},
		{"CLIENT", "NO-EVICT", "OFF"},
		{"CLIENT", "GETREDIR"},
		{"CLIENT", "TRACKINGINFO"},
		{"CLIENT", "TRACKINGINFO", "x"},
		{"CLIENT", "SETNAME", "a", "b"},
	} {
		fc, rc := p.dial(), redistest.Dial(t, ref.Addr())
		if got, want := string(fc.Do(args...)), string(rc.Do(args...)); got != want {
			t.Errorf("%q: got %q; want %q (Redis)", args, got, want)
		}
		fc.Close()
		rc.Close()
	}
	if n := p.redis.Calls("client|kill") + p.redis.Calls("client|list"); n != 0 {
		t.Errorf("CLIENT KILL and CLIENT LIST reached Redis %d times", n)
	}
}

// TestClientListFormat: featcache's CLIENT LIST and CLIENT INFO lines have Redis 7.0's fields in Redis's order,
// and describe featcache's clients: every one of them, and nothing of featcache's upstream connections.
func TestClientListFormat(t *testing.T) {
	p := startProxy(t, "commands: {deny: []}\n"+defaultTestConfig)
	rc := redistest.Dial(t, p.redis.Addr())
	redisLine := listLines(t, rc.Do("CLIENT", "INFO"))[0]
	want := clientFields(redisLine)

	a, b := p.dial(), p.dial()
	expectDo(t, a, "+OK\r\n", "CLIENT", "SETNAME", "alpha")
	idA, idB := clientIDOf(t, a), clientIDOf(t, b)
	lines := listLines(t, a.Do("CLIENT", "LIST"))
	if len(lines) != 2 {
		t.Fatalf("CLIENT LIST: %d lines; want featcache's 2 clients:\n%s", len(lines), strings.Join(lines, "\n"))
	}
	for _, line := range lines {
		if got := clientFields(line); !slices.Equal(got, want) {
			t.Errorf("CLIENT LIST line %q: fields %q; want Redis's %q", line, got, want)
		}
		if strings.Contains(line, "featcache") {
			t.Errorf("CLIENT LIST shows one of featcache's upstream connections: %s", line)
		}
	}
	if got := clientField(lines[0], "id"); got != strconv.FormatInt(idA, 10) {
		t.Errorf("first line's id %s; want %d (by id)", got, idA)
	}
	if clientField(lines[0], "name") != "alpha" || clientField(lines[0], "cmd") != "client|list" ||
		clientField(lines[0], "addr") != a.NetConn().LocalAddr().String() || clientField(lines[0], "laddr") != a.NetConn().RemoteAddr().String() {
		t.Errorf("the caller's line: %s", lines[0])
	}
	if clientField(lines[1], "cmd") != "client|id" || clientField(lines[1], "flags") != "N" || clientField(lines[1], "user") != "default" {
		t.Errorf("the other client's line: %s", lines[1])
	}
	info := listLines(t, a.Do("CLIENT", "INFO"))
	if len(info) != 1 || !slices.Equal(clientFields(info[0]), want) || clientField(info[0], "cmd") != "client|info" {
		t.Errorf("CLIENT INFO: %q", info)
	}

	// ID filter, in the order asked, unknown ids skipped.
	byID := listLines(t, a.Do("CLIENT", "LIST", "ID", strconv.FormatInt(idB, 10), "999999", strconv.FormatInt(idA, 10)))
	if len(byID) != 2 || clientField(byID[0], "id") != strconv.FormatInt(idB, 10) || clientField(byID[1], "id") != strconv.FormatInt(idA, 10) {
		t.Errorf("CLIENT LIST ID %d 999999 %d: %q", idB, idA, byID)
	}

	// Flags and counts: MULTI, subscribed, blocked, no-evict.
	expectDo(t, b, "+OK\r\n", "MULTI")
	expectDo(t, b, "+QUEUED\r\n", "SET", "k", "v")
	sub := p.dial()
	writeRaw(t, sub, encodePipeline([]string{"SUBSCRIBE", "c1", "c2"}, []string{"PSUBSCRIBE", "p*"}))
	readFrames(t, sub, 3)
	blocked := p.dial()
	writeRaw(t, blocked, encodePipeline([]string{"CLIENT", "NO-EVICT", "on"}, []string{"BLPOP", "list:blk", "0"}))
	expectRead(t, blocked, "+OK\r\n")
	idSub, idBlocked := strconv.FormatInt(idB+1, 10), strconv.FormatInt(idB+2, 10)
	var got map[string]string
	redistest.Eventually(t, 5*time.Second, "the BLPOP blocks", func() bool {
		got = map[string]string{}
		for _, line := range listLines(t, a.Do("CLIENT", "LIST")) {
			got[clientField(line, "id")] = clientField(line, "flags") + " multi=" + clientField(line, "multi") +
				" sub=" + clientField(line, "sub") + " psub=" + clientField(line, "psub") + " cmd=" + clientField(line, "cmd")
		}
		return strings.HasPrefix(got[idBlocked], "be ")
	})
	for id, want := range map[string]string{
		strconv.FormatInt(idB, 10): "x multi=1 sub=0 psub=0 cmd=set",
		idSub:                      "P multi=-1 sub=2 psub=1 cmd=psubscribe",
		idBlocked:                  "be multi=-1 sub=0 psub=0 cmd=blpop",
	} {
		if got[id] != want {
			t.Errorf("client %s: %q; want %q", id, got[id], want)
		}
	}
	pubsub := listLines(t, a.Do("CLIENT", "LIST", "TYPE", "pubsub"))
	if len(pubsub) != 1 || clientField(pubsub[0], "id") != idSub {
		t.Errorf("CLIENT LIST TYPE pubsub: %q", pubsub)
	}
	if normal := listLines(t, a.Do("CLIENT", "LIST", "TYPE", "normal")); len(normal) != 3 {
		t.Errorf("CLIENT LIST TYPE normal: %d lines; want 3 (the subscriber is pubsub)", len(normal))
	}
	expectDo(t, a, "$0\r\n\r\n", "CLIENT", "LIST", "TYPE", "replica")
	// A MONITOR client: flag O, and normal, as in Redis.
	mon := p.dial()
	expectDo(t, mon, "+OK\r\n", "MONITOR")
	monID := strconv.FormatInt(idB+3, 10)
	if line := listLines(t, a.Do("CLIENT", "LIST", "ID", monID)); len(line) != 1 || clientField(line[0], "flags") != "O" {
		t.Errorf("CLIENT LIST ID %s (monitoring): %q", monID, line)
	}
	if normal := listLines(t, a.Do("CLIENT", "LIST", "TYPE", "normal")); len(normal) != 4 {
		t.Errorf("CLIENT LIST TYPE normal with a MONITOR client: %d lines; want 4", len(normal))
	}
	expectDo(t, rc, ":1\r\n", "LPUSH", "list:blk", "x")
	expectRead(t, blocked, "*2\r\n$8\r\nlist:blk\r\n$1\r\nx\r\n")
	redistest.Eventually(t, 5*time.Second, "the BLPOP is answered", func() bool {
		for _, line := range listLines(t, a.Do("CLIENT", "LIST", "ID", idBlocked)) {
			return clientField(line, "flags") == "e"
		}
		return false
	})
}

// sharedConnections returns the ids of featcache's connections in Redis's CLIENT LIST, with the fields that say
// what state they are in.
func sharedConnections(t *testing.T, rc *redistest.Conn) map[string]string {
	t.Helper()
	conns := map[string]string{}
	for _, line := range clientList(t, rc) {
		if strings.HasPrefix(clientField(line, "name"), "featcache") {
			state := ""
			for _, f := range []string{"name", "flags", "db", "sub", "psub", "ssub", "multi", "resp", "user"} {
				state += f + "=" + clientField(line, f) + " "
			}
			conns[clientField(line, "id")] = state
		}
	}
	return conns
}

// TestClientKill: CLIENT KILL closes featcache's clients as Redis closes its own, and never an upstream
// connection: the shared connections and the tracking connection are the same ones, in the same state, after.
func TestClientKill(t *testing.T) {
	p := startProxy(t, defaultTestConfig)
	rc := redistest.Dial(t, p.redis.Addr())
	warmShared(t, p)
	before := sharedConnections(t, rc)
	// warmShared's client has closed; featcache may not have seen it yet, and would count it among the killed.
	redistest.Eventually(t, 5*time.Second, "warmShared's client gone", func() bool { return p.srv.clients.Load() == 0 })

	// TYPE normal from one client: the others, not the caller (SKIPME yes).
	a, b, c := p.dial(), p.dial(), p.dial()
	expectDo(t, b, "+PONG\r\n", "PING")
	expectDo(t, c, "+PONG\r\n", "PING")
	expectDo(t, a, ":2\r\n", "CLIENT", "KILL", "TYPE", "normal")
	expectClosed(t, b, 2*time.Second)
	expectClosed(t, c, 2*time.Second)
	expectDo(t, a, "+PONG\r\n", "PING")

	// The caller by ID: SKIPME yes by default, so :0; with SKIPME no, :1 and the caller is closed after the reply.
	idA := clientIDOf(t, a)
	expectDo(t, a, ":0\r\n", "CLIENT", "KILL", "ID", strconv.FormatInt(idA, 10))
	writeRaw(t, a, encodePipeline([]string{"CLIENT", "KILL", "ID", strconv.FormatInt(idA, 10), "SKIPME", "no"}, []string{"PING"}))
	expectRead(t, a, ":1\r\n")
	expectClosed(t, a, 2*time.Second)

	// The old form: ip:port, +OK, and it may name the caller.
	d, e := p.dial(), p.dial()
	expectDo(t, e, "+PONG\r\n", "PING")
	expectDo(t, d, "+OK\r\n", "CLIENT", "KILL", e.NetConn().LocalAddr().String())
	expectClosed(t, e, 2*time.Second)
	expectDo(t, d, "-ERR No such client\r\n", "CLIENT", "KILL", e.NetConn().LocalAddr().String())
	expectDo(t, d, "+OK\r\n", "CLIENT", "KILL", d.NetConn().LocalAddr().String())
	expectClosed(t, d, 2*time.Second)

	// ADDR, LADDR, USER and MAXAGE filters.
	f, g := p.dial(), p.dial()
	expectDo(t, g, "+PONG\r\n", "PING")
	expectDo(t, f, ":0\r\n", "CLIENT", "KILL", "ADDR", g.NetConn().LocalAddr().String(), "TYPE", "pubsub")
	expectDo(t, f, ":1\r\n", "CLIENT", "KILL", "ADDR", g.NetConn().LocalAddr().String(), "LADDR", g.NetConn().RemoteAddr().String())
	expectClosed(t, g, 2*time.Second)
	h := p.dial()
	expectDo(t, h, "+PONG\r\n", "PING")
	expectDo(t, f, ":0\r\n", "CLIENT", "KILL", "LADDR", "127.0.0.1:1")
	expectDo(t, f, ":0\r\n", "CLIENT", "KILL", "MAXAGE", "3600")
	expectDo(t, f, ":1\r\n", "CLIENT", "KILL", "USER", "default")
	expectClosed(t, h, 2*time.Second)

	// A subscriber, and a client blocked in BLPOP: closed; the blocked command is dropped in Redis.
	sub, blocked := p.dial(), p.dial()
	expectDo(t, sub, "*3\r\n$9\r\nsubscribe\r\n$1\r\nc\r\n:1\r\n", "SUBSCRIBE", "c")
	writeRaw(t, blocked, encodePipeline([]string{"BLPOP", "kill:blk", "0"}))
	redistest.Eventually(t, 5*time.Second, "the BLPOP blocks", func() bool {
		return strings.Contains(string(f.Do("CLIENT", "LIST")), "flags=b ")
	})
	expectDo(t, f, ":1\r\n", "CLIENT", "KILL", "TYPE", "pubsub")
	expectClosed(t, sub, 2*time.Second)
	var blockedID string
	for _, line := range listLines(t, f.Do("CLIENT", "LIST")) {
		if clientField(line, "flags") == "b" {
			blockedID = clientField(line, "id")
		}
	}
	expectDo(t, f, ":1\r\n", "CLIENT", "KILL", "ID", blockedID)
	expectClosed(t, blocked, 2*time.Second)
	redistest.Eventually(t, 5*time.Second, "Redis drops the blocked BLPOP", func() bool {
		return infoField(string(rc.Do("INFO", "clients")), "blocked_clients") == 0
	})
	expectDo(t, rc, ":1\r\n", "LPUSH", "kill:blk", "kept")
	expectDo(t, rc, "$4\r\nkept\r\n", "LINDEX", "kill:blk", "0")

	// featcache's upstream connections are the same, in the same state, and serve another client; the dedicated
	// ones of the killed clients are gone (or idle in the pool, clean).
	after := sharedConnections(t, rc)
	for id, state := range before {
		if after[id] != state {
			t.Errorf("featcache's upstream connection %s: %q, then %q", id, state, after[id])
		}
	}
	redistest.Eventually(t, 5*time.Second, "the killed clients' dedicated connections are closed or clean", func() bool {
		for id, state := range sharedConnections(t, rc) {
			if before[id] == "" && state != cleanDedicated {
				return false
			}
		}
		return true
	})
	other := p.dial()
	expectDo(t, other, "+OK\r\n", "SET", "kill:k", "v")
	expectDo(t, other, "$1\r\nv\r\n", "GET", "kill:k")
	if _, up := p.up.Tracking(); !up {
		t.Errorf("tracking is down after the kills")
	}
}

// cleanDedicated is the state of a dedicated connection featcache keeps in its pool, ready for the next client.
const cleanDedicated = "name=featcache flags=N db=0 sub=0 psub=0 ssub=0 multi=-1 resp=2 user=default "

// TestClientUnblock: CLIENT UNBLOCK with a featcache client's id unblocks it as Redis unblocks its own, with the
// reply Redis gives the blocked command (its timeout reply, or -UNBLOCKED).
func TestClientUnblock(t *testing.T) {
	p := startProxy(t, defaultTestConfig)
	ref := redistest.Start(t)
	for _, mode := range [][]string{nil, {"TIMEOUT"}, {"ERROR"}} {
		var got, want [2]string
		for i, target := range []struct {
			addr string
			srv  *redistest.Server
		}{{p.addr, p.redis}, {ref.Addr(), ref}} {
			blocked, other := redistest.Dial(t, target.addr), redistest.Dial(t, target.addr)
			id := clientIDOf(t, blocked)
			writeRaw(t, blocked, encodePipeline([]string{"BLPOP", "unblock:l", "0"}))
			redistest.Eventually(t, 5*time.Second, "the BLPOP blocks", func() bool {
				return infoField(string(target.srv.Do("INFO", "clients")), "blocked_clients") == 1
			})
			got[i] = string(other.Do(append([]string{"CLIENT", "UNBLOCK", strconv.FormatInt(id, 10)}, mode...)...))
			reply, err := blocked.Read()
			if err != nil {
				t.Fatalf("%v: the unblocked client: %v", mode, err)
			}
			want[i] = string(reply)
			got[i] += " then " + string(other.Do("CLIENT", "UNBLOCK", strconv.FormatInt(id, 10)))
			blocked.Close()
			other.Close()
		}
		if got[0] != got[1] || want[0] != want[1] {
			t.Errorf("CLIENT UNBLOCK %v: featcache %q, the blocked client gets %q; Redis %q, %q", mode, got[0], want[0], got[1], want[1])
		}
	}
}

// TestClientUnblockJustSent: CLIENT UNBLOCK of a client whose BLPOP featcache has sent but whose connection id
// it has not read back yet (Redis is stopped in between) waits for it, and answers what Redis answers to
// BLPOP then CLIENT UNBLOCK in that order: :1, and the BLPOP's timeout reply.
func TestClientUnblockJustSent(t *testing.T) {
	p := startProxy(t, defaultTestConfig)
	blocked, other := p.dial(), p.dial()
	id := clientIDOf(t, blocked)
	// A dedicated connection in the pool, so that the next blocking command needs no set-up round trip.
	expectDo(t, blocked, "*-1\r\n", "BLPOP", "unblock:warm", "0.01")
	cl := p.srv.clientByID(id)
	if cl == nil {
		t.Fatal("the blocked client is not registered")
	}
	p.redis.Pause()
	resumed := false
	defer func() {
		if !resumed {
			p.redis.Resume()
		}
	}()
	writeRaw(t, blocked, encodePipeline([]string{"BLPOP", "unblock:l", "0"}))
	redistest.Eventually(t, 5*time.Second, "the BLPOP sent, its connection id not read", func() bool {
		cl.info.mu.Lock()
		defer cl.info.mu.Unlock()
		return cl.info.settling != nil
	})
	if err := other.Send("CLIENT", "UNBLOCK", strconv.FormatInt(id, 10), "TIMEOUT"); err != nil {
		t.Fatal(err)
	}
	p.redis.Resume()
	resumed = true
	expectRead(t, other, ":1\r\n")
	expectRead(t, blocked, "*-1\r\n")
}

// TestClientListCmdOfSession: a command whose reply a session's pump relays (SUBSCRIBE, PSUBSCRIBE, MONITOR) is
// CLIENT LIST's cmd by the time its reply reaches the client, as in Redis, which records a client's last command
// before it runs it. The pump may write the reply before the client's goroutine has ended the batch.
func TestClientListCmdOfSession(t *testing.T) {
	p := startProxy(t, "")
	admin := p.dial()
	for i := 0; i < 100; i++ {
		name := "sess" + strconv.Itoa(i)
		c := p.dial()
		expectDo(t, c, "+OK\r\n", "CLIENT", "SETNAME", name)
		cmd, want := []string{"SUBSCRIBE", "ch"}, "subscribe"
		switch i % 3 {
		case 1:
			cmd, want = []string{"PSUBSCRIBE", "c*"}, "psubscribe"
		case 2:
			cmd, want = []string{"MONITOR"}, "monitor"
		}
		c.Send(cmd...)
		if got, err := c.Read(); err != nil {
			t.Fatalf("%q: %q, %v", cmd, got, err)
		}
		list := string(admin.Do("CLIENT", "LIST"))
		for _, line := range strings.Split(list, "\n") {
			if strings.Contains(line, " name="+name+" ") && !strings.Contains(line, " cmd="+want+" ") {
				t.Fatalf("after %q's reply, CLIENT LIST says:\n%s", cmd, line)
			}
		}
		c.Close()
	}
}
