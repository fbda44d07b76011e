package proxy

import (
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"featcache/internal/commands"
	"featcache/internal/redistest"
	"featcache/internal/resp"
)

// The tests of the commands featcache answers itself (connection.go, clientcmd.go). Replies are compared as raw
// bytes, with what Redis 7.0 sends for the same bytes wherever the command is Redis's; the differences that are
// featcache's own are named in the cases.

// clientIDOf reads a CLIENT ID reply.
func clientIDOf(t *testing.T, c *redistest.Conn) int64 {
	t.Helper()
	r := c.Do("CLIENT", "ID")
	id, ok := resp.IntegerValue(r)
	if !ok {
		t.Fatalf("CLIENT ID: %q", r)
	}
	return id
}

var helloIDField = regexp.MustCompile(`\$2\r\nid\r\n:[0-9]+\r\n`)

// helloWithID is Redis's HELLO reply with the id field replaced.
func helloWithID(redisHello []byte, id int64) string {
	return helloIDField.ReplaceAllLiteralString(string(redisHello), "$2\r\nid\r\n:"+strconv.FormatInt(id, 10)+"\r\n")
}

func TestLocalPingEchoSelect(t *testing.T) {
	p := startProxy(t, defaultTestConfig)
	c := p.dial()
	rc := redistest.Dial(t, p.redis.Addr())
	cases := []struct {
		name string
		args []string
		want string
		own  bool // featcache's own reply; Redis answers otherwise
	}{
		{"ping", []string{"PING"}, "+PONG\r\n", false},
		{"ping lower case", []string{"ping"}, "+PONG\r\n", false},
		{"ping msg", []string{"PING", "msg"}, "$3\r\nmsg\r\n", false},
		{"ping empty msg", []string{"PING", ""}, "$0\r\n\r\n", false},
		{"ping 2 args", []string{"PING", "a", "b"}, "-ERR wrong number of arguments for 'ping' command\r\n", false},
		{"echo", []string{"ECHO", "hi there"}, "$8\r\nhi there\r\n", false},
		{"echo no arg", []string{"ECHO"}, "-ERR wrong number of arguments for 'echo' command\r\n", false},
		{"echo 2 args", []string{"ECHO", "a", "b"}, "-ERR wrong number of arguments for 'echo' command\r\n", false},
		{"select 0", []string{"SELECT", "0"}, "+OK\r\n", false},
		{"select x", []string{"SELECT", "x"}, "-ERR value is not an integer or out of range\r\n", false},
		{"select no arg", []string{"SELECT"}, "-ERR wrong number of arguments for 'select' command\r\n", false},
		{"select out of range", []string{"SELECT", "1000000"}, "-ERR DB index is out of range\r\n", false},
		{"select the first out of range", []string{"SELECT", "16"}, "-ERR DB index is out of range\r\n", false},
		{"select negative", []string{"SELECT", "-1"}, "-ERR DB index is out of range\r\n", false},
		{"select past int", []string{"SELECT", "3000000000"}, "-ERR value is out of range, value must between -2147483648 and 2147483647\r\n", false},
		{"select past long", []string{"SELECT", "99999999999999999999"}, "-ERR value is not an integer or out of range\r\n", false},
		{"select plus sign", []string{"SELECT", "+1"}, "-ERR value is not an integer or out of range\r\n", false},
		// featcache's caches and connections belong to database 0: another database is its documented error.
		{"select 1", []string{"SELECT", "1"}, "-ERR featcache serves database 0 only (SELECT 1 is not supported)\r\n", true},
		{"select 15", []string{"SELECT", "15"}, "-ERR featcache serves database 0 only (SELECT 15 is not supported)\r\n", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			expectDo(t, c, tc.want, tc.args...)
			if !tc.own {
				expectDo(t, rc, tc.want, tc.args...)
			}
		})
	}
	// The connection still works after every error above.
	expectDo(t, c, "+PONG\r\n", "PING")

	// The range is the upstream's own.
	p4 := startProxyOn(t, redistest.Start(t, "--databases", "4"), defaultTestConfig)
	c4 := p4.dial()
	expectDo(t, c4, "-ERR DB index is out of range\r\n", "SELECT", "4")
	expectDo(t, c4, "-ERR featcache serves database 0 only (SELECT 3 is not supported)\r\n", "SELECT", "3")
	expectDo(t, redistest.Dial(t, p4.redis.Addr()), "-ERR DB index is out of range\r\n", "SELECT", "4")
}

