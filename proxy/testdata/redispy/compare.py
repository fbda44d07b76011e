"""redis-py side by side: the same calls against redis-server and against featcache, printed for comparison.

Run: /usr/bin/python3 compare.py HOST PORT UPSTREAM_PORT

HOST:PORT is the server under test (a redis-server, or featcache in front of one); UPSTREAM_PORT is the
redis-server behind it (the same port when HOST:PORT is Redis itself), reached directly as another application
of the same Redis would. Every case prints lines "case.what: value" to stdout; clients_redispy_test.go runs the
script against both and compares the lines. Values that legitimately differ between two servers are normalised
here, and each normalisation says which field and why. An exception raised by redis-py is printed as its type and
message: Redis's errors must come back with the same text.
"""

import sys
import threading
import time

import redis
from redis.exceptions import LockNotOwnedError, WatchError

from fcutil import args, client

HOST, PORT, UPSTREAM_PORT = args()
r = client(HOST, PORT)
other = client(HOST, PORT)  # another client of the server under test
up = client(HOST, UPSTREAM_PORT)  # another application of the same Redis, straight to it

case_name = ""


def out(what, value):
    print("%s.%s: %r" % (case_name, what, value))
    sys.stdout.flush()


def call(what, fn):
    """Prints fn()'s result, or the exception it raised (type and message), and returns the result or None."""
    try:
        v = fn()
    except Exception as e:  # noqa: BLE001 - the exception is the result being compared
        out(what, "%s: %s" % (type(e).__name__, e))
        return None
    out(what, v)
    return v


# Fields of CLIENT LIST / CLIENT INFO that differ between two servers or two runs: ids and addresses (another
# port, another socket), ages and idle times (timing), and Redis's buffer and memory figures.
CLIENT_VOLATILE = {"id", "addr", "laddr", "fd", "age", "idle", "qbuf", "qbuf-free", "argv-mem", "multi-mem",
                   "obl", "oll", "omem", "tot-mem", "rbs", "rbp", "events"}


def norm_client(info):
    return {k: ("*" if k in CLIENT_VOLATILE else v) for k, v in sorted(info.items())}


def watch_conflict():
    r.set("w:k", "1")
    with r.pipeline(transaction=True) as p:
        p.watch("w:k")
        out("get_while_watching", p.get("w:k"))
        up.set("w:k", "2")  # another application of the same Redis changes the watched key
        p.multi()
        p.incr("w:k")
        call("execute", p.execute)
    out("after_redis_write", r.get("w:k"))
    with r.pipeline(transaction=True) as p:
        p.watch("w:k")
        other.set("w:k", "3")  # another client of the server under test
        p.multi()
        p.incr("w:k")
        call("execute_other_client", p.execute)
    out("after_other_write", r.get("w:k"))
    with r.pipeline(transaction=True) as p:
        p.watch("w:k")
        p.multi()
        p.incr("w:k")
        call("execute_unopposed", p.execute)
    out("after_unopposed", r.get("w:k"))

    def incr(pipe):
        v = int(pipe.get("w:k"))
        pipe.multi()
        pipe.set("w:k", v + 10)
    call("transaction_helper", lambda: r.transaction(incr, "w:k"))
    out("after_transaction_helper", r.get("w:k"))


def pipeline_errors():
    r.set("p:str", "x")
    with r.pipeline(transaction=False) as p:
        p.set("p:a", "1").lpush("p:str", "y").incr("p:a").hset("p:str", "f", "v").get("p:a").get("p:str")
        res = p.execute(raise_on_error=False)
        out("plain_no_raise", [("%s: %s" % (type(v).__name__, v)) if isinstance(v, Exception) else v for v in res])
    with r.pipeline(transaction=False) as p:
        p.set("p:b", "1").lpush("p:str", "y").incr("p:b")
        call("plain_raise", p.execute)
    out("after_plain_raise", r.get("p:b"))
    with r.pipeline(transaction=True) as p:
        p.set("p:c", "1").lpush("p:str", "y").incr("p:c").get("p:c")
        res = p.execute(raise_on_error=False)
        out("multi_no_raise", [("%s: %s" % (type(v).__name__, v)) if isinstance(v, Exception) else v for v in res])
    with r.pipeline(transaction=True) as p:
        p.set("p:d", "1").lpush("p:str", "y").incr("p:d")
        call("multi_raise", p.execute)
    out("after_multi_raise", r.get("p:d"))
    with r.pipeline(transaction=True) as p:  # a queue-time error: EXECABORT
        p.set("p:e", "1").execute_command("NOSUCHCMD", "x").incr("p:e")
        call("multi_execabort", p.execute)
    out("after_execabort", r.get("p:e"))


def lock():
    lk = r.lock("lk:name", timeout=5)
    out("acquire", lk.acquire(blocking=False))
    out("locked", lk.locked())
    out("owned", lk.owned())
    out("second_acquire", r.lock("lk:name", timeout=5).acquire(blocking=True, blocking_timeout=0.2))
    out("extend", lk.extend(10))
    out("pttl_after_extend", 13000 < r.pttl("lk:name") <= 15000)
    out("extend_replace", lk.extend(2, replace_ttl=True))
    out("pttl_after_replace", 1000 < r.pttl("lk:name") <= 2000)
    out("reacquire", lk.reacquire())
    lk.release()
    out("locked_after_release", lk.locked())
    call("release_again", lk.release)
    call("extend_released", lambda: lk.extend(1))
    lk2 = r.lock("lk:name", timeout=5)
    lk2.acquire()
    up.set("lk:name", "stolen")  # another application takes the key
    out("owned_after_steal", lk2.owned())
    try:
        lk2.release()
        out("release_stolen", "released")
    except LockNotOwnedError as e:
        out("release_stolen", "LockNotOwnedError: %s" % e)


