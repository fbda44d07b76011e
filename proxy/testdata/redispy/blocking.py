"""redis-py blocking pops through featcache. featcache runs with upstream.timeout 100ms: blocking commands must wait
as long as their own timeout says, not that.

Run: /usr/bin/python3 blocking.py HOST PORT UPSTREAM_PORT
"""

import threading
import time

from fcutil import CheckFailed, args, check, client, eq, run

HOST, PORT, UPSTREAM_PORT = args()
r = client(HOST, PORT)
pusher = client(HOST, PORT)


def in_thread(fn):
    """Starts fn in a thread; the returned function joins it and returns (result, seconds, exception)."""
    box = {}

    def target():
        start = time.monotonic()
        try:
            box["result"] = fn()
        except Exception as e:  # noqa: BLE001 - handed to the caller
            box["error"] = e
        box["elapsed"] = time.monotonic() - start

    t = threading.Thread(target=target, daemon=True)
    t.start()

    def join(timeout=10):
        t.join(timeout)
        check(not t.is_alive(), "the blocked call did not return within %ss" % timeout)
        return box.get("result"), box["elapsed"], box.get("error")

    return join


def blpop_forever():
    c = client(HOST, PORT)
    join = in_thread(lambda: c.blpop("q", timeout=0))
    time.sleep(0.3)  # the pop must be waiting for 300 ms, three times upstream.timeout
    eq(pusher.rpush("q", "job1"), 1, "RPUSH q (a client is blocked on q)")
    result, elapsed, err = join()
    eq(err, None, "BLPOP q 0 raised")
    eq(result, (b"q", b"job1"), "BLPOP q 0")
    check(elapsed >= 0.29, "BLPOP q 0 returned after %.3fs, before the push" % elapsed)
    eq(c.llen("q"), 0, "LLEN q after the pop")
    # The connection the pop used serves plain commands afterwards.
    c.set("bq:k", "v")
    eq(c.get("bq:k"), b"v", "GET on the connection that was blocked")


def brpop_times_out():
    start = time.monotonic()
    eq(r.brpop("empty", timeout=1), None, "BRPOP empty 1")
    elapsed = time.monotonic() - start
    check(0.9 <= elapsed < 2.5, "BRPOP empty 1 returned after %.3fs; want about 1s" % elapsed)
    eq(r.brpoplpush("empty", "dst", timeout=0.2), None, "BRPOPLPUSH empty dst 0.2")
    eq(r.blmove("empty", "dst", 0.2, "LEFT", "RIGHT"), None, "BLMOVE empty dst 0.2")
    eq(r.bzpopmin("zempty", timeout=0.2), None, "BZPOPMIN zempty 0.2")
    eq(r.ping(), True, "PING after the timeouts")


def short_timeouts():
    # Redis notices a blocked client's timeout on its next timer tick (every 1000/hz ms, 100 ms by default), so a
    # BLPOP 0.1 is answered 100 to 200 ms after it was sent. Every one of them must get Redis's nil, never an error.
    results = []
    for i in range(10):
        start = time.monotonic()
        try:
            got = r.blpop(["empty", "empty2"], timeout=0.1)
        except Exception as e:  # noqa: BLE001 - collected and reported below
            got = "%s: %s" % (type(e).__name__, e)
        results.append("%.3fs %r" % (time.monotonic() - start, got))
    bad = [x for x in results if not x.endswith(" None")]
    eq(bad, [], "BLPOP empty empty2 0.1 answered other than nil (%d of %d)" % (len(bad), len(results)))


def pops_with_data():
    r.rpush("q2", "a", "b", "c")
    start = time.monotonic()
    eq(r.blpop(["missing", "q2"], timeout=0), (b"q2", b"a"), "BLPOP missing q2 0 with data")
    eq(r.brpop("q2", timeout=5), (b"q2", b"c"), "BRPOP q2 5 with data")
    eq(r.brpoplpush("q2", "q3", timeout=5), b"b", "BRPOPLPUSH q2 q3 5 with data")
    check(time.monotonic() - start < 0.5, "pops of non-empty lists blocked")
    eq(r.lrange("q3", 0, -1), [b"b"], "LRANGE q3")
    r.zadd("z", {"m": 1.5})
    eq(r.bzpopmin("z", timeout=1), (b"z", b"m", 1.5), "BZPOPMIN z 1 with data")


def others_proceed_while_blocked():
    c = client(HOST, PORT)
    join = in_thread(lambda: c.brpop("q4", timeout=5))
    time.sleep(0.05)
    start = time.monotonic()
    for i in range(50):
        r.set("bq:other", i)
        eq(r.get("bq:other"), str(i).encode(), "GET while another client is blocked")
    check(time.monotonic() - start < 1, "100 commands took %.3fs while another client was blocked" %
          (time.monotonic() - start))
    eq(pusher.lpush("q4", "x"), 1, "LPUSH q4")
    result, elapsed, err = join()
    eq(err, None, "BRPOP q4 5 raised")
    eq(result, (b"q4", b"x"), "BRPOP q4 5")


def abandoned_pop():
    # A worker gives up on its BLPOP (redis-py's socket_timeout fires and it closes the connection, or the process
    # dies). Redis drops a blocked client as soon as its connection closes, so an item pushed afterwards stays in
    # the list for the next worker; it must not be popped for the worker that left, and so lost.
    import redis
    worker = client(HOST, PORT, socket_timeout=0.3)
    start = time.monotonic()
    try:
        got = worker.blpop("q7", timeout=0)
        raise CheckFailed("BLPOP q7 0 on an empty list returned %r" % (got,))
    except redis.TimeoutError:
        pass
    worker.close()
    elapsed = time.monotonic() - start
    check(elapsed < 1, "the worker's socket_timeout of 0.3s took %.3fs" % elapsed)
    time.sleep(0.02)  # the worker's connection is closed and its FIN delivered
    eq(pusher.rpush("q7", "job"), 1, "RPUSH q7 after the blocked worker left")
    # Redis serves blocked clients before it reads the pusher's next command: a pop would show now.
    eq(pusher.lrange("q7", 0, -1), [b"job"], "q7 after the push: the item must wait for the next worker")
    eq(r.blpop("q7", timeout=1), (b"q7", b"job"), "the next worker's BLPOP q7")


def several_blocked():
    joins = []
    for i in range(3):
        c = client(HOST, PORT)
        joins.append(in_thread(lambda c=c: c.blpop("q5", timeout=0)))
    time.sleep(0.3)
    eq(pusher.rpush("q5", "1", "2", "3"), 3, "RPUSH q5 three items")
    got = []
    for j in joins:
        result, _, err = j()
        eq(err, None, "BLPOP q5 0 raised")
        got.append(result)
    eq(sorted(got), [(b"q5", b"1"), (b"q5", b"2"), (b"q5", b"3")], "the three blocked pops")


run([
    ("blpop_forever", blpop_forever),
    ("brpop_times_out", brpop_times_out),
    ("short_timeouts", short_timeouts),
    ("pops_with_data", pops_with_data),
    ("others_proceed_while_blocked", others_proceed_while_blocked),
    ("several_blocked", several_blocked),
    ("abandoned_pop", abandoned_pop),
])
