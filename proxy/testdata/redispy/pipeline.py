"""redis-py pipelines through featcache: transactional and not, read-your-writes within and across clients.

Run: /usr/bin/python3 pipeline.py HOST PORT UPSTREAM_PORT
"""

import random

import redis

from fcutil import args, check, client, eq, raises, run

HOST, PORT, UPSTREAM_PORT = args()
r = client(HOST, PORT)
up = client(HOST, UPSTREAM_PORT)


def transactional():
    r.set("p:a", "0")
    r.set("p:b", "old")
    eq(r.mget("p:a", "p:b"), [b"0", b"old"], "MGET before the transaction (caches both)")
    pipe = r.pipeline()  # transaction=True: MULTI ... EXEC
    pipe.set("p:a", "1")
    pipe.get("p:a")
    pipe.incr("p:a")
    pipe.mget("p:a", "p:b", "p:a")
    pipe.hset("p:h", "f", "v")
    pipe.hget("p:h", "f")
    pipe.delete("p:b")
    pipe.get("p:b")
    pipe.expire("p:a", 100)
    pipe.ttl("p:a")
    got = pipe.execute()
    want = [True, b"1", 2, [b"2", b"old", b"2"], 1, b"v", 1, None, True, 100]
    eq(got, want, "results of MULTI/EXEC pipeline")
    eq(r.get("p:a"), b"2", "GET p:a after the transaction")
    eq(r.get("p:b"), None, "GET p:b after DEL in the transaction")
    eq(r.mget("p:a", "p:b"), [b"2", None], "MGET after the transaction")
    # Every transaction's writes are seen by the next read, many times over.
    for i in range(100):
        pipe = r.pipeline()
        pipe.set("p:t", i).get("p:t").incr("p:t")
        eq(pipe.execute(), [True, str(i).encode(), i + 1], "transaction %d" % i)
        eq(r.get("p:t"), str(i + 1).encode(), "GET p:t after transaction %d" % i)


def transactional_errors():
    # A runtime error inside EXEC: the other commands are applied.
    r.set("p:s", "abc")
    pipe = r.pipeline()
    pipe.set("p:s", "xyz").incr("p:s").get("p:s")
    got = pipe.execute(raise_on_error=False)
    eq(len(got), 3, "number of results")
    eq(got[0], True, "SET in the transaction")
    check(isinstance(got[1], redis.ResponseError) and "not an integer" in str(got[1]),
          "INCR of a string in the transaction: got %r; want ResponseError 'not an integer'" % (got[1],))
    eq(got[2], b"xyz", "GET in the transaction")
    pipe = r.pipeline()
    pipe.set("p:s", "again").incr("p:s")
    raises(redis.ResponseError, pipe.execute, "execute() of a transaction with a runtime error", "not an integer")
    eq(r.get("p:s"), b"again", "GET after a transaction with a runtime error")

    # A queue-time error: EXECABORT, nothing applied. featcache must fail the same way Redis does.
    def aborted(c):
        pipe = c.pipeline()
        pipe.set("p:abort", "applied?").execute_command("NOSUCHCOMMAND", "x")
        return pipe.execute()

    e_fc = raises(redis.ResponseError, lambda: aborted(r), "transaction with an unknown command, featcache")
    e_up = raises(redis.ResponseError, lambda: aborted(up), "transaction with an unknown command, Redis")
    eq(type(e_fc), type(e_up), "exception type of an aborted transaction")
    eq(str(e_fc), str(e_up), "error of an aborted transaction")
    eq(r.get("p:abort"), None, "GET of a key set in an aborted transaction")
    # The connections are still usable after an aborted transaction.
    eq(r.ping(), True, "PING after EXECABORT")
    pipe = r.pipeline()
    pipe.set("p:after", "ok").get("p:after")
    eq(pipe.execute(), [True, b"ok"], "transaction after EXECABORT")


