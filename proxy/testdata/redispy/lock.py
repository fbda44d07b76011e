"""redis-py's Lock (SET NX PX plus Lua scripts for extend and release) through featcache.

Run: /usr/bin/python3 lock.py HOST PORT UPSTREAM_PORT
"""

import threading
import time

import redis
from redis.exceptions import LockError, LockNotOwnedError

from fcutil import args, check, client, eq, raises, run

HOST, PORT, UPSTREAM_PORT = args()
r = client(HOST, PORT)
other = client(HOST, PORT)
up = client(HOST, UPSTREAM_PORT)


def acquire_extend_release():
    lock = r.lock("l:name", timeout=5)
    eq(lock.acquire(blocking=False), True, "acquire")
    token = lock.local.token
    check(token is not None, "the lock has no token after acquire")
    eq(r.get("l:name"), token, "GET of the lock key through featcache")
    eq(up.get("l:name"), token, "the lock key in Redis")
    eq(lock.locked(), True, "locked()")
    eq(lock.owned(), True, "owned()")
    pttl = r.pttl("l:name")
    check(4000 < pttl <= 5000, "PTTL after acquire with timeout=5: got %r; want 4000..5000" % pttl)
    eq(lock.extend(10), True, "extend(10)")
    pttl = r.pttl("l:name")
    check(13000 < pttl <= 15000, "PTTL after extend(10): got %r; want 13000..15000" % pttl)
    eq(lock.extend(3, replace_ttl=True), True, "extend(3, replace_ttl=True)")
    pttl = r.pttl("l:name")
    check(2000 < pttl <= 3000, "PTTL after extend(3, replace_ttl=True): got %r; want 2000..3000" % pttl)
    eq(lock.reacquire(), True, "reacquire()")
    pttl = r.pttl("l:name")
    check(4000 < pttl <= 5000, "PTTL after reacquire(): got %r; want 4000..5000" % pttl)

    second = other.lock("l:name", timeout=5, blocking_timeout=0.3)
    start = time.monotonic()
    eq(second.acquire(), False, "a second lock with blocking_timeout=0.3 while the first is held")
    waited = time.monotonic() - start
    # redis-py gives up as soon as its next try (every 0.1s) would pass blocking_timeout: after 0.2s here.
    check(0.15 <= waited < 1, "the second acquire gave up after %.3fs; want 0.2s to 0.3s" % waited)
    eq(second.owned(), False, "the second lock's owned()")
    raises(LockError, second.release, "release of a lock never acquired")

    lock.release()
    eq(r.get("l:name"), None, "GET of the lock key after release")
    eq(other.get("l:name"), None, "another client's GET of the lock key after release")
    eq(lock.locked(), False, "locked() after release")
    eq(lock.owned(), False, "owned() after release")
    raises(LockError, lock.release, "a second release")
    raises(LockError, lambda: lock.extend(1), "extend after release")

    eq(second.acquire(), True, "the second lock after the first was released")
    eq(r.get("l:name"), second.local.token, "GET of the lock key: the second lock's token")
    eq(lock.owned(), False, "the first lock's owned() while the second holds it")
    eq(second.owned(), True, "the second lock's owned()")
    second.release()
    eq(r.get("l:name"), None, "GET of the lock key after the second release")


def lock_lost():
    # The lock key expires (or is taken over) behind the holder's back: release must say the lock is not owned.
    lock = r.lock("l:lost", timeout=5)
    eq(lock.acquire(blocking=False), True, "acquire")
    eq(lock.owned(), True, "owned() (caches the lock key)")
    up.set("l:lost", "someone else")
    deadline = time.monotonic() + 2
    while lock.owned() and time.monotonic() < deadline:
        time.sleep(0.01)
    eq(lock.owned(), False, "owned() after Redis gave the lock key to someone else")
    raises(LockNotOwnedError, lock.release, "release of a lock taken over")
    eq(r.get("l:lost"), b"someone else", "GET of the lock key")
    lock = r.lock("l:short", timeout=0.2)
    eq(lock.acquire(blocking=False), True, "acquire with timeout 0.2")
    eq(lock.owned(), True, "owned() right after acquire")
    deadline = time.monotonic() + 2
    while lock.owned() and time.monotonic() < deadline:
        time.sleep(0.01)
    eq(lock.owned(), False, "owned() after the lock's 0.2s timeout")


def contended():
    # Threads increment a plain counter under the lock; no increment is lost.
    r.set("l:counter", 0)
    errors = []

    def worker():
        c = client(HOST, PORT)
        try:
            for _ in range(10):
                with c.lock("l:mutex", timeout=5, blocking_timeout=5, sleep=0.005):
                    v = int(c.get("l:counter"))
                    c.set("l:counter", v + 1)
        except Exception as e:  # noqa: BLE001 - reported by the main thread
            errors.append(repr(e))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    eq(errors, [], "errors in the worker threads")
    eq(r.get("l:counter"), b"40", "counter incremented by 4 threads x 10 under the lock")
    eq(r.get("l:mutex"), None, "the lock key after the last release")


run([
    ("acquire_extend_release", acquire_extend_release),
    ("lock_lost", lock_lost),
    ("contended", contended),
])