func TestLocalQuit(t *testing.T) {
	p := startProxy(t, defaultTestConfig)
	for _, args := range [][]string{{"QUIT"}, {"quit", "extra"}} {
		c := p.dial()
		expectDo(t, c, "+OK\r\n", args...)
		expectClosed(t, c, 2*time.Second)
	}
	// QUIT in the middle of a pipeline: what comes after it is not run.
	c := p.dial()
	writeRaw(t, c, encodePipeline([]string{"SET", "quit:k", "1"}, []string{"QUIT"}, []string{"SET", "quit:k", "2"}))
	expectRead(t, c, "+OK\r\n")
	expectRead(t, c, "+OK\r\n")
	expectClosed(t, c, 2*time.Second)
	expectDo(t, redistest.Dial(t, p.redis.Addr()), "$1\r\n1\r\n", "GET", "quit:k")
}

func TestLocalHello(t *testing.T) {
	p := startProxy(t, defaultTestConfig)
	c := p.dial()
	id := clientIDOf(t, c)
	redisHello := p.redis.Do("HELLO")
	if !strings.HasPrefix(string(redisHello), "*14\r\n$6\r\nserver\r\n$5\r\nredis\r\n$7\r\nversion\r\n") {
		t.Fatalf("Redis HELLO: %q", redisHello)
	}
	want := helloWithID(redisHello, id)
	expectDo(t, c, want, "HELLO")
	expectDo(t, c, want, "HELLO", "2")
	if redisV2 := p.redis.Do("HELLO", "2"); helloWithID(redisV2, id) != want {
		t.Errorf("Redis HELLO 2 %q differs from HELLO %q", redisV2, redisHello)
	}

	rc := redistest.Dial(t, p.redis.Addr())
	sameAsRedis := []struct {
		name string
		args []string
		want string
	}{
		{"hello 1", []string{"HELLO", "1"}, "-NOPROTO unsupported protocol version\r\n"},
		{"hello 4", []string{"HELLO", "4"}, "-NOPROTO unsupported protocol version\r\n"},
		{"hello x", []string{"HELLO", "x"}, "-ERR Protocol version is not an integer or out of range\r\n"},
		{"bad option", []string{"HELLO", "2", "FOO"}, "-ERR Syntax error in HELLO option 'FOO'\r\n"},
		{"setname without value", []string{"HELLO", "2", "SETNAME"}, "-ERR Syntax error in HELLO option 'SETNAME'\r\n"},
		{"auth without password", []string{"HELLO", "2", "AUTH", "default"}, "-ERR Syntax error in HELLO option 'AUTH'\r\n"},
		{"setname with a space", []string{"HELLO", "2", "SETNAME", "a b"}, "-ERR Client names cannot contain spaces, newlines or special characters.\r\n"},
	}
	for _, tc := range sameAsRedis {
		t.Run(tc.name, func(t *testing.T) {
			expectDo(t, c, tc.want, tc.args...)
			expectDo(t, rc, tc.want, tc.args...)
		})
	}
	// HELLO 3 switches to RESP3, as in Redis 7.0 (TestWireFidelityRESP3 covers RESP3); HELLO 2 switches back.
	want3 := strings.Replace(strings.Replace(want, "*14\r\n", "%7\r\n", 1), "proto\r\n:2\r\n", "proto\r\n:3\r\n", 1)
	expectDo(t, c, want3, "HELLO", "3")
	expectDo(t, c, "_\r\n", "CLIENT", "GETNAME")
	expectDo(t, c, want, "HELLO", "2")

	expectDo(t, c, "$-1\r\n", "CLIENT", "GETNAME")
	expectDo(t, c, want, "HELLO", "2", "SETNAME", "n")
	expectDo(t, c, "$1\r\nn\r\n", "CLIENT", "GETNAME")
	expectDo(t, c, want, "hello", "2", "setname", "other")
	expectDo(t, c, "$5\r\nother\r\n", "CLIENT", "GETNAME")
}

