"""redis-py pub/sub through featcache: SUBSCRIBE, PSUBSCRIBE, PING while subscribed, UNSUBSCRIBE, PUBSUB NUMSUB.

Run: /usr/bin/python3 pubsub.py HOST PORT UPSTREAM_PORT
"""

import time

from fcutil import CheckFailed, args, check, client, eq, poll, run

HOST, PORT, UPSTREAM_PORT = args()
r = client(HOST, PORT)
pub = client(HOST, PORT)  # the publisher, another featcache client
up = client(HOST, UPSTREAM_PORT)


def next_message(p, what, within=2.0):
    """The next message of p, polling get_message for up to `within` seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        m = p.get_message(timeout=0.05)
        if m is not None:
            return m
    raise CheckFailed("%s: no message within %.1fs" % (what, within))


def expect(p, want, what):
    m = next_message(p, what)
    eq({k: m.get(k) for k in want}, want, what)


def no_message(p, what, within=0.2):
    m = p.get_message(timeout=within)
    eq(m, None, what)


def subscribe_publish():
    p = r.pubsub()
    p.subscribe("ch")
    expect(p, {"type": "subscribe", "channel": b"ch", "data": 1}, "SUBSCRIBE ch confirmation")
    p.psubscribe("pat*")
    expect(p, {"type": "psubscribe", "channel": b"pat*", "data": 2}, "PSUBSCRIBE pat* confirmation")
    eq(r.pubsub_numsub("ch", "pat1", "none"), [(b"ch", 1), (b"pat1", 0), (b"none", 0)], "PUBSUB NUMSUB")
    eq(r.pubsub_numpat(), 1, "PUBSUB NUMPAT")
    eq(r.pubsub_channels("ch*"), [b"ch"], "PUBSUB CHANNELS ch*")

    eq(pub.publish("ch", "hello"), 1, "PUBLISH ch: receivers")
    expect(p, {"type": "message", "channel": b"ch", "data": b"hello"}, "message on ch")
    eq(pub.publish("pat1", b"\x00\r\nbin\xff"), 1, "PUBLISH pat1: receivers")
    expect(p, {"type": "pmessage", "pattern": b"pat*", "channel": b"pat1", "data": b"\x00\r\nbin\xff"},
           "pmessage on pat1")
    eq(up.publish("ch", "from redis"), 1, "PUBLISH ch straight to Redis")
    expect(p, {"type": "message", "channel": b"ch", "data": b"from redis"}, "message published straight to Redis")
    eq(pub.publish("other", "x"), 0, "PUBLISH to a channel nobody listens to")
    no_message(p, "after a PUBLISH to another channel")

    p.ping()
    expect(p, {"type": "pong", "data": b""}, "PING while subscribed")
    p.ping("hi")
    expect(p, {"type": "pong", "data": b"hi"}, "PING hi while subscribed")

    n = 200
    for i in range(n):
        pub.publish("ch" if i % 2 == 0 else "pat2", "m%d" % i)
    for i in range(n):
        if i % 2 == 0:
            expect(p, {"type": "message", "channel": b"ch", "data": b"m%d" % i}, "message %d of %d" % (i, n))
        else:
            expect(p, {"type": "pmessage", "channel": b"pat2", "data": b"m%d" % i}, "pmessage %d of %d" % (i, n))

    p.unsubscribe("ch")
    expect(p, {"type": "unsubscribe", "channel": b"ch", "data": 1}, "UNSUBSCRIBE ch confirmation")
    eq(pub.publish("ch", "lost"), 0, "PUBLISH ch after UNSUBSCRIBE")
    eq(pub.publish("pat3", "kept"), 1, "PUBLISH pat3, still pattern-subscribed")
    expect(p, {"type": "pmessage", "channel": b"pat3", "data": b"kept"}, "pmessage after UNSUBSCRIBE ch")
    p.punsubscribe()
    expect(p, {"type": "punsubscribe", "channel": b"pat*", "data": 0}, "PUNSUBSCRIBE confirmation")
    eq(pub.publish("pat4", "lost"), 0, "PUBLISH pat4 after PUNSUBSCRIBE")
    no_message(p, "after unsubscribing from everything")
    eq(p.subscribed, False, "pubsub.subscribed after unsubscribing from everything")

    # Subscribe again on the same connection.
    p.subscribe("ch2")
    expect(p, {"type": "subscribe", "channel": b"ch2", "data": 1}, "SUBSCRIBE ch2 after leaving subscribed mode")
    eq(pub.publish("ch2", "again"), 1, "PUBLISH ch2")
    expect(p, {"type": "message", "channel": b"ch2", "data": b"again"}, "message on ch2")
    p.close()
    poll(lambda: r.pubsub_numsub("ch2"), [(b"ch2", 0)], 2, "PUBSUB NUMSUB ch2 after close()")
    poll(lambda: r.pubsub_numpat(), 0, 2, "PUBSUB NUMPAT after close()")
    eq(pub.publish("ch2", "nobody"), 0, "PUBLISH ch2 after close()")


def several_subscribers():
    subs = []
    for i in range(3):
        p = client(HOST, PORT).pubsub(ignore_subscribe_messages=True)
        p.subscribe("fan")
        subs.append(p)
    poll(lambda: r.pubsub_numsub("fan"), [(b"fan", 3)], 2, "PUBSUB NUMSUB fan with 3 subscribers")
    eq(pub.publish("fan", "all"), 3, "PUBLISH fan: receivers")
    for i, p in enumerate(subs):
        # get_message reads the subscribe confirmation and drops it (ignore_subscribe_messages), then the message.
        m = next_message(p, "subscriber %d" % i)
        eq((m["type"], m["channel"], m["data"]), ("message", b"fan", b"all"), "subscriber %d's message" % i)
    for p in subs:
        p.close()
    poll(lambda: r.pubsub_numsub("fan"), [(b"fan", 0)], 2, "PUBSUB NUMSUB fan after close()")


def health_checks():
    # With health_check_interval, redis-py PINGs a subscribed connection with "redis-py-health-check" and expects
    # the subscribed-mode pong back; it swallows that reply itself.
    c = client(HOST, PORT, health_check_interval=0.05)
    p = c.pubsub(ignore_subscribe_messages=True)
    p.subscribe("hc")
    for i in range(5):
        time.sleep(0.06)  # let the interval pass so the next call sends a health check first
        eq(pub.publish("hc", "m%d" % i), 1, "PUBLISH hc %d" % i)
        m = next_message(p, "message %d with health checks" % i)
        eq((m["type"], m["channel"], m["data"]), ("message", b"hc", b"m%d" % i), "message %d with health checks" % i)
    p.close()
    time.sleep(0.06)
    c.set("hc:k", "v")  # a health check on a plain pooled connection: PING, then the command
    eq(c.get("hc:k"), b"v", "GET on a client with health checks")


def plain_commands_after_pubsub():
    # A pubsub object uses its own connection; the client's pool is unaffected.
    p = r.pubsub()
    p.subscribe("x")
    next_message(p, "SUBSCRIBE x confirmation")
    r.set("ps:k", "v")
    eq(r.get("ps:k"), b"v", "GET while another connection is subscribed")
    p.close()
    eq(r.get("ps:k"), b"v", "GET after close()")
    check(r.ping(), "PING after close()")


run([
    ("subscribe_publish", subscribe_publish),
    ("several_subscribers", several_subscribers),
    ("health_checks", health_checks),
    ("plain_commands_after_pubsub", plain_commands_after_pubsub),
])