def non_transactional():
    rnd = random.Random(7)
    nkeys = 40
    model = {}
    hmodel = {}
    # Some keys are cached before the pipeline, so it mixes hits, misses and writes.
    for i in range(0, nkeys, 2):
        r.set("np:%d" % i, "pre%d" % i)
        model["np:%d" % i] = b"pre%d" % i
        r.get("np:%d" % i)
    r.get("np:1")
    pipe = r.pipeline(transaction=False)
    want = []
    for n in range(2000):
        op = rnd.randrange(6)
        k = "np:%d" % rnd.randrange(nkeys)
        if op == 0:
            v = b"v%d" % n
            pipe.set(k, v)
            model[k] = v
            want.append(True)
        elif op == 1:
            pipe.get(k)
            want.append(model.get(k))
        elif op == 2:
            c = "np:ctr%d" % rnd.randrange(3)
            pipe.incr(c)
            model[c] = str(int(model.get(c, b"0")) + 1).encode()
            want.append(int(model[c]))
        elif op == 3:
            ks = ["np:%d" % rnd.randrange(nkeys) for _ in range(rnd.randrange(1, 6))]
            ks.append("np:ctr0")
            pipe.mget(ks)
            want.append([model.get(x) for x in ks])
        elif op == 4:
            f = "f%d" % rnd.randrange(5)
            v = b"h%d" % n
            pipe.hset("np:h", f, v)
            want.append(0 if f in hmodel else 1)
            hmodel[f] = v
        else:
            f = "f%d" % rnd.randrange(5)
            pipe.hget("np:h", f)
            want.append(hmodel.get(f))
    got = pipe.execute()
    eq(len(got), len(want), "number of results of a 2000-command pipeline")
    for i, (g, w) in enumerate(zip(got, want)):
        eq(g, w, "result %d of the 2000-command pipeline" % i)
    for k, v in model.items():
        eq(up.get(k), v, "%s in Redis after the pipeline" % k)
        eq(r.get(k), v, "%s through featcache after the pipeline" % k)
    eq(r.hgetall("np:h"), {f.encode(): v for f, v in hmodel.items()}, "HGETALL np:h after the pipeline")


def pipeline_read_your_writes():
    for i in range(50):
        r.set("p:ryw", "before%d" % i)
        eq(r.get("p:ryw"), b"before%d" % i, "GET p:ryw (caches it)")
        pipe = r.pipeline(transaction=False)
        pipe.get("p:ryw")
        pipe.set("p:ryw", "a%d" % i)
        pipe.get("p:ryw")
        pipe.set("p:ryw", "b%d" % i)
        pipe.get("p:ryw")
        pipe.mget("p:ryw", "p:ryw")
        pipe.delete("p:ryw")
        pipe.get("p:ryw")
        pipe.incr("p:ryw")
        pipe.mget("p:ryw")
        want = [b"before%d" % i, True, b"a%d" % i, True, b"b%d" % i, [b"b%d" % i] * 2, 1, None, 1, [b"1"]]
        eq(pipe.execute(), want, "pipeline %d: reads after writes of the same pipeline" % i)


def cross_client_read_your_writes():
    a = client(HOST, PORT)
    b = client(HOST, PORT)
    b.set("p:x", "start")
    eq(b.get("p:x"), b"start", "client B caches p:x")
    for i in range(300):
        v = b"val%d" % i
        eq(a.set("p:x", v), True, "client A SET %d" % i)
        eq(b.get("p:x"), v, "client B GET right after client A's SET %d" % i)
        eq(b.mget("p:x", "p:other"), [v, None], "client B MGET right after client A's SET %d" % i)
    eq(a.delete("p:x"), 1, "client A DEL")
    eq(b.get("p:x"), None, "client B GET right after client A's DEL")
    for i in range(1, 51):
        eq(a.incr("p:x"), i, "client A INCR")
        eq(b.get("p:x"), str(i).encode(), "client B GET right after client A's INCR")
    # The writer's pipeline, then the reader.
    pa = a.pipeline(transaction=False)
    for i in range(100):
        pa.set("p:y%d" % i, i)
    pa.execute()
    eq(b.mget(["p:y%d" % i for i in range(100)]), [str(i).encode() for i in range(100)],
       "client B MGET after client A's pipeline")
    pa = a.pipeline()
    for i in range(100):
        pa.set("p:y%d" % i, i * 2)
    pa.execute()
    eq(b.mget(["p:y%d" % i for i in range(100)]), [str(i * 2).encode() for i in range(100)],
       "client B MGET after client A's transaction")


run([
    ("transactional", transactional),
    ("transactional_errors", transactional_errors),
    ("non_transactional", non_transactional),
    ("pipeline_read_your_writes", pipeline_read_your_writes),
    ("cross_client_read_your_writes", cross_client_read_your_writes),
])