// TestHelloRoleFollowsUpstream: HELLO's role is the upstream's current one, as Redis's own HELLO reports its role,
// also after the upstream refused INFO for a while (an ACL change) and then allowed it again: featcache asks again
// after roleRetry (a minute; the package's TestMain shortens it), where it used to stop asking for good.
func TestHelloRoleFollowsUpstream(t *testing.T) {
	p := startProxy(t, defaultTestConfig)
	c := p.dial()
	role := func() string {
		_, after, _ := strings.Cut(string(c.Do("HELLO")), "$4\r\nrole\r\n")
		_, after, _ = strings.Cut(after, "\r\n")
		r, _, _ := strings.Cut(after, "\r\n")
		return r
	}
	if got := role(); got != "master" {
		t.Fatalf("HELLO role: %q; want master", got)
	}
	p.redis.Do("ACL", "SETUSER", "default", "-info")
	t.Cleanup(func() { p.redis.Do("ACL", "SETUSER", "default", "+info") })
	redistest.Eventually(t, 5*time.Second, "INFO refused", func() bool { return p.srv.noRoleUntil.Load() != 0 })
	p.redis.Do("ACL", "SETUSER", "default", "+info")
	// A replica of a master that does not answer: its role is replica all the same.
	if got := string(p.redis.Do("REPLICAOF", "127.0.0.1", "1")); got != "+OK\r\n" {
		t.Fatalf("REPLICAOF: %q", got)
	}
	t.Cleanup(func() { p.redis.Do("REPLICAOF", "NO", "ONE") })
	if got := string(p.redis.Do("HELLO")); !strings.Contains(got, "$4\r\nrole\r\n$7\r\nreplica\r\n") {
		t.Fatalf("Redis's own HELLO after REPLICAOF: %q", got)
	}
	redistest.Eventually(t, 5*time.Second, "HELLO role replica through featcache", func() bool { return role() == "replica" })
}

func TestAuthFeatcachePassword(t *testing.T) {
	p := startProxy(t, "password: s3cret\n"+defaultTestConfig)
	ref := redistest.Start(t, "--requirepass", "s3cret")
	rc := redistest.Dial(t, ref.Addr())
	c := p.dial()

	const noauth = "-NOAUTH Authentication required.\r\n"
	const wrongpass = "-WRONGPASS invalid username-password pair or user is disabled.\r\n"
	const helloNoauth = "-NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time\r\n"
	before := []replyCase{
		{[]string{"GET", "k"}, noauth},
		{[]string{"PING"}, noauth},
		{[]string{"CLIENT", "ID"}, noauth},
		{[]string{"SELECT", "0"}, noauth},
		{[]string{"HELLO"}, helloNoauth},
		{[]string{"HELLO", "2"}, helloNoauth},
		{[]string{"AUTH", "wrong"}, wrongpass},
		{[]string{"AUTH", "default", "wrong"}, wrongpass},
		{[]string{"AUTH", "someone", "s3cret"}, wrongpass},
		{[]string{"HELLO", "2", "AUTH", "default", "wrong"}, wrongpass},
	}
	expectReplies(t, before, c, rc)
	// featcache's own admin commands need AUTH too (Redis does not know CACHE).
	expectDo(t, c, noauth, "CACHE", "STATS")
	expectDo(t, c, noauth, "CACHE", "FLUSH")

	expectDo(t, c, "+OK\r\n", "AUTH", "s3cret")
	expectDo(t, c, "$-1\r\n", "GET", "k")
	if r := c.Do("CACHE", "STATS"); !strings.HasPrefix(string(r), "*") {
		t.Errorf("CACHE STATS after AUTH: got %q; want an array of lines", r)
	}
	// RESET requires AUTH again.
	expectDo(t, c, "+RESET\r\n", "RESET")
	expectDo(t, c, noauth, "PING")
	expectDo(t, c, "+OK\r\n", "AUTH", "default", "s3cret")
	expectDo(t, c, "+PONG\r\n", "PING")

	c2 := p.dial()
	id := clientIDOfAfterHello(t, c2, "HELLO", "2", "AUTH", "default", "s3cret")
	expectDo(t, rc, "+OK\r\n", "AUTH", "s3cret")
	if got, want := string(c2.Do("HELLO", "2")), helloWithID(rc.Do("HELLO", "2"), id); got != want {
		t.Errorf("HELLO 2 after HELLO AUTH: got %q; want %q", got, want)
	}
	expectDo(t, c2, "+PONG\r\n", "PING")

	// AUTH followed in the same write by a command larger than the unauthenticated limits: the limits change
	// between the two, as in Redis.
	c3 := p.dial()
	big := strings.Repeat("v", 20000)
	writeRaw(t, c3, encodePipeline([]string{"AUTH", "s3cret"}, []string{"SET", "big", big}, []string{"STRLEN", "big"}))
	expectRead(t, c3, "+OK\r\n")
	expectRead(t, c3, "+OK\r\n")
	expectRead(t, c3, ":20000\r\n")
}

