package proxy

import (
	"bytes"
	"crypto/sha1"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"featcache/internal/redistest"
	"featcache/internal/resp"
)

// Wire fidelity (DESIGN.md invariant 8): a RESP2 client cannot tell featcache from Redis. TestWireFidelity runs one
// script of commands against a Redis used directly and against a second Redis behind featcache, and compares the
// raw reply bytes command by command, once one command at a time and once as a single pipeline written at once.
// Shorter scripts that need a second client (WATCH, pub/sub), a password or inline commands run one command at a
// time. Commands featcache refuses on purpose are in TestWireFidelityRefusals instead.

// fidelityConfig caches every key except those under "nc:", so MGET mixes cached keys and bypassed ones.
const fidelityConfig = defaultTestConfig + `  - name: passthrough
    prefix: "nc:"
    cache: false
`

// fidPassword is the password of the Password subtest.
const fidPassword = "fidpass"

// fidelityRedisArgs makes blocked clients time out promptly (Redis checks timeouts hz times a second), which keeps
// the blocking section of the script fast; it does not change any reply.
var fidelityRedisArgs = []string{"--hz", "100"}

// fidStep is one command of the script.
type fidStep struct {
	args []string
	// raw, if set, is written instead of args as they are (inline commands); args then only name the step.
	raw string
	// noReply marks a command Redis does not answer (CLIENT REPLY OFF/SKIP): nothing is read for it.
	noReply bool
	// norm, if set, rewrites both replies before they are compared, for fields that differ between any two
	// servers (client ids).
	norm func([]byte) []byte
	// on is the connection the command is sent on.
	on fidConn
	// frames is the number of reply frames the command gets (SUBSCRIBE a b gets two); 0 means 1.
	frames int
	// recvOnly sends nothing and reads the frames a subscription receives.
	recvOnly bool
}

// fidConn names the connections of a sequential run.
type fidConn uint8

const (
	fidMain  fidConn = iota // the script's client
	fidSide                 // a direct connection to the Redis under test: another client of the store
	fidOther                // a second client of the side under test (featcache for the featcache run)
)

// fc is a command of the script's client with one reply.
func fc(args ...string) fidStep { return fidStep{args: args} }

// fcQuiet is a command Redis sends no reply to.
func fcQuiet(args ...string) fidStep { return fidStep{args: args, noReply: true} }

// fcSide is a command of another client of the Redis under test, sent to it directly.
func fcSide(args ...string) fidStep { return fidStep{args: args, on: fidSide} }

// fcOther is a command of a second client of the side under test.
func fcOther(args ...string) fidStep { return fidStep{args: args, on: fidOther} }

// fcFrames sends a command that is answered with n frames.
func fcFrames(n int, args ...string) fidStep { return fidStep{args: args, frames: n} }

// fcRecv reads one frame pushed to a subscribed client; what names the step in failure messages.
func fcRecv(what string) fidStep { return fidStep{args: []string{"(receive) " + what}, recvOnly: true} }

// fcInline sends line as an inline command (what telnet and redis-cli's raw mode send).
func fcInline(line string) fidStep {
	return fidStep{args: []string{"inline: " + line}, raw: line + "\r\n"}
}

var (
	fidHelloID  = regexp.MustCompile(`(\$2\r\nid\r\n):[0-9]+\r\n`)
	fidIntReply = regexp.MustCompile(`^:[0-9]+\r\n$`)
)

// fidNormHelloID replaces the value of HELLO's "id" field: client ids differ between any two servers.
func fidNormHelloID(b []byte) []byte { return fidHelloID.ReplaceAll(b, []byte("${1}:ID\r\n")) }

// fidNormInt keeps only the type of an integer reply (CLIENT ID).
func fidNormInt(b []byte) []byte { return fidIntReply.ReplaceAll(b, []byte(":ID\r\n")) }

// fcNorm is a command whose replies are compared after norm.
func fcNorm(norm func([]byte) []byte, args ...string) fidStep {
	return fidStep{args: args, norm: norm}
}

// fidAllBytes is every byte value once, in order.
func fidAllBytes() string {
	b := make([]byte, 256)
	for i := range b {
		b[i] = byte(i)
	}
	return string(b)
}

