"""Shared helpers for the redis-py compatibility scripts.

Every script is run as: /usr/bin/python3 SCRIPT.py HOST PORT UPSTREAM_PORT
HOST:PORT is featcache; UPSTREAM_PORT is the redis-server behind it on the same host, for checks that must bypass
featcache. A failed check prints what was expected and what came back, and the script exits with status 1.
"""

import os
import sys
import time
import traceback

try:
    import redis
except ImportError:
    print("FAIL: the redis module is missing for " + sys.executable +
          ": install it with: apt-get install -y python3-redis")
    sys.exit(2)


class CheckFailed(Exception):
    """A check of a reply failed."""


def args():
    """Returns (host, port, upstream_port) from the command line."""
    if len(sys.argv) != 4:
        print("usage: %s HOST PORT UPSTREAM_PORT" % sys.argv[0])
        sys.exit(2)
    return sys.argv[1], int(sys.argv[2]), int(sys.argv[3])


def client(host, port, **kw):
    """A redis-py client with short timeouts, so a hung reply fails the script instead of the test timeout."""
    kw.setdefault("socket_timeout", 10)
    kw.setdefault("socket_connect_timeout", 5)
    return redis.Redis(host=host, port=port, **kw)


def eq(got, want, what):
    if got != want:
        raise CheckFailed("%s: got %r; want %r" % (what, got, want))


def check(cond, what):
    if not cond:
        raise CheckFailed(what)


def raises(exc_type, fn, what, contains=None):
    """Checks that fn() raises exc_type (with contains in its message, if given) and returns the exception."""
    try:
        got = fn()
    except exc_type as e:
        if contains is not None and contains not in str(e):
            raise CheckFailed("%s: %s raised %r; want its message to contain %r" %
                              (what, exc_type.__name__, str(e), contains))
        return e
    except Exception as e:  # noqa: BLE001 - any other exception is the failure being reported
        raise CheckFailed("%s: raised %s(%r); want %s" % (what, type(e).__name__, str(e), exc_type.__name__))
    raise CheckFailed("%s: returned %r; want %s" % (what, got, exc_type.__name__))


def poll(fn, want, within, what):
    """Calls fn() until it returns want or `within` seconds pass."""
    deadline = time.monotonic() + within
    got = fn()
    while got != want:
        if time.monotonic() > deadline:
            raise CheckFailed("%s: still %r after %.1fs; want %r" % (what, got, within, want))
        time.sleep(0.01)
        got = fn()
    return got


def script_frames(e):
    """The frames of e's traceback that are in these scripts (not in redis-py), most recent last."""
    here = os.path.dirname(os.path.abspath(__file__))
    lines = []
    for f in traceback.extract_tb(e.__traceback__):
        if os.path.dirname(os.path.abspath(f.filename)) == here and os.path.basename(f.filename) != "fcutil.py":
            lines.append("    at %s:%d in %s: %s" % (os.path.basename(f.filename), f.lineno, f.name, f.line))
    return "\n".join(lines)


def run(cases):
    """Runs each (name, fn) case; prints PASS/FAIL per case and exits 1 if any failed."""
    failed = 0
    for name, fn in cases:
        start = time.monotonic()
        try:
            fn()
        except CheckFailed as e:
            failed += 1
            print("FAIL %s: %s" % (name, e))
        except Exception as e:  # noqa: BLE001 - an unexpected exception from redis-py is a failure of the case
            failed += 1
            print("FAIL %s: unexpected %s: %s\n%s" % (name, type(e).__name__, e, script_frames(e)))
        else:
            print("PASS %s (%.0f ms)" % (name, (time.monotonic() - start) * 1000))
        sys.stdout.flush()
    if failed:
        print("%d of %d cases failed" % (failed, len(cases)))
        sys.exit(1)