// clientIDOfAfterHello sends a HELLO and returns the id it reports.
func clientIDOfAfterHello(t *testing.T, c *redistest.Conn, args ...string) int64 {
	t.Helper()
	r := string(c.Do(args...))
	m := regexp.MustCompile(`\$2\r\nid\r\n:([0-9]+)\r\n`).FindStringSubmatch(r)
	if m == nil || !strings.HasPrefix(r, "*14\r\n") {
		t.Fatalf("%q: got %q; want the HELLO array", args, r)
	}
	id, _ := strconv.ParseInt(m[1], 10, 64)
	return id
}

func TestAuthUnauthenticatedLimits(t *testing.T) {
	p := startProxy(t, "password: s3cret\n"+defaultTestConfig)
	ref := redistest.Start(t, "--requirepass", "s3cret")
	eleven := append([]string{"DEL"}, strings.Split("a b c d e f g h i j", " ")...)
	cases := []struct {
		name string
		in   []byte
		want string
	}{
		{"11 args", redistest.Encode(eleven...), "-ERR Protocol error: unauthenticated multibulk length\r\n"},
		{"after a refused command", append([]byte("PING\r\n"), redistest.Encode(eleven...)...),
			"-NOAUTH Authentication required.\r\n-ERR Protocol error: unauthenticated multibulk length\r\n"},
		{"16 KiB + 1 argument", redistest.Encode("SET", "k", strings.Repeat("v", 16385)),
			"-ERR Protocol error: unauthenticated bulk length\r\n"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for _, target := range []struct{ who, addr string }{{"featcache", p.addr}, {"redis", ref.Addr()}} {
				c := redistest.Dial(t, target.addr)
				writeRaw(t, c, tc.in)
				var got strings.Builder
				for got.Len() < len(tc.want) {
					f, err := c.Read()
					got.Write(f)
					if err != nil {
						break
					}
				}
				if got.String() != tc.want {
					t.Errorf("%s: got %q; want %q", target.who, got.String(), tc.want)
				}
				expectClosed(t, c, time.Second)
			}
		})
	}
	// After AUTH the same command is fine.
	c := p.dial()
	expectDo(t, c, "+OK\r\n", "AUTH", "s3cret")
	expectDo(t, c, ":0\r\n", eleven...)
}

func TestAuthUpstreamPassword(t *testing.T) {
	redis := redistest.Start(t, "--requirepass", "up")
	p := startProxyOn(t, redis, "upstream: {password: up}\n"+defaultTestConfig)
	rc := redistest.Dial(t, redis.Addr())
	expectDo(t, rc, "+OK\r\n", "AUTH", "up")

	// featcache has no password of its own: clients need not AUTH, and clients written for the store, which
	// send the store's password, keep working.
	c := p.dial()
	expectDo(t, c, "+PONG\r\n", "PING")
	expectDo(t, c, "+OK\r\n", "AUTH", "up")
	expectDo(t, c, "+OK\r\n", "AUTH", "default", "up")
	expectDo(t, c, "-WRONGPASS invalid username-password pair or user is disabled.\r\n", "AUTH", "wrong")
	expectDo(t, c, "-WRONGPASS invalid username-password pair or user is disabled.\r\n", "AUTH", "default", "wrong")
	expectDo(t, rc, "-WRONGPASS invalid username-password pair or user is disabled.\r\n", "AUTH", "wrong")
	id := clientIDOf(t, c)
	expectDo(t, c, helloWithID(rc.Do("HELLO", "2"), id), "HELLO", "2", "AUTH", "default", "up")
	expectDo(t, c, "+OK\r\n", "SET", "k", "v")
	expectDo(t, c, "$1\r\nv\r\n", "GET", "k")
	expectDo(t, rc, "$1\r\nv\r\n", "GET", "k")
}