// fidelityScript is the compared script. Everything in it is deterministic on two Redis servers started alike:
// no random commands, no replies that show hash-table order (sets are intsets, hashes are listpacks, KEYS and SCAN
// match one key), no millisecond TTLs, no client ids except where normalised. dump is a DUMP payload of the string
// "dumped" from the same Redis version.
func fidelityScript(dump string) []fidStep {
	bin := fidAllBytes()
	binKey := "bin:\x00\r\n\xff key"
	big := strings.Repeat("0123456789abcdef", 1<<16) // 1 MiB
	hugeKey := "huge:" + strings.Repeat("k", 70<<10) // too long for the local tier
	long := strings.Repeat("L", 200)
	loaded := "return 'loaded ' .. ARGV[1]"
	loadedSHA := fmt.Sprintf("%x", sha1.Sum([]byte(loaded)))
	lib := "#!lua name=flib\n" +
		"redis.register_function('fset', function(keys, args) return redis.call('set', keys[1], args[1]) end)\n" +
		"redis.register_function('fget', function(keys, args) return redis.call('get', keys[1]) end)\n" +
		"redis.register_function{function_name='fro', callback=function(keys, args) return args[1] end, flags={'no-writes'}}\n"

	s := []fidStep{
		// Connection commands.
		fc("PING"),
		fc("PING", "hello world"),
		fc("PING", "a", "b"),
		fc("ECHO", "echo\r\nme"),
		fc("ECHO"),
		fc("SELECT", "0"),
		fc("SELECT", "zero"),
		fc("CLIENT", "GETNAME"),
		fc("CLIENT", "SETNAME", "fidelity"),
		fc("CLIENT", "GETNAME"),
		fc("CLIENT", "SETNAME", "bad name"),
		fc("CLIENT", "SETNAME"),
		fc("CLIENT", "GETNAME", "extra"),
		fcNorm(fidNormHelloID, "HELLO", "2"),
		fcNorm(fidNormHelloID, "HELLO"),
		fcNorm(fidNormHelloID, "HELLO", "2", "SETNAME", "helloname"),
		fc("CLIENT", "GETNAME"),
		fc("HELLO", "two"),
		fcNorm(fidNormInt, "CLIENT", "ID"),
		fc("AUTH", "secret"),
		fc("AUTH", "default", "anything"),
		fc("AUTH", "nosuchuser", "secret"),
		fc("AUTH", "a", "b", "c"),
		fc("ECHO", ""),
		fc("PING", ""),
		fc("SELECT", "00"),
		fc("SELECT", "+0"),
		fc("SELECT", "-0"),
		fc("SELECT", "0", "1"),
		fcNorm(fidNormHelloID, "HELLO", "02"),
		fcNorm(fidNormHelloID, "HELLO", "+2"),
		fc("HELLO", "1"),
		fc("HELLO", "-1"),
		fc("HELLO", "99999999999999999999"),
		fcNorm(fidNormHelloID, "HELLO", "2", "AUTH", "default", "anything"),
		fc("HELLO", "2", "AUTH", "nosuchuser", "secret"),
		fc("HELLO", "2", "AUTH", "default"),
		fc("HELLO", "2", "SETNAME", "bad name"),
		fc("HELLO", "2", "BOGUS"),
		fc("CLIENT", "SETNAME", ""),
		fc("CLIENT", "GETNAME"),
		fc("CLIENT", "SETINFO", "lib-name", "featcache-test"),
		fc("CLIENT", "SETINFO", "lib-ver", "1.0"),
		fc("RESET", "extra"),
		fc("READONLY"),
		fc("READWRITE"),
		fc("ASKING"),
		fc("MEMORY", "DOCTOR"),
		fc("LATENCY", "DOCTOR"),
		fc("COMMAND", "COUNT"),
		fc("COMMAND", "INFO", "get", "nosuchcommand"),
		fc("COMMAND", "GETKEYS", "SET", "a", "b"),
		fc("COMMAND", "GETKEYS", "GET"),
		fc("PUBLISH", "fid:channel", "nobody listens"),
		fc("PUBSUB", "CHANNELS"),
		fc("PUBSUB", "NUMSUB", "fid:channel"),
		fc("PUBSUB", "NUMPAT"),
		fc("OBJECT", "HELP"),
		fc("COMMAND", "DOCS", "get"),

		// Strings.
		fc("SET", "s:a", "1"),
		fc("GET", "s:a"),
		fc("SET", "s:a", "2", "GET"),
		fc("SET", "s:a", "3", "NX"),
		fc("SET", "s:new", "x", "XX"),
		fc("SET", "s:new", "x", "NX"),
		fc("SET", "s:ttl", "v", "EX", "1000"),
		fc("TTL", "s:ttl"),
		fc("SET", "s:ttl", "w", "KEEPTTL"),
		fc("TTL", "s:ttl"),
		fc("SET", "s:ttl", "w"),
		fc("TTL", "s:ttl"),
		fc("PTTL", "s:ttl"),
		fc("PTTL", "s:missing"),
		fc("SET", "s:px", "v", "PX", "100000000"),
		fc("TTL", "s:px"),
		fc("SET", "s:a", "v", "EX"),
		fc("SET", "s:a", "v", "NX", "XX"),
		fc("SET", "s:a", "v", "EX", "-5"),
		fc("SET", "s:a", "v", "EX", "ten"),
		fc("GET", "s:missing"),
		fc("GET"),
		fc("GET", "s:a", "s:b"),
		fc("MGET"),
		fc("MSET", "s:m1", "one", "s:m2", "two"),
		fc("MSET", "s:m1"),
		fc("MGET", "s:m1", "s:missing", "s:m2", "s:m1", "s:m1"),
		fc("MSETNX", "s:m3", "three", "s:m1", "uno"),
		fc("MSETNX", "s:m3", "three", "s:m4", "four"),
		fc("SETNX", "s:m4", "cuatro"),
		fc("SETNX", "s:m5", "five"),
		fc("GETEX", "s:m5", "EX", "500"),
		fc("TTL", "s:m5"),
		fc("GETEX", "s:m5", "PERSIST"),
		fc("TTL", "s:m5"),
		fc("GETEX", "s:missing"),
		fc("GETDEL", "s:m5"),
		fc("GETDEL", "s:m5"),
		fc("GET", "s:m5"),
		fc("SET", "s:str", "Hello World"),
		fc("GETRANGE", "s:str", "0", "4"),
		fc("GETRANGE", "s:str", "-5", "-1"),
		fc("GETRANGE", "s:str", "100", "200"),
		fc("SETRANGE", "s:str", "6", "Redis"),
		fc("SETRANGE", "s:pad", "5", "tail"),
		fc("GET", "s:pad"),
		fc("APPEND", "s:str", "!!"),
		fc("APPEND", "s:fresh", "start"),
		fc("STRLEN", "s:str"),
		fc("STRLEN", "s:missing"),
		fc("GET", "s:str"),
		fc("SET", "s:n", "10"),
		fc("INCR", "s:n"),
		fc("INCRBY", "s:n", "-25"),
		fc("DECR", "s:n"),
		fc("DECRBY", "s:n", "3"),
		fc("INCRBYFLOAT", "s:n", "1.5"),
		fc("INCRBYFLOAT", "s:n", "5.0e3"),
		fc("GET", "s:n"),
		fc("INCR", "s:str"),
		fc("INCRBY", "s:n", "notanumber"),
		fc("INCRBYFLOAT", "s:str", "1"),
		fc("SET", "s:max", "9223372036854775807"),
		fc("INCR", "s:max"),
		fc("SET", "s:lcs1", "ohmytext"),
		fc("SET", "s:lcs2", "mynewtext"),
		fc("LCS", "s:lcs1", "s:lcs2"),
		fc("LCS", "s:lcs1", "s:lcs2", "LEN"),
		fc("LCS", "s:lcs1", "s:lcs2", "IDX", "MINMATCHLEN", "2", "WITHMATCHLEN"),
		fc("OBJECT", "ENCODING", "s:n"),
		fc("OBJECT", "ENCODING", "s:m1"),
		fc("SET", "s:int", "12345"),
		fc("OBJECT", "ENCODING", "s:int"),
		fc("OBJECT", "ENCODING", "s:missing"),
		fc("OBJECT", "FREQ", "s:int"),
		fc("GETSET", "s:int", "54321"),
		fc("SETEX", "s:setex", "1000", "v"),
		fc("TTL", "s:setex"),
		fc("SETEX", "s:setex", "0", "v"),
		fc("PSETEX", "s:psetex", "100000000", "v"),
		fc("TTL", "s:psetex"),
		fc("SUBSTR", "s:str", "0", "3"),
		fc("TOUCH", "s:int", "s:missing", "s:int"),

		// Keys.
		fc("EXISTS", "s:a", "s:missing", "s:a"),
		fc("DEL", "s:m3", "s:m4", "s:missing"),
		fc("UNLINK", "s:lcs1", "s:missing"),
		fc("TYPE", "s:a"),
		fc("TYPE", "s:missing"),
		fc("RENAME", "s:a", "k:renamed"),
		fc("RENAME", "s:missing", "k:x"),
		fc("GET", "k:renamed"),
		fc("RENAMENX", "k:renamed", "s:str"),
		fc("COPY", "k:renamed", "k:copy"),
		fc("COPY", "k:renamed", "k:copy"),
		fc("COPY", "k:renamed", "k:copy", "REPLACE"),
		fc("GET", "k:copy"),
		fc("EXPIRE", "k:copy", "1000"),
		fc("TTL", "k:copy"),
		fc("EXPIRE", "k:copy", "2000", "GT"),
		fc("EXPIRE", "k:copy", "3000", "LT"),
		fc("TTL", "k:copy"),
		fc("PEXPIRE", "k:copy", "5000000"),
		fc("TTL", "k:copy"),
		fc("PERSIST", "k:copy"),
		fc("TTL", "k:copy"),
		fc("EXPIRE", "k:missing", "10"),
		fc("EXPIRE", "k:copy", "soon"),
		fc("EXPIREAT", "k:copy", "1"),
		fc("GET", "k:copy"),
		fc("EXISTS", "k:copy"),
		fc("SET", "k:dumpsrc", "dumped"),
		fc("DUMP", "k:dumpsrc"),
		fc("DUMP", "k:missing"),
		fc("RESTORE", "k:restored", "0", dump),
		fc("RESTORE", "k:restored", "0", dump),
		fc("RESTORE", "k:restored", "0", dump, "REPLACE"),
		fc("RESTORE", "k:bad", "0", "not a payload"),
		fc("GET", "k:restored"),
		fc("SET", "scan:only", "1"),
		fc("SCAN", "0", "MATCH", "scan:*", "COUNT", "100000"),
		fc("SCAN", "0", "MATCH", "scan:*", "COUNT", "100000", "TYPE", "hash"),
		fc("SCAN", "notacursor"),
		fc("KEYS", "scan:*"),
		fc("KEYS", "nomatch:*"),
		fc("DBSIZE"),

		// Hashes (listpack encoded: replies keep insertion order).
		fc("HSET", "h:1", "f1", "v1", "f2", "v2", "n", "5"),
		fc("HSET", "h:1", "f1", "v1b"),
		fc("HSET", "h:1", "odd"),
		fc("HGET", "h:1", "f1"),
		fc("HGET", "h:1", "nofield"),
		fc("HGET", "h:missing", "f1"),
		fc("HMGET", "h:1", "f1", "nofield", "f2"),
		fc("HGETALL", "h:1"),
		fc("HGETALL", "h:missing"),
		fc("HINCRBY", "h:1", "n", "10"),
		fc("HINCRBY", "h:1", "f1", "1"),
		fc("HINCRBYFLOAT", "h:1", "n", "0.25"),
		fc("HKEYS", "h:1"),
		fc("HVALS", "h:1"),
		fc("HLEN", "h:1"),
		fc("HEXISTS", "h:1", "f2"),
		fc("HEXISTS", "h:1", "nofield"),
		fc("HSETNX", "h:1", "f2", "other"),
		fc("HSTRLEN", "h:1", "f2"),
		fc("HSCAN", "h:1", "0"),
		fc("HSCAN", "h:1", "0", "MATCH", "f*", "COUNT", "100"),
		fc("HDEL", "h:1", "f2", "nofield"),
		fc("HGETALL", "h:1"),
		fc("OBJECT", "ENCODING", "h:1"),
		fc("GET", "h:1"),
		fc("MGET", "h:1", "s:str"),

		// Lists.
		fc("RPUSH", "l:1", "a", "b", "c", "d", "e"),
		fc("LPUSH", "l:1", "z"),
		fc("LRANGE", "l:1", "0", "-1"),
		fc("LRANGE", "l:missing", "0", "-1"),
		fc("LINDEX", "l:1", "2"),
		fc("LINDEX", "l:1", "99"),
		fc("LINSERT", "l:1", "BEFORE", "c", "bc"),
		fc("LINSERT", "l:1", "AFTER", "nope", "x"),
		fc("LSET", "l:1", "0", "zz"),
		fc("LSET", "l:1", "99", "x"),
		fc("RPUSH", "l:1", "a", "a"),
		fc("LREM", "l:1", "2", "a"),
		fc("LPOS", "l:1", "a"),
		fc("LPOS", "l:1", "nope"),
		fc("LPOS", "l:1", "b", "RANK", "1", "COUNT", "0"),
		fc("LPOP", "l:1"),
		fc("RPOP", "l:1"),
		fc("LPOP", "l:1", "2"),
		fc("RPOP", "l:1", "1"),
		fc("LPOP", "l:missing"),
		fc("LPOP", "l:missing", "2"),
		fc("RPOP", "l:missing", "2"),
		fc("LPOP", "l:1", "0"),
		fc("LPOP", "l:1", "-1"),
		fc("LTRIM", "l:1", "0", "1"),
		fc("LRANGE", "l:1", "0", "-1"),
		fc("LLEN", "l:1"),
		fc("LMOVE", "l:1", "l:2", "LEFT", "RIGHT"),
		fc("LMOVE", "l:missing", "l:2", "LEFT", "RIGHT"),
		fc("RPOPLPUSH", "l:1", "l:2"),
		fc("LRANGE", "l:2", "0", "-1"),
		fc("OBJECT", "ENCODING", "l:2"),
		fc("LPUSH", "s:str", "x"),

		// Blocking commands: served at once, and timing out. The RESP2 null of a timeout differs per command.
		fc("RPUSH", "bl:full", "one", "two"),
		fc("BLPOP", "bl:full", "1"),
		fc("BRPOP", "bl:empty", "bl:full", "1"),
		fc("BLPOP", "bl:empty", "0.01"),
		fc("BRPOP", "bl:empty", "0.01"),
		fc("BLMOVE", "bl:empty", "bl:dst", "LEFT", "RIGHT", "0.01"),
		fc("BRPOPLPUSH", "bl:empty", "bl:dst", "0.01"),
		fc("BLMPOP", "0.01", "1", "bl:empty", "LEFT"),
		fc("BZPOPMIN", "bl:empty", "0.01"),
		fc("BZPOPMAX", "bl:empty", "0.01"),
		fc("BZMPOP", "0.01", "1", "bl:empty", "MIN"),
		fc("BLPOP", "bl:empty", "notanumber"),
		fc("BLPOP", "bl:empty", "-1"),
		fc("BLPOP", "s:str", "0.01"),
		fc("XREAD", "BLOCK", "10", "STREAMS", "bl:stream", "$"),
		fc("WAIT", "0", "10"),

		// Sets: intsets, so member order is numeric order.
		fc("SADD", "set:a", "3", "1", "2", "5"),
		fc("SADD", "set:b", "5", "3", "4"),
		fc("SADD", "set:a", "1"),
		fc("SMEMBERS", "set:a"),
		fc("SMEMBERS", "set:missing"),
		fc("SISMEMBER", "set:a", "2"),
		fc("SISMEMBER", "set:a", "9"),
		fc("SMISMEMBER", "set:a", "1", "9", "5"),
		fc("SCARD", "set:a"),
		fc("SINTER", "set:a", "set:b"),
		fc("SINTER", "set:a", "set:missing"),
		fc("SDIFF", "set:a", "set:b"),
		fc("SUNIONSTORE", "set:u", "set:a", "set:b"),
		fc("SMEMBERS", "set:u"),
		fc("SINTERCARD", "2", "set:a", "set:b"),
		fc("SREM", "set:a", "1", "9"),
		fc("SMEMBERS", "set:a"),
		fc("OBJECT", "ENCODING", "set:a"),
		fc("SADD", "s:str", "1"),

		// Sorted sets.
		fc("ZADD", "z:1", "1", "one", "2", "two", "3", "three", "2.5", "twohalf"),
		fc("ZADD", "z:1", "INCR", "10", "one"),
		fc("ZADD", "z:1", "NX", "INCR", "1", "one"),
		fc("ZADD", "z:1", "XX", "CH", "0.5", "two", "9", "nine"),
		fc("ZADD", "z:1", "notafloat", "x"),
		fc("ZRANGE", "z:1", "0", "-1", "WITHSCORES"),
		fc("ZRANGE", "z:1", "(1", "+inf", "BYSCORE", "LIMIT", "0", "2"),
		fc("ZRANGEBYSCORE", "z:1", "-inf", "+inf", "WITHSCORES", "LIMIT", "1", "2"),
		fc("ZREVRANGE", "z:1", "0", "1", "WITHSCORES"),
		fc("ZRANGEBYLEX", "z:1", "-", "+"),
		fc("ZSCORE", "z:1", "twohalf"),
		fc("ZSCORE", "z:1", "nomember"),
		fc("ZMSCORE", "z:1", "one", "nomember", "three"),
		fc("ZINCRBY", "z:1", "0.1", "three"),
		fc("ZINCRBY", "z:1", "1e400", "three"),
		fc("ZRANK", "z:1", "three"),
		fc("ZRANK", "z:1", "nomember"),
		fc("ZREVRANK", "z:1", "three"),
		fc("ZCARD", "z:1"),
		fc("ZCOUNT", "z:1", "1", "3"),
		fc("ZPOPMIN", "z:1"),
		fc("ZPOPMAX", "z:1", "2"),
		fc("ZPOPMIN", "z:missing"),
		fc("ZADD", "z:2", "1", "two", "7", "seven"),
		fc("ZRANGESTORE", "z:stored", "z:1", "0", "-1"),
		fc("ZUNION", "2", "z:1", "z:2", "WITHSCORES"),
		fc("ZUNIONSTORE", "z:u", "2", "z:1", "z:2", "WEIGHTS", "2", "3"),
		fc("ZINTER", "2", "z:1", "z:2", "WITHSCORES"),
		fc("ZRANGE", "z:u", "0", "-1", "WITHSCORES"),
		fc("OBJECT", "ENCODING", "z:u"),
		fc("ZADD", "s:str", "1", "x"),
		fc("SORT", "set:a"),
		fc("SORT", "set:a", "DESC", "LIMIT", "0", "2"),
		fc("SORT", "l:2", "ALPHA"),
		fc("SORT", "l:2"),
		fc("SORT_RO", "set:u", "DESC"),

		// Streams with explicit ids.
		fc("XADD", "x:1", "1-1", "f", "v1"),
		fc("XADD", "x:1", "1-2", "f", "v2", "g", "w2"),
		fc("XADD", "x:1", "2-0", "f", "v3"),
		fc("XADD", "x:1", "1-5", "f", "old"),
		fc("XADD", "x:1", "NOMKSTREAM", "3-0", "f", "v"),
		fc("XADD", "x:nomk", "NOMKSTREAM", "3-0", "f", "v"),
		fc("XLEN", "x:1"),
		fc("XRANGE", "x:1", "-", "+"),
		fc("XRANGE", "x:1", "1-2", "+", "COUNT", "1"),
		fc("XREVRANGE", "x:1", "+", "-", "COUNT", "2"),
		fc("XRANGE", "x:missing", "-", "+"),
		fc("XREAD", "COUNT", "2", "STREAMS", "x:1", "0-0"),
		fc("XREAD", "STREAMS", "x:1", "x:missing", "0", "0"),
		fc("XREAD", "STREAMS", "x:1", "9-0"),
		fc("XGROUP", "CREATE", "x:1", "grp", "0"),
		fc("XGROUP", "CREATE", "x:1", "grp", "0"),
		fc("XGROUP", "CREATE", "x:missing", "grp", "0"),
		fc("XREADGROUP", "GROUP", "grp", "alice", "COUNT", "2", "STREAMS", "x:1", ">"),
		fc("XREADGROUP", "GROUP", "grp", "alice", "STREAMS", "x:1", "0"),
		fc("XACK", "x:1", "grp", "1-1", "9-9"),
		fc("XPENDING", "x:1", "grp"),
		fc("XREADGROUP", "GROUP", "nogroup", "alice", "STREAMS", "x:1", ">"),
		fc("XREADGROUP", "GROUP", "grp", "bob", "BLOCK", "10", "STREAMS", "x:1", ">"),
		fc("XREADGROUP", "GROUP", "grp", "bob", "BLOCK", "10", "STREAMS", "x:1", ">"),
		fc("XDEL", "x:1", "1-1"),
		fc("XTRIM", "x:1", "MAXLEN", "1"),
		fc("XRANGE", "x:1", "-", "+"),
		fc("XADD", "s:str", "*", "f", "v"),

		// Geo.
		fc("GEOADD", "g:1", "13.361389", "38.115556", "Palermo", "15.087269", "37.502669", "Catania"),
		fc("GEOPOS", "g:1", "Palermo", "nosuch", "Catania"),
		fc("GEOPOS", "g:missing", "Palermo"),
		fc("GEODIST", "g:1", "Palermo", "Catania"),
		fc("GEODIST", "g:1", "Palermo", "Catania", "km"),
		fc("GEODIST", "g:1", "Palermo", "nosuch"),
		fc("GEOHASH", "g:1", "Palermo", "nosuch"),
		fc("GEOSEARCH", "g:1", "FROMLONLAT", "15", "37", "BYRADIUS", "200", "km", "ASC"),
		fc("GEOSEARCH", "g:1", "FROMMEMBER", "Palermo", "BYBOX", "400", "400", "km", "ASC", "WITHCOORD", "WITHDIST", "WITHHASH"),
		fc("GEOADD", "g:1", "200", "100", "bad"),

		// HyperLogLog: GET of the sketch returns its binary encoding.
		fc("PFADD", "hll:1", "a", "b", "c", "d"),
		fc("PFADD", "hll:1", "a"),
		fc("PFCOUNT", "hll:1"),
		fc("PFADD", "hll:2", "d", "e"),
		fc("PFCOUNT", "hll:1", "hll:2"),
		fc("PFMERGE", "hll:3", "hll:1", "hll:2"),
		fc("PFCOUNT", "hll:3"),
		fc("GET", "hll:3"),
		fc("PFADD", "s:str", "x"),

		// Bitmaps.
		fc("SETBIT", "bm:1", "7", "1"),
		fc("SETBIT", "bm:1", "15", "1"),
		fc("SETBIT", "bm:1", "7", "0"),
		fc("GETBIT", "bm:1", "15"),
		fc("GETBIT", "bm:1", "100000"),
		fc("BITCOUNT", "bm:1"),
		fc("BITCOUNT", "bm:1", "0", "0"),
		fc("BITPOS", "bm:1", "1"),
		fc("BITPOS", "bm:1", "0"),
		fc("BITFIELD", "bm:1", "GET", "u8", "0", "INCRBY", "u8", "8", "300"),
		fc("GET", "bm:1"),
		fc("SETBIT", "bm:1", "7", "2"),

		// Scripts and functions.
		fc("EVAL", "return 'a string'", "0"),
		fc("EVAL", "return 42", "0"),
		fc("EVAL", "return 3.99", "0"),
		fc("EVAL", "return {1, 'two', {3, 'four'}, nil, 5}", "0"),
		fc("EVAL", "return nil", "0"),
		fc("EVAL", "return false", "0"),
		fc("EVAL", "return true", "0"),
		fc("EVAL", "return {}", "0"),
		fc("EVAL", "return redis.status_reply('FINE')", "0"),
		fc("EVAL", "return redis.error_reply('MYERR something broke')", "0"),
		fc("EVAL", "return redis.error_reply('no code here')", "0"),
		fc("EVAL", "return {err='CUSTOM table error'}", "0"),
		fc("EVAL", "return nosuchglobal", "0"),
		fc("EVAL", "local x = \n\n error('at line three')", "0"),
		fc("EVAL", "return redis.call('incr', KEYS[1])", "1", "s:str"),
		fc("EVAL", "return redis.pcall('incr', KEYS[1])", "1", "s:str"),
		fc("EVAL", "return redis.call('nosuchcommand')", "0"),
		fc("EVAL", "this is not lua", "0"),
		fc("EVAL", "return {KEYS[1], ARGV[1], ARGV[2]}", "1", "k", "a1", "a2"),
		fc("EVAL", "return 1", "notanumber"),
		fc("EVAL", "return 1", "5", "k"),
		fc("GET", "lua:set"),
		fc("EVAL", "return redis.call('set', 'lua:set', 'by script')", "0"),
		fc("GET", "lua:set"),
		fc("EVAL", "return redis.call('set', KEYS[1], ARGV[1])", "1", "lua:set", "declared"),
		fc("GET", "lua:set"),
		fc("SCRIPT", "LOAD", loaded),
		fc("EVALSHA", loadedSHA, "0", "x"),
		fc("EVALSHA", strings.ToUpper(loadedSHA), "0", "y"),
		fc("SCRIPT", "EXISTS", loadedSHA, "ffffffffffffffffffffffffffffffffffffffff"),
		fc("EVALSHA", "ffffffffffffffffffffffffffffffffffffffff", "0"),
		fc("EVALSHA", "short", "0"),
		fc("EVAL_RO", "return redis.call('get', KEYS[1])", "1", "s:str"),
		fc("EVAL_RO", "return redis.call('set', KEYS[1], 'x')", "1", "s:str"),
		fc("FUNCTION", "LOAD", lib),
		fc("FUNCTION", "LOAD", lib),
		fc("FUNCTION", "LOAD", "not a library"),
		fc("GET", "fn:k"),
		fc("FCALL", "fset", "1", "fn:k", "from function"),
		fc("GET", "fn:k"),
		fc("FCALL", "fget", "1", "fn:k"),
		fc("FCALL_RO", "fro", "0", "read only"),
		fc("FCALL_RO", "fget", "1", "fn:k"),
		fc("FCALL", "nosuchfunction", "0"),

		// Errors.
		fc("NOSUCHCOMMAND", "arg1", "arg2"),
		fc("NOSUCHCOMMAND"),
		fc("nosuchcommand", long, long),
		fc("OBJECT", "NOSUCHSUB", "x"),
		fc("CLIENT", "NOSUCHSUB"),
		fc("CLIENT"),
		fc("XGROUP", "NOSUCHSUB"),
		fc("HSET", "h:1"),
		fc("LPUSH", "l:1"),
		fc("SET", "onlykey"),
		fc("SET", "s:str", "v", "BOGUS"),
		fc("ZADD", "z:1", "INCR", "1", "a", "2", "b"),
		fc("LRANGE", "l:1", "a", "b"),
		fc("GET", "l:1"),
		fc("MGET", "l:1", "s:str", "l:1", "nc:missing"),
		fc("RPUSH", "nc:list", "x"),
		fc("SET", "nc:str", "bypassed"),
		fc("GET", "nc:list"),
		fc("GET", "nc:str"),
		fc("GET", "nc:str"),
		fc("MGET", "nc:list", "nc:str", "s:str", "nc:missing", "l:1"),

		// Transactions.
		fc("MULTI"),
		fc("SET", "tx:a", "1"),
		fc("INCR", "tx:a"),
		fc("GET", "tx:a"),
		fc("LPUSH", "tx:a", "x"),
		fc("MGET", "tx:a", "tx:missing"),
		fc("PING"),
		fc("ECHO", "in multi"),
		fc("BLPOP", "tx:emptylist", "5"),
		fc("EXEC"),
		fc("GET", "tx:a"),
		fc("MULTI"),
		fc("NOSUCHCOMMAND", "x"),
		fc("SET", "tx:b", "never"),
		fc("EXEC"),
		fc("GET", "tx:b"),
		fc("MULTI"),
		fc("GET"),
		fc("EXEC"),
		fc("MULTI"),
		fc("SET", "tx:c", "discarded"),
		fc("DISCARD"),
		fc("GET", "tx:c"),
		fc("EXEC"),
		fc("DISCARD"),
		fc("MULTI"),
		fc("MULTI"),
		fc("SET", "tx:d", "after nested"),
		fc("EXEC"),
		fc("GET", "tx:d"),
		fc("MULTI"),
		fc("WATCH", "tx:d"),
		fc("GET", "tx:d"),
		fc("EXEC"),
		fc("MULTI"),
		fc("OBJECT", "NOSUCHSUB", "x"),
		fc("SET", "tx:e", "never"),
		fc("EXEC"),
		fc("MULTI"),
		fc("nosuchcommand", long, long),
		fc("EXEC"),
		fc("MULTI"),
		fc("SET", "tx:f"),
		fc("EXEC"),
		fc("MULTI"),
		fc("NOSUCHCOMMAND", strings.Repeat("a", 100), strings.Repeat("b", 100)),
		fc(strings.Repeat("N", 200), "x"),
		fc(append([]string{strings.Repeat("N", 200)}, strings.Split(strings.Repeat("abcd ", 40), " ")[:40]...)...),
		fc("NOSUCHCOMMAND", "line\r\nbreak"),
		fc("EXEC"),
		fc("MULTI"),
		fc("CLIENT", "NOSUCHSUB"),
		fc("EXEC"),
		fc("MULTI"),
		fc("OBJECT", "ENCODING"),
		fc("EXEC"),
		fc("MULTI"),
		fc("EXEC"),
		fc("MULTI"),
		fc("UNWATCH"),
		fc("SET", "tx:g", "after unwatch"),
		fc("EXEC"),
		fc("MULTI"),
		fc("SET", "tx:h", "reset"),
		fc("RESET"),
		fc("EXEC"),
		fc("GET", "tx:h"),
		fc("GET", "w:1"),
		fc("WATCH", "w:1"),
		fc("GET", "w:1"),
		fc("MULTI"),
		fc("SET", "w:1", "watched"),
		fc("GET", "w:1"),
		fc("EXEC"),
		fc("GET", "w:1"),
		fc("WATCH", "w:1", "w:2"),
		fc("SET", "w:1", "touched by the watcher"),
		fc("MULTI"),
		fc("SET", "w:1", "never"),
		fc("EXEC"),
		fc("GET", "w:1"),
		fc("WATCH", "w:1"),
		fc("UNWATCH"),
		fc("UNWATCH"),
		fc("WATCH"),

		// Reply modes.
		fcQuiet("CLIENT", "REPLY", "SKIP"),
		fcQuiet("SET", "r:1", "skipped"),
		fc("GET", "r:1"),
		fcQuiet("CLIENT", "REPLY", "OFF"),
		fcQuiet("SET", "r:1", "silent"),
		fcQuiet("GET", "r:1"),
		fcQuiet("NOSUCHCOMMAND"),
		fc("CLIENT", "REPLY", "ON"),
		fc("GET", "r:1"),
		fc("CLIENT", "REPLY", "MAYBE"),

		// Binary keys and values, the empty string, a large value.
		fc("SET", binKey, bin),
		fc("GET", binKey),
		fc("STRLEN", binKey),
		fc("SET", "bin:crlf", "line1\r\nline2\r\n"),
		fc("GET", "bin:crlf"),
		fc("SET", "", "empty key"),
		fc("GET", ""),
		fc("SET", "bin:empty", ""),
		fc("GET", "bin:empty"),
		fc("MGET", binKey, "", "bin:empty", "bin:crlf"),
		fc("HSET", "bin:hash", bin, bin),
		fc("HGET", "bin:hash", bin),
		fc("SET", "big:1", big),
		fc("GET", "big:1"),
		fc("STRLEN", "big:1"),
		fc("GETRANGE", "big:1", "1048570", "-1"),
		fc("OBJECT", "ENCODING", "big:1"),
		fc("APPEND", "big:1", "+"),
		fc("SET", hugeKey, "value under a 70 KB key"),
		fc("GET", hugeKey),
		fc("GET", hugeKey),
		fc("MGET", hugeKey, "c:none"),

		// Cached reads: the second GET of each key comes from featcache's memory.
		fc("SET", "c:1", "cached value"),
		fc("SET", "c:2", "12345"),
		fc("SET", "c:ttl", "expiring", "EX", "3600"),
		fc("MSET", "nc:1", "not cached", "c:3", "three"),
	}
	for i := 0; i < 2; i++ {
		s = append(s,
			fc("GET", "c:1"),
			fc("GET", "c:2"),
			fc("GET", "c:ttl"),
			fc("GET", "c:missing"),
			fc("GET", binKey),
			fc("GET", ""),
			fc("GET", "bin:empty"),
			fc("GET", "bin:crlf"),
			fc("GET", "hll:3"),
			fc("GET", "h:1"),
			fc("GET", "big:1"),
			fc("MGET", "c:1", "c:2", "nc:1", "c:missing", "h:1", "c:1", "c:3"),
		)
	}
	// An MGET of many keys, hits and misses mixed, twice; then more reads and forwards in one pipeline than a
	// segment takes, so the pipelined run crosses segment boundaries.
	mset := []string{"MSET"}
	mget := []string{"MGET"}
	for i := 0; i < 300; i++ {
		k := "many:" + strconv.Itoa(i)
		mset = append(mset, k, "v"+strconv.Itoa(i))
		mget = append(mget, k, "many:missing:"+strconv.Itoa(i), k)
	}
	s = append(s, fc(mset...), fc(mget...), fc(mget...))
	for i := 0; i < 2100; i++ {
		s = append(s, fc("STRLEN", "many:"+strconv.Itoa(i%300)), fc("GET", "many:"+strconv.Itoa(i%400)))
	}
	s = append(s,
		fc("APPEND", "c:1", " changed"),
		fc("INCR", "c:2"),
		fc("GET", "c:1"),
		fc("GET", "c:2"),
		fc("MGET", "c:1", "c:2"),
		fc("SORT", "set:u", "STORE", "c:3"),
		fc("GET", "c:3"),
		fc("LRANGE", "c:3", "0", "-1"),
		fc("EXPIREAT", "c:ttl", "1"),
		fc("GET", "c:ttl"),
		fc("MOVE", "c:1", "1"),
		fc("GET", "c:1"),
		fc("SET", "c:swap", "db0"),
		fc("GET", "c:swap"),
		fc("SWAPDB", "0", "1"),
		fc("GET", "c:swap"),
		fc("GET", "c:1"),
		fc("SWAPDB", "0", "1"),
		fc("GET", "c:swap"),
		fc("FLUSHDB"),
		fc("GET", "c:swap"),
		fc("DBSIZE"),
		fc("RESET"),
		fc("CLIENT", "GETNAME"),
		fc("QUIT"),
	)
	return s
}

