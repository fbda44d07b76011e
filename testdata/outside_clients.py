"""redis-py 4.3.4 used as applications use it, printed one line per probe.

Usage: outside_clients.py PORT OUTSIDE_PORT

PORT is where the application connects (Redis itself, or featcache in front of Redis); OUTSIDE_PORT is Redis
itself, where another application writes behind PORT's back (the same port when PORT is Redis). Every line is
"name: value", with exceptions as "EXC Type: message" and whatever legitimately differs between two servers
(client ids, addresses, ages, hash orders) normalized, so that the run against Redis and the run against featcache
print the same lines wherever featcache behaves as Redis does. The database is flushed first.
"""

import signal
import sys
import threading
import time

import redis

port, outside_port = int(sys.argv[1]), int(sys.argv[2])
signal.alarm(90)  # never hang the test that runs this


def out(name, f):
    try:
        v = f()
    except Exception as e:  # the exception is the result
        v = "EXC %s: %s" % (type(e).__name__, e)
    print("%s: %r" % (name, v), flush=True)


def poll(cond, d=5.0):
    end = time.time() + d
    while time.time() < end:
        v = cond()
        if v:
            return v
        time.sleep(0.01)
    return cond()


def until_ok(f, d=5.0):
    """f's value once it stops raising BUSY (a script of another client ends), within d seconds."""
    end = time.time() + d
    while True:
        try:
            return f()
        except redis.ResponseError as e:
            if not str(e).startswith("BUSY") or time.time() > end:
                raise
        time.sleep(0.01)


def blpop_in_thread(client, key, res):
    """Starts a thread that BLPOPs key for up to 5 s and appends the outcome to res; returns the thread."""
    def block():
        try:
            res.append(client.blpop(key, timeout=5))
        except Exception as e:
            res.append("EXC %s: %s" % (type(e).__name__, e))
    t = threading.Thread(target=block)
    t.start()
    return t


def later(delay, f, *a, **kw):
    def run():
        time.sleep(delay)
        f(*a, **kw)
    t = threading.Thread(target=run)
    t.start()
    return t


r = redis.Redis.from_url("redis://127.0.0.1:%d/0" % port)
rd = redis.Redis.from_url("redis://127.0.0.1:%d/0" % port, decode_responses=True)
outside = redis.Redis(port=outside_port)
outside.flushall()
outside.script_flush()
outside.function_flush()

# --- from_url and plain reads, bytes and str
out("from_url db0 ping", lambda: redis.Redis.from_url("redis://127.0.0.1:%d/0" % port).ping())
out("from_url db1 get", lambda: redis.Redis.from_url("redis://127.0.0.1:%d/1" % port).get("x"))
out("from_url client_name", lambda: redis.Redis.from_url(
    "redis://127.0.0.1:%d/0?client_name=fromurl" % port, decode_responses=True).client_getname())
out("set", lambda: r.set("a", "1"))
out("get", lambda: r.get("a"))
out("get again", lambda: r.get("a"))
out("get decoded", lambda: rd.get("a"))
out("mget decoded", lambda: rd.mget("a", "missing", "a"))
out("set binary", lambda: r.set("bin", b"\x00\xff\r\n"))
out("get binary", lambda: (r.get("bin"), r.get("bin")))
out("get binary decoded", lambda: rd.get("bin"))
out("hset", lambda: r.hset("h", mapping={"f1": "v1", "f2": "v2"}))
out("hgetall", lambda: sorted(rd.hgetall("h").items()))
out("hgetall again", lambda: sorted(rd.hgetall("h").items()))
out("hmget", lambda: rd.hmget("h", "f1", "nope"))
out("hget", lambda: (rd.hget("h", "f2"), rd.hget("h", "f2")))
out("get wrongtype", lambda: (r.get("h")))
out("get wrongtype again", lambda: (r.get("h")))
out("hget wrongtype", lambda: r.hget("a", "x"))
out("hgetall wrongtype", lambda: r.hgetall("a"))

