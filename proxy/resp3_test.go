package proxy

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"featcache/internal/redistest"
	"featcache/internal/resp"
)

// RESP3 wire fidelity: a client that chose RESP3 with HELLO 3 cannot tell featcache from Redis either.
// TestWireFidelityRESP3 runs resp3Script against a Redis used directly and against a second Redis behind featcache
// and compares the raw reply bytes, as TestWireFidelity does for RESP2. Every cached read runs twice: the first is
// a miss (a fill, or a relay), the second a hit answered from featcache's memory.

// resp3Twice returns each cached read twice: a miss, then a hit.
func resp3Twice(steps ...fidStep) []fidStep {
	var out []fidStep
	for _, st := range steps {
		out = append(out, st, st)
	}
	return out
}

var (
	// resp3Field matches a "name=value" field of a CLIENT INFO line, whose values (ids, addresses, ages, Redis's
	// buffer figures) differ between any two servers.
	resp3Field = regexp.MustCompile(`([a-z-]+)=[^ \n]*`)
	// resp3InfoLine matches an INFO "name:value" line.
	resp3InfoLine = regexp.MustCompile(`(?m)^([a-z_0-9]+):[^\r\n]*`)
	// resp3Length matches a bulk or verbatim string's length header.
	resp3Length = regexp.MustCompile(`^([$=])[0-9]+\r\n`)
)

// resp3NormFields keeps a CLIENT INFO or CLIENT LIST reply's frame type, its format and the names of its fields,
// in order, dropping their values and the length they make.
func resp3NormFields(b []byte) []byte {
	b = resp3Field.ReplaceAll(b, []byte("$1=V"))
	return resp3Length.ReplaceAll(b, []byte("${1}LEN\r\n"))
}

// resp3NormInfo keeps an INFO reply's frame type, format, section headers and field names.
func resp3NormInfo(b []byte) []byte {
	b = resp3InfoLine.ReplaceAll(b, []byte("$1:V"))
	return resp3Length.ReplaceAll(b, []byte("${1}LEN\r\n"))
}