// fidWatchScript has another client change watched keys between WATCH and EXEC. It runs one command at a time,
// since the side connection's command must land between the two.
func fidWatchScript() []fidStep {
	return []fidStep{
		fc("SET", "ow:1", "before"),
		fc("GET", "ow:1"),
		fc("WATCH", "ow:1"),
		fc("GET", "ow:1"),
		fcSide("SET", "ow:1", "changed by another client"),
		fc("MULTI"),
		fc("SET", "ow:1", "never"),
		fc("GET", "ow:1"),
		fc("EXEC"),
		fc("GET", "ow:1"),
		fc("WATCH", "ow:2"),
		fcSide("SET", "ow:other", "unrelated"),
		fc("MULTI"),
		fc("SET", "ow:2", "applied"),
		fc("EXEC"),
		fc("GET", "ow:2"),
		fc("WATCH", "ow:2"),
		fcSide("DEL", "ow:2"),
		fc("MULTI"),
		fc("GET", "ow:2"),
		fc("EXEC"),
		fc("GET", "ow:2"),
		fc("WATCH", "ow:3"),
		fcSide("SET", "ow:3", "changed"),
		fc("UNWATCH"),
		fc("MULTI"),
		fc("SET", "ow:3", "applied after unwatch"),
		fc("EXEC"),
		fc("GET", "ow:3"),
		// EXEC and DISCARD without MULTI are errors that leave the watched keys watched.
		fc("WATCH", "ow:4"),
		fc("EXEC"),
		fcSide("SET", "ow:4", "changed"),
		fc("MULTI"),
		fc("SET", "ow:4", "never"),
		fc("EXEC"),
		fc("GET", "ow:4"),
		fc("WATCH", "ow:5"),
		fc("DISCARD"),
		fcSide("SET", "ow:5", "changed"),
		fc("MULTI"),
		fc("SET", "ow:5", "never"),
		fc("EXEC"),
		fc("GET", "ow:5"),
	}
}