# --- pipelines: transactional and not, with cached reads, writes and a failing command
def pipe(tx, raise_on_error):
    r.set("a", "1")
    p = r.pipeline(transaction=tx)
    p.get("a").set("a", "2").get("a").incr("h").hget("h", "f1").lpush("a", "x").get("a").get("missing")
    return p.execute(raise_on_error=raise_on_error)


for tx in (True, False):
    for roe in (True, False):
        out("pipeline transaction=%s raise_on_error=%s" % (tx, roe), lambda: pipe(tx, roe))
        out("after pipeline transaction=%s raise_on_error=%s" % (tx, roe), lambda: r.get("a"))


def pipe_queue_error():
    p = r.pipeline()
    p.get("a").execute_command("NOSUCH", "x").set("a", "3")
    return p.execute()


out("pipeline unknown command", pipe_queue_error)
out("after pipeline unknown command", lambda: r.get("a"))


def pipe_arity():
    p = r.pipeline(transaction=False)
    p.get("a").execute_command("GET").set("a", "4").get("a")
    return [repr(x) for x in p.execute(raise_on_error=False)]


out("pipeline arity, no transaction", pipe_arity)

# --- WATCH-based optimistic transactions with a concurrent writer
r.set("cnt", "0")
rounds = [0]


def incr_tx(p):
    v = int(p.get("cnt"))
    rounds[0] += 1
    if rounds[0] == 1:
        outside.set("cnt", "100")  # another application, straight to Redis
    p.multi()
    p.set("cnt", v + 1)
    p.get("cnt")


out("transaction with outside writer", lambda: r.transaction(incr_tx, "cnt"))
out("transaction rounds", lambda: rounds[0])
rounds[0] = 0
r2 = redis.Redis(port=port)


def incr_tx_same(p):
    v = int(p.get("cnt"))
    rounds[0] += 1
    if rounds[0] == 1:
        r2.set("cnt", "200")  # another client of the same endpoint
    p.multi()
    p.set("cnt", v + 1)


out("transaction with writer on the same endpoint", lambda: r.transaction(incr_tx_same, "cnt"))
out("transaction rounds same endpoint", lambda: (rounds[0], r.get("cnt")))


def watch_error():
    with r.pipeline() as p:
        p.watch("cnt")
        p.get("cnt")
        outside.set("cnt", "5")
        p.multi()
        p.set("cnt", "6")
        return p.execute()


out("watch error", watch_error)
out("after watch error", lambda: r.get("cnt"))

# --- locks (Lua scripts underneath)
lk = r.lock("lk", timeout=5)
out("lock acquire", lambda: lk.acquire(blocking=False))
out("lock owned locked", lambda: (lk.owned(), lk.locked()))
out("lock extend", lambda: lk.extend(5))
out("lock reacquire", lambda: lk.reacquire())
lk2 = r.lock("lk", timeout=5, blocking_timeout=0.3)
out("lock contended blocking acquire", lambda: lk2.acquire())
out("lock release", lambda: lk.release())
out("lock second acquire", lambda: lk2.acquire())
out("lock release not owned", lambda: lk.release())
out("lock second release", lambda: lk2.release())
out("lock key gone", lambda: r.get("lk"))


def lock_wake():
    a = r.lock("lk3", timeout=5, thread_local=False)
    a.acquire()
    t = later(0.3, a.release)
    b = redis.Redis(port=port).lock("lk3", timeout=5, blocking_timeout=5, sleep=0.05)
    got = b.acquire()
    t.join()
    b.release()
    return got


out("lock blocking acquire woken by release", lock_wake)

# --- register_script: EVALSHA, NOSCRIPT, SCRIPT LOAD
s = r.register_script("return redis.call('GET', KEYS[1])")
r.set("sk", "sv")
out("script", lambda: s(keys=["sk"]))
out("script flush", lambda: r.script_flush())
out("script after flush", lambda: s(keys=["sk"]))
s2 = r.register_script("redis.call('SET', KEYS[1], ARGV[1]); return redis.call('GET', KEYS[1])")
out("get before script write", lambda: r.get("sk"))
out("script write", lambda: s2(keys=["sk"], args=["nv"]))
out("get after script write", lambda: r.get("sk"))
out("script error", lambda: r.eval("return redis.call('INCR', KEYS[1])", 1, "sk"))
out("script exists", lambda: r.script_exists(s.sha, "0" * 40))
out("evalsha unknown", lambda: r.evalsha("0" * 40, 0))


