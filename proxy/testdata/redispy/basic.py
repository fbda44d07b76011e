"""redis-py against featcache: plain commands, binary data, TTLs, hashes, SCAN, errors, upstream changes.

Run: /usr/bin/python3 basic.py HOST PORT UPSTREAM_PORT
"""

import time

import redis

from fcutil import CheckFailed, args, check, client, eq, poll, raises, run

HOST, PORT, UPSTREAM_PORT = args()
r = client(HOST, PORT)
up = client(HOST, UPSTREAM_PORT)  # the redis-server behind featcache, for changes featcache does not see


def explain_state(key):
    """The state line of CACHE EXPLAIN, featcache's own view of a key."""
    lines = r.execute_command("CACHE", "EXPLAIN", key)  # one status reply per line
    for line in lines:
        if line.startswith(b"state:"):
            return line[len(b"state:"):].decode()
    raise CheckFailed("CACHE EXPLAIN %r has no state line: %r" % (key, lines))


def connection():
    # What redis-py sends when it connects with options, and the server commands clients call at start.
    named = client(HOST, PORT, client_name="model-server-7", db=0)
    eq(named.ping(), True, "PING on a connection opened with client_name")
    eq(named.client_getname(), "model-server-7", "CLIENT GETNAME after redis-py's CLIENT SETNAME")
    check(isinstance(named.client_id(), int), "CLIENT ID is not an int")
    eq(named.echo(b"\x00echo\r\n"), b"\x00echo\r\n", "ECHO binary")
    eq(named.ping(), True, "PING")
    info = named.info("server")
    check("redis_version" in info, "INFO server has no redis_version: %r" % sorted(info)[:10])
    eq(named.execute_command("SELECT", 0), True, "SELECT 0")
    upstream_error(lambda: client(HOST, PORT, password="nope").ping(),
                   lambda: client(HOST, UPSTREAM_PORT, password="nope").ping(), "AUTH when no password is set")
    eq(r.dbsize(), up.dbsize(), "DBSIZE through featcache and straight from Redis")
    r.set("b:conn", "v")
    eq(named.get("b:conn"), b"v", "GET on the named connection")


def get_set_mget():
    eq(r.set("b:a", "1"), True, "SET b:a")
    eq(r.set("b:b", "two"), True, "SET b:b")
    eq(r.get("b:a"), b"1", "GET b:a (miss)")
    # The invalidation of featcache's own SET may arrive after that GET's fill and drop it (a value fetched before
    # an invalidation is never kept), so read again until the entry is there.
    poll(lambda: (r.get("b:a"), explain_state("b:a"))[1], "fresh", 2, "CACHE EXPLAIN b:a after a GET")
    eq(r.get("b:a"), b"1", "GET b:a (hit)")
    eq(r.get("b:missing"), None, "GET b:missing")
    eq(r.get("b:missing"), None, "GET b:missing again")
    keys = ["b:a", "b:missing", "b:a", "b:b", "b:a", "b:new", "b:b"]
    want = [b"1", None, b"1", b"two", b"1", None, b"two"]
    eq(r.mget(keys), want, "MGET with misses and duplicates")
    eq(r.mget(keys), want, "MGET again (hits)")
    eq(r.set("b:new", "fresh"), True, "SET b:new")
    want[5] = b"fresh"
    eq(r.mget(keys), want, "MGET after SET b:new")
    eq(r.mget(["b:b"]), [b"two"], "MGET of one key")
    eq(r.set("b:a", "x", nx=True), None, "SET NX on an existing key")
    eq(r.set("b:a", "y", xx=True, get=True), b"1", "SET XX GET")
    eq(r.get("b:a"), b"y", "GET b:a after SET XX GET")
    eq(r.getset("b:a", "z"), b"y", "GETSET b:a")
    eq(r.get("b:a"), b"z", "GET b:a after GETSET")
    eq(r.mset({"b:m1": "1", "b:b": "2"}), True, "MSET")
    eq(r.mget("b:m1", "b:b", "b:a"), [b"1", b"2", b"z"], "MGET after MSET")
    eq(r.append("b:b", "x"), 2, "APPEND b:b")
    eq(r.get("b:b"), b"2x", "GET after APPEND")
    eq(r.getdel("b:b"), b"2x", "GETDEL b:b")
    eq(r.get("b:b"), None, "GET after GETDEL")
    eq(r.strlen("b:a"), 1, "STRLEN")