// fidWatchIsolationScript checks that one client's watched keys never abort another client's transaction.
func fidWatchIsolationScript() []fidStep {
	return []fidStep{
		fc("WATCH", "iso:1"),
		fc("EXEC"),
		fc("PING"),
		fcSide("SET", "iso:1", "changed"),
		fcOther("WATCH", "iso:2"),
		fcOther("MULTI"),
		fcOther("SET", "iso:2", "other client"),
		fcOther("EXEC"),
		fcOther("GET", "iso:2"),
		fc("WATCH", "iso:3"),
		fc("DISCARD"),
		fcSide("SET", "iso:3", "changed"),
		fcOther("WATCH", "iso:4"),
		fcOther("MULTI"),
		fcOther("SET", "iso:4", "other client"),
		fcOther("EXEC"),
		fcOther("GET", "iso:4"),
	}
}

// fidReplyModeScript walks CLIENT REPLY through its transitions. A reply sent where Redis sends none shifts every
// reply after it, so the script ends with a distinct PING.
func fidReplyModeScript() []fidStep {
	return []fidStep{
		fcQuiet("CLIENT", "REPLY", "SKIP"),
		fc("CLIENT", "REPLY", "ON"),
		fc("PING", "after skip then on"),
		fcQuiet("CLIENT", "REPLY", "SKIP"),
		fcQuiet("CLIENT", "REPLY", "SKIP"),
		fcQuiet("PING", "skipped by the second skip"),
		fc("PING", "answered"),
		fcQuiet("CLIENT", "REPLY", "OFF"),
		fcQuiet("CLIENT", "REPLY", "SKIP"),
		fcQuiet("PING", "off"),
		fc("CLIENT", "REPLY", "ON"),
		fc("PING", "on again"),
		fcQuiet("CLIENT", "REPLY", "SKIP"),
		fcQuiet("MGET", "rm:1", "rm:2"),
		fc("MGET", "rm:1", "rm:2"),
		fcQuiet("CLIENT", "REPLY", "OFF"),
		fcQuiet("SET", "rm:1", "set while off"),
		fcQuiet("GET", "rm:1"),
		fc("CLIENT", "REPLY", "ON"),
		fc("GET", "rm:1"),
		fc("PING", "end of script"),
	}
}