def pipe_script():
    r.script_flush()
    p = r.pipeline()
    s(keys=["sk"], client=p)
    p.get("sk")
    return p.execute()


out("script in pipeline after flush", pipe_script)

# --- pub/sub
p = r.pubsub()
out("subscribe", lambda: p.subscribe("ch1", "ch2"))
out("psubscribe", lambda: p.psubscribe("pat*"))
out("subscribe confirmations", lambda: [p.get_message(timeout=1) for _ in range(3)])
out("get_message timeout", lambda: p.get_message(timeout=0.2))
out("publish outside", lambda: outside.publish("ch1", "hello"))
out("message", lambda: p.get_message(timeout=1))
out("publish through", lambda: r.publish("patx", "hi"))
out("pmessage", lambda: p.get_message(timeout=1))
out("ping subscribed", lambda: (p.ping(), p.get_message(timeout=1)))
out("ping subscribed with message", lambda: (p.ping("hey"), p.get_message(timeout=1)))
out("numsub", lambda: r.pubsub_numsub("ch1", "ch2", "ch3"))
out("numpat", lambda: r.pubsub_numpat())
out("channels", lambda: sorted(r.pubsub_channels()))
out("unsubscribe all", lambda: (p.unsubscribe(), p.punsubscribe()))
# Redis names the channels of an UNSUBSCRIBE without arguments in its dict's order, which differs between two
# servers: the counts say that each went.
out("unsubscribe confirmations", lambda: sorted(
    (m["type"], m["channel"]) for m in [p.get_message(timeout=1) for _ in range(3)]))
out("nothing after unsubscribe", lambda: (p.get_message(timeout=0.2), p.subscribed))
out("subscribe again", lambda: (p.subscribe("ch3"), p.get_message(timeout=1)))
out("message after subscribe again", lambda: (outside.publish("ch3", "x"), p.get_message(timeout=1)))
p.close()

p2 = r.pubsub(ignore_subscribe_messages=True)
p2.subscribe("lc")
got = []


def listen():
    for m in p2.listen():
        got.append(m)
        if m["data"] == b"stop":
            return


t = threading.Thread(target=listen)
t.start()
poll(lambda: outside.pubsub_numsub("lc")[0][1] == 1 or port != outside_port and r.pubsub_numsub("lc")[0][1] == 1)
for i in ["0", "1", "stop"]:
    outside.publish("lc", i) if port == outside_port else r.publish("lc", i)
t.join(5)
out("listen in a thread", lambda: [m["data"] for m in got])
p2.close()

p3 = r.pubsub()
got3 = []
p3.subscribe(**{"rt": lambda m: got3.append(m["data"])})
th = p3.run_in_thread(sleep_time=0.05)
poll(lambda: r.pubsub_numsub("rt")[0][1] == 1)
for i in range(3):
    r.publish("rt", "m%d" % i)
poll(lambda: len(got3) >= 3)
th.stop()
th.join(2)
out("run_in_thread", lambda: got3)
p3.close()

rh = redis.Redis(port=port, health_check_interval=1)
ph = rh.pubsub()
ph.subscribe("hc")
out("health check subscribe", lambda: ph.get_message(timeout=1))
time.sleep(1.2)  # past health_check_interval: the next get_message sends PING while subscribed
out("health check idle", lambda: ph.get_message(timeout=0.3))
out("health check message", lambda: (r.publish("hc", "a"), ph.get_message(timeout=1)))
time.sleep(1.2)
out("health check unsubscribe", lambda: (ph.unsubscribe(), ph.get_message(timeout=1)))
time.sleep(1.2)
out("health check after unsubscribe", lambda: ph.get_message(timeout=0.3))
ph.close()
out("health check client reused", lambda: (rh.set("hck", "1"), rh.get("hck")))

pool = redis.ConnectionPool(port=port, max_connections=1)
rp = redis.Redis(connection_pool=pool)
pp = rp.pubsub()
pp.subscribe("zz")
pp.get_message(timeout=1)
pp.unsubscribe()
pp.get_message(timeout=1)
pp.reset()
out("connection reused after pubsub", lambda: (rp.set("ru", "1"), rp.get("ru")))