def binary():
    key = bytes(range(256))
    value = bytes(range(256)) * 3 + b"\r\n$-1\r\n*2\r\n\r\n" + bytes(range(255, -1, -1))
    eq(r.set(key, value), True, "SET binary key")
    eq(r.get(key), value, "GET binary key (miss)")
    eq(r.get(key), value, "GET binary key (hit)")
    eq(up.get(key), value, "GET binary key straight from Redis")
    crlf = b"k\r\nwith\r\ncrlf\x00"
    eq(r.set(crlf, b"\r\n"), True, "SET key with CRLF")
    eq(r.get(crlf), b"\r\n", "GET key with CRLF")
    eq(r.set(b"b:empty", b""), True, "SET empty value")
    eq(r.get(b"b:empty"), b"", "GET empty value (miss)")
    eq(r.get(b"b:empty"), b"", "GET empty value (hit)")
    eq(r.mget([key, crlf, b"b:empty", b"\x00"]), [value, b"\r\n", b"", None], "MGET binary keys")
    eq(r.set(b"", b"empty key"), True, "SET empty key")
    eq(r.get(b""), b"empty key", "GET empty key")
    for i in range(256):
        k = b"bin:" + bytes([i])
        r.set(k, bytes([i]) * (i + 1))
    for i in range(256):
        k = b"bin:" + bytes([i])
        eq(r.get(k), bytes([i]) * (i + 1), "GET %r" % k)
    got = r.mget([b"bin:" + bytes([i]) for i in range(256)])
    eq(got, [bytes([i]) * (i + 1) for i in range(256)], "MGET of 256 one-byte-suffix keys")
    big = bytes(range(256)) * 1024 + b"\r\n"
    eq(r.set(b"b:big", big), True, "SET 256 KB value")
    eq(r.get(b"b:big"), big, "GET 256 KB value (miss)")
    eq(r.get(b"b:big"), big, "GET 256 KB value (hit)")


def incr():
    eq(r.get("b:n"), None, "GET b:n before INCR (caches the nil)")
    eq(r.incr("b:n"), 1, "INCR b:n")
    eq(r.get("b:n"), b"1", "GET b:n after INCR")
    eq(r.incrby("b:n", 41), 42, "INCRBY b:n 41")
    eq(r.get("b:n"), b"42", "GET b:n after INCRBY")
    eq(r.decr("b:n"), 41, "DECR b:n")
    eq(r.incrby("b:n", -50), -9, "INCRBY b:n -50")
    eq(r.get("b:n"), b"-9", "GET b:n after negative INCRBY")
    eq(r.incrbyfloat("b:f", 1.5), 1.5, "INCRBYFLOAT")
    eq(r.get("b:f"), b"1.5", "GET after INCRBYFLOAT")
    for i in range(1, 101):
        r.incr("b:loop")
        eq(r.get("b:loop"), str(i).encode(), "GET b:loop after INCR %d" % i)
    r.set("b:s", "abc")
    raises(redis.ResponseError, lambda: r.incr("b:s"), "INCR of a string", "not an integer")
    eq(r.get("b:s"), b"abc", "GET b:s after the failed INCR")


def expire():
    r.set("b:e", "v")
    eq(r.get("b:e"), b"v", "GET b:e")
    eq(r.ttl("b:e"), -1, "TTL without expiry")
    eq(r.pttl("b:e"), -1, "PTTL without expiry")
    eq(r.ttl("b:nokey"), -2, "TTL of a missing key")
    eq(r.pttl("b:nokey"), -2, "PTTL of a missing key")
    eq(r.expire("b:e", 100), True, "EXPIRE b:e 100")
    ttl = r.ttl("b:e")
    check(99 <= ttl <= 100, "TTL after EXPIRE 100: got %r; want 99..100" % ttl)
    pttl = r.pttl("b:e")
    check(98000 < pttl <= 100000, "PTTL after EXPIRE 100: got %r; want 98000..100000" % pttl)
    eq(r.persist("b:e"), True, "PERSIST")
    eq(r.ttl("b:e"), -1, "TTL after PERSIST")
    eq(r.expire("b:nokey", 10), False, "EXPIRE of a missing key")
    eq(r.setex("b:sx", 30, "sv"), True, "SETEX")
    eq(r.get("b:sx"), b"sv", "GET after SETEX")
    ttl = r.ttl("b:sx")
    check(29 <= ttl <= 30, "TTL after SETEX 30: got %r; want 29..30" % ttl)
    # A cached value is never served past the key's expiry in Redis.
    eq(r.psetex("b:short", 300, "gone soon"), True, "PSETEX 300 ms")
    start = time.monotonic()
    eq(r.get("b:short"), b"gone soon", "GET b:short right after PSETEX (caches it)")
    eq(r.get("b:short"), b"gone soon", "GET b:short again")
    poll(lambda: r.get("b:short"), None, 2, "GET of a key whose 300 ms TTL ran out")
    elapsed = time.monotonic() - start
    check(elapsed >= 0.25, "b:short vanished after %.3fs; its TTL was 0.3s" % elapsed)
    # An expiry set through featcache on a cached key.
    r.set("b:e2", "v2")
    eq(r.get("b:e2"), b"v2", "GET b:e2 (caches it without expiry)")
    eq(r.pexpire("b:e2", 200), True, "PEXPIRE b:e2 200")
    check(0 < r.pttl("b:e2") <= 200, "PTTL after PEXPIRE 200")
    poll(lambda: r.get("b:e2"), None, 2, "GET of a cached key after PEXPIRE 200 ran out")
    eq(r.exists("b:e2"), 0, "EXISTS after expiry")