// fidPubSubScript subscribes, receives what another client publishes, and leaves subscribed mode again.
func fidPubSubScript() []fidStep {
	return []fidStep{
		fc("SET", "ps:k", "v"),
		fc("GET", "ps:k"),
		fcFrames(2, "SUBSCRIBE", "ch:a", "ch:b"),
		fc("PSUBSCRIBE", "pat:*"),
		fcSide("PUBLISH", "ch:a", "hello"),
		fcRecv("message on ch:a"),
		fcSide("PUBLISH", "pat:1", "to the pattern"),
		fcRecv("pmessage on pat:*"),
		fcSide("PUBLISH", "nobody", "x"),
		fc("PING"),
		fc("PING", "in subscribed mode"),
		fc("GET", "ps:k"),
		fc("SET", "ps:k", "w"),
		fcFrames(2, "SUBSCRIBE", "ch:a", "ch:c"),
		fcSide("PUBLISH", "ch:c", "bin\x00\r\n"),
		fcRecv("message on ch:c"),
		fcFrames(3, "UNSUBSCRIBE", "ch:a", "ch:b", "ch:c"),
		fc("PING", "still subscribed to a pattern"),
		fc("PUNSUBSCRIBE", "pat:*"),
		fc("PING", "not subscribed"),
		fc("GET", "ps:k"),
		fc("UNSUBSCRIBE"),
		fc("PUNSUBSCRIBE", "never:*"),
		fc("SSUBSCRIBE", "sh:1"),
		fcSide("SPUBLISH", "sh:1", "sharded"),
		fcRecv("smessage on sh:1"),
		fc("SUNSUBSCRIBE", "sh:1"),
		fc("GET", "ps:k"),
		fc("SUBSCRIBE", "ch:z"),
		fc("RESET"),
		fc("GET", "ps:k"),
		fc("SUBSCRIBE", "ch:q"),
		fc("QUIT"),
	}
}