def norm_msg(m):
    if m is None:
        return None
    return {k: m[k] for k in sorted(m)}


def messages(p, n, within=3.0):
    """Up to n messages of p, polling get_message(timeout) for up to `within` seconds."""
    got = []
    deadline = time.monotonic() + within
    while len(got) < n and time.monotonic() < deadline:
        m = p.get_message(timeout=0.1)
        if m is not None:
            got.append(norm_msg(m))
    return got


def pubsub():
    p = r.pubsub()
    out("get_message_before_subscribe", p.get_message(timeout=0.1))
    p.subscribe("ps:a", "ps:b")
    out("subscribed", messages(p, 2))
    p.psubscribe("ps:p*")
    out("psubscribed", messages(p, 1))
    out("publish_a", other.publish("ps:a", "one"))
    out("publish_p", up.publish("ps:px", b"\x00\xff two"))
    out("publish_none", other.publish("ps:none", "x"))
    out("messages", messages(p, 2))
    out("get_message_empty", p.get_message(timeout=0.2))
    p.ping("hi")
    out("ping", messages(p, 1))
    out("numsub", r.pubsub_numsub("ps:a", "ps:b", "ps:none"))
    out("numpat", r.pubsub_numpat())
    out("channels", sorted(r.pubsub_channels("ps:*")))
    p.unsubscribe("ps:a")
    out("unsubscribed_a", messages(p, 1))
    p.punsubscribe()
    p.unsubscribe()
    out("unsubscribed_all", messages(p, 2))
    p.close()

    ip = r.pubsub(ignore_subscribe_messages=True)
    ip.subscribe("ps:c")
    out("ignored_confirmation", ip.get_message(timeout=0.2))
    other.publish("ps:c", "three")
    out("after_ignored", messages(ip, 1))
    ip.close()


def pubsub_thread():
    got = []
    done = threading.Event()

    def handler(m):
        got.append(norm_msg(m))
        if len(got) == 3:
            done.set()
    p = r.pubsub()
    p.subscribe(**{"th:a": handler})
    p.psubscribe(**{"th:p*": handler})
    t = p.run_in_thread(sleep_time=0.05, daemon=True)
    deadline = time.monotonic() + 3
    while other.pubsub_numsub("th:a")[0][1] != 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    other.publish("th:a", "1")
    other.publish("th:px", "2")
    up.publish("th:a", "3")
    done.wait(3)
    t.stop()
    t.join(3)
    p.close()
    out("handled", got)


def health_check():
    c = client(HOST, PORT, health_check_interval=0.3)
    p = c.pubsub()
    p.subscribe("hc:a")
    out("subscribed", messages(p, 1))
    # Past the interval, redis-py sends PING redis-py-health-check before its next read on the subscription and
    # swallows the reply.
    time.sleep(0.4)
    out("quiet", p.get_message(timeout=0.2))
    time.sleep(0.4)
    other.publish("hc:a", "after")
    out("after_health_check", messages(p, 1))
    out("plain_command_after", c.set("hc:k", "v"))
    time.sleep(0.4)
    out("get_after_interval", c.get("hc:k"))
    p.close()


def blocking():
    b = client(HOST, PORT)
    t0 = time.monotonic()
    out("blpop_timeout", b.blpop(["bl:none"], timeout=1))
    out("blpop_waited", time.monotonic() - t0 >= 0.9)
    out("brpoplpush_timeout", b.brpoplpush("bl:none", "bl:dst", timeout=0.2))
    out("bzpopmin_timeout", b.bzpopmin(["bl:znone"], timeout=0.2))
    out("xread_timeout", b.xread({"bl:snone": "$"}, block=300))
    out("blmove_timeout", b.blmove("bl:none", "bl:dst", 0.2, "LEFT", "RIGHT"))
    r.rpush("bl:l", "a", "b")
    r.zadd("bl:z", {"m1": 1.5, "m2": 2})
    r.xadd("bl:s", {"f": "v"}, id="1-1")
    out("blpop_data", b.blpop(["bl:none", "bl:l"], timeout=1))
    out("brpoplpush_data", b.brpoplpush("bl:l", "bl:dst", timeout=1))
    out("bzpopmin_data", b.bzpopmin(["bl:z"], timeout=1))
    out("bzpopmax_data", b.bzpopmax(["bl:z"], timeout=1))
    out("xread_data", b.xread({"bl:s": "0"}, block=300))
    out("dst", r.lrange("bl:dst", 0, -1))

    def push_later():
        time.sleep(0.3)
        other.rpush("bl:later", "x")
    th = threading.Thread(target=push_later)
    th.start()
    out("blpop_woken", b.blpop(["bl:later"], timeout=5))
    th.join()
    call("blpop_negative_timeout", lambda: b.execute_command("BLPOP", "bl:none", "-1"))
    call("blpop_wrongtype", lambda: (r.set("bl:str", "x"), b.blpop(["bl:str"], timeout=1))[1])