# --- blocking pops
out("blpop timeout", lambda: r.blpop("bl", timeout=0.2))
later(0.3, outside.rpush, "bl", "v1")
out("blpop 0 woken", lambda: r.blpop("bl", timeout=0))
later(0.3, outside.rpush, "src", "s1")
out("brpoplpush woken", lambda: (r.brpoplpush("src", "dst", timeout=3), r.lrange("dst", 0, -1)))
out("brpoplpush timeout", lambda: r.brpoplpush("src", "dst", timeout=0.2))
later(0.3, outside.zadd, "zs", {"a": 1.5})
out("bzpopmin woken", lambda: r.bzpopmin("zs", timeout=3))
out("bzpopmin timeout", lambda: r.bzpopmin("zs", timeout=0.1))
out("blmove timeout", lambda: r.blmove("src", "dst", 0.1))

# --- scans
pl = r.pipeline(transaction=False)
for i in range(300):
    pl.set("sc:%d" % i, i)
pl.hset("hs", mapping={"f%d" % i: i for i in range(200)})
pl.sadd("ss", *["m%d" % i for i in range(200)])
pl.zadd("zz", {"m%d" % i: i for i in range(200)})
pl.execute()
out("scan_iter", lambda: sorted(rd.scan_iter(match="sc:1*", count=50)))
out("scan_iter type", lambda: len(list(rd.scan_iter(match="*", count=1000, _type="string"))))
out("hscan_iter", lambda: sorted(rd.hscan_iter("hs", match="f1*", count=30)))
out("sscan_iter", lambda: sorted(rd.sscan_iter("ss", match="m1*", count=30)))
out("zscan_iter", lambda: sorted(rd.zscan_iter("zz", match="m1*", count=30)))

# --- CLIENT
rc = redis.Redis(port=port, decode_responses=True)
out("client_setname", lambda: rc.client_setname("myname"))
out("client_getname", lambda: rc.client_getname())
out("client_setname with space", lambda: rc.client_setname("a b"))
cid = rc.client_id()
out("client_id", lambda: type(cid).__name__)
varying = ("id", "addr", "laddr", "fd", "age", "idle", "qbuf", "qbuf-free", "argv-mem", "obl", "oll", "omem",
           "tot-mem", "multi-mem", "rbs", "rbp", "events")


def norm(d):
    return {k: ("*" if k in varying else v) for k, v in d.items()}


out("client_info", lambda: norm(rc.client_info()))
out("client_info is own", lambda: rc.client_info()["id"] == str(cid))
out("client_list own", lambda: [norm(c) for c in rc.client_list() if c.get("name") == "myname"])
out("client_list ids", lambda: [c["name"] for c in rc.client_list(client_id=[str(cid)])])
ps = r.pubsub()
ps.subscribe("x")
ps.get_message(timeout=1)
out("client_list pubsub", lambda: [(c["sub"], c["flags"], c["cmd"]) for c in rc.client_list(_type="pubsub")])
ps.close()
out("client_kill_filter unknown id", lambda: rc.client_kill_filter(_id=99999999))
out("client no-evict", lambda: r.execute_command("CLIENT", "NO-EVICT", "on"))

# --- server introspection
out("info keys", lambda: sorted(k for k in rd.info().keys()
                                if not k.startswith(("featcache_", "errorstat_")) and k != "db0"))