func TestAuthNoPassword(t *testing.T) {
	p := startProxy(t, defaultTestConfig)
	c := p.dial()
	rc := redistest.Dial(t, p.redis.Addr())
	cases := []replyCase{
		{[]string{"AUTH", "x"}, "-ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?\r\n"},
		{[]string{"AUTH", "default", "x"}, "+OK\r\n"},
		{[]string{"AUTH", "foo", "x"}, "-WRONGPASS invalid username-password pair or user is disabled.\r\n"},
		{[]string{"AUTH", "a", "b", "c"}, "-ERR syntax error\r\n"},
		{[]string{"AUTH"}, "-ERR wrong number of arguments for 'auth' command\r\n"},
	}
	expectReplies(t, cases, c, rc)
	expectDo(t, c, "+PONG\r\n", "PING")
}

func TestLocalClientNameIDInfo(t *testing.T) {
	p := startProxy(t, defaultTestConfig)
	c := p.dial()
	rc := redistest.Dial(t, p.redis.Addr())
	sameAsRedis := []replyCase{
		{[]string{"CLIENT", "GETNAME"}, "$-1\r\n"},
		{[]string{"CLIENT", "SETNAME", "a b"}, "-ERR Client names cannot contain spaces, newlines or special characters.\r\n"},
		{[]string{"CLIENT", "SETNAME", "a\nb"}, "-ERR Client names cannot contain spaces, newlines or special characters.\r\n"},
		{[]string{"CLIENT", "GETNAME"}, "$-1\r\n"},
		{[]string{"CLIENT", "SETNAME", "worker-1"}, "+OK\r\n"},
		{[]string{"CLIENT", "GETNAME"}, "$8\r\nworker-1\r\n"},
		{[]string{"client", "setname", ""}, "+OK\r\n"},
		{[]string{"CLIENT", "GETNAME"}, "$-1\r\n"},
		{[]string{"CLIENT", "SETNAME"}, "-ERR wrong number of arguments for 'client|setname' command\r\n"},
		{[]string{"CLIENT", "ID", "x"}, "-ERR wrong number of arguments for 'client|id' command\r\n"},
		{[]string{"CLIENT", "REPLY", "BAD"}, "-ERR syntax error\r\n"},
	}
	expectReplies(t, sameAsRedis, c, rc)

	// CLIENT SETINFO is Redis 7.2's (redis-py 5 sends it on connect). In front of Redis 7.0, which does not know
	// it, the client gets 7.0's own error; in front of an upstream that has it, featcache answers it as 7.2 does,
	// without touching a shared connection (TestLocalClientSetinfo72).
	expectDo(t, c, string(rc.Do("CLIENT", "SETINFO", "LIB-NAME", "redis-py")), "CLIENT", "SETINFO", "LIB-NAME", "redis-py")
	testLocalClientRest(t, p, c)
}