// fidPasswordScript runs against a Redis with requirepass and a featcache with a password: what an
// unauthenticated client gets, AUTH, and RESET ending the authentication.
func fidPasswordScript() []fidStep {
	return []fidStep{
		fc("GET", "pw:k"),
		fc("PING"),
		fc("NOSUCHCOMMAND", "a"),
		fc("GET"),
		fc("HELLO", "2"),
		fc("AUTH", "wrong"),
		fc("AUTH", "default", "wrong"),
		fc("AUTH", "x", "y", "z"),
		fc("AUTH", "fidpass"),
		fc("SET", "pw:k", "v"),
		fc("GET", "pw:k"),
		fc("AUTH", "default", "fidpass"),
		fc("RESET"),
		fc("GET", "pw:k"),
		fcNorm(fidNormHelloID, "HELLO", "2", "AUTH", "default", "fidpass"),
		fc("GET", "pw:k"),
		fc("QUIT"),
	}
}

// fidInlineScript sends inline commands, as telnet and hand-written clients do, including Redis's quoting rules.
func fidInlineScript() []fidStep {
	return []fidStep{
		fcInline("PING"),
		fcInline("  PING   spaced  "),
		fcInline("SET inl:1 \"quoted value\""),
		fcInline("GET inl:1"),
		fcInline("GET inl:1"),
		fcInline("SET inl:2 'single \\x41 quoted'"),
		fcInline("GET inl:2"),
		fcInline("SET inl:3 \"\\x41\\x42\\n\\t\\\"\""),
		fcInline("GET inl:3"),
		fcInline("ECHO \"\""),
		fcInline("MGET inl:1 inl:missing inl:2"),
		fcInline("NOSUCHCOMMAND a b"),
		fcInline("GET"),
		fc("GET", "inl:3"),
		fcInline("SET inl:4 \"unbalanced"),
	}
}

// fidTarget is one side of the comparison: the address the script's client uses, and the Redis that holds the
// data (for side connections).
type fidTarget struct {
	addr  string
	redis *redistest.Server
}

// fidRunSequential sends the script one command at a time and returns each reply (nil for commands that get
// none).
func fidRunSequential(t *testing.T, tgt fidTarget, script []fidStep) [][]byte {
	t.Helper()
	var conns [3]*redistest.Conn
	conn := func(on fidConn) *redistest.Conn {
		if conns[on] == nil {
			addr := tgt.addr
			if on == fidSide {
				addr = tgt.redis.Addr()
			}
			conns[on] = redistest.Dial(t, addr)
		}
		return conns[on]
	}
	replies := make([][]byte, len(script))
	for i, st := range script {
		c := conn(st.on)
		var err error
		switch {
		case st.recvOnly:
		case st.raw != "":
			_, err = c.NetConn().Write([]byte(st.raw))
		default:
			err = c.Send(st.args...)
		}
		if err != nil {
			t.Fatalf("%s: send %s: %v", tgt.addr, fidCmdString(st.args), err)
		}
		if st.noReply {
			continue
		}
		replies[i] = fidReadFrames(t, tgt, c, st)
	}
	for _, c := range conns {
		if c != nil {
			fidExpectNoMore(t, c)
			c.Close()
		}
	}
	return replies
}

// fidRunPipelined writes the whole script at once and then reads every reply.
func fidRunPipelined(t *testing.T, tgt fidTarget, script []fidStep) [][]byte {
	t.Helper()
	conn := redistest.Dial(t, tgt.addr)
	defer conn.Close()
	var payload []byte
	for _, st := range script {
		switch {
		case st.on != fidMain || st.recvOnly:
			t.Fatalf("%s on another connection cannot be pipelined", fidCmdString(st.args))
		case st.raw != "":
			payload = append(payload, st.raw...)
		default:
			payload = append(payload, redistest.Encode(st.args...)...)
		}
	}
	// The payload is larger than the socket buffers and the replies come back while it is written: write it from
	// another goroutine, as a client library does.
	written := make(chan error, 1)
	go func() {
		_, err := conn.NetConn().Write(payload)
		written <- err
	}()
	replies := make([][]byte, len(script))
	for i, st := range script {
		if st.noReply {
			continue
		}
		replies[i] = fidReadFrames(t, tgt, conn, st)
	}
	if err := <-written; err != nil {
		t.Fatalf("%s: write pipeline: %v", tgt.addr, err)
	}
	fidExpectNoMore(t, conn)
	return replies
}