// resp3Script is the compared script: every reply family in RESP3, and back to RESP2 at the end.
func resp3Script() []fidStep {
	s := []fidStep{
		// Connection commands and featcache's local replies.
		fc("HELLO", "4"),
		fc("HELLO", "three"),
		fcNorm(fidNormHelloID, "HELLO", "3"),
		fcNorm(fidNormHelloID, "HELLO"),
		fcNorm(fidNormHelloID, "HELLO", "3", "SETNAME", "resp3"),
		fc("HELLO", "3", "AUTH", "nosuchuser", "x"),
		fc("HELLO", "3", "SETNAME", "bad name"),
		fc("CLIENT", "GETNAME"),
		fc("CLIENT", "SETNAME", ""),
		fc("CLIENT", "GETNAME"),
		fc("PING"),
		fc("PING", "hello"),
		fc("ECHO", "echo\r\nme"),
		fc("ECHO"),
		fc("SELECT", "0"),
		fcNorm(fidNormInt, "CLIENT", "ID"),
		fcNorm(resp3NormFields, "CLIENT", "INFO"),
		fc("CLIENT", "LIST", "TYPE", "pubsub"), // an empty verbatim string
		fc("CLIENT", "TRACKINGINFO"),
		fc("CLIENT", "GETREDIR"),
		fc("CONFIG", "GET", "maxmemory"),
		fc("CONFIG", "GET", "no-such-parameter*"),
		fc("CONFIG", "GET", "requirepass"),
		fcNorm(resp3NormInfo, "INFO", "server"),
		fcNorm(resp3NormInfo, "INFO", "keyspace"),
		fc("NOSUCHCOMMAND", "x"),
		fc("GET"),
		fc("COMMAND", "COUNT"),
		fc("COMMAND", "INFO", "get", "nosuchcommand"),
		fc("COMMAND", "DOCS", "get"),
		fc("COMMAND", "GETKEYS", "SET", "a", "b"),
		fc("OBJECT", "HELP"),

		// Strings.
		fc("SET", "s:1", "value one"),
		fc("SET", "s:empty", ""),
		fc("MSET", "nc:1", "not cached", "s:2", "two"),
	}
	s = append(s, resp3Twice(
		fc("GET", "s:1"),
		fc("GET", "s:empty"),
		fc("GET", "s:missing"),
		fc("GET", "nc:1"),
		fc("GET", "nc:missing"),
		fc("MGET", "s:1", "s:missing", "nc:1", "nc:missing", "s:2", "s:1"),
		fc("MGET", "s:missing"),
		fc("MGET", "nc:missing", "nc:1"),
	)...)
	s = append(s,
		fc("INCRBYFLOAT", "s:f", "1.5"),
		fc("GETRANGE", "s:1", "0", "4"),
		fc("STRLEN", "s:1"),
		fc("GETDEL", "s:2"),
		fc("GETEX", "s:missing"),
		fc("SETRANGE", "s:r", "2", "x"),
		fc("OBJECT", "ENCODING", "s:1"),
		fc("OBJECT", "ENCODING", "s:missing"),
		fc("TYPE", "s:1"),
		fc("EXISTS", "s:1", "s:missing"),
		fc("TTL", "s:1"),

		// Hashes.
		fc("HSET", "h:1", "f1", "v1", "f2", "v2", "f3", ""),
	)
	s = append(s, resp3Twice(
		fc("HGET", "h:1", "f1"),
		fc("HGET", "h:1", "nofield"),
		fc("HGET", "h:missing", "f"),
		fc("HMGET", "h:1", "f1", "nofield", "f3"),
		fc("HMGET", "h:missing", "a", "b"),
		fc("HGETALL", "h:1"),
		fc("HGETALL", "h:missing"),
		fc("GET", "h:1"),
		fc("HGET", "s:1", "f"),
		fc("HGETALL", "s:1"),
		fc("MGET", "h:1", "s:1"),
	)...)
	s = append(s,
		fc("HLEN", "h:1"),
		fc("HKEYS", "h:1"),
		fc("HVALS", "h:1"),
		fc("HEXISTS", "h:1", "f1"),
		fc("HINCRBYFLOAT", "h:n", "f", "2.25"),
		fc("HSTRLEN", "h:1", "f2"),
		fc("HSCAN", "h:1", "0"),
		fc("HSET", "h:1", "f1", "changed"),
		fc("HGETALL", "h:1"),
		fc("HGET", "h:1", "f1"),

		// Lists.
		fc("RPUSH", "l:1", "a", "b", "c"),
		fc("LRANGE", "l:1", "0", "-1"),
		fc("LPOS", "l:1", "c"),
		fc("LPOS", "l:1", "z"),
		fc("LINDEX", "l:1", "9"),
		fc("LPOP", "l:1"),
		fc("LPOP", "l:missing"),
		fc("LPOP", "l:missing", "2"),
		fc("LMPOP", "1", "l:missing", "LEFT"),
		fc("LMPOP", "1", "l:1", "RIGHT"),

		// Blocking commands that time out: RESP3's null where RESP2 has null arrays.
		fc("BLPOP", "l:none", "0.01"),
		fc("BRPOPLPUSH", "l:none", "l:dst", "0.01"),
		fc("BLMOVE", "l:none", "l:dst", "LEFT", "RIGHT", "0.01"),
		fc("BZPOPMIN", "z:none", "0.01"),
		fc("BLMPOP", "0.01", "1", "l:none", "LEFT"),
		fc("XREAD", "BLOCK", "10", "STREAMS", "st:none", "$"),

		// Sets.
		fc("SADD", "set:1", "1", "2", "3"),
		fc("SMEMBERS", "set:1"),
		fc("SMEMBERS", "set:missing"),
		fc("SISMEMBER", "set:1", "2"),
		fc("SMISMEMBER", "set:1", "2", "9"),
		fc("SINTER", "set:1", "set:1"),
		fc("SPOP", "set:missing"),
		fc("SCARD", "set:1"),

		// Sorted sets: scores are doubles.
		fc("ZADD", "z:1", "1", "a", "2.5", "b", "0.1", "c", "inf", "d"),
		fc("ZRANGE", "z:1", "0", "-1", "WITHSCORES"),
		fc("ZRANGE", "z:1", "0", "-1"),
		fc("ZSCORE", "z:1", "b"),
		fc("ZSCORE", "z:1", "none"),
		fc("ZMSCORE", "z:1", "a", "none"),
		fc("ZINCRBY", "z:1", "1", "a"),
		fc("ZRANK", "z:1", "b"),
		fc("ZRANK", "z:1", "none"),
		fc("ZRANGEBYSCORE", "z:1", "-inf", "+inf", "WITHSCORES", "LIMIT", "0", "2"),
		fc("ZUNION", "2", "z:1", "z:1", "WITHSCORES"),
		fc("ZPOPMIN", "z:1"),
		fc("ZPOPMIN", "z:missing"),
		fc("ZCOUNT", "z:1", "0", "10"),

		// Streams.
		fc("XADD", "st:1", "1-1", "f1", "v1"),
		fc("XADD", "st:1", "2-1", "f2", "v2"),
		fc("XRANGE", "st:1", "-", "+"),
		fc("XREVRANGE", "st:1", "+", "-", "COUNT", "1"),
		fc("XREAD", "COUNT", "5", "STREAMS", "st:1", "0"),
		fc("XREAD", "STREAMS", "st:1", "$"),
		fc("XLEN", "st:1"),
		fc("XINFO", "STREAM", "st:1"),

		// Geo.
		fc("GEOADD", "geo:1", "13.361389", "38.115556", "Palermo", "15.087269", "37.502669", "Catania"),
		fc("GEODIST", "geo:1", "Palermo", "Catania"),
		fc("GEOPOS", "geo:1", "Palermo", "Nowhere"),
		fc("GEOHASH", "geo:1", "Palermo"),
		fc("GEOSEARCH", "geo:1", "FROMLONLAT", "15", "37", "BYRADIUS", "200", "km", "ASC", "WITHDIST", "WITHCOORD"),

		// HyperLogLog.
		fc("PFADD", "hll:1", "a", "b", "c"),
		fc("PFCOUNT", "hll:1"),
		fc("PFCOUNT", "hll:1"),
		fc("GET", "hll:1"),

		// Scripts: Lua's false, true, nil and tables in RESP2 conversion, and redis.setresp(3).
		fc("EVAL", "return false", "0"),
		fc("EVAL", "return true", "0"),
		fc("EVAL", "return nil", "0"),
		fc("EVAL", "return {1, 'two', {3, false}}", "0"),
		fc("EVAL", "return {double=3.5}", "0"),
		fc("EVAL", "return {big_number='123456789012345678901234567890'}", "0"),
		fc("EVAL", "return {map={a=1}}", "0"),
		fc("EVAL", "return {set={a=true}}", "0"),
		fc("EVAL", "return redis.error_reply('MYERR custom')", "0"),
		fc("EVAL", "redis.setresp(3); return redis.call('hgetall', KEYS[1])", "1", "h:1"),
		fc("EVAL", "redis.setresp(3); return redis.call('zscore', KEYS[1], 'b')", "1", "z:1"),
		fc("EVAL", "redis.setresp(3); return redis.call('get', KEYS[1])", "1", "s:missing"),
		fc("EVAL", "redis.setresp(3); return redis.call('sismember', KEYS[1], '1')", "1", "set:1"),
		fc("EVAL", "return redis.call('get', KEYS[1])", "1", "s:missing"),

		// Transactions: EXEC's array holds RESP3 replies.
		fc("MULTI"),
		fc("SET", "t:1", "a"),
		fc("GET", "t:1"),
		fc("GET", "t:missing"),
		fc("HGETALL", "h:1"),
		fc("ZSCORE", "z:1", "b"),
		fc("EXEC"),
		fc("MULTI"),
		fc("DISCARD"),
		fc("EXEC"),
		fc("WATCH", "t:1"),
		fc("GET", "t:1"),
		fc("HGETALL", "h:1"),
		fc("MULTI"),
		fc("INCR", "t:n"),
		fc("GET", "t:missing"),
		fc("EXEC"),
		fc("UNWATCH"),
		// HELLO inside a WATCH session switches the session's connection too: its reads go there.
		fc("WATCH", "t:1"),
		fcNorm(fidNormHelloID, "HELLO", "2"),
		fc("GET", "t:missing"),
		fc("HGETALL", "h:1"),
		fcNorm(fidNormHelloID, "HELLO", "3"),
		fc("GET", "t:missing"),
		fc("HGETALL", "h:1"),
		fc("UNWATCH"),
	)
	s = append(s, resp3Twice(
		fc("GET", "t:1"),
		fc("GET", "t:missing"),
	)...)
	s = append(s,
		// Errors.
		fc("INCR", "s:1"),
		fc("LPUSH", "s:1", "x"),
		fc("SET", "s:x", "1", "EX", "-1"),
		fc("ZADD", "z:1", "nan", "x"),

		// Keyspace.
		fc("DBSIZE"),
		fc("SCAN", "0", "MATCH", "s:1", "COUNT", "1000"),
		fc("KEYS", "s:1"),
		fc("UNLINK", "s:missing"),
		fc("COPY", "s:1", "s:copy"),
		fc("GET", "s:copy"),

		// Back to RESP2.
		fcNorm(fidNormHelloID, "HELLO", "2"),
		fc("GET", "s:missing"),
		fc("HGETALL", "h:1"),
		fc("ZSCORE", "z:1", "b"),
		fc("BLPOP", "l:none", "0.01"),
		fcNorm(fidNormHelloID, "HELLO", "3"),
		fc("GET", "s:missing"),
		fc("RESET"),
		fc("GET", "s:missing"),
		fc("QUIT"),
	)
	return s
}