// TestLocalClientSetinfo72 runs featcache with a command table that has CLIENT SETINFO, as Redis 7.2's does.
func TestLocalClientSetinfo72(t *testing.T) {
	redis := redistest.Start(t)
	cmds, err := commands.Parse(redis.Do("COMMAND"))
	if err != nil {
		t.Fatal(err)
	}
	cmds["client"].Subcommands["setinfo"] = &commands.Info{Name: "client|setinfo", Arity: 4, Flags: commands.FlagNoScript | commands.FlagLoading | commands.FlagStale}
	p := startProxyOn(t, redis, defaultTestConfig, func(o *Options) { o.Commands = cmds })
	c := p.dial()
	expectReplies(t, []replyCase{
		{[]string{"CLIENT", "SETINFO", "LIB-NAME", "redis-py"}, "+OK\r\n"},
		{[]string{"CLIENT", "SETINFO", "lib-ver", "5.0.1"}, "+OK\r\n"},
		{[]string{"CLIENT", "SETINFO", "FOO", "x"}, "-ERR Unrecognized option 'FOO'\r\n"},
		{[]string{"CLIENT", "SETINFO", "LIB-NAME", "a b"}, "-ERR lib-name cannot contain spaces, newlines or special characters.\r\n"},
		{[]string{"CLIENT", "SETINFO", "LIB-NAME"}, "-ERR wrong number of arguments for 'client|setinfo' command\r\n"},
		{[]string{"CLIENT", "SETINFO"}, "-ERR wrong number of arguments for 'client|setinfo' command\r\n"},
		{[]string{"CLIENT", "SETINFO", "LIB-NAME", "x", "y"}, "-ERR wrong number of arguments for 'client|setinfo' command\r\n"},
	}, c)
	if n := redis.Calls("client|setinfo"); n != 0 {
		t.Fatalf("CLIENT SETINFO reached the upstream %d times", n)
	}
}

// testLocalClientRest continues TestLocalClientNameIDInfo on its connection.
func testLocalClientRest(t *testing.T, p *testProxy, c *redistest.Conn) {
	// Per-connection state of the upstream is refused with featcache's error. CLIENT TRACKING and CACHING are
	// featcache's own (tracking_test.go compares them with Redis).
	expectDo(t, c, "-ERR 'client|no-touch' is not supported by featcache: it would change a shared upstream connection\r\n",
		"CLIENT", "NO-TOUCH", "on")
	expectDo(t, c, "+OK\r\n", "CLIENT", "TRACKING", "on")
	expectDo(t, c, "-ERR syntax error\r\n", "CLIENT", "CACHING", "on")
	expectDo(t, c, "+OK\r\n", "CLIENT", "TRACKING", "off")
	expectDo(t, c, "+PONG\r\n", "PING")

	// CLIENT ID is distinct per connection and is the id HELLO reports.
	c2 := p.dial()
	id1, id2 := clientIDOf(t, c), clientIDOf(t, c2)
	if id1 == id2 {
		t.Errorf("CLIENT ID: both connections got %d", id1)
	}
	if got := clientIDOfAfterHello(t, c2, "HELLO"); got != id2 {
		t.Errorf("HELLO id %d; CLIENT ID %d", got, id2)
	}

	expectDo(t, c, "+OK\r\n", "CLIENT", "SETNAME", "n1")
	v, isNil, ok := resp.BulkPayload(c.Do("CLIENT", "INFO"))
	if !ok || isNil {
		t.Fatalf("CLIENT INFO: not a bulk string")
	}
	info := string(v)
	// Redis 7.0's fields in Redis 7.0's order (the fd is featcache's socket's).
	wantPrefix := "id=" + strconv.FormatInt(id1, 10) + " addr=" + c.NetConn().LocalAddr().String() +
		" laddr=" + c.NetConn().RemoteAddr().String() + " fd="
	if !strings.HasPrefix(info, wantPrefix) {
		t.Errorf("CLIENT INFO: got %q; want it to start with %q", info, wantPrefix)
	}
	for _, field := range []string{" name=n1 age=", " db=0 ", " sub=0 psub=0 ssub=0 ", " multi=-1 ", " cmd=client|info ", " user=default ", " resp=2\n"} {
		if !strings.Contains(info, field) {
			t.Errorf("CLIENT INFO %q: no %q", info, field)
		}
	}
	expectDo(t, c, "+OK\r\n", "MULTI")
	expectDo(t, c, "+QUEUED\r\n", "SET", "a", "1")
	expectDo(t, c, "-ERR 'client|info' inside MULTI is not supported by featcache\r\n", "CLIENT", "INFO")
	expectDo(t, c, "-EXECABORT Transaction discarded because of previous errors.\r\n", "EXEC")
}