def scans():
    for i in range(40):
        r.set("sc:key:%02d" % i, i)
    r.set("sc:other", 1)
    r.hset("sc:h", mapping={"f%02d" % i: i for i in range(30)})
    r.hset("sc:h", "g", "x")
    r.sadd("sc:s", *["m%02d" % i for i in range(30)] + ["n1"])
    r.zadd("sc:z", {"z%02d" % i: i for i in range(30)})
    out("scan_iter", sorted(r.scan_iter(match="sc:key:*", count=7)))
    out("scan_iter_type", sorted(r.scan_iter(match="sc:*", _type="hash")))
    out("hscan_iter", sorted(r.hscan_iter("sc:h", match="f1*", count=5)))
    out("sscan_iter", sorted(r.sscan_iter("sc:s", match="m2*", count=5)))
    out("zscan_iter", sorted(r.zscan_iter("sc:z", match="z0*", count=5)))
    out("hscan_small", r.hscan("sc:none"))
    call("scan_bad_count", lambda: r.scan(0, count=0))


def clients():
    c = client(HOST, PORT)
    out("setname", c.client_setname("cmp-client"))
    out("getname", c.client_getname())
    cid = c.client_id()
    out("id_is_int", isinstance(cid, int) and cid > 0)
    out("info", norm_client(c.client_info()))
    mine = [norm_client(x) for x in c.client_list() if x.get("name") == "cmp-client"]
    out("list_mine", mine)
    out("list_type_pubsub", c.client_list(_type="pubsub"))
    out("list_by_id", [norm_client(x) for x in c.client_list(client_id=[str(cid)])])
    call("setname_space", lambda: c.client_setname("a b"))
    victim = client(HOST, PORT)
    victim.client_setname("victim")
    vid = victim.client_id()
    out("kill_filter_id", c.client_kill_filter(_id=vid))
    out("kill_filter_id_again", c.client_kill_filter(_id=vid))
    # redis-py reconnects a connection the server closed: the next command runs on a new one.
    out("victim_after_kill", call("victim_ping", victim.ping))
    out("victim_new_id", victim.client_id() != vid)
    out("victim_name_after_reconnect", victim.client_getname())
    call("kill_bad_filter", lambda: c.client_kill_filter(_type="nosuch"))
    call("kill_addr_missing", lambda: c.client_kill("127.0.0.1:1"))


def kill_from_redis():
    """Another application of the same Redis kills every other normal client: a pool reconnects."""
    c = client(HOST, PORT)
    c.set("kr:k", "v1")
    out("get_before", c.get("kr:k"))
    killed = up.client_kill_filter(_type="normal", skipme=True)
    out("killed_some", killed >= 1)
    out("get_after", call("get_after_kill", lambda: c.get("kr:k")))
    out("set_after", call("set_after_kill", lambda: c.set("kr:k", "v2")))
    out("get_new", c.get("kr:k"))
    out("redis_value", up.get("kr:k"))


def monitor():
    m = client(HOST, PORT)
    with m.monitor() as mon:
        other.set("mon:k", "v")
        other.incr("mon:n")
        other.delete("mon:k")
        got = []
        for _ in range(3):
            cmd = mon.next_command()
            # time, client address and port differ between runs and servers; db and client_type are compared.
            got.append({k: v for k, v in sorted(cmd.items()) if k not in ("time", "client_address", "client_port")})
        out("commands", got)


def objects():
    r.set("ob:int", "12345")
    r.set("ob:str", "x" * 100)
    r.rpush("ob:list", "a", "b")
    r.hset("ob:h", "f", "v")
    for k in ("ob:int", "ob:str", "ob:list", "ob:h", "ob:none"):
        call("encoding_" + k, lambda: r.object("encoding", k))
    call("refcount", lambda: r.object("refcount", "ob:str"))
    call("idletime_small", lambda: r.object("idletime", "ob:str") < 5)
    call("freq_noLFU", lambda: r.object("freq", "ob:str"))
    call("memory_usage", lambda: r.memory_usage("ob:str"))
    call("memory_usage_none", lambda: r.memory_usage("ob:none"))
    call("debug_object", lambda: {k: v for k, v in r.debug_object("ob:str").items()
                                  if k not in ("at", "lru", "lru_seconds_idle")})


def unknown_commands():
    call("unknown", lambda: r.execute_command("NOSUCH", "a", "b c"))
    call("unknown_no_args", lambda: r.execute_command("FOOBAR"))
    call("unknown_subcommand", lambda: r.execute_command("CLIENT", "NOSUCH"))
    call("unknown_config_sub", lambda: r.execute_command("OBJECT", "NOSUCH", "k"))
    call("arity", lambda: r.execute_command("GET"))
    call("arity_set", lambda: r.execute_command("SET", "k"))
    call("syntax", lambda: r.execute_command("SET", "k", "v", "NOSUCH"))
    call("long_unknown", lambda: r.execute_command("X" * 200, "y"))