// resp3PubSubScript subscribes a RESP3 client: confirmations and messages are pushes, and in subscribed mode it
// runs any command (cached reads, writes, featcache's own commands) with replies in Redis's order.
func resp3PubSubScript() []fidStep {
	return []fidStep{
		fcNorm(fidNormHelloID, "HELLO", "3"),
		fc("SET", "ps:k", "v"),
		fc("GET", "ps:k"),
		fcFrames(2, "SUBSCRIBE", "ch:a", "ch:b"),
		fc("PSUBSCRIBE", "pat:*"),
		fcSide("PUBLISH", "ch:a", "hello"),
		fcRecv("message on ch:a"),
		fcSide("PUBLISH", "pat:1", "to the pattern"),
		fcRecv("pmessage on pat:*"),
		fc("PING"),
		fc("PING", "in subscribed mode"),
		fc("GET", "ps:k"),
		fc("GET", "ps:k"),
		fc("GET", "ps:missing"),
		fc("GET", "ps:missing"),
		fc("HGETALL", "ps:missing"),
		fc("SET", "ps:k", "w"),
		fc("GET", "ps:k"),
		fc("MGET", "ps:k", "ps:missing"),
		fc("CLIENT", "GETNAME"),
		fc("CLIENT", "TRACKINGINFO"),
		fc("ECHO", "x"),
		fc("ZADD", "ps:z", "1.5", "m"),
		fc("ZSCORE", "ps:z", "m"),
		fc("PUBLISH", "ch:a", "to myself"),
		fcRecv("own message on ch:a"),
		fcFrames(2, "SUBSCRIBE", "ch:a", "ch:c"),
		fcSide("PUBLISH", "ch:c", "bin\x00\r\n"),
		fcRecv("message on ch:c"),
		fc("SSUBSCRIBE", "sh:1"),
		fcSide("SPUBLISH", "sh:1", "sharded"),
		fcRecv("smessage on sh:1"),
		fc("SUNSUBSCRIBE", "sh:1"),
		fcFrames(3, "UNSUBSCRIBE", "ch:a", "ch:b", "ch:c"),
		fc("PING", "still subscribed to a pattern"),
		fc("GET", "ps:k"),
		fc("PUNSUBSCRIBE", "pat:*"),
		fc("PING", "not subscribed"),
		fc("GET", "ps:missing"),
		fc("UNSUBSCRIBE"),
		fc("SUBSCRIBE", "ch:z"),
		fc("RESET"),
		fc("GET", "ps:missing"),
		fcNorm(fidNormHelloID, "HELLO", "3"),
		fc("SUBSCRIBE", "ch:q"),
		fcNorm(fidNormHelloID, "HELLO", "2"),
		fc("PING"),
		fc("QUIT"),
	}
}