def hashes():
    eq(r.hset("b:h", mapping={"f1": "v1", "f2": b"\x00\r\n", "f3": "3"}), 3, "HSET three fields")
    eq(r.hget("b:h", "f1"), b"v1", "HGET f1")
    eq(r.hget("b:h", "f2"), b"\x00\r\n", "HGET binary field value")
    eq(r.hget("b:h", "nope"), None, "HGET missing field")
    eq(r.hget("b:nohash", "f"), None, "HGET missing key")
    eq(r.hgetall("b:h"), {b"f1": b"v1", b"f2": b"\x00\r\n", b"f3": b"3"}, "HGETALL")
    eq(r.hgetall("b:nohash"), {}, "HGETALL missing key")
    eq(r.hmget("b:h", ["f3", "nope", "f1", "f1"]), [b"3", None, b"v1", b"v1"], "HMGET")
    eq(r.hset("b:h", "f1", "v1b"), 0, "HSET existing field")
    eq(r.hget("b:h", "f1"), b"v1b", "HGET after update")
    eq(r.hincrby("b:h", "f3", 4), 7, "HINCRBY")
    eq(r.hmget("b:h", "f1", "f3"), [b"v1b", b"7"], "HMGET after HINCRBY")
    eq(r.hdel("b:h", "f2", "nope"), 1, "HDEL")
    eq(r.hlen("b:h"), 2, "HLEN")
    eq(r.hexists("b:h", "f2"), False, "HEXISTS deleted field")
    eq(sorted(r.hkeys("b:h")), [b"f1", b"f3"], "HKEYS")


def delete_exists():
    r.mset({"b:d1": "1", "b:d2": "2", "b:d3": "3"})
    eq(r.mget("b:d1", "b:d2", "b:d3"), [b"1", b"2", b"3"], "MGET before DEL (caches them)")
    eq(r.exists("b:d1", "b:d2", "b:d1", "b:dx"), 3, "EXISTS counts duplicates")
    eq(r.delete("b:d1", "b:d2", "b:dx"), 2, "DEL two of three")
    eq(r.get("b:d1"), None, "GET b:d1 after DEL")
    eq(r.mget("b:d1", "b:d2", "b:d3"), [None, None, b"3"], "MGET after DEL")
    eq(r.exists("b:d1"), 0, "EXISTS after DEL")
    eq(r.unlink("b:d3"), 1, "UNLINK")
    eq(r.get("b:d3"), None, "GET after UNLINK")
    eq(r.delete("b:d3"), 0, "DEL of a missing key")
    r.set("b:r1", "moved")
    eq(r.get("b:r1"), b"moved", "GET b:r1 (caches it)")
    eq(r.get("b:r2"), None, "GET b:r2 (caches the nil)")
    eq(r.rename("b:r1", "b:r2"), True, "RENAME")
    eq(r.get("b:r1"), None, "GET renamed-away key")
    eq(r.get("b:r2"), b"moved", "GET renamed-to key")
    eq(r.type("b:r2"), b"string", "TYPE")