def decoded():
    d = client(HOST, PORT, decode_responses=True)
    r.set("dec:bin", b"\xff\xfe\x00ok")
    r.set("dec:txt", "h\u00e9llo")
    out("get_txt", d.get("dec:txt"))
    call("get_bin_miss", lambda: d.get("dec:bin"))
    call("get_bin_hit", lambda: d.get("dec:bin"))
    call("mget_bin", lambda: d.mget("dec:txt", "dec:bin"))
    r.hset("dec:h", mapping={"a": b"\xc3\x28", "b": "ok"})
    call("hgetall_bin", lambda: d.hgetall("dec:h"))
    call("hget_ok", lambda: d.hget("dec:h", "b"))
    out("still_usable", d.get("dec:txt"))
    out("ping", d.ping())


def scripts():
    sha = r.script_load("return {KEYS[1], ARGV[1], redis.call('INCR', KEYS[1])}")
    out("sha", sha)
    out("exists", r.script_exists(sha, "0" * 40))
    out("evalsha", r.evalsha(sha, 1, "sc:n", "arg"))
    out("evalsha_again", r.evalsha(sha, 1, "sc:n", "arg"))
    out("get_after", r.get("sc:n"))
    call("evalsha_missing", lambda: r.evalsha("0" * 40, 0))
    call("eval_error", lambda: r.eval("return redis.call('INCR', KEYS[1])", 1, "sc:str") if r.set("sc:str", "x") else 0)
    call("eval_lua_error", lambda: r.eval("return error(", 0))
    call("eval_types", lambda: r.eval("return {1, false, 'x', 2.5, {'n', 3}}", 0))
    call("eval_false", lambda: r.eval("return false", 0))
    s = r.register_script("return redis.call('GET', KEYS[1])")
    r.set("sc:g", "gv")
    out("registered", s(keys=["sc:g"]))
    out("flush", r.script_flush())
    out("registered_after_flush", s(keys=["sc:g"]))
    lib = ("#!lua name=cmplib\n"
           "redis.register_function('cmp_set', function(keys, args) return redis.call('SET', keys[1], args[1]) end)\n"
           "redis.register_function{function_name='cmp_get', callback=function(keys, args) "
           "return redis.call('GET', keys[1]) end, flags={'no-writes'}}\n")
    out("function_load", r.function_load(lib))
    call("function_load_again", lambda: r.function_load(lib))
    out("fcall_set", r.fcall("cmp_set", 1, "fn:k", "fv"))
    out("get_after_fcall", r.get("fn:k"))
    out("fcall_ro", r.fcall_ro("cmp_get", 1, "fn:k"))
    call("fcall_missing", lambda: r.fcall("nosuchfn", 0))
    # Redis lists a library's functions in the order of its dictionary, which differs between two servers.
    libs = r.function_list()
    for lib_ in libs:
        i = lib_.index(b"functions") + 1
        lib_[i] = sorted(lib_[i])
    out("function_list", libs)
    out("function_delete", r.function_delete("cmplib"))


def server():
    out("echo", r.echo("h\u00e9 \x00"))
    out("ping", r.ping())
    call("ping_arg", lambda: r.execute_command("PING", "msg"))
    t = r.time()
    out("time_shape", isinstance(t, tuple) and len(t) == 2 and abs(t[0] - time.time()) < 60)
    out("lastsave_int", isinstance(r.lastsave(), object))
    r.set("sv:a", 1)
    out("dbsize", r.dbsize())
    out("config_get_maxmemory", r.config_get("maxmemory"))
    out("config_get_glob", sorted(r.config_get("maxmemory-*").items()))
    out("config_get_requirepass", r.config_get("requirepass"))
    out("config_get_none", r.config_get("nosuchparam"))
    call("select_0", lambda: r.execute_command("SELECT", "0"))
    call("select_99", lambda: r.execute_command("SELECT", "99"))
    call("select_x", lambda: r.execute_command("SELECT", "x"))
    call("swapdb_0_0", lambda: r.swapdb(0, 0))
    call("swapdb_bad", lambda: r.swapdb(0, 99))
    info = r.info("server")
    # Values that differ between two redis-server processes: ids, ports, paths, pids, clocks and uptimes.
    volatile = {"run_id", "tcp_port", "process_id", "uptime_in_seconds", "uptime_in_days", "lru_clock",
                "server_time_usec", "executable", "config_file", "hz", "configured_hz", "io_threads_active",
                "process_supervised"}
    out("info_server", sorted((k, "*" if k in volatile else v) for k, v in info.items()))
    out("info_keyspace", r.info("keyspace"))
    out("info_persistence_keys", sorted(r.info("persistence")))
    out("info_clients_keys", sorted(r.info("clients")))
    out("info_stats_keys", sorted(r.info("stats")))
    out("info_replication_role", r.info("replication")["role"])
    out("info_default_has_server_and_keyspace", "redis_version" in r.info() and "db0" in r.info())
    out("info_commandstats_has_set", "cmdstat_set" in r.info("commandstats"))


def other_dbs():
    d1 = client(HOST, PORT, db=1)
    call("db1_ping", d1.ping)
    call("db1_set", lambda: d1.set("db1:k", "v"))
    call("swapdb_0_1", lambda: r.swapdb(0, 1))