// resp3PasswordScript runs against a Redis with requirepass and a featcache with a password: HELLO 3 before and
// with AUTH.
func resp3PasswordScript() []fidStep {
	return []fidStep{
		fc("GET", "pw3:k"),
		fc("HELLO", "3"),
		fc("HELLO", "3", "AUTH", "default", "wrong"),
		fc("GET", "pw3:k"),
		fcNorm(fidNormHelloID, "HELLO", "3", "AUTH", "default", fidPassword, "SETNAME", "pw3"),
		fc("GET", "pw3:k"),
		fc("GET", "pw3:k"),
		fc("CLIENT", "GETNAME"),
		fc("RESET"),
		fc("GET", "pw3:k"),
		fc("HELLO", "3", "SETNAME", "x"),
		fc("AUTH", fidPassword),
		fcNorm(fidNormHelloID, "HELLO", "3"),
		fc("HGETALL", "pw3:h"),
		fc("QUIT"),
	}
}

func TestWireFidelityRESP3(t *testing.T) {
	// RESP2's shorter scripts (WATCH with another client's write, WATCH per client, CLIENT REPLY modes, inline
	// commands) run after HELLO 3.
	hello3 := func(steps []fidStep) []fidStep {
		return append([]fidStep{fcNorm(fidNormHelloID, "HELLO", "3")}, steps...)
	}
	fidCompareScripts(t, resp3Script(), []fidScript{
		{name: "Password", steps: resp3PasswordScript(), password: true},
		{name: "WatchedKeyChangedByAnotherClient", steps: hello3(fidWatchScript())},
		{name: "WatchIsPerClient", steps: hello3(fidWatchIsolationScript())},
		{name: "ReplyModes", steps: hello3(fidReplyModeScript())},
		{name: "Inline", steps: hello3(fidInlineScript())},
		{name: "PubSub", steps: resp3PubSubScript()},
	})
}

// resp3CLIInput is what TestRedisCLIRESP3 types at redis-cli -3's prompt, against Redis and against featcache.
const resp3CLIInput = `SET cli3:s value
GET cli3:s
GET cli3:s
GET cli3:missing
GET cli3:missing
MGET cli3:s cli3:missing
MGET cli3:s cli3:missing
HSET cli3:h f1 v1 f2 v2
HGETALL cli3:h
HGETALL cli3:h
HGET cli3:h nofield
HGET cli3:h nofield
HMGET cli3:h f1 nofield
HMGET cli3:h f1 nofield
ZADD cli3:z 1.5 a 2 b
ZRANGE cli3:z 0 -1 WITHSCORES
ZSCORE cli3:z a
SADD cli3:set x
SMEMBERS cli3:set
CONFIG GET maxmemory
CLIENT GETNAME
CLIENT TRACKINGINFO
EVAL "return {double=0.5}" 0
EVAL "return redis.call('exists', KEYS[1]) == 1" 1 cli3:s
XADD cli3:st 1-1 f v
XREAD STREAMS cli3:st 0
BLPOP cli3:none 0.01
GET
NOSUCHCOMMAND
PING
`