// fidReadFrames reads the reply frames of one step.
func fidReadFrames(t *testing.T, tgt fidTarget, c *redistest.Conn, st fidStep) []byte {
	t.Helper()
	var all []byte
	for n := max(st.frames, 1); n > 0; n-- {
		reply, err := c.ReadTimeout(10 * time.Second)
		if err != nil {
			t.Fatalf("%s: reply to %s: %v (read %.200q)", tgt.addr, fidCmdString(st.args), err, reply)
		}
		all = append(all, reply...)
	}
	return all
}

// fidExpectNoMore checks that nothing follows the last expected reply: after QUIT the connection is closed, and a
// command that should not have been answered would show up here.
func fidExpectNoMore(t *testing.T, conn *redistest.Conn) {
	t.Helper()
	if extra, err := conn.ReadTimeout(100 * time.Millisecond); err == nil || len(extra) > 0 {
		t.Errorf("unexpected bytes after the last reply: %.200q", extra)
	}
}

// fidCompare reports every command whose replies differ.
func fidCompare(t *testing.T, script []fidStep, got, want [][]byte) {
	t.Helper()
	diffs := 0
	for i, st := range script {
		g, w := got[i], want[i]
		if st.norm != nil {
			g, w = st.norm(g), st.norm(w)
		}
		if !bytes.Equal(g, w) {
			diffs++
			t.Errorf("#%d %s:\n got %s;\nwant %s", i, fidCmdString(st.args), fidShow(g), fidShow(w))
		}
	}
	if diffs > 0 {
		t.Logf("%d of %d replies differ", diffs, len(script))
	}
}

// fidShow quotes a reply, shortened when it is large.
func fidShow(b []byte) string {
	if len(b) > 300 {
		return strconv.Quote(string(b[:150])) + "..." + strconv.Quote(string(b[len(b)-100:])) +
			" (" + strconv.Itoa(len(b)) + " bytes)"
	}
	return strconv.Quote(string(b))
}

// fidCmdString shows a command line for failure messages, shortening long arguments.
func fidCmdString(args []string) string {
	parts := make([]string, len(args))
	for i, a := range args {
		if len(a) > 40 {
			a = a[:40] + "...(" + strconv.Itoa(len(a)) + " bytes)"
		}
		parts[i] = strconv.Quote(a)
	}
	if len(parts) > 8 {
		parts = append(parts[:8], "...("+strconv.Itoa(len(args))+" arguments)")
	}
	return strings.Join(parts, " ")
}

// fidDumpPayload returns DUMP of a string value, taken from a throw-away Redis so that the compared servers'
// keyspaces see nothing but the script.
func fidDumpPayload(t *testing.T) string {
	t.Helper()
	srv := redistest.Start(t)
	c := redistest.Dial(t, srv.Addr())
	defer c.Close()
	c.Do("SET", "src", "dumped")
	reply := c.Do("DUMP", "src")
	payload, isNil, ok := resp.BulkPayload(reply)
	if !ok || isNil {
		t.Fatalf("DUMP: %q", reply)
	}
	return string(payload)
}

// fidDirect starts the Redis a script's client uses directly. With password, it requires fidPassword.
func fidDirect(t *testing.T, password bool) fidTarget {
	t.Helper()
	args := fidelityRedisArgs
	if password {
		args = append([]string{"--requirepass", fidPassword}, fidelityRedisArgs...)
	}
	r := redistest.Start(t, args...)
	return fidTarget{addr: r.Addr(), redis: r}
}

// fidProxied starts a Redis and a featcache in front of it. With password, featcache requires fidPassword (its
// Redis does not), so that its clients see what the clients of a Redis with requirepass see.
func fidProxied(t *testing.T, password bool) fidTarget {
	t.Helper()
	cfg := fidelityConfig
	if password {
		cfg = "password: " + fidPassword + "\n" + fidelityConfig
	}
	r := redistest.Start(t, fidelityRedisArgs...)
	p := startProxyOn(t, r, cfg)
	t.Cleanup(func() {
		if n := p.srv.Stats().Panics.Load(); n != 0 {
			t.Errorf("featcache recovered %d connection panics", n)
		}
	})
	return fidTarget{addr: p.addr, redis: r}
}

func TestWireFidelity(t *testing.T) {
	fidCompareScripts(t, fidelityScript(fidDumpPayload(t)), []fidScript{
		{name: "WatchedKeyChangedByAnotherClient", steps: fidWatchScript()},
		{name: "WatchIsPerClient", steps: fidWatchIsolationScript()},
		{name: "ReplyModes", steps: fidReplyModeScript()},
		{name: "PubSub", steps: fidPubSubScript()},
		{name: "Password", steps: fidPasswordScript(), password: true},
		{name: "Inline", steps: fidInlineScript()},
	})
}

// fidScript is a shorter script, compared one command at a time in a subtest of its own.
type fidScript struct {
	name  string
	steps []fidStep
	// password runs the script against a Redis and a featcache that require fidPassword.
	password bool
}

// fidCompareScripts compares script one command at a time and pipelined, then each of subs one command at a time,
// between a Redis used directly and a second Redis behind featcache, in parallel subtests.
func fidCompareScripts(t *testing.T, script []fidStep, subs []fidScript) {
	t.Helper()
	if len(script) < 150 {
		t.Fatalf("script has %d commands; want at least 150", len(script))
	}
	t.Logf("script: %d commands", len(script))

	// The scripts themselves must be deterministic: two Redis servers answer them with the same bytes, one
	// command at a time and pipelined. Otherwise a difference below would say nothing about featcache.
	t.Run("RedisAgainstRedis", func(t *testing.T) {
		t.Parallel()
		want := fidRunSequential(t, fidDirect(t, false), script)
		got := fidRunPipelined(t, fidDirect(t, false), script)
		fidCompare(t, script, got, want)
		for _, sub := range subs {
			want := fidRunSequential(t, fidDirect(t, sub.password), sub.steps)
			got := fidRunSequential(t, fidDirect(t, sub.password), sub.steps)
			fidCompare(t, sub.steps, got, want)
		}
	})

	t.Run("OneAtATime", func(t *testing.T) {
		t.Parallel()
		want := fidRunSequential(t, fidDirect(t, false), script)
		got := fidRunSequential(t, fidProxied(t, false), script)
		fidCompare(t, script, got, want)
	})

	t.Run("Pipelined", func(t *testing.T) {
		t.Parallel()
		want := fidRunPipelined(t, fidDirect(t, false), script)
		got := fidRunPipelined(t, fidProxied(t, false), script)
		fidCompare(t, script, got, want)
	})

	for _, sub := range subs {
		t.Run(sub.name, func(t *testing.T) {
			t.Parallel()
			want := fidRunSequential(t, fidDirect(t, sub.password), sub.steps)
			got := fidRunSequential(t, fidProxied(t, sub.password), sub.steps)
			fidCompare(t, sub.steps, got, want)
		})
	}
}