def cached_reads():
    """Reads featcache answers from memory, after writes that change what they must answer."""
    r.set("cr:k", "v1")
    out("get", [r.get("cr:k"), r.get("cr:k")])
    out("set_get", r.set("cr:k", "v2", get=True))
    out("get_after_set_get", r.get("cr:k"))
    out("getex", r.getex("cr:k", px=150))
    out("get_after_getex", r.get("cr:k"))
    time.sleep(0.3)
    out("get_after_expiry", [r.get("cr:k"), r.get("cr:k")])
    r.set("cr:d", "dv")
    out("get_d", r.get("cr:d"))
    out("getdel", r.getdel("cr:d"))
    out("get_after_getdel", r.get("cr:d"))
    r.set("cr:src", "s1")
    r.set("cr:dst", "d1")
    out("gets", r.mget("cr:src", "cr:dst"))
    out("copy", r.copy("cr:src", "cr:dst", replace=True))
    out("get_after_copy", r.mget("cr:src", "cr:dst"))
    out("rename", r.rename("cr:src", "cr:renamed"))
    out("get_after_rename", r.mget("cr:src", "cr:renamed"))
    out("move", r.move("cr:renamed", 1))
    out("get_after_move", r.get("cr:renamed"))
    r.set("cr:lua", "l1")
    out("get_lua", r.get("cr:lua"))
    out("eval_undeclared", r.eval("return redis.call('SET', 'cr:lua', 'l2')", 0))
    out("get_after_eval", r.get("cr:lua"))
    r.rpush("cr:list", "x")
    call("get_wrongtype", lambda: r.get("cr:list"))
    call("get_wrongtype_again", lambda: r.get("cr:list"))
    call("hget_wrongtype", lambda: r.hget("cr:dst", "f"))
    call("hgetall_wrongtype", lambda: r.hgetall("cr:dst"))
    out("mget_mixed", r.mget("cr:list", "cr:dst", "cr:none"))
    call("get_extra_arg", lambda: r.execute_command("GET", "cr:dst", "extra"))
    call("get_mixed_case", lambda: r.execute_command("gEt", "cr:dst"))
    call("hmget_no_fields", lambda: r.execute_command("HMGET", "cr:h"))
    r.hset("cr:h", mapping={"a": "1", "b": "2"})
    out("hash_reads", [r.hget("cr:h", "a"), r.hmget("cr:h", "a", "z"), r.hgetall("cr:h"), r.hgetall("cr:h")])
    r.hdel("cr:h", "a")
    r.hincrby("cr:h", "b", 5)
    out("hash_after_writes", [r.hget("cr:h", "a"), r.hmget("cr:h", "a", "b"), r.hgetall("cr:h")])
    up.hset("cr:h", "c", "from redis")
    up.set("cr:dst", "from redis")
    # The invalidations travel on featcache's tracking connection: wait for them, for at most 5 seconds.
    want = [{b"b": b"7", b"c": b"from redis"}, b"from redis"]
    deadline = time.monotonic() + 5
    while [r.hgetall("cr:h"), r.get("cr:dst")] != want and time.monotonic() < deadline:
        time.sleep(0.01)
    out("after_redis_writes", [r.hgetall("cr:h"), r.get("cr:dst")])
    big = b"\x00\xff" * 300000
    r.set("cr:big", big)
    out("big", [r.get("cr:big") == big, r.get("cr:big") == big, r.strlen("cr:big")])
    keys = ["cr:m:%d" % i for i in range(500)]
    r.mset({k: i for i, k in enumerate(keys[::2])})
    out("mget_500", r.mget(keys) == r.mget(keys) and r.mget(keys)[:4])
    out("flushdb", r.flushdb())
    out("get_after_flushdb", [r.get("cr:dst"), r.hgetall("cr:h")])


def commands_info():
    out("command_count_positive", r.command_count() > 200)
    call("command_info_get", lambda: r.execute_command("COMMAND", "INFO", "GET"))
    call("command_getkeys", lambda: r.command_getkeys("SET", "a", "b"))
    call("command_getkeys_bad", lambda: r.command_getkeys("GET"))
    call("readonly", r.readonly)
    call("readwrite", r.readwrite)
    call("wait", lambda: r.wait(0, 10))
    call("lolwut_version", lambda: r.execute_command("LOLWUT", "VERSION", "5").splitlines()[-1])
    call("memory_doctor_type", lambda: type(r.execute_command("MEMORY", "DOCTOR")).__name__)
    call("memory_stats_keys", lambda: sorted(k for k in r.memory_stats() if not k.startswith("db.")))
    call("memory_malloc_stats_type", lambda: type(r.execute_command("MEMORY", "MALLOC-STATS")).__name__)
    call("latency_latest", lambda: r.execute_command("LATENCY", "LATEST"))
    call("slowlog_len_type", lambda: type(r.slowlog_len()).__name__)
    call("client_no_evict", lambda: r.execute_command("CLIENT", "NO-EVICT", "on"))
    call("client_reply_bad", lambda: r.execute_command("CLIENT", "REPLY", "maybe"))
    call("client_pause", lambda: r.client_pause(1))
    call("acl_whoami", r.acl_whoami)
    call("config_set", lambda: r.config_set("maxmemory", "0"))
    call("echo_arity", lambda: r.execute_command("ECHO"))
    call("ping_arity", lambda: r.execute_command("PING", "a", "b"))
    call("select_arity", lambda: r.execute_command("SELECT"))
    # QUIT's reply only: whether redis-py's next command on the pool meets the closed connection (an error) or
    # finds it closed first (a new connection) is a race, with Redis as with featcache.
    call("quit", lambda: client(HOST, PORT, single_connection_client=True).quit())