// TestRedisCLIRESP3 feeds the same input to redis-cli -3 against Redis and against featcache: it prints the same
// thing, types included (redis-cli shows RESP3's maps, sets, doubles and nulls each its own way; redis-cli 7.0 does
// not know big numbers, which TestWireFidelityRESP3 and TestRueidisRESP3 cover).
func TestRedisCLIRESP3(t *testing.T) {
	p := startProxy(t, defaultTestConfig)
	want := redisCLI(t, p.redis.Addr(), []byte(resp3CLIInput), "-3", "--no-raw")
	p.redis.Do("FLUSHALL")
	got := redisCLI(t, p.addr, []byte(resp3CLIInput), "-3", "--no-raw")
	if got != want {
		t.Errorf("redis-cli -3 against featcache printed\n%s\nagainst Redis\n%s", got, want)
	}
	for _, typed := range []string{"(double) 1.5", "(nil)", "1~ \"x\"", "1# \"cli3:st\" =>"} {
		if !strings.Contains(got, typed) {
			t.Errorf("redis-cli -3 output has no %q:\n%s", typed, got)
		}
	}
}

// TestRueidisRESP3 runs the rueidis client (RESP3 only) against featcache and against Redis: Do and DoMulti give
// the same typed results, cached reads answered from featcache's memory included. rueidis's client-side caching
// (CLIENT TRACKING) is TestClientTrackingRueidis's: DisableCache here.
func TestRueidisRESP3(t *testing.T) {
	p := startProxy(t, defaultTestConfig)
	dial := func(addr string) rueidis.Client {
		c, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{addr}, DisableCache: true})
		if err != nil {
			t.Fatalf("rueidis against %s: %v", addr, err)
		}
		t.Cleanup(c.Close)
		return c
	}
	direct, proxied := dial(p.redis.Addr()), dial(p.addr)
	ctx := context.Background()
	setup := []rueidis.Completed{
		direct.B().Set().Key("rd:s").Value("value").Build(),
		direct.B().Hset().Key("rd:h").FieldValue().FieldValue("f1", "v1").FieldValue("f2", "v2").Build(),
		direct.B().Zadd().Key("rd:z").ScoreMember().ScoreMember(1.5, "a").ScoreMember(2.25, "b").Build(),
		direct.B().Sadd().Key("rd:set").Member("x").Build(),
		direct.B().Xadd().Key("rd:st").Id("1-1").FieldValue().FieldValue("f", "v").Build(),
	}
	for _, cmd := range setup {
		if err := proxied.Do(ctx, cmd).Error(); err != nil {
			t.Fatalf("setup %v: %v", cmd.Commands(), err)
		}
	}
	reads := func(c rueidis.Client) []rueidis.Completed {
		b := c.B()
		return []rueidis.Completed{
			b.Get().Key("rd:s").Build(),
			b.Get().Key("rd:missing").Build(),
			b.Mget().Key("rd:s", "rd:missing").Build(),
			b.Hget().Key("rd:h").Field("f1").Build(),
			b.Hget().Key("rd:h").Field("nofield").Build(),
			b.Hmget().Key("rd:h").Field("f1", "nofield").Build(),
			b.Hgetall().Key("rd:h").Build(),
			b.Hgetall().Key("rd:missing").Build(),
			b.Zrange().Key("rd:z").Min("0").Max("-1").Withscores().Build(),
			b.Zscore().Key("rd:z").Member("b").Build(),
			b.Smembers().Key("rd:set").Build(),
			b.Xrange().Key("rd:st").Start("-").End("+").Build(),
			b.Xread().Streams().Key("rd:st").Id("0").Build(),
			b.Blpop().Key("rd:none").Timeout(0.01).Build(),
			b.ConfigGet().Parameter("maxmemory").Build(),
			b.ClientGetname().Build(),
			b.Eval().Script("return {double=0.5}").Numkeys(0).Build(),
			b.Eval().Script("return {big_number='12345678901234567890'}").Numkeys(0).Build(),
			b.Incr().Key("rd:s").Build(),
		}
	}
	show := func(r rueidis.RedisResult) string {
		m, err := r.ToMessage()
		if err != nil && !rueidis.IsRedisNil(err) {
			return "error: " + err.Error()
		}
		v, verr := m.ToAny()
		return m.String() + " " + strings.TrimSpace(strings.ReplaceAll(fmtAny(v, verr), "\n", " "))
	}
	for round := 0; round < 2; round++ { // a miss, then a hit
		want, got := reads(direct), reads(proxied)
		for i := range want {
			w, g := show(direct.Do(ctx, want[i])), show(proxied.Do(ctx, got[i]))
			if g != w {
				t.Errorf("round %d Do %v:\n got %s\nwant %s", round, got[i].Commands(), g, w)
			}
		}
		wm, gm := direct.DoMulti(ctx, reads(direct)...), proxied.DoMulti(ctx, reads(proxied)...)
		for i := range wm {
			if w, g := show(wm[i]), show(gm[i]); g != w {
				t.Errorf("round %d DoMulti #%d:\n got %s\nwant %s", round, i, g, w)
			}
		}
	}
}