func TestLocalClientReply(t *testing.T) {
	p := startProxy(t, defaultTestConfig)
	rc := redistest.Dial(t, p.redis.Addr())
	expectDo(t, rc, "+OK\r\n", "SET", "reply:k2", "v2")
	expectDo(t, rc, "+OK\r\n", "SET", "reply:k4", "v4")
	c := p.dial()

	// OFF: a forwarded write, a cache miss, a hit and a local command are all run and none is answered; ON is.
	misses := p.srv.Stats().Misses.Load()
	expectPipeline(t, c, "+OK\r\n$2\r\nv1\r\n$2\r\nv2\r\n",
		[]string{"CLIENT", "REPLY", "OFF"},
		[]string{"SET", "reply:k1", "v1"},
		[]string{"GET", "reply:k2"},
		[]string{"GET", "reply:k1"},
		[]string{"MGET", "reply:k1", "reply:k2", "reply:k3"},
		[]string{"PING"},
		[]string{"ECHO", "x"},
		[]string{"NOSUCHCOMMAND"},
		[]string{"CLIENT", "REPLY", "ON"},
		[]string{"GET", "reply:k1"},
		[]string{"GET", "reply:k2"},
	)
	if got := p.srv.Stats().Misses.Load() - misses; got < 2 {
		t.Errorf("cache misses during the muted reads: %d; want at least 2 (the reads ran)", got)
	}
	// OFF lasts across writes, until ON.
	writeRaw(t, c, encodePipeline([]string{"CLIENT", "REPLY", "OFF"}, []string{"INCR", "reply:n"}))
	expectPipeline(t, c, "+OK\r\n$1\r\n2\r\n",
		[]string{"INCR", "reply:n"},
		[]string{"GET", "reply:k4"},
		[]string{"CLIENT", "REPLY", "ON"},
		[]string{"GET", "reply:n"},
	)

	// SKIP and its interplay with OFF and ON, compared with what Redis sends for the same pipeline.
	skip := [][]string{
		{"CLIENT", "REPLY", "SKIP"}, {"GET", "reply:k3"}, {"ECHO", "a"},
		{"CLIENT", "REPLY", "SKIP"}, {"INCR", "reply:m"}, {"INCR", "reply:m"},
		{"CLIENT", "REPLY", "SKIP"}, {"CLIENT", "REPLY", "SKIP"}, {"PING", "1"}, {"PING", "2"},
		{"CLIENT", "REPLY", "SKIP"}, {"CLIENT", "REPLY", "ON"}, {"PING", "3"},
		{"CLIENT", "REPLY", "OFF"}, {"CLIENT", "REPLY", "SKIP"}, {"PING", "4"}, {"CLIENT", "REPLY", "ON"}, {"PING", "5"},
		{"CLIENT", "REPLY", "SKIP"}, {"CLIENT", "REPLY", "OFF"}, {"PING", "6"}, {"CLIENT", "REPLY", "ON"},
		{"CLIENT", "REPLY", "SKIP"}, {"MULTI"}, {"SET", "reply:t", "1"}, {"EXEC"},
		{"CLIENT", "REPLY", "SKIP"}, {"RESET"}, {"PING", "7"},
		{"CLIENT", "REPLY", "OFF"}, {"RESET"}, {"PING", "8"},
		{"CLIENT", "REPLY", "ON"}, {"CLIENT", "REPLY", "ON"},
	}
	const wantSkip = "$1\r\na\r\n" + ":2\r\n" + "$1\r\n2\r\n" + "+OK\r\n$1\r\n3\r\n" + "+OK\r\n$1\r\n5\r\n" +
		"+OK\r\n" + "+QUEUED\r\n*1\r\n+OK\r\n" + "$1\r\n7\r\n" + "+RESET\r\n$1\r\n8\r\n" + "+OK\r\n+OK\r\n"
	expectPipeline(t, c, wantSkip, skip...)
	ref := redistest.Start(t)
	expectPipeline(t, redistest.Dial(t, ref.Addr()), wantSkip, skip...)

	// SKIP at the end of one write skips the first command of the next.
	writeRaw(t, c, encodePipeline([]string{"CLIENT", "REPLY", "SKIP"}))
	expectPipeline(t, c, "$5\r\nshown\r\n", []string{"ECHO", "skipped"}, []string{"ECHO", "shown"})
}