def connection_options():
    c = redis.Redis(host=HOST, port=PORT, client_name="named-at-connect", socket_timeout=10)
    out("name_at_connect", c.client_getname())
    u = redis.Redis.from_url("redis://%s:%d/0?client_name=fromurl" % (HOST, PORT), socket_timeout=10)
    out("from_url", [u.ping(), u.client_getname()])
    call("password_without_one", lambda: redis.Redis(host=HOST, port=PORT, password="nope").ping())
    call("user_without_one", lambda: redis.Redis(host=HOST, port=PORT, username="bob", password="nope").ping())
    call("default_user", lambda: redis.Redis(host=HOST, port=PORT, username="default", password="nope").ping())


def named(name):
    """The CLIENT LIST entries named name, normalised."""
    return [norm_client(x) for x in r.client_list() if x.get("name") == name]


def wait_for(fn, what, within=5):
    deadline = time.monotonic() + within
    while not fn():
        if time.monotonic() > deadline:
            out("timeout", what)
            return
        time.sleep(0.01)


def client_states():
    """CLIENT LIST of clients subscribed, blocked, in MULTI and monitoring; CLIENT KILL and UNBLOCK of them."""
    s = client(HOST, PORT, client_name="st-sub")
    ps = s.pubsub()
    ps.subscribe("st:a", "st:b")
    ps.psubscribe("st:p*")
    messages(ps, 3)
    out("subscribed", named("st-sub"))
    out("list_pubsub", [norm_client(x) for x in r.client_list(_type="pubsub") if x.get("name") == "st-sub"])
    out("kill_pubsub", r.client_kill_filter(_type="pubsub"))
    out("subscribed_after_kill", named("st-sub"))
    ps.close()

    m = client(HOST, PORT, client_name="st-multi")
    mc = m.connection_pool.get_connection("MULTI")
    mc.send_command("MULTI")
    mc.read_response()
    mc.send_command("SET", "st:k", "v")
    mc.read_response()
    mc.send_command("INCR", "st:n")
    mc.read_response()
    out("in_multi", named("st-multi"))
    mc.send_command("EXEC")
    out("exec", mc.read_response())
    m.connection_pool.release(mc)

    results = {}

    def blocked(name, *cmd):
        b = client(HOST, PORT, client_name=name)
        try:
            results[name] = b.execute_command(*cmd)
        except Exception as e:  # noqa: BLE001 - the exception is the result being compared
            results[name] = "%s: %s" % (type(e).__name__, e)
    ids = {}
    threads = []
    for name, cmd in (("st-blk1", ("BLPOP", "st:l1", "5")), ("st-blk2", ("BLPOP", "st:l2", "5")),
                      ("st-blk3", ("BZPOPMIN", "st:z", "5"))):
        th = threading.Thread(target=blocked, args=(name,) + cmd)
        th.start()
        threads.append(th)
        wait_for(lambda: [x for x in r.client_list() if x.get("name") == name and "b" in x.get("flags", "")],
                 "%s blocked" % name)
        ids[name] = [x["id"] for x in r.client_list() if x.get("name") == name][0]
    out("blocked", named("st-blk1"))
    out("unblock_timeout", r.client_unblock(ids["st-blk1"]))
    out("unblock_error", r.client_unblock(ids["st-blk2"], error=True))
    out("unblock_not_blocked", r.client_unblock(ids["st-blk2"]))
    out("kill_blocked", r.client_kill_filter(_id=ids["st-blk3"]))
    for th in threads:
        th.join(5)
    out("results", sorted(results.items()))

    mon = client(HOST, PORT, client_name="st-mon")
    with mon.monitor() as mn:
        wait_for(lambda: [x for x in r.client_list() if x.get("name") == "st-mon" and "O" in x.get("flags", "")],
                 "st-mon monitoring")
        out("monitoring", named("st-mon"))
    call("kill_user", lambda: r.client_kill_filter(_type="normal", user="nosuchuser"))
    call("kill_laddr_none", lambda: r.client_kill_filter(laddr="127.0.0.1:1"))


def multi_blocking():
    """Blocking commands inside MULTI do not block; listen() and transaction(value_from_callable)."""
    with r.pipeline(transaction=True) as p:
        p.blpop(["mb:none"], timeout=5).brpoplpush("mb:none", "mb:dst", timeout=5).bzpopmin("mb:z", timeout=5)
        t0 = time.monotonic()
        out("exec", p.execute())
        out("did_not_block", time.monotonic() - t0 < 2)
    def fn(pipe):
        v = pipe.get("mb:w")
        pipe.multi()
        pipe.incr("mb:n")
        return v
    r.set("mb:w", "watched")
    out("from_callable", r.transaction(fn, "mb:w", value_from_callable=True))
    p = r.pubsub()
    p.subscribe("mb:ch")
    it = p.listen()
    out("listen_first", norm_msg(next(it)))
    other.publish("mb:ch", "m")
    out("listen_second", norm_msg(next(it)))
    p.close()