// fmtAny prints a rueidis ToAny result, maps with sorted keys.
func fmtAny(v any, err error) string {
	if err != nil {
		return "err " + err.Error()
	}
	return fmt.Sprint(v) // fmt sorts map keys
}

// TestServeStaleRESP3: serve_stale's answers, from entries past their hard TTL while Redis hangs, are in RESP3 for
// a RESP3 client as hits are: nulls as "_", HGETALL as a map.
func TestServeStaleRESP3(t *testing.T) {
	p := startProxy(t, `
upstream: {timeout: 200ms, tracking: false}
policies:
  - {name: stale, prefix: "s:", soft_ttl: 5s, hard_ttl: 10s, jitter: 0, negative_ttl: 1h, on_upstream_error: serve_stale, max_stale: 1h}
`)
	c := p.dial()
	if got := string(c.Do("HELLO", "3")); !strings.HasPrefix(got, "%7\r\n") {
		t.Fatalf("HELLO 3: %q", got)
	}
	p.redis.Do("SET", "s:v", "v")
	p.redis.Do("HSET", "s:h", "f", "v")
	reads := []struct {
		args []string
		want string
	}{
		{[]string{"GET", "s:v"}, "$1\r\nv\r\n"},
		{[]string{"GET", "s:nil"}, "_\r\n"},
		{[]string{"MGET", "s:v", "s:nil"}, "*2\r\n$1\r\nv\r\n_\r\n"},
		{[]string{"HGET", "s:h", "nofield"}, "_\r\n"},
		{[]string{"HMGET", "s:h", "f", "nofield"}, "*2\r\n$1\r\nv\r\n_\r\n"},
		{[]string{"HGETALL", "s:h"}, "%1\r\n$1\r\nf\r\n$1\r\nv\r\n"},
	}
	for round, when := range []string{"a miss", "a hit"} {
		for _, r := range reads {
			if got := string(c.Do(r.args...)); got != r.want {
				t.Errorf("%v, %s (round %d): got %q; want %q", r.args, when, round, got, r.want)
			}
		}
	}
	p.clock.Advance(15 * time.Second) // past hard_ttl
	p.redis.Pause()
	defer p.redis.Resume()
	before := p.srv.Stats().StaleOnError.Load()
	for _, r := range reads {
		if got := string(c.Do(r.args...)); got != r.want {
			t.Errorf("%v served stale: got %q; want %q", r.args, got, r.want)
		}
	}
	if n := p.srv.Stats().StaleOnError.Load() - before; n == 0 {
		t.Errorf("no stale serve counted")
	}
}

// TestInfoRESP3: INFO with featcache's section is one verbatim string for a RESP3 client, as Redis's INFO is:
// Redis's sections, then featcache's, and a length that counts them all.
func TestInfoRESP3(t *testing.T) {
	p := startProxy(t, defaultTestConfig)
	c := p.dial()
	c.Do("HELLO", "3")
	for _, args := range [][]string{{"INFO"}, {"INFO", "featcache"}, {"INFO", "server", "featcache"}} {
		reply := c.Do(args...)
		format, text, ok := resp.VerbatimPayload(reply)
		if !ok || string(format) != "txt" {
			t.Errorf("%v: %.80q is not a verbatim string of format txt", args, reply)
			continue
		}
		var sc resp.Scanner
		if n, err := sc.Next(reply); err != nil || n != len(reply) {
			t.Errorf("%v: the frame's length does not match its text: scanned %d of %d, %v", args, n, len(reply), err)
		}
		if !strings.Contains(string(text), "# Featcache\r\n") {
			t.Errorf("%v: no featcache section in %.200q", args, text)
		}
		if args[len(args)-1] != "featcache" || len(args) == 3 {
			if !strings.HasPrefix(string(text), "# Server\r\n") {
				t.Errorf("%v: Redis's sections do not come first: %.80q", args, text)
			}
		}
	}
}

