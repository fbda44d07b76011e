package localcache

import (
	"encoding/binary"
	"errors"
)

// Kind says what an entry holds.
type Kind uint8

const (
	// KindValue is a string value, served as a RESP2 bulk string.
	KindValue Kind = 1
	// KindNil is a remembered missing key, served as a RESP2 null bulk string.
	KindNil Kind = 2
	// KindHash is some or all of the fields of a hash (see hash.go).
	KindHash Kind = 3
)

var kindNames = [...]string{KindValue: "value", KindNil: "nil", KindHash: "hash"}

// String returns the kind's name as CACHE EXPLAIN shows it.
func (k Kind) String() string { return enumName(kindNames[:], uint8(k), "kind") }

// Header is the fixed-size prefix of every freecache value. freecache keeps expiry in whole seconds,
// so the times that decide what may be served live here, in unix milliseconds.
type Header struct {
	Kind    Kind
	Epoch   uint32 // flush epoch at fill time; an entry of another epoch is never served
	Session uint32 // tracking session at fill time; an entry of an earlier session is unverified
	// Unverified marks an entry stored while no invalidation vouched for its fill (tracking was down, or went
	// down or came back during the fill): it is unverified in every session, as an entry of an earlier one is.
	Unverified bool
	FetchedAt  int64 // unix ms when the upstream read was sent (the fill's start)
	SoftAt     int64 // unix ms: from this instant on, serve and refresh in the background
	HardAt     int64 // unix ms: from this instant on, never served (except serve-stale)
	ExpireAt   int64 // unix ms when the upstream key expires (from PTTL); 0 = no upstream expiry
}

// headerVersion is the first byte of every encoded header. A process only ever reads entries it wrote
// itself (the tier is in memory), so the version guards against a layout change within one binary's
// lifetime never happening silently, and makes corrupt input fail loudly in decodeHeader.
const headerVersion = 2

// headerSize is the encoded size of a Header:
//
//	offset size field
//	0      1    version (headerVersion)
//	1      1    Kind, | unverifiedFlag when Unverified
//	2      4    Epoch      uint32 little endian
//	6      4    Session    uint32 little endian
//	10     8    FetchedAt  int64 little endian, unix ms
//	18     8    SoftAt     int64 little endian, unix ms
//	26     8    HardAt     int64 little endian, unix ms
//	34     8    ExpireAt   int64 little endian, unix ms, 0 = none
//	42          value bytes follow (empty for KindNil)
const headerSize = 42

// unverifiedFlag is the bit of the kind byte that encodes Header.Unverified.
const unverifiedFlag = 0x80

var (
	// errShortHeader means the input is shorter than an encoded header.
	errShortHeader = errors.New("localcache: entry shorter than its header")
	// errHeaderVersion means the input starts with a version byte this build does not know.
	errHeaderVersion = errors.New("localcache: unknown entry header version")
	// errHeaderKind means the header names a kind this build does not know.
	errHeaderKind = errors.New("localcache: unknown entry kind")
)

// append appends the encoded header (headerSize bytes) to dst and returns the extended slice.
func (h *Header) append(dst []byte) []byte {
	kind := byte(h.Kind)
	if h.Unverified {
		kind |= unverifiedFlag
	}
	dst = append(dst, headerVersion, kind)
	dst = binary.LittleEndian.AppendUint32(dst, h.Epoch)
	dst = binary.LittleEndian.AppendUint32(dst, h.Session)
	dst = binary.LittleEndian.AppendUint64(dst, uint64(h.FetchedAt))
	dst = binary.LittleEndian.AppendUint64(dst, uint64(h.SoftAt))
	dst = binary.LittleEndian.AppendUint64(dst, uint64(h.HardAt))
	dst = binary.LittleEndian.AppendUint64(dst, uint64(h.ExpireAt))
	return dst
}

// decodeHeader splits an encoded entry into its header and its value. The returned value aliases b.
// It rejects input shorter than a header, an unknown version and an unknown kind; it never panics.
func decodeHeader(b []byte) (Header, []byte, error) {
	var h Header
	if err := h.decode(b); err != nil {
		return Header{}, nil, err
	}
	return h, b[headerSize:], nil
}

// decode sets h from the header at the start of b, as decodeHeader does, without copying a Header out: the hit
// path decodes one per lookup. h is unchanged when it returns an error.
func (h *Header) decode(b []byte) error {
	if len(b) < headerSize {
		return errShortHeader
	}
	if b[0] != headerVersion {
		return errHeaderVersion
	}
	k := Kind(b[1] &^ unverifiedFlag)
	if k != KindValue && k != KindNil && k != KindHash {
		return errHeaderKind
	}
	h.Kind = k
	h.Unverified = b[1]&unverifiedFlag != 0
	h.Epoch = binary.LittleEndian.Uint32(b[2:])
	h.Session = binary.LittleEndian.Uint32(b[6:])
	h.FetchedAt = int64(binary.LittleEndian.Uint64(b[10:]))
	h.SoftAt = int64(binary.LittleEndian.Uint64(b[18:]))
	h.HardAt = int64(binary.LittleEndian.Uint64(b[26:]))
	h.ExpireAt = int64(binary.LittleEndian.Uint64(b[34:]))
	return nil
}