out("info server keys", lambda: sorted(rd.info("server").keys()))
out("info server types", lambda: sorted((k, type(v).__name__) for k, v in rd.info("server").items()))
out("info keyspace", lambda: rd.info("keyspace"))
out("memory_usage", lambda: (type(r.memory_usage("sc:1")).__name__, r.memory_usage("nokey")))
out("object encoding", lambda: (r.object("encoding", "sc:1"), r.object("encoding", "hs"), r.object("encoding", "a")))
out("object freq", lambda: r.object("freq", "sc:1"))
out("type", lambda: [r.type(k) for k in ("sc:1", "hs", "ss", "zz", "dst", "none")])
out("dbsize", lambda: r.dbsize())
out("time", lambda: [type(x).__name__ for x in r.time()])
out("echo", lambda: (r.echo("hi there"), rd.echo(b"\xc3\xa9")))
out("ping", lambda: r.ping())
out("config_get pattern", lambda: sorted(rd.config_get("maxmemory*").items()))
out("config_get requirepass", lambda: rd.config_get("requirepass"))
out("config_get databases", lambda: rd.config_get("databases"))
out("config_get all", lambda: len(rd.config_get("*")) > 100)
out("exists", lambda: r.exists("sc:1", "sc:2", "nope"))
out("sort", lambda: r.sort("ss", alpha=True, start=0, num=3))
out("role", lambda: (r.role()[0], len(r.role())))

# --- freshness as an application meets it
r.set("ex", "v", px=300)
out("px read", lambda: r.get("ex"))
out("px read after expiry", lambda: poll(lambda: r.get("ex") is None))
r.set("dw", "1")
r.get("dw")
outside.set("dw", "2")
out("outside write seen", lambda: poll(lambda: r.get("dw") == b"2"))
r.set("gd", "v")
r.get("gd")
out("getdel then get", lambda: (r.getdel("gd"), r.get("gd")))
r.set("sg", "old")
r.get("sg")
out("set get then get", lambda: (r.set("sg", "new", get=True), r.get("sg")))
r.hset("hh", "a", "1")
r.hget("hh", "a")
r.hgetall("hh")
out("hincrbyfloat then reads", lambda: (r.hincrbyfloat("hh", "a", 0.5), r.hget("hh", "a"), r.hgetall("hh")))
r.set("rn", "a")
r.set("rn2", "b")
r.get("rn")
r.get("rn2")
out("rename then reads", lambda: (r.rename("rn", "rn2"), r.get("rn"), r.get("rn2")))

# --- functions and streams
out("function load", lambda: r.function_load(
    "#!lua name=mylib\n"
    "redis.register_function('myget', function(keys, args) return redis.call('GET', keys[1]) end)\n"
    "redis.register_function('myset', function(keys, args) return redis.call('SET', keys[1], args[1]) end)",
    replace=True))
r.set("fk", "1")
r.get("fk")
out("fcall write then get", lambda: (r.fcall("myset", 1, "fk", "2"), r.get("fk")))
out("fcall_ro of a write", lambda: r.fcall_ro("myset", 1, "fk", "3"))
out("function flush", lambda: r.function_flush())
out("xadd", lambda: type(r.xadd("st", {"a": "1"})).__name__)
later(0.3, outside.xadd, "st2", {"b": "2"})
out("xread block woken", lambda: [(s, [f for _, f in e]) for s, e in r.xread({"st2": "$"}, block=3000)])
out("xread block timeout", lambda: r.xread({"st2": "$"}, block=200))
out("xgroup_create", lambda: r.xgroup_create("st", "g", id="0"))
out("xreadgroup", lambda: [(s, [f for _, f in e]) for s, e in r.xreadgroup("g", "c", {"st": ">"}, block=100)])

# --- CLIENT UNBLOCK of a client blocked in BLPOP
rb = redis.Redis(port=port)
bid = rb.client_id()
for error in (False, True):
    res = []
    t = blpop_in_thread(rb, "nolist", res)
    poll(lambda: any(c.get("id") == str(bid) and "b" in c["flags"] for c in rc.client_list()))
    out("client_unblock error=%s" % error, lambda: r.client_unblock(bid, error=error))
    t.join(6)
    out("unblocked error=%s" % error, lambda: res)

# --- a connection pool shared by many threads
bpool = redis.BlockingConnectionPool(port=port, max_connections=5, timeout=5)
rp = redis.Redis(connection_pool=bpool)
errs, done = [], [0]
lock = threading.Lock()


def worker(i):
    try:
        for j in range(100):
            rp.set("pk:%d" % i, j)
            assert rp.get("pk:%d" % i) == str(j).encode(), "read %d of pk:%d" % (j, i)
            rp.get("a")
        with lock:
            done[0] += 1
    except Exception as e:
        errs.append(repr(e))