// TestRESP3LeavesSharedConnectionsInRESP2: after a RESP3 client's forwarded commands, transactions, WATCH session,
// blocking command and subscription, featcache's upstream connections are the same ones in the same state, RESP2
// among it, and a RESP2 client's forwarded replies are RESP2's.
func TestRESP3LeavesSharedConnectionsInRESP2(t *testing.T) {
	p := startProxy(t, `
policies:
  - {name: default, prefix: "", soft_ttl: 1h, hard_ttl: 2h, jitter: 0}
  - {name: passthrough, prefix: "nc:", cache: false}
`)
	rc := redistest.Dial(t, p.redis.Addr())
	warmShared(t, p)
	before := sharedConnections(t, rc)
	c := p.dial()
	c.Do("HELLO", "3")
	for _, args := range [][]string{
		{"HSET", "nc:h", "f", "v"}, {"HGETALL", "nc:h"}, {"ZADD", "nc:z", "1.5", "m"}, {"ZSCORE", "nc:z", "m"},
		{"GET", "k"}, {"MGET", "k", "nc:x"}, {"MULTI"}, {"GET", "k"}, {"EXEC"}, {"WATCH", "k"}, {"GET", "k"},
		{"UNWATCH"}, {"BLPOP", "nc:l", "0.01"}, {"EVAL", "redis.setresp(3); return redis.call('hgetall', KEYS[1])", "1", "nc:h"},
	} {
		if got := c.Do(args...); len(got) == 0 || got[0] == '-' {
			t.Fatalf("%v: %q", args, got)
		}
	}
	if got := string(c.Do("ZSCORE", "nc:z", "m")); got != ",1.5\r\n" {
		t.Fatalf("ZSCORE for the RESP3 client: %q", got)
	}
	c.Send("SUBSCRIBE", "ch")
	if f, err := c.Read(); err != nil || !strings.HasPrefix(string(f), ">3\r\n") {
		t.Fatalf("SUBSCRIBE: %q, %v", f, err)
	}
	c.Close()
	two := p.dial()
	expectDo(t, two, "*2\r\n$1\r\nf\r\n$1\r\nv\r\n", "HGETALL", "nc:h")
	expectDo(t, two, "$3\r\n1.5\r\n", "ZSCORE", "nc:z", "m")
	expectDo(t, two, "*-1\r\n", "BLPOP", "nc:l", "0.01")
	after := sharedConnections(t, rc)
	for id, state := range before {
		// The tracking connections are rueidis's, which speaks RESP3 (its pushes carry the invalidations).
		if !strings.Contains(state, "resp=2 ") && !strings.Contains(state, "name=featcache-tracking ") {
			t.Errorf("featcache's upstream connection %s before: %q", id, state)
		}
		if after[id] != state {
			t.Errorf("featcache's upstream connection %s: %q, then %q after a RESP3 client", id, state, after[id])
		}
	}
	redistest.Eventually(t, 5*time.Second, "no featcache connection in RESP3 once the RESP3 client is gone", func() bool {
		for _, state := range sharedConnections(t, rc) {
			if strings.Contains(state, "resp=3") && !strings.Contains(state, "name=featcache-tracking ") {
				return false
			}
		}
		return true
	})
}