// TestWireFidelityRefusals covers the commands featcache refuses on purpose, which are therefore not in the
// compared script: each gets featcache's documented error, and Redis behind it never sees the command.
func TestWireFidelityRefusals(t *testing.T) {
	p := startProxy(t, fidelityConfig)
	denied := func(name string) string {
		return "-ERR command '" + name + "' is disabled by featcache (commands.deny)\r\n"
	}
	refused := func(name string) string {
		return "-ERR '" + name + "' is not supported by featcache: it would change a shared upstream connection\r\n"
	}
	inMulti := func(name string) string {
		return "-ERR '" + name + "' inside MULTI is not supported by featcache\r\n"
	}
	cases := []struct {
		name       string
		setup      [][]string // sent first on the same connection, replies not checked
		args       []string
		want       string
		notReached []string // INFO commandstats names whose call count must not move
		absentName string   // a name no connection in Redis's CLIENT LIST may have afterwards
	}{
		{name: "config set", args: []string{"CONFIG", "SET", "maxmemory", "1"}, want: denied("config|set"), notReached: []string{"config|set"}},
		{name: "config rewrite", args: []string{"CONFIG", "REWRITE"}, want: denied("config|rewrite"), notReached: []string{"config|rewrite"}},
		{name: "config resetstat", args: []string{"CONFIG", "RESETSTAT"}, want: denied("config|resetstat"), notReached: []string{"config|resetstat"}},
		{name: "client pause", args: []string{"CLIENT", "PAUSE", "10"}, want: denied("client|pause"), notReached: []string{"client|pause"}},
		{name: "client unpause", args: []string{"CLIENT", "UNPAUSE"}, want: denied("client|unpause"), notReached: []string{"client|unpause"}},
		// Redis's own syntax checks come before the deny list, as Redis makes them before running anything.
		{name: "config alone", args: []string{"CONFIG"}, want: "-ERR wrong number of arguments for 'config' command\r\n", notReached: []string{"config"}},
		{name: "config set arity", args: []string{"CONFIG", "SET", "maxmemory"}, want: "-ERR wrong number of arguments for 'config|set' command\r\n", notReached: []string{"config|set"}},
		{name: "config unknown subcommand", args: []string{"CONFIG", "GET_XX"}, want: "-ERR unknown subcommand 'GET_XX'. Try CONFIG HELP.\r\n", notReached: []string{"config"}},
		{name: "debug", args: []string{"DEBUG", "SLEEP", "0"}, want: denied("debug"), notReached: []string{"debug"}},
		{name: "shutdown", args: []string{"SHUTDOWN", "NOSAVE"}, want: denied("shutdown"), notReached: []string{"shutdown"}},
		{name: "acl", args: []string{"ACL", "WHOAMI"}, want: denied("acl|whoami"), notReached: []string{"acl|whoami"}},
		{name: "bgsave", args: []string{"BGSAVE"}, want: denied("bgsave"), notReached: []string{"bgsave"}},
		{name: "save", args: []string{"SAVE"}, want: denied("save"), notReached: []string{"save"}},
		{name: "bgrewriteaof", args: []string{"BGREWRITEAOF"}, want: denied("bgrewriteaof"), notReached: []string{"bgrewriteaof"}},
		{name: "replicaof", args: []string{"REPLICAOF", "127.0.0.1", "1"}, want: denied("replicaof"), notReached: []string{"replicaof"}},
		{name: "slaveof", args: []string{"SLAVEOF", "NO", "ONE"}, want: denied("slaveof"), notReached: []string{"slaveof"}},
		{name: "monitor", args: []string{"MONITOR"}, want: denied("monitor"), notReached: []string{"monitor"}},
		{name: "module", args: []string{"MODULE", "LIST"}, want: denied("module|list"), notReached: []string{"module|list"}},
		{name: "failover", args: []string{"FAILOVER"}, want: denied("failover"), notReached: []string{"failover"}},
		{name: "sync", args: []string{"SYNC"}, want: denied("sync"), notReached: []string{"sync"}},
		{name: "psync", args: []string{"PSYNC", "?", "-1"}, want: denied("psync"), notReached: []string{"psync"}},
		{name: "replconf", args: []string{"REPLCONF", "listening-port", "1"}, want: denied("replconf"), notReached: []string{"replconf"}},
		{name: "denied inside multi", setup: [][]string{{"MULTI"}}, args: []string{"CONFIG", "SET", "x", "y"}, want: denied("config|set"), notReached: []string{"config|set"}},
		{name: "select another db", args: []string{"SELECT", "1"}, want: "-ERR featcache serves database 0 only (SELECT 1 is not supported)\r\n", notReached: []string{"select"}},
		// CLIENT TRACKING is served by featcache from its own invalidation streams (tracking.go); the first client
		// to turn it on opens the keyspace stream, whose own CLIENT TRACKING reaches Redis.
		{name: "client tracking", args: []string{"CLIENT", "TRACKING", "ON"}, want: "+OK\r\n"},
		{name: "client caching", args: []string{"CLIENT", "CACHING", "YES"}, want: "-ERR CLIENT CACHING can be called only when the client is in tracking mode with OPTIN or OPTOUT mode enabled\r\n", notReached: []string{"client|caching"}},
		// Answered by featcache as Redis answers a client without tracking.
		{name: "client trackinginfo", args: []string{"CLIENT", "TRACKINGINFO"}, want: "*6\r\n$5\r\nflags\r\n*1\r\n$3\r\noff\r\n$8\r\nredirect\r\n:-1\r\n$8\r\nprefixes\r\n*0\r\n", notReached: []string{"client|trackinginfo"}},
		{name: "client getredir", args: []string{"CLIENT", "GETREDIR"}, want: ":-1\r\n", notReached: []string{"client|getredir"}},
		// featcache's clients are never evicted by Redis, which does not see them: the flag is kept, not sent.
		{name: "client no-evict", args: []string{"CLIENT", "NO-EVICT", "ON"}, want: "+OK\r\n", notReached: []string{"client|no-evict"}},
		{name: "client kill", args: []string{"CLIENT", "KILL", "TYPE", "normal"}, want: ":0\r\n", notReached: []string{"client|kill"}},
		{name: "client list", args: []string{"CLIENT", "LIST", "TYPE", "pubsub"}, want: "$0\r\n\r\n", notReached: []string{"client|list"}},
		// SCRIPT DEBUG YES arms the client: its next EVAL debugs on a dedicated connection (ldb.go); not in a WATCH
		// session, whose commands run on the session's connection. SYNC would block every client of Redis.
		{name: "script debug in watch", setup: [][]string{{"WATCH", "k"}}, args: []string{"SCRIPT", "DEBUG", "YES"}, want: refused("script|debug"), notReached: []string{"script|debug"}},
		{name: "script debug", args: []string{"SCRIPT", "DEBUG", "YES"}, want: "+OK\r\n", notReached: []string{"script|debug"}},
		{name: "script debug sync", args: []string{"SCRIPT", "DEBUG", "SYNC"}, want: "-ERR 'script|debug' is not supported by featcache with SYNC: the debugger would block every client of Redis; use SCRIPT DEBUG YES, or debug on Redis\r\n", notReached: []string{"script|debug"}},
		{name: "select inside multi", setup: [][]string{{"MULTI"}}, args: []string{"SELECT", "0"}, want: inMulti("select"), notReached: []string{"select"}},
		// featcache's own connections set their names as they are dialed (an interactive MULTI takes one), so the
		// proof that the client's SETNAME did not reach Redis is that no connection bears the name.
		{name: "client setname inside multi", setup: [][]string{{"MULTI"}}, args: []string{"CLIENT", "SETNAME", "refused-in-multi"}, want: inMulti("client|setname"), absentName: "refused-in-multi"},
		{name: "subscribe inside multi", setup: [][]string{{"MULTI"}}, args: []string{"SUBSCRIBE", "ch"}, want: inMulti("subscribe"), notReached: []string{"subscribe"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := make([]int, len(tc.notReached))
			for i, name := range tc.notReached {
				before[i] = p.redis.Calls(name)
			}
			c := p.dial()
			defer c.Close()
			for _, s := range tc.setup {
				c.Do(s...)
			}
			if got := string(c.Do(tc.args...)); got != tc.want {
				t.Errorf("%s: got %q; want %q", fidCmdString(tc.args), got, tc.want)
			}
			if got := string(c.Do("PING")); got != "+PONG\r\n" && len(tc.setup) == 0 {
				t.Errorf("PING after %s: got %q; want %q", fidCmdString(tc.args), got, "+PONG\r\n")
			}
			for i, name := range tc.notReached {
				if after := p.redis.Calls(name); after != before[i] {
					t.Errorf("%s reached Redis: cmdstat_%s calls %d -> %d", fidCmdString(tc.args), name, before[i], after)
				}
			}
			if tc.absentName != "" {
				for _, line := range clientList(t, redistest.Dial(t, p.redis.Addr())) {
					if strings.Contains(line, " name="+tc.absentName+" ") {
						t.Errorf("%s reached Redis: %s", fidCmdString(tc.args), line)
					}
				}
			}
		})
	}
}
