"""Feast's online-store read pattern through featcache, with redis-py.

Rows are written straight to Redis exactly in Feast's layout (entity key serialization v3 with the project as a
suffix, murmur3_32 field ids, serialized ValueProto values and a Timestamp under _ts:<view>), then read the way
Feast's Redis online store reads them: a non-transactional pipeline of one HMGET per entity. The replies through
featcache must equal the replies from Redis, also when answered from featcache's memory.
"""
import struct
import sys

import redis

from fcutil import args, client, eq, run

HOST, PORT, UPSTREAM_PORT = args()
r = client(HOST, PORT)
up = client(HOST, UPSTREAM_PORT)
PROJECT = b"fraud_detection"


def murmur3_32(data, seed=0):
    c1, c2, mask = 0xCC9E2D51, 0x1B873593, 0xFFFFFFFF

    def rotl(x, n):
        return ((x << n) | (x >> (32 - n))) & mask

    h = seed
    n = len(data) // 4
    for i in range(n):
        k = struct.unpack_from("<I", data, 4 * i)[0]
        k = rotl((k * c1) & mask, 15) * c2 & mask
        h = (rotl(h ^ k, 13) * 5 + 0xE6546B64) & mask
    tail, k = data[4 * n:], 0
    if len(tail) == 3:
        k ^= tail[2] << 16
    if len(tail) >= 2:
        k ^= tail[1] << 8
    if tail:
        k ^= tail[0]
        h ^= rotl((k * c1) & mask, 15) * c2 & mask
    h ^= len(data)
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & mask
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & mask
    return h ^ (h >> 16)


def field_id(view, feature):
    return struct.pack("<I", murmur3_32(("%s:%s" % (view, feature)).encode()))


def entity_key(user_id):
    out = struct.pack("<I", 1)  # one join key
    name = b"user_id"
    out += struct.pack("<II", 2, len(name)) + name
    out += struct.pack("<II", 4, 8) + struct.pack("<q", user_id)
    return out + PROJECT


def int64_value(v):
    out, v = b"\x20", v & 0xFFFFFFFFFFFFFFFF
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def double_value(v):
    return b"\x29" + struct.pack("<d", v)


def timestamp(seconds):
    return b"\x08" + int64_value(seconds)[1:]


FEATURES = [field_id("txn_stats", "count_1h"), field_id("txn_stats", "sum_1h"), b"_ts:txn_stats"]


def feast_pipeline():
    users = list(range(1, 51))
    for u in users[:40]:  # users 41-50 have no row
        up.hset(entity_key(u), mapping={
            FEATURES[0]: int64_value(u), FEATURES[1]: double_value(u * 1.5), FEATURES[2]: timestamp(1700000000 + u)})

    def read(c):
        pipe = c.pipeline(transaction=False)
        for u in users:
            pipe.hmget(entity_key(u), FEATURES)
        return pipe.execute()

    want = read(up)
    eq(read(r), want, "first read through featcache (fills)")
    eq(read(r), want, "second read through featcache (from memory)")
    eq(want[0][0], int64_value(1), "user 1's count_1h")
    eq(want[45], [None, None, None], "a user without a row")
    # A new materialization of one row: HSET through featcache, read back at once.
    r.hset(entity_key(7), mapping={FEATURES[0]: int64_value(700)})
    eq(r.hmget(entity_key(7), FEATURES)[0], int64_value(700), "read-your-writes after HSET")


run([("feast_pipeline", feast_pipeline)])
