"""redis-py WATCH (optimistic locking) through featcache.

Run: /usr/bin/python3 watch.py HOST PORT UPSTREAM_PORT
"""

import redis

from fcutil import args, check, client, eq, raises, run

HOST, PORT, UPSTREAM_PORT = args()
r = client(HOST, PORT)
other = client(HOST, PORT)  # another featcache client
up = client(HOST, UPSTREAM_PORT)


def recipe():
    r.set("w:k", 10)
    eq(r.get("w:k"), b"10", "GET w:k (caches it)")
    with r.pipeline() as pipe:
        pipe.watch("w:k")
        v = int(pipe.get("w:k"))
        eq(v, 10, "GET w:k after WATCH")
        pipe.multi()
        pipe.set("w:k", v + 1)
        pipe.get("w:k")
        eq(pipe.execute(), [True, b"11"], "EXEC of the watched transaction")
    eq(r.get("w:k"), b"11", "GET w:k after the transaction")
    eq(other.get("w:k"), b"11", "another client's GET w:k after the transaction")


def conflict(writer, who):
    r.set("w:c", 1)
    eq(r.get("w:c"), b"1", "GET w:c (caches it)")
    with r.pipeline() as pipe:
        pipe.watch("w:c")
        v = int(pipe.get("w:c"))
        writer.set("w:c", 100)  # between WATCH and EXEC
        pipe.multi()
        pipe.set("w:c", v + 1)
        raises(redis.WatchError, pipe.execute, "EXEC after %s changed the watched key" % who)
    eq(r.get("w:c"), b"100", "GET w:c after the aborted transaction (%s's value)" % who)
    eq(up.get("w:c"), b"100", "w:c in Redis after the aborted transaction")


def conflict_featcache_client():
    conflict(other, "another featcache client")


def conflict_redis_client():
    conflict(up, "a client of Redis itself")


def retry_loop():
    r.set("w:ctr", 0)
    eq(r.get("w:ctr"), b"0", "GET w:ctr (caches it)")
    attempts = 0
    with r.pipeline() as pipe:
        while True:
            attempts += 1
            try:
                pipe.watch("w:ctr")
                v = int(pipe.get("w:ctr"))
                if attempts <= 2:
                    other.incrby("w:ctr", 10)  # a concurrent writer wins the first two rounds
                pipe.multi()
                pipe.set("w:ctr", v + 1)
                pipe.execute()
                break
            except redis.WatchError:
                check(attempts < 10, "retry loop did not succeed in 10 attempts")
                continue
    eq(attempts, 3, "attempts of the retry loop (two conflicts, then success)")
    eq(r.get("w:ctr"), b"21", "GET w:ctr after the retry loop")

    # The same through redis-py's transaction() helper, which retries on WatchError itself.
    calls = []

    def incr_twice(pipe):
        v = int(pipe.get("w:ctr"))
        calls.append(v)
        if len(calls) == 1:
            other.set("w:ctr", 1000)
        pipe.multi()
        pipe.set("w:ctr", v * 2)

    eq(r.transaction(incr_twice, "w:ctr"), [True], "transaction() result")
    eq(calls, [21, 1000], "values transaction() read on each attempt")
    eq(r.get("w:ctr"), b"2000", "GET w:ctr after transaction()")


def watch_then_reset():
    # WATCH without MULTI, released by reset() (UNWATCH); the pooled connection serves plain commands afterwards.
    r.set("w:r", "a")
    with r.pipeline() as pipe:
        pipe.watch("w:r", "w:r2")
        eq(pipe.get("w:r"), b"a", "GET after WATCH")
        eq(pipe.mget("w:r", "w:r2"), [b"a", None], "MGET after WATCH")
    other.set("w:r", "b")
    eq(r.get("w:r"), b"b", "GET w:r after UNWATCH and another client's SET")
    # Writes made on the watching connection before MULTI are seen by everyone.
    with r.pipeline() as pipe:
        pipe.watch("w:r")
        pipe.set("w:r", "c")  # immediate mode: runs on the watching connection
        eq(other.get("w:r"), b"c", "another client's GET of a key set on a watching connection")
        pipe.multi()
        pipe.set("w:r", "d")
        raises(redis.WatchError, pipe.execute, "EXEC after the watching client itself changed the key")
    eq(r.get("w:r"), b"c", "GET w:r after that aborted transaction")
    for i in range(50):
        with r.pipeline() as pipe:
            pipe.watch("w:n")
            cur = pipe.get("w:n")
            pipe.multi()
            pipe.set("w:n", i)
            eq(pipe.execute(), [True], "watched transaction %d" % i)
        eq(cur, None if i == 0 else str(i - 1).encode(), "value read under WATCH in round %d" % i)
        eq(other.get("w:n"), str(i).encode(), "another client's GET after watched transaction %d" % i)
    eq(r.ping(), True, "PING after the watched transactions")


run([
    ("recipe", recipe),
    ("conflict_featcache_client", conflict_featcache_client),
    ("conflict_redis_client", conflict_redis_client),
    ("retry_loop", retry_loop),
    ("watch_then_reset", watch_then_reset),
])
