// Package feast encodes Feast's Redis online store layout: the keys of entities, the hash fields features live in
// and the event-time values. Feast's Redis online store keeps each entity's features in one hash: the key is the
// serialized entity key with the project name as a suffix, each feature is the field murmur3_32("<feature_view>:
// <feature>") (4 bytes, little endian) holding a serialized ValueProto, and "_ts:<feature_view>" holds the row's
// event time (a serialized google.protobuf.Timestamp). featcache reads that layout (config maps the feast section
// to policies, proxy checks event ages); tools and tests that write it build keys and values here.
package feast

import (
	"encoding/binary"
	"math/bits"
	"time"
)

// FieldID returns the hash field Feast stores feature of view in: murmur3_32 of "<view>:<feature>", seed 0,
// as 4 little-endian bytes.
func FieldID(view, feature string) []byte {
	return binary.LittleEndian.AppendUint32(nil, murmur3_32([]byte(view+":"+feature), 0))
}

// murmur3_32 is MurmurHash3's x86 32-bit hash (the mmh3.hash Feast uses).
func murmur3_32(data []byte, seed uint32) uint32 {
	const c1, c2 = 0xcc9e2d51, 0x1b873593
	h := seed
	n := len(data) / 4
	for i := 0; i < n; i++ {
		k := binary.LittleEndian.Uint32(data[4*i:])
		k *= c1
		k = bits.RotateLeft32(k, 15)
		k *= c2
		h ^= k
		h = bits.RotateLeft32(h, 13)
		h = h*5 + 0xe6546b64
	}
	var k uint32
	tail := data[4*n:]
	switch len(tail) {
	case 3:
		k ^= uint32(tail[2]) << 16
		fallthrough
	case 2:
		k ^= uint32(tail[1]) << 8
		fallthrough
	case 1:
		k ^= uint32(tail[0])
		k *= c1
		k = bits.RotateLeft32(k, 15)
		k *= c2
		h ^= k
	}
	h ^= uint32(len(data))
	h ^= h >> 16
	h *= 0x85ebca6b
	h ^= h >> 13
	h *= 0xc2b2ae35
	h ^= h >> 16
	return h
}

// Value is one entity value of an entity key: a string, bytes, int32 or int64 (the types Feast allows in
// entity keys).
type Value struct {
	Type  uint32 // Feast's ValueType: 1 bytes, 2 string, 3 int32, 4 int64
	Bytes []byte // the value's serialization: utf-8, raw bytes, or little-endian integers
}

// String, Int64 and Int32 build entity values.
func String(s string) Value { return Value{Type: 2, Bytes: []byte(s)} }
func Int64(v int64) Value {
	return Value{Type: 4, Bytes: binary.LittleEndian.AppendUint64(nil, uint64(v))}
}
func Int32(v int32) Value {
	return Value{Type: 3, Bytes: binary.LittleEndian.AppendUint32(nil, uint32(v))}
}

// AppendKey appends the Redis key of an entity as Feast writes it (entity key serialization version 3):
// the number of join keys, each join key sorted by name as (type STRING, length, bytes), then each value in the
// same order as (type, length, bytes), all little endian, then the project name. featcache itself never builds
// keys; tools and tests that write Feast's layout do.
func AppendKey(dst []byte, project string, joinKeys []string, values []Value) []byte {
	idx := make([]int, len(joinKeys))
	for i := range idx {
		idx[i] = i
	}
	for i := 1; i < len(idx); i++ { // insertion sort by name: join keys are few
		for j := i; j > 0 && joinKeys[idx[j]] < joinKeys[idx[j-1]]; j-- {
			idx[j], idx[j-1] = idx[j-1], idx[j]
		}
	}
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(joinKeys)))
	for _, i := range idx {
		dst = binary.LittleEndian.AppendUint32(dst, 2)
		dst = binary.LittleEndian.AppendUint32(dst, uint32(len(joinKeys[i])))
		dst = append(dst, joinKeys[i]...)
	}
	for _, i := range idx {
		dst = binary.LittleEndian.AppendUint32(dst, values[i].Type)
		dst = binary.LittleEndian.AppendUint32(dst, uint32(len(values[i].Bytes)))
		dst = append(dst, values[i].Bytes...)
	}
	return append(dst, project...)
}

// AppendTimestamp appends a serialized google.protobuf.Timestamp (field 1 seconds, field 2 nanos, varints),
// as Feast writes in "_ts:<view>".
func AppendTimestamp(dst []byte, t time.Time) []byte {
	if s := t.Unix(); s != 0 {
		dst = append(dst, 0x08)
		dst = binary.AppendUvarint(dst, uint64(s))
	}
	if n := t.Nanosecond(); n != 0 {
		dst = append(dst, 0x10)
		dst = binary.AppendUvarint(dst, uint64(n))
	}
	return dst
}

// ParseTimestamp reads a serialized google.protobuf.Timestamp. ok is false for bytes that are not one.
func ParseTimestamp(b []byte) (t time.Time, ok bool) {
	var secs, nanos int64
	for len(b) > 0 {
		tag, n := binary.Uvarint(b)
		if n <= 0 || tag&7 != 0 { // both fields are varints
			return time.Time{}, false
		}
		b = b[n:]
		v, m := binary.Uvarint(b)
		if m <= 0 {
			return time.Time{}, false
		}
		b = b[m:]
		switch tag >> 3 {
		case 1:
			secs = int64(v)
		case 2:
			nanos = int64(v)
		}
	}
	return time.Unix(secs, nanos), true
}