// TestRESP3AndRESP2ClientsShareConnections: RESP3 and RESP2 clients pipelining at once over the same few shared
// connections each get every reply in their own protocol, forwarded and cached alike.
func TestRESP3AndRESP2ClientsShareConnections(t *testing.T) {
	p := startProxy(t, `
upstream: {conns: 2}
policies:
  - {name: default, prefix: "", soft_ttl: 1h, hard_ttl: 2h, jitter: 0}
  - {name: passthrough, prefix: "nc:", cache: false}
`)
	setup := p.dial()
	expectDo(t, setup, ":1\r\n", "ZADD", "nc:z", "1.5", "m")
	expectDo(t, setup, ":1\r\n", "HSET", "nc:h", "f", "v")
	expectDo(t, setup, "+OK\r\n", "SET", "c:k", "v")
	script := [][]string{
		{"ZSCORE", "nc:z", "m"}, {"HGETALL", "nc:h"}, {"GET", "c:missing"}, {"MGET", "c:k", "c:missing", "nc:none"},
		{"HGETALL", "c:none"}, {"GET", "nc:none"}, {"ZSCORE", "nc:z", "m"},
	}
	want := map[int]string{
		2: ",1.5\r\n" + "%1\r\n$1\r\nf\r\n$1\r\nv\r\n" + "_\r\n" + "*3\r\n$1\r\nv\r\n_\r\n_\r\n" + "%0\r\n" + "_\r\n" +
			",1.5\r\n",
		1: "$3\r\n1.5\r\n" + "*2\r\n$1\r\nf\r\n$1\r\nv\r\n" + "$-1\r\n" + "*3\r\n$1\r\nv\r\n$-1\r\n$-1\r\n" + "*0\r\n" +
			"$-1\r\n" + "$3\r\n1.5\r\n",
	}
	var payload []byte
	for _, args := range script {
		payload = append(payload, redistest.Encode(args...)...)
	}
	const clients, rounds = 8, 50
	errs := make(chan error, clients)
	for i := 0; i < clients; i++ {
		go func() {
			resp3 := i%2 == 0
			c, err := redistest.TryDial(t, p.addr)
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			w := want[1]
			if resp3 {
				w = want[2]
				if got := c.Do("HELLO", "3"); !strings.HasPrefix(string(got), "%7") {
					errs <- fmt.Errorf("HELLO 3: %q", got)
					return
				}
			}
			for r := 0; r < rounds; r++ {
				if _, err := c.NetConn().Write(payload); err != nil {
					errs <- err
					return
				}
				var got []byte
				for range script {
					f, err := c.ReadTimeout(10 * time.Second)
					if err != nil {
						errs <- err
						return
					}
					got = append(got, f...)
				}
				if string(got) != w {
					errs <- fmt.Errorf("client %d (RESP3 %v) round %d: got %q; want %q", i, resp3, r, got, w)
					return
				}
			}
			errs <- nil
		}()
	}
	for i := 0; i < clients; i++ {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}

// TestRESP3WhenRedisRefusesHello: an upstream whose HELLO is unknown (renamed away, or a Redis older than 6) makes
// featcache refuse HELLO 3 with NOPROTO, since its probe (HELLO 3, HELLO 2 on a shared connection) fails. When
// the upstream changes under featcache after a probe said yes (a failover to such a server, modelled here by
// setting the probe's answer), a RESP3 client's forwarded commands would run in RESP2: each gets an error saying so
// rather than a reply in the wrong protocol, its cached reads are still answered, the probe is asked again, and
// RESP2 clients see nothing.
func TestRESP3WhenRedisRefusesHello(t *testing.T) {
	r := redistest.Start(t, "--rename-command", "HELLO", "")
	p := startProxyOn(t, r, `
upstream: {tracking: false}
policies:
  - {name: default, prefix: "", soft_ttl: 1h, hard_ttl: 2h, jitter: 0}
  - {name: passthrough, prefix: "nc:", cache: false}
`)
	c := p.dial()
	expectDo(t, c, "-NOPROTO unsupported protocol version\r\n", "HELLO", "3")
	expectDo(t, c, ":1\r\n", "ZADD", "nc:z", "1.5", "m")
	expectDo(t, c, "$-1\r\n", "GET", "c:missing")

	p.srv.resp3.Store(1) // as if the probe had been answered by a server that knew HELLO
	if got := string(c.Do("HELLO", "3")); !strings.HasPrefix(got, "%7") {
		t.Fatalf("HELLO 3: %q", got)
	}
	got := string(c.Do("ZSCORE", "nc:z", "m"))
	want := "-ERR featcache could not switch its upstream connection to RESP3 (Redis answered HELLO 3: ERR unknown command"
	if !strings.HasPrefix(got, want) {
		t.Errorf("ZSCORE when Redis refuses HELLO: got %q; want %q...", got, want)
	}
	expectDo(t, c, "_\r\n", "GET", "c:missing") // from memory, in RESP3
	expectDo(t, p.dial(), "$3\r\n1.5\r\n", "ZSCORE", "nc:z", "m")
	expectDo(t, p.dial(), "-NOPROTO unsupported protocol version\r\n", "HELLO", "3") // asked again

	// The same on a dedicated connection (a blocking command, a transaction), which is switched when it is taken:
	// the transaction is lost, each of its commands says why, and EXEC aborts.
	for _, cmds := range [][][]string{{{"BLPOP", "nc:l", "0.1"}}, {{"MULTI"}, {"SET", "nc:s", "x"}}} {
		p.srv.resp3.Store(1)
		if got := string(c.Do("HELLO", "3")); !strings.HasPrefix(got, "%7") {
			t.Fatalf("HELLO 3: %q", got)
		}
		for _, args := range cmds {
			if got := string(c.Do(args...)); !strings.HasPrefix(got, want) {
				t.Errorf("%q when Redis refuses HELLO: got %q; want %q...", args, got, want)
			}
		}
		expectDo(t, p.dial(), "-NOPROTO unsupported protocol version\r\n", "HELLO", "3") // asked again
	}
	expectDo(t, c, "-EXECABORT Transaction discarded because of previous errors.\r\n", "EXEC")
	expectDo(t, p.dial(), "$-1\r\n", "GET", "nc:s")
}

// TestRueidisPubSubRESP3: rueidis's Receive, which reads RESP3 pushes, gets the messages published through
// featcache, and its commands on the same client go on meanwhile.
func TestRueidisPubSubRESP3(t *testing.T) {
	p := startProxy(t, defaultTestConfig)
	c, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{p.addr}, DisableCache: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	got := make(chan string, 4)
	done := make(chan error, 1)
	go func() {
		done <- c.Receive(ctx, c.B().Subscribe().Channel("rps:ch").Build(), func(m rueidis.PubSubMessage) {
			got <- m.Channel + " " + m.Message
		})
	}()
	// Published until the subscription is in place: Receive gives no signal of its own.
	var msg string
	redistest.Eventually(t, 5*time.Second, "a message through featcache reaches rueidis's Receive", func() bool {
		if err := c.Do(ctx, c.B().Publish().Channel("rps:ch").Message("hello").Build()).Error(); err != nil {
			t.Fatalf("PUBLISH: %v", err)
		}
		select {
		case msg = <-got:
			return true
		case <-time.After(50 * time.Millisecond):
			return false
		}
	})
	if msg != "rps:ch hello" {
		t.Errorf("message: %q", msg)
	}
	if v, err := c.Do(ctx, c.B().Get().Key("rps:missing").Build()).ToString(); !rueidis.IsRedisNil(err) {
		t.Errorf("GET of a missing key beside the subscription: %q, %v; want nil", v, err)
	}
	cancel()
	<-done
}