def scan():
    n = 300
    pipe = r.pipeline(transaction=False)
    for i in range(n):
        pipe.set("scan:%d" % i, i)
    for i in range(50):
        pipe.set("noscan:%d" % i, i)
    pipe.execute()
    for count in (None, 7, 50, 1000):
        seen = {}
        for k in r.scan_iter(match="scan:*", count=count):
            seen[k] = seen.get(k, 0) + 1
        dups = sorted(k for k, c in seen.items() if c > 1)
        eq(dups, [], "keys SCAN MATCH scan:* COUNT %s returned more than once" % count)
        eq(set(seen), {("scan:%d" % i).encode() for i in range(n)}, "keys of SCAN MATCH scan:* COUNT %s" % count)
    typed = set(r.scan_iter(match="b:*", _type="hash"))
    check(b"b:h" in typed, "SCAN TYPE hash did not return b:h: %r" % sorted(typed))
    check(b"b:a" not in typed, "SCAN TYPE hash returned the string b:a")
    cursor, keys = r.scan(0, match="nothing:*", count=10)
    check(isinstance(cursor, int), "SCAN cursor is %r; want an int" % (cursor,))


def upstream_error(fn_featcache, fn_upstream, what, exc_type=redis.ResponseError):
    """Checks that featcache raises exc_type with the same message as Redis for the same call."""
    e_fc = raises(exc_type, fn_featcache, what + " through featcache")
    e_up = raises(exc_type, fn_upstream, what + " straight to Redis")
    eq(str(e_fc), str(e_up), what + ": featcache's error text vs Redis's")
    return e_fc


def errors():
    r.delete("b:list")
    r.rpush("b:list", "a", "b")
    e = upstream_error(lambda: r.get("b:list"), lambda: up.get("b:list"), "GET of a list")
    check(str(e).startswith("WRONGTYPE"), "GET of a list: %r; want WRONGTYPE" % str(e))
    upstream_error(lambda: r.get("b:list"), lambda: up.get("b:list"), "GET of a list, again")
    upstream_error(lambda: r.incr("b:list"), lambda: up.incr("b:list"), "INCR of a list")
    upstream_error(lambda: r.hget("b:list", "f"), lambda: up.hget("b:list", "f"), "HGET of a list")
    upstream_error(lambda: r.hgetall("b:list"), lambda: up.hgetall("b:list"), "HGETALL of a list")
    r.set("b:str", "s")
    upstream_error(lambda: r.lpush("b:str", "x"), lambda: up.lpush("b:str", "x"), "LPUSH on a string")
    eq(r.mget("b:list", "b:str"), [None, b"s"], "MGET with a list key (nil for it, as in Redis)")
    e = upstream_error(lambda: r.execute_command("NOSUCHCOMMAND", "a", "b"),
                       lambda: up.execute_command("NOSUCHCOMMAND", "a", "b"), "unknown command")
    check("unknown command" in str(e), "unknown command error: %r" % str(e))
    upstream_error(lambda: r.execute_command("GET"), lambda: up.execute_command("GET"), "GET without a key")
    upstream_error(lambda: r.execute_command("GET", "a", "b"), lambda: up.execute_command("GET", "a", "b"),
                   "GET with two keys")
    upstream_error(lambda: r.execute_command("MGET"), lambda: up.execute_command("MGET"), "MGET without keys")
    upstream_error(lambda: r.execute_command("SET", "k"), lambda: up.execute_command("SET", "k"), "SET without value")
    upstream_error(lambda: r.execute_command("SET", "k", "v", "BOGUS"),
                   lambda: up.execute_command("SET", "k", "v", "BOGUS"), "SET with a bad option")
    upstream_error(lambda: r.expire("b:str", "x"), lambda: up.expire("b:str", "x"), "EXPIRE with a bad number")
    eq(r.ping(), True, "PING after the errors")
    eq(r.get("b:str"), b"s", "GET after the errors")