ts = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
[t.start() for t in ts]
[t.join() for t in ts]
out("pool threads", lambda: (done[0], errs[:3], len(bpool._connections) <= 5))
pool2 = redis.ConnectionPool(port=port, max_connections=2)
out("pool max_connections", lambda: [pool2.get_connection("GET") for _ in range(3)])

# --- CLIENT KILL from a third client, then the victim's next command
for form in ("type normal", "id", "addr"):
    v = redis.Redis(port=port, client_name="victim")
    v.ping()
    killer = redis.Redis(port=port, decode_responses=True)
    me = [c for c in killer.client_list() if c.get("name") == "victim"][0]
    if form == "type normal":
        killed = killer.client_kill_filter(_type="normal", skipme=True) >= 1
    elif form == "id":
        killed = killer.client_kill_filter(_id=me["id"])
    else:
        killed = killer.client_kill(me["addr"])
    out("client kill %s" % form, lambda: killed)
    out("victim get after kill %s" % form, lambda: v.get("a"))
    out("victim pipeline after kill %s" % form, lambda: v.pipeline().set("pk", 1).get("pk").execute())
    out("victim name after kill %s" % form, lambda: v.client_getname())
vs = redis.Redis(port=port).pubsub()
vs.subscribe("kc")
vs.get_message(timeout=1)
out("kill pubsub", lambda: redis.Redis(port=port).client_kill_filter(_type="pubsub"))
out("subscriber after kill", lambda: vs.get_message(timeout=1))
out("subscriber resubscribed", lambda: vs.get_message(timeout=1))
out("subscriber message", lambda: (poll(lambda: r.publish("kc", "x") == 1), vs.get_message(timeout=1)))
vs.close()
vb = redis.Redis(port=port, client_name="victim-blocked")
res = []
t = blpop_in_thread(vb, "never", res)
poll(lambda: any(c.get("name") == "victim-blocked" and "b" in c["flags"] for c in rc.client_list()))
out("kill blocked", lambda: [rc.client_kill_filter(_id=c["id"]) for c in rc.client_list()
                             if c.get("name") == "victim-blocked"])
t.join(6)
out("blocked client killed", lambda: res)

# --- Redis busy with another application's script: socket_timeout, BUSY, recovery; SCRIPT KILL
rs = redis.Redis(port=port, socket_timeout=0.5)
outside.config_set("busy-reply-threshold", 100)
spin = "local t=redis.call('TIME') while true do local n=redis.call('TIME') " \
       "if (n[1]-t[1])*1000000+(n[2]-t[2]) > 1500000 then break end end return 1"
bg = []
t = threading.Thread(target=lambda: bg.append(redis.Redis(port=outside_port).eval(spin, 0)))
t.start()


def busy():
    try:
        redis.Redis(port=outside_port, socket_timeout=5).exists("probe")
        return False
    except redis.ResponseError as e:
        return str(e).startswith("BUSY")


poll(busy)
out("busy uncached get", lambda: rs.get("never-read"))
out("busy set", lambda: rs.set("k2", "x"))
t.join()
out("busy script result", lambda: bg)
out("after busy", lambda: (rs.set("k2", "y"), rs.get("k2")))
out("own slow script hits socket_timeout", lambda: rs.eval(spin.replace("1500000", "1000000"), 0))
out("after own slow script", lambda: until_ok(lambda: (rs.exists("k2"), rs.get("k2"))))
res = []
rk = redis.Redis(port=port, socket_timeout=10)


def forever():
    try:
        res.append(rk.eval("while true do end", 0))
    except Exception as e:
        res.append("EXC %s: %s" % (type(e).__name__, e))


t = threading.Thread(target=forever)
t.start()
poll(busy)
out("script kill", lambda: redis.Redis(port=port, socket_timeout=5).script_kill())
t.join(10)
try:
    outside.script_kill()  # whatever happened above, Redis is not left busy
except redis.ResponseError:
    pass
out("killed script", lambda: res)
outside.config_set("busy-reply-threshold", 5000)
out("after script kill", lambda: (r.set("k3", "z"), r.get("k3")))
print("done", flush=True)