def keyspace_events():
    """Keyspace notifications of writes made through the server under test, set on Redis by another application."""
    up.config_set("notify-keyspace-events", "KA")
    try:
        p = r.pubsub()
        p.psubscribe("__keyspace@0__:ke:*")
        messages(p, 1)
        r.set("ke:a", "1")
        r.get("ke:a")
        r.expire("ke:a", 100)
        r.hset("ke:h", "f", "v")
        r.hget("ke:h", "f")
        r.delete("ke:a", "ke:h")
        r.set("ke:x", "1", px=50)
        out("events", messages(p, 6))
        p.close()
    finally:
        up.config_set("notify-keyspace-events", "")


def tracking_redirect():
    """CLIENT TRACKING with a redirect to a RESP2 connection subscribed to __redis__:invalidate."""
    inv = client(HOST, PORT)
    conn = inv.connection_pool.get_connection("SUBSCRIBE")
    conn.send_command("CLIENT", "ID")
    cid = conn.read_response()
    conn.send_command("SUBSCRIBE", "__redis__:invalidate")
    out("subscribed", conn.read_response())
    t = client(HOST, PORT, single_connection_client=True)
    out("tracking_on", t.client_tracking_on(clientid=cid))
    out("trackinginfo_redirect_matches", t.execute_command("CLIENT", "TRACKINGINFO")[3] == cid)
    r.set("tr:a", "1")
    r.set("tr:b", "2")
    out("reads", [t.get("tr:a"), t.mget("tr:a", "tr:b")])
    other.set("tr:a", "changed")
    got = []
    deadline = time.monotonic() + 3
    while len(got) < 1 and time.monotonic() < deadline:
        if conn.can_read(timeout=0.1):
            got.append(conn.read_response())
    out("invalidation", got)
    up.set("tr:b", "from redis")
    got = []
    deadline = time.monotonic() + 3
    while len(got) < 1 and time.monotonic() < deadline:
        if conn.can_read(timeout=0.1):
            got.append(conn.read_response())
    out("invalidation_from_redis", got)
    out("reads_after", [t.get("tr:a"), t.get("tr:b")])
    out("tracking_off", t.client_tracking_off())
    inv.connection_pool.release(conn)
    conn.disconnect()


def pubsub_reconnect():
    """A subscription killed by another application of Redis: redis-py reconnects and subscribes again."""
    p = r.pubsub()
    p.subscribe("rc:a")
    p.psubscribe("rc:p*")
    out("subscribed", messages(p, 2))
    out("killed", up.client_kill_filter(_type="pubsub") >= 1)
    call("get_message_after_kill", lambda: p.get_message(timeout=1))
    out("resubscribed", messages(p, 2))
    wait_for(lambda: other.pubsub_numsub("rc:a")[0][1] == 1, "resubscribed to rc:a")
    other.publish("rc:a", "after")
    other.publish("rc:px", "after p")
    out("messages_after", messages(p, 2))
    p.close()


def more_writes():
    """Writes of every kind on keys just read (and so cached through featcache), each read again after it."""
    def reread(what, *keys):
        out(what, [r.get(k) if r.type(k) in (b"string", b"none") else r.type(k) for k in keys])
    r.set("mw:a", "hello")
    reread("start", "mw:a")
    out("append", r.append("mw:a", " world"))
    reread("after_append", "mw:a")
    out("setrange", r.setrange("mw:a", 0, "J"))
    reread("after_setrange", "mw:a")
    out("getrange", r.getrange("mw:a", 0, 4))
    out("getset", r.getset("mw:a", "g"))
    reread("after_getset", "mw:a")
    out("incrbyfloat", [r.incrbyfloat("mw:f", 1.5), r.incrbyfloat("mw:f", "2.0e2"), r.get("mw:f")])
    out("msetnx", [r.msetnx({"mw:a": "x", "mw:new": "y"}), r.msetnx({"mw:n1": "1", "mw:n2": "2"})])
    reread("after_msetnx", "mw:a", "mw:new", "mw:n1")
    out("set_keepttl", [r.expire("mw:a", 100), r.set("mw:a", "kept", keepttl=True), r.ttl("mw:a") > 90])
    reread("after_keepttl", "mw:a")
    call("set_nx_get", lambda: r.execute_command("SET", "mw:a", "nx", "NX", "GET"))
    out("expire_options", [r.expire("mw:a", 50, gt=True), r.expire("mw:a", 50, lt=True), r.ttl("mw:a") <= 50,
                           r.expire("mw:none", 5, nx=True)])
    call("expiretime", lambda: r.execute_command("EXPIRETIME", "mw:a") > 0)
    out("persist", [r.persist("mw:a"), r.ttl("mw:a")])
    dumped = r.dump("mw:a")
    r.set("mw:r", "before restore")
    reread("before_restore", "mw:r")
    out("restore", r.restore("mw:r", 0, dumped, replace=True))
    reread("after_restore", "mw:r")
    call("restore_busy", lambda: r.restore("mw:r", 0, dumped))
    out("touch_unlink", [r.touch("mw:a", "mw:none"), r.unlink("mw:n1", "mw:n2")])
    reread("after_unlink", "mw:n1", "mw:n2")
    r.rpush("mw:l", 3, 1, 2)
    out("sort_store", [r.sort("mw:l", store="mw:sorted"), r.lrange("mw:sorted", 0, -1), r.sort("mw:l", desc=True)])
    r.set("mw:sorted", "replaced")
    reread("sort_dest_overwritten", "mw:sorted")
    out("sort_store_over_string", r.sort("mw:l", store="mw:sorted"))
    reread("after_sort_over_string", "mw:sorted")
    call("lmpop", lambda: r.lmpop(2, "mw:none", "mw:l", direction="LEFT", count=2))
    call("zmpop", lambda: (r.zadd("mw:z", {"a": 1, "b": 2}), r.zmpop(1, ["mw:z"], max=True))[1])
    out("pf", [r.pfadd("mw:hll", "a", "b", "c"), r.pfcount("mw:hll"), r.pfadd("mw:hll2", "c", "d"),
               r.pfmerge("mw:hllm", "mw:hll", "mw:hll2"), r.pfcount("mw:hllm")])
    out("geo", [r.geoadd("mw:geo", (13.361389, 38.115556, "Palermo", 15.087269, 37.502669, "Catania")),
                r.geodist("mw:geo", "Palermo", "Catania", unit="km"),
                r.geosearch("mw:geo", longitude=15, latitude=37, radius=200, unit="km", withdist=True)])
    out("bitfield", [r.setbit("mw:bits", 7, 1), r.bitcount("mw:bits"),
                     r.bitfield("mw:bits").incrby("u8", 0, 10).get("u8", 0).execute()])
    reread("bits_as_string", "mw:bits")
    out("bitop", [r.bitop("OR", "mw:a", "mw:bits", "mw:bits"), r.get("mw:a")])
    r.xadd("mw:s", {"f": "v"}, id="1-1")
    out("xgroup", r.xgroup_create("mw:s", "g", id="0"))
    out("xreadgroup", r.xreadgroup("g", "c1", {"mw:s": ">"}, count=5, block=100))
    out("xreadgroup_empty", r.xreadgroup("g", "c1", {"mw:s": ">"}, count=5, block=100))
    out("xpending", r.xpending("mw:s", "g"))
    out("xack", r.xack("mw:s", "g", "1-1"))
    out("xinfo_groups", [{k: v for k, v in sorted(g.items())} for g in r.xinfo_groups("mw:s")])
    out("xinfo_consumers", [sorted(k for k in c) for c in r.xinfo_consumers("mw:s", "g")])
    out("xautoclaim", r.xautoclaim("mw:s", "g", "c2", 0))
    call("xreadgroup_nogroup", lambda: r.xreadgroup("nog", "c", {"mw:s": ">"}, block=10))