def other_writes():
    # Writes other than SET to keys whose values featcache holds: every one is seen by the next GET.
    def cached(key, want):
        eq(r.get(key), want, "GET %s (caches it)" % key)
        eq(r.get(key), want, "GET %s again" % key)

    r.set("o:a", "hello")
    cached("o:a", b"hello")
    eq(r.setrange("o:a", 0, "J"), 5, "SETRANGE")
    cached("o:a", b"Jello")
    eq(r.getex("o:a", px=200), b"Jello", "GETEX PX 200")
    poll(lambda: r.get("o:a"), None, 2, "GET after GETEX PX 200 ran out")
    r.set("o:b", "src")
    cached("o:c", None)
    eq(r.copy("o:b", "o:c"), True, "COPY o:b o:c")
    cached("o:c", b"src")
    eq(r.msetnx({"o:c": "x", "o:d": "y"}), False, "MSETNX with an existing key")
    eq(r.msetnx({"o:d": "d", "o:e": "e"}), True, "MSETNX")
    eq(r.mget("o:c", "o:d", "o:e"), [b"src", b"d", b"e"], "MGET after MSETNX")
    eq(r.setnx("o:d", "no"), False, "SETNX on an existing key")
    eq(r.set("o:d", "kept", keepttl=True), True, "SET KEEPTTL")
    cached("o:d", b"kept")
    eq(r.setbit("o:d", 7, 0), 1, "SETBIT")
    cached("o:d", b"jept")
    eq(r.move("o:d", 1), True, "MOVE o:d to db 1")
    eq(r.get("o:d"), None, "GET after MOVE to another db")
    # Lua: a declared key, then a key the script does not declare.
    eq(r.eval("return redis.call('SET', KEYS[1], ARGV[1])", 1, "o:e", "lua"), b"OK", "EVAL SET with a declared key")
    cached("o:e", b"lua")
    cached("o:undeclared", None)
    eq(r.eval("return redis.call('SET', 'o:undeclared', 'sneaky')", 0), b"OK", "EVAL SET of an undeclared key")
    eq(r.get("o:undeclared"), b"sneaky", "GET right after EVAL wrote an undeclared key")
    sha = r.script_load("return redis.call('INCRBY', KEYS[1], ARGV[1])")
    r.set("o:n", 1)
    cached("o:n", b"1")
    eq(r.evalsha(sha, 1, "o:n", 5), 6, "EVALSHA INCRBY")
    eq(r.get("o:n"), b"6", "GET after EVALSHA")
    script = r.register_script("return redis.call('APPEND', KEYS[1], ARGV[1])")
    eq(script(keys=["o:n"], args=["0"]), 2, "registered script APPEND")
    eq(r.get("o:n"), b"60", "GET after a registered script")
    # SORT ... STORE names its destination in an incomplete key spec.
    r.rpush("o:list", 3, 1, 2)
    r.set("o:sorted", "a string before SORT STORE")
    cached("o:sorted", b"a string before SORT STORE")
    eq(r.sort("o:list", store="o:sorted"), 3, "SORT STORE")
    raises(redis.ResponseError, lambda: r.get("o:sorted"), "GET of SORT's destination, now a list", "WRONGTYPE")
    eq(r.lrange("o:sorted", 0, -1), [b"1", b"2", b"3"], "LRANGE of SORT's destination")
    # FLUSHDB through featcache.
    r.set("o:f", "before flush")
    cached("o:f", b"before flush")
    eq(r.flushdb(), True, "FLUSHDB")
    eq(r.get("o:f"), None, "GET right after FLUSHDB")
    eq(r.mget("o:a", "o:c", "o:e"), [None, None, None], "MGET right after FLUSHDB")


def upstream_changes():
    r.set("b:u", "v1")
    eq(r.get("b:u"), b"v1", "GET b:u (caches it)")
    poll(lambda: (r.get("b:u"), explain_state("b:u"))[1], "fresh", 2, "CACHE EXPLAIN b:u")
    eq(up.set("b:u", "v2"), True, "SET b:u straight in Redis")
    poll(lambda: r.get("b:u"), b"v2", 2, "GET b:u through featcache after Redis changed it")
    poll(lambda: r.mget("b:u", "b:u"), [b"v2", b"v2"], 2, "MGET b:u after Redis changed it")
    up.delete("b:u")
    poll(lambda: r.get("b:u"), None, 2, "GET b:u after DEL straight in Redis")
    eq(r.get("b:u2"), None, "GET b:u2 (a missing key)")
    up.set("b:u2", "appeared")
    poll(lambda: r.get("b:u2"), b"appeared", 2, "GET of a key created straight in Redis")
    up.incr("b:u3")
    eq(r.get("b:u3"), b"1", "GET b:u3")
    up.incr("b:u3")
    poll(lambda: r.get("b:u3"), b"2", 2, "GET b:u3 after INCR straight in Redis")
    up.pexpire("b:u3", 100)
    poll(lambda: r.get("b:u3"), None, 2, "GET b:u3 after PEXPIRE 100 straight in Redis")
    r.set("b:u4", "a")
    eq(r.get("b:u4"), b"a", "GET b:u4")
    up.flushall()
    poll(lambda: r.get("b:u4"), None, 2, "GET b:u4 after FLUSHALL straight in Redis")


run([
    ("connection", connection),
    ("get_set_mget", get_set_mget),
    ("binary", binary),
    ("incr", incr),
    ("expire", expire),
    ("hashes", hashes),
    ("delete_exists", delete_exists),
    ("scan", scan),
    ("errors", errors),
    ("other_writes", other_writes),
    ("upstream_changes", upstream_changes),
])