func TestLocalReset(t *testing.T) {
	p := startProxy(t, defaultTestConfig)
	rc := redistest.Dial(t, p.redis.Addr())
	c := p.dial()

	// Name and transaction.
	expectDo(t, c, "+OK\r\n", "CLIENT", "SETNAME", "n")
	expectDo(t, c, "+OK\r\n", "MULTI")
	expectDo(t, c, "+QUEUED\r\n", "SET", "reset:a", "1")
	expectDo(t, c, "+RESET\r\n", "RESET")
	expectDo(t, c, "$-1\r\n", "CLIENT", "GETNAME")
	expectDo(t, c, "-ERR EXEC without MULTI\r\n", "EXEC")
	expectDo(t, c, "$-1\r\n", "GET", "reset:a")

	// Reply mode: RESET itself is answered and turns replies back on.
	expectPipeline(t, c, "+RESET\r\n$1\r\n1\r\n",
		[]string{"CLIENT", "REPLY", "OFF"}, []string{"PING"}, []string{"RESET"}, []string{"PING", "1"})

	// Subscriptions.
	expectDo(t, c, "*3\r\n$9\r\nsubscribe\r\n$8\r\nreset:ch\r\n:1\r\n", "SUBSCRIBE", "reset:ch")
	expectDo(t, c, "+RESET\r\n", "RESET")
	expectDo(t, c, "$-1\r\n", "GET", "reset:a")
	redistest.Eventually(t, 5*time.Second, "the subscription ends upstream", func() bool {
		return string(rc.Do("PUBSUB", "NUMSUB", "reset:ch")) == "*2\r\n$8\r\nreset:ch\r\n:0\r\n"
	})
	expectDo(t, rc, ":0\r\n", "PUBLISH", "reset:ch", "lost")
	expectDo(t, c, "+PONG\r\n", "PING")

	// A WATCH session.
	expectDo(t, c, "+OK\r\n", "WATCH", "reset:w")
	expectDo(t, c, "+RESET\r\n", "RESET")
	expectDo(t, rc, "+OK\r\n", "SET", "reset:w", "changed")
	expectExec(t, c, "*1\r\n+OK\r\n", []string{"SET", "reset:w", "mine"})

	// The same sequence to Redis gives the same replies.
	compareWithRedis(t, p.dial(), redistest.Dial(t, redistest.Start(t).Addr()), nil,
		[]string{"CLIENT", "SETNAME", "n"}, []string{"MULTI"}, []string{"SET", "a", "1"}, []string{"RESET"},
		[]string{"CLIENT", "GETNAME"}, []string{"EXEC"}, []string{"GET", "a"})
}

func TestLocalNoSharedState(t *testing.T) {
	p := startProxy(t, defaultTestConfig)
	rc := redistest.Dial(t, p.redis.Addr())
	const name = "featcache-test-private-name"

	c1 := p.dial()
	expectDo(t, c1, "+OK\r\n", "CLIENT", "SETNAME", name)
	writeRaw(t, c1, encodePipeline([]string{"CLIENT", "REPLY", "OFF"}, []string{"SET", "shared:k", "v"}))

	// Other clients, on the same shared upstream connections, are answered as usual.
	for i := 0; i < 4; i++ {
		c := p.dial()
		expectDo(t, c, "+PONG\r\n", "PING")
		expectDo(t, c, "$-1\r\n", "CLIENT", "GETNAME")
		expectDo(t, c, "+OK\r\n", "SET", "shared:other", strconv.Itoa(i))
		expectDo(t, c, "$1\r\n"+strconv.Itoa(i)+"\r\n", "GET", "shared:other")
		expectDo(t, c, ":1\r\n", "EXISTS", "shared:other")
	}
	redistest.Eventually(t, 5*time.Second, "the muted SET reached Redis", func() bool {
		return string(rc.Do("GET", "shared:k")) == "$1\r\nv\r\n"
	})
	for _, line := range clientList(t, rc) {
		if strings.Contains(line, "name="+name+" ") {
			t.Errorf("Redis has a connection named after a featcache client: %q", line)
		}
	}
	// The muted client is still muted, and still itself.
	expectPipeline(t, c1, "+OK\r\n$"+strconv.Itoa(len(name))+"\r\n"+name+"\r\n",
		[]string{"PING"}, []string{"CLIENT", "REPLY", "ON"}, []string{"CLIENT", "GETNAME"})
}