def blocked_killed_from_redis():
    """Another application of Redis kills every other normal client while one is blocked in BLPOP."""
    res = {}

    def blocked():
        b = client(HOST, PORT)
        try:
            res["blpop"] = b.blpop(["kb:l"], timeout=5)
        except Exception as e:  # noqa: BLE001 - the exception is the result being compared
            res["blpop"] = "%s: %s" % (type(e).__name__, e)
        try:
            res["after"] = b.blpop(["kb:l"], timeout=0.1)
        except Exception as e:  # noqa: BLE001 - the exception is the result being compared
            res["after"] = "%s: %s" % (type(e).__name__, e)
    th = threading.Thread(target=blocked)
    th.start()
    wait_for(lambda: up.info("clients")["blocked_clients"] == 1, "the BLPOP blocked in Redis")
    out("killed", up.client_kill_filter(_type="normal", skipme=True) >= 1)
    th.join(10)
    out("blpop", res.get("blpop"))
    out("blpop_again", res.get("after"))  # the same redis-py client, on a new connection or the same one


def watch_killed_from_redis():
    """Another application of Redis kills every other normal client while one watches a key."""
    r.set("wk:a", "1")
    with r.pipeline() as p:
        p.watch("wk:a")
        out("get", p.get("wk:a"))
        out("killed", up.client_kill_filter(_type="normal", skipme=True) >= 1)
        p.multi()
        p.incr("wk:a")
        call("execute", p.execute)
    out("value", r.get("wk:a"))


CASES = [
    ("watch_conflict", watch_conflict),
    ("pipeline_errors", pipeline_errors),
    ("lock", lock),
    ("pubsub", pubsub),
    ("pubsub_thread", pubsub_thread),
    ("health_check", health_check),
    ("blocking", blocking),
    ("scans", scans),
    ("clients", clients),
    ("monitor", monitor),
    ("objects", objects),
    ("unknown_commands", unknown_commands),
    ("decoded", decoded),
    ("scripts", scripts),
    ("server", server),
    ("kill_from_redis", kill_from_redis),
    ("other_dbs", other_dbs),
    ("commands_info", commands_info),
    ("connection_options", connection_options),
    ("cached_reads", cached_reads),
    ("client_states", client_states),
    ("multi_blocking", multi_blocking),
    ("keyspace_events", keyspace_events),
    ("tracking_redirect", tracking_redirect),
    ("pubsub_reconnect", pubsub_reconnect),
    ("more_writes", more_writes),
    ("blocked_killed_from_redis", blocked_killed_from_redis),
    ("watch_killed_from_redis", watch_killed_from_redis),
]

if __name__ == "__main__":
    for name, fn in CASES:
        case_name = name
        start = time.monotonic()
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - an unexpected exception ends the case, printed for comparison
            out("raised", "%s: %s" % (type(e).__name__, e))
        print("# %s took %.0f ms" % (name, (time.monotonic() - start) * 1000), file=sys.stderr)
