package upstream

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"featcache/internal/commands"
	"featcache/internal/redistest"
	"featcache/internal/testkit"
)

func TestSlot(t *testing.T) {
	tests := []struct {
		key  string
		want uint16
	}{
		{"foo", 12182},
		{"bar", 5061},
		{"hello", 866},
		{"123456789", 12739}, // CRC-16/XMODEM's check value 0x31C3
		{"", 0},
		{"{user1000}.following", Slot([]byte("user1000"))},
		{"{user1000}.followers", Slot([]byte("user1000"))},
		{"foo{}{bar}", crc16([]byte("foo{}{bar}")) & (SlotCount - 1)}, // an empty tag: the whole key
		{"foo{{bar}}zap", Slot([]byte("{bar"))},                       // the tag ends at the first '}'
		{"foo{bar}{zap}", Slot([]byte("bar"))},                        // the first tag only
		{"{unclosed", crc16([]byte("{unclosed")) & (SlotCount - 1)},
	}
	for _, tt := range tests {
		if got := Slot([]byte(tt.key)); got != tt.want {
			t.Errorf("Slot(%q) = %d; want %d", tt.key, got, tt.want)
		}
	}
}

// TestCRC16 compares crc16, two bytes per step, with the byte-at-a-time definition Redis's crc16.c uses.
func TestCRC16(t *testing.T) {
	ref := func(b []byte) uint16 {
		var crc uint16
		for _, c := range b {
			crc ^= uint16(c) << 8
			for range 8 {
				if crc&0x8000 != 0 {
					crc = crc<<1 ^ 0x1021
				} else {
					crc <<= 1
				}
			}
		}
		return crc
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for n := 0; n < 2000; n++ {
		b := make([]byte, rng.IntN(70))
		for i := range b {
			b[i] = byte(rng.IntN(256))
		}
		if got, want := crc16(b), ref(b); got != want {
			t.Fatalf("crc16(%q) = %#x; want %#x", b, got, want)
		}
	}
}

func TestParseRedirect(t *testing.T) {
	tests := []struct {
		frame string
		kind  redirectKind
		slot  int
		addr  string
	}{
		{"-MOVED 3999 127.0.0.1:6381\r\n", redirectMoved, 3999, "127.0.0.1:6381"},
		{"-ASK 12 10.0.0.2:7000\r\n", redirectAsk, 12, "10.0.0.2:7000"},
		{"-TRYAGAIN Multiple keys request during rehashing of slot\r\n", redirectTryAgain, 0, ""},
		{"-MOVED 16384 127.0.0.1:1\r\n", redirectNone, 0, ""},
		{"-MOVED x 127.0.0.1:1\r\n", redirectNone, 0, ""},
		{"-ERR MOVED\r\n", redirectNone, 0, ""},
		{"+OK\r\n", redirectNone, 0, ""},
	}
	for _, tt := range tests {
		kind, slot, addr := parseRedirect([]byte(tt.frame))
		if kind != tt.kind || slot != tt.slot || addr != tt.addr {
			t.Errorf("parseRedirect(%q) = %d, %d, %q; want %d, %d, %q", tt.frame, kind, slot, addr, tt.kind, tt.slot, tt.addr)
		}
	}
	if got := withHost(":7001", "10.1.2.3:7000"); got != "10.1.2.3:7001" {
		t.Errorf("withHost: got %q; want 10.1.2.3:7001", got)
	}
}

// command is a payload of one command without keys, for a Client in front of a single node.
func command(args ...string) *Payload {
	var p Payload
	p.AppendCommand(NoSlot, args...)
	return &p
}

// keysOn returns n keys, each served by a different master of cl in turn, with their masters.
func keysOn(t *testing.T, cl *redistest.Cluster, n int) ([]string, []*redistest.Server) {
	t.Helper()
	var keys []string
	var owners []*redistest.Server
	for i := 0; len(keys) < n; i++ {
		k := fmt.Sprintf("k%d", i)
		m := cl.MasterOf(k)
		if m == cl.Masters[len(keys)%len(cl.Masters)] {
			keys = append(keys, k)
			owners = append(owners, m)
		}
	}
	return keys, owners
}

// TestClusterRouting: the Client finds the cluster from one seed, routes a pipeline over every master in request
// order, keeps a transaction whole on its master, follows MOVED when a slot moves behind its back, and receives
// invalidations from every master.
func TestClusterRouting(t *testing.T) {
	cl := redistest.StartCluster(t, 3, 0)
	rec := &recorder{}
	c, err := New(Options{
		Addresses: []string{cl.Masters[1].Addr()}, Tracking: true, Cache: rec,
		Timeout: time.Second, HealthInterval: 50 * time.Millisecond, Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	if c.Cluster() == nil {
		t.Fatal("the cluster was not detected")
	}
	redistest.Eventually(t, 10*time.Second, "tracking up on every master", func() bool { _, up := c.Tracking(); return up })
	if got := c.Cluster().Masters(); got != 3 {
		t.Fatalf("Masters() = %d; want 3", got)
	}

	// Each command's slot comes from Redis's key specs as the payload is built.
	cmds, err := commands.Embedded()
	if err != nil {
		t.Fatal(err)
	}
	keys, owners := keysOn(t, cl, 6)
	var req Payload
	for i, k := range keys {
		req.Append(cmds["set"], testkit.Args("SET", k, "v"+k), nil)
		req.Append(cmds["get"], testkit.Args("GET", keys[(i+1)%len(keys)]), nil)
	}
	req.Append(cmds["ping"], testkit.Args("PING"), nil)
	call := NewCall()
	if err := c.Do(call, &req); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(call.Replies), "CLUSTERDOWN") {
		for _, m := range cl.Masters {
			t.Logf("%s: %s\n%s", m.Addr(), m.Do("CLUSTER", "INFO"), m.Do("CLUSTER", "NODES"))
		}
	}
	for i, k := range keys {
		if got := string(call.Frame(2 * i)); got != "+OK\r\n" {
			t.Errorf("SET %s: got %q", k, got)
		}
		if got := string(owners[i].Do("GET", k)); got != fmt.Sprintf("$%d\r\nv%s\r\n", len(k)+1, k) {
			t.Errorf("%s on its master %s: got %q", k, owners[i].Addr(), got)
		}
	}
	// The GETs ran in request order: the first GET asked for keys[1] before its SET, the last for keys[0] after.
	if got := string(call.Frame(1)); got != "$-1\r\n" {
		t.Errorf("GET %s before its SET: got %q; want nil", keys[1], got)
	}
	if got := string(call.Frame(2*len(keys) - 1)); !strings.HasSuffix(got, "v"+keys[0]+"\r\n") {
		t.Errorf("GET %s after its SET: got %q", keys[0], got)
	}
	if got := string(call.Frame(2 * len(keys))); got != "+PONG\r\n" {
		t.Errorf("PING: got %q", got)
	}

	// A transaction travels whole to the master of its keys.
	tag := "{" + keys[2] + "}"
	var tx Payload
	tx.Multi()
	tx.Append(cmds["set"], testkit.Args("SET", tag+"a", "1"), nil)
	tx.Append(cmds["incr"], testkit.Args("INCR", tag+"a"), nil)
	tx.Exec()
	if err := c.Do(call, &tx); err != nil {
		t.Fatal(err)
	}
	if got := string(call.Frame(3)); got != "*2\r\n+OK\r\n:2\r\n" {
		t.Errorf("EXEC: got %q", got)
	}

	// Invalidations from every master reach the tier.
	for i, k := range keys[:3] {
		owners[i].Do("SET", k, "direct")
		redistest.Eventually(t, 5*time.Second, "invalidation of "+k, func() bool { return rec.invalidated(k) })
	}
	if err := c.Barrier(context.Background()); err != nil {
		t.Fatalf("Barrier: %v", err)
	}

	// New prefixes: a second tracking session on every master, then the old ones closed.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.SetPrefixes(ctx, []string{"only:"}); err != nil {
		t.Fatalf("SetPrefixes: %v", err)
	}
	if got := c.Prefixes(); len(got) != 1 || got[0] != "only:" {
		t.Fatalf("Prefixes() = %q", got)
	}
	if _, up := c.Tracking(); !up {
		t.Fatal("tracking down after SetPrefixes")
	}
	for _, k := range []string{"only:{" + keys[0] + "}", "only:{" + keys[1] + "}", "only:{" + keys[2] + "}"} {
		cl.MasterOf(k).Do("SET", k, "1") // one key on each master
		redistest.Eventually(t, 5*time.Second, "invalidation of "+k, func() bool { return rec.invalidated(k) })
	}
	other := keys[3]
	count := func() int {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		n := 0
		for _, k := range rec.keys {
			if k == other {
				n++
			}
		}
		return n
	}
	before := count()
	owners[3].Do("SET", other, "x")
	if err := c.Barrier(context.Background()); err != nil {
		t.Fatalf("Barrier: %v", err)
	}
	if count() != before {
		t.Errorf("%s, outside the new prefixes, was invalidated after the switch", other)
	}

	// Move keys[0]'s slot to another master behind the router's back: the next command gets MOVED and follows.
	slot, from, to := cl.Slot(keys[0]), owners[0], owners[1]
	cl.Migrate(slot, from, to, 10, nil)
	moved := c.Cluster().Stats().Moved
	var get Payload
	get.AppendKey("GET", []byte(keys[0]))
	if err := c.Do(call, &get); err != nil {
		t.Fatal(err)
	}
	if got := string(call.Frame(0)); got != "$6\r\ndirect\r\n" {
		t.Errorf("GET %s after its slot moved: got %q", keys[0], got)
	}
	if c.Cluster().Stats().Moved == moved {
		t.Error("no MOVED was followed")
	}
	if got := c.Cluster().smap.Load().node(slot).addr; got != to.Addr() {
		t.Errorf("the slot map says slot %d is on %s; want %s", slot, got, to.Addr())
	}
}

// TestClientDecidesLate: a Client made while nothing answers decides what the upstream is once it answers; a
// single node then gets its health PING and tracking as if it had answered at once.
func TestClientDecidesLate(t *testing.T) {
	srv := redistest.Start(t)
	srv.Kill()
	rec := &recorder{}
	c, err := New(Options{
		Addresses: []string{srv.Addr()}, Tracking: true, Cache: rec,
		Timeout: 300 * time.Millisecond, HealthInterval: 50 * time.Millisecond, Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	select {
	case <-c.Decided():
		t.Fatal("decided while nothing answered")
	default:
	}
	if enabled, up := c.Tracking(); !enabled || up {
		t.Fatalf("Tracking() = %v, %v while undecided; want true, false", enabled, up)
	}
	srv.Restart()
	redistest.Eventually(t, 5*time.Second, "decided", func() bool {
		select {
		case <-c.Decided():
			return true
		default:
			return false
		}
	})
	if c.Cluster() != nil {
		t.Fatal("a single node was taken for a cluster")
	}
	redistest.Eventually(t, 5*time.Second, "tracking up", func() bool { _, up := c.Tracking(); return up })
	redistest.Eventually(t, 5*time.Second, "healthy", c.Healthy)
	call := NewCall()
	call.Req.AppendCommand(NoSlot, "PING")
	if err := c.Do(call, &call.Req); err != nil || string(call.Frame(0)) != "+PONG\r\n" {
		t.Fatalf("PING: %q, %v", call.Replies, err)
	}
}

// BenchmarkSlot measures the hash slot of a typical feature key (what each lookup costs more in cluster mode).
func BenchmarkSlot(b *testing.B) {
	key := []byte("user:123456:features")
	b.SetBytes(int64(len(key)))
	for b.Loop() {
		Slot(key)
	}
}

// TestClusterRESP3Payload: a payload's commands between AppendHello(3) and AppendHello(2) run in RESP3 on the
// masters they go to, whether the payload goes to one master (sent as it is) or to several (each master's part
// wrapped by the router), and the shared connections are left in RESP2.
func TestClusterRESP3Payload(t *testing.T) {
	cl := redistest.StartCluster(t, 3, 0)
	c := newClusterClient(t, cl.Masters[0].Addr(), func(o *Options) { o.Conns = 1 })
	keys, owners := keysOn(t, cl, 2)
	for i, k := range keys {
		owners[i].Do("HSET", k, "f", "v")
	}
	const map3, array2 = "%1\r\n$1\r\nf\r\n$1\r\nv\r\n", "*2\r\n$1\r\nf\r\n$1\r\nv\r\n"
	frames := func(p *Payload) []string {
		t.Helper()
		call := NewCall()
		if err := c.Forward(call, p); err != nil {
			t.Fatal(err)
		}
		var out []string
		for i := 0; i < call.Len(); i++ {
			out = append(out, string(call.Frame(i)))
		}
		return out
	}
	for _, tt := range []struct {
		name string
		keys []string
	}{
		{"one master", keys[:1]},
		{"two masters", keys},
	} {
		var p Payload
		p.AppendKey("HGETALL", []byte(tt.keys[0])) // RESP2 before the switch
		p.AppendHello(3)
		for _, k := range tt.keys {
			p.AppendKey("HGETALL", []byte(k))
		}
		p.AppendHello(2)
		p.AppendKey("HGETALL", []byte(tt.keys[0]))
		got := frames(&p)
		n := len(tt.keys)
		if len(got) != n+4 || got[0] != array2 || !strings.HasPrefix(got[1], "%7\r\n$6\r\nserver\r\n") ||
			got[n+3] != array2 {
			t.Fatalf("%s: got %q", tt.name, got)
		}
		for i := range tt.keys {
			if got[2+i] != map3 {
				t.Errorf("%s: HGETALL %s in RESP3: got %q; want %q", tt.name, tt.keys[i], got[2+i], map3)
			}
			// Side by side: what the key's master itself answers a RESP3 connection.
			direct := owners[i].Dial()
			direct.Do("HELLO", "3")
			if want := string(direct.Do("HGETALL", tt.keys[i])); got[2+i] != want {
				t.Errorf("%s: HGETALL %s in RESP3: got %q; %s answers %q", tt.name, tt.keys[i], got[2+i],
					owners[i].Addr(), want)
			}
			direct.Close()
		}
		// Every shared connection (one per master) speaks RESP2 again.
		var q Payload
		for _, k := range keys {
			q.AppendKey("HGETALL", []byte(k))
		}
		if got := frames(&q); !slices.Equal(got, []string{array2, array2}) {
			t.Errorf("%s: afterwards, in RESP2: got %q", tt.name, got)
		}
	}
}

// TestClusterRESP3HelloRefused: when the masters refuse HELLO 3 (renamed away), a payload that goes to several
// masters has its HELLO 3, which the router sends to each master's part, answered with a master's own refusal, byte
// for byte, and every shared connection still speaks RESP2.
func TestClusterRESP3HelloRefused(t *testing.T) {
	cl := redistest.StartCluster(t, 3, 0, "--rename-command", "HELLO", "")
	c := newClusterClient(t, cl.Masters[0].Addr(), func(o *Options) { o.Conns = 1 })
	keys, owners := keysOn(t, cl, 2)
	for i, k := range keys {
		owners[i].Do("HSET", k, "f", "v")
	}
	direct := owners[1].Dial()
	refusal := string(direct.Do("HELLO", "3"))
	direct.Close()
	if !strings.HasPrefix(refusal, "-ERR unknown command") {
		t.Fatalf("%s answered HELLO 3 with %q; want a refusal", owners[1].Addr(), refusal)
	}

	var p Payload
	p.AppendHello(3)
	for _, k := range keys {
		p.AppendKey("HGETALL", []byte(k))
	}
	p.AppendHello(2)
	call := NewCall()
	if err := c.Forward(call, &p); err != nil {
		t.Fatal(err)
	}
	if call.Len() != len(keys)+2 {
		t.Fatalf("%d reply frames; want %d", call.Len(), len(keys)+2)
	}
	if got := string(call.Frame(0)); got != refusal {
		t.Errorf("HELLO 3 through the router: got %q; %s answers %q", got, owners[1].Addr(), refusal)
	}

	const array2 = "*2\r\n$1\r\nf\r\n$1\r\nv\r\n"
	var q Payload
	for _, k := range keys {
		q.AppendKey("HGETALL", []byte(k))
	}
	if err := c.Forward(call, &q); err != nil {
		t.Fatal(err)
	}
	for i := range keys {
		if got := string(call.Frame(i)); got != array2 {
			t.Errorf("afterwards, HGETALL %s in RESP2: got %q; want %q", keys[i], got, array2)
		}
	}
}

// TestClusterKeyspace: a keyspace stream in front of a cluster has a connection on every master, delivers the
// invalidations of writes on each, reports up once every connection is, lost when one is killed, and closes them
// all.
func TestClusterKeyspace(t *testing.T) {
	cl := redistest.StartCluster(t, 3, 0)
	c := newClusterClient(t, cl.Masters[0].Addr(), trackCached)
	ks, rec := trackKeyspace(t, c, "ks:")
	if ks.Addr() != "" {
		t.Errorf("Addr in front of a cluster: %q; want \"\"", ks.Addr())
	}
	redistest.Eventually(t, 10*time.Second, "the stream up on every master", ks.Up)
	rec.mu.Lock()
	if rec.ups != 1 {
		t.Errorf("OnUp called %d times once every master's connection was up; want 1", rec.ups)
	}
	rec.mu.Unlock()
	// The policies' connections are started apart from the stream's: wait for them too before counting.
	redistest.Eventually(t, 10*time.Second, "the policies' tracking up on every master", func() bool {
		_, up := c.Tracking()
		return up
	})
	for _, m := range cl.Masters {
		if n := trackingConns(m); n != 2 {
			t.Errorf("%s: %d tracking connections; want 2 (the policies' and the keyspace stream's)", m.Addr(), n)
		}
	}
	keys, owners := keysOn(t, cl, 3)
	for i := range keys {
		keys[i] = "ks:{" + keys[i] + "}" // on the same master
		owners[i].Do("SET", keys[i], "v")
		owners[i].Do("SET", "other:"+keys[i], "v") // outside the prefixes
	}
	rec.await(t, 5*time.Second, "an invalidation from every master", func() bool { return len(rec.got) >= 3 })
	rec.mu.Lock()
	slices.Sort(rec.got)
	if want := slices.Sorted(slices.Values(keys)); !slices.Equal(rec.got, want) {
		t.Errorf("invalidations: got %q; want %q", rec.got, want)
	}
	rec.mu.Unlock()

	// Another client kills the tracking connections of one master: the stream reports the loss, and up again
	// once that master's connection is back, whose writes are announced again.
	victim := owners[1]
	for _, line := range strings.Split(string(victim.Do("CLIENT", "LIST")), "\n") {
		if strings.Contains(line, " name=featcache-tracking ") && strings.HasPrefix(line, "id=") {
			victim.Do("CLIENT", "KILL", "ID", strings.Fields(line)[0][len("id="):])
		}
	}
	rec.await(t, 10*time.Second, "OnLost, then OnUp again", func() bool { return rec.losts >= 1 && rec.ups >= 2 })
	redistest.Eventually(t, 10*time.Second, "the stream up again on every master", ks.Up)
	rec.mu.Lock()
	rec.got = rec.got[:0]
	rec.mu.Unlock()
	victim.Do("SET", keys[1], "w")
	rec.await(t, 5*time.Second, "the invalidation from the master whose connection was killed", func() bool {
		return slices.Contains(rec.got, keys[1])
	})
	rec.mu.Lock()
	lostBefore := rec.losts
	rec.mu.Unlock()

	// Closing the stream closes its connection on every master, and the policies' stay.
	ks.Close()
	redistest.Eventually(t, 5*time.Second, "the stream's connections closed", func() bool {
		for _, m := range cl.Masters {
			if trackingConns(m) != 1 {
				return false
			}
		}
		return true
	})
	rec.mu.Lock()
	if rec.losts != lostBefore {
		t.Errorf("OnLost called %d times by Close; want 0", rec.losts-lostBefore)
	}
	rec.mu.Unlock()
}

// TestClusterKeyspaceFailover: when a master fails and its replica takes its slots over, the keyspace stream reports
// the loss, opens a connection on the new master (the slot map's change starts it), is up again on every master,
// and delivers the invalidations of writes there.
func TestClusterKeyspaceFailover(t *testing.T) {
	cl := redistest.StartCluster(t, 3, 1)
	c := newClusterClient(t, cl.Masters[1].Addr(), trackCached)
	ks, rec := trackKeyspace(t, c, "ks:")
	defer ks.Close()
	redistest.Eventually(t, 10*time.Second, "the stream up on every master", ks.Up)

	old, promoted := cl.Masters[0], cl.Replicas[0]
	key := ""
	for i := 0; key == ""; i++ {
		if k := fmt.Sprintf("ks:%d", i); cl.MasterOf(k) == old {
			key = k
		}
	}
	cl.Failover(old, promoted)
	rec.await(t, 20*time.Second, "OnLost for the failed master", func() bool { return rec.losts >= 1 })
	redistest.Eventually(t, 20*time.Second, "the stream and the policies tracking on the promoted replica", func() bool {
		return ks.Up() && trackingConns(promoted) == 2
	})
	promoted.Do("SET", key, "v")
	rec.await(t, 5*time.Second, "the invalidation of a write on the promoted replica", func() bool {
		return slices.Contains(rec.got, key)
	})
}

// newClusterClient starts a Client in front of the Redis Cluster that addr belongs to, with the options set
// changes.
func newClusterClient(t *testing.T, addr string, set func(*Options)) *Client {
	t.Helper()
	opt := Options{
		Addresses: []string{addr}, Cache: &recorder{}, Timeout: time.Second, Logger: slog.New(slog.DiscardHandler),
	}
	set(&opt)
	c, err := New(opt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// trackCached turns tracking on for "cached:", with a health check every 50 ms (newClusterClient).
func trackCached(o *Options) {
	o.Tracking, o.Prefixes, o.HealthInterval = true, []string{"cached:"}, 50*time.Millisecond
}

// keyspaceRecorder records what a keyspace stream reports: the keys invalidated, and its OnUp and OnLost calls.
type keyspaceRecorder struct {
	mu         sync.Mutex
	got        []string
	ups, losts int
}

// trackKeyspace opens c's keyspace stream over prefixes, reporting to a new keyspaceRecorder.
func trackKeyspace(t *testing.T, c *Client, prefixes ...string) (*Keyspace, *keyspaceRecorder) {
	t.Helper()
	rec := &keyspaceRecorder{}
	ks, err := c.TrackKeyspace(rec.options(prefixes...))
	if err != nil {
		t.Fatal(err)
	}
	return ks, rec
}

// await polls until cond, called with r's lock held, is true (redistest.Eventually).
func (r *keyspaceRecorder) await(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	redistest.Eventually(t, within, what, func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		return cond()
	})
}

// options are the TrackerOptions of a stream over prefixes that reports to r.
func (r *keyspaceRecorder) options(prefixes ...string) TrackerOptions {
	return TrackerOptions{
		Prefixes: prefixes,
		OnInvalidate: func(keys [][]byte) {
			r.mu.Lock()
			defer r.mu.Unlock()
			for _, k := range keys {
				r.got = append(r.got, string(k))
			}
		},
		OnFlush: func() {},
		OnUp:    func(string) { r.mu.Lock(); r.ups++; r.mu.Unlock() },
		OnLost:  func(error) { r.mu.Lock(); r.losts++; r.mu.Unlock() },
	}
}

// trackingConns counts the featcache tracking connections m's CLIENT LIST shows in tracking mode.
func trackingConns(m *redistest.Server) int {
	n := 0
	for _, line := range strings.Split(string(m.Do("CLIENT", "LIST")), "\n") {
		if strings.Contains(line, " name=featcache-tracking ") && strings.Contains(line, " flags=t") {
			n++
		}
	}
	return n
}
