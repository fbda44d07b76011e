package localcache

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"
)

func TestDecodeHeaderRejects(t *testing.T) {
	valid := (&Header{Kind: KindValue, Epoch: 7, FetchedAt: 1, SoftAt: 2, HardAt: 3, ExpireAt: 4}).append(nil)
	withByte := func(i int, b byte) []byte {
		out := bytes.Clone(valid)
		out[i] = b
		return out
	}
	tests := []struct {
		name string
		in   []byte
		want error
	}{
		{"nil", nil, errShortHeader},
		{"empty", []byte{}, errShortHeader},
		{"one byte short", valid[:headerSize-1], errShortHeader},
		{"version 0", withByte(0, 0), errHeaderVersion},
		{"version 1 (the layout with a 64-bit epoch)", withByte(0, 1), errHeaderVersion},
		{"version 3", withByte(0, 3), errHeaderVersion},
		{"kind 0", withByte(1, 0), errHeaderKind},
		{"kind 4", withByte(1, 4), errHeaderKind},
		{"kind 255", withByte(1, 255), errHeaderKind},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := decodeHeader(tt.in)
			if !errors.Is(err, tt.want) {
				t.Fatalf("decodeHeader(%x) error = %v; want %v", tt.in, err, tt.want)
			}
		})
	}
}

func TestHeaderRoundTrip(t *testing.T) {
	tests := []struct {
		name  string
		h     Header
		value []byte
	}{
		{"value", Header{Kind: KindValue, Epoch: 1, FetchedAt: 1_700_000_000_000, SoftAt: 1_700_000_010_000, HardAt: 1_700_000_060_000}, []byte("hello")},
		{"nil", Header{Kind: KindNil, Epoch: 2, FetchedAt: 5, SoftAt: 6, HardAt: 6}, nil},
		{"empty value with expiry", Header{Kind: KindValue, Epoch: 3, FetchedAt: 10, SoftAt: 11, HardAt: 12, ExpireAt: 12}, []byte{}},
		{"extremes", Header{Kind: KindValue, Epoch: ^uint32(0), Session: ^uint32(0), FetchedAt: -1 << 63, SoftAt: 1<<63 - 1, HardAt: -1, ExpireAt: 1}, []byte{0, 0xff, '\r', '\n'}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := append(tt.h.append(nil), tt.value...)
			if len(b) != headerSize+len(tt.value) {
				t.Fatalf("encoded length %d; want %d", len(b), headerSize+len(tt.value))
			}
			h, v, err := decodeHeader(b)
			if err != nil {
				t.Fatalf("decodeHeader: %v", err)
			}
			if h != tt.h {
				t.Errorf("header %+v; want %+v", h, tt.h)
			}
			if !bytes.Equal(v, tt.value) {
				t.Errorf("value %q; want %q", v, tt.value)
			}
		})
	}
}

// TestHeaderLayout pins the byte layout documented at headerSize.
func TestHeaderLayout(t *testing.T) {
	h := Header{Kind: KindNil, Epoch: 0x01020304, Session: 0x05060708, FetchedAt: 0x11, SoftAt: 0x22, HardAt: 0x33, ExpireAt: 0x44}
	got := h.append(nil)
	want := []byte{
		2, 2,
		4, 3, 2, 1, 8, 7, 6, 5,
		0x11, 0, 0, 0, 0, 0, 0, 0,
		0x22, 0, 0, 0, 0, 0, 0, 0,
		0x33, 0, 0, 0, 0, 0, 0, 0,
		0x44, 0, 0, 0, 0, 0, 0, 0,
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("append = %x; want %x", got, want)
	}
}

// FuzzHeader checks that decodeHeader never panics, that whatever it accepts re-encodes to the same
// bytes (the encoding has no slack), and that a header built from the input survives append→decode.
func FuzzHeader(f *testing.F) {
	f.Add([]byte{})
	f.Add((&Header{Kind: KindValue, Epoch: 1, FetchedAt: 1_700_000_000_000, SoftAt: 1_700_000_010_000, HardAt: 1_700_000_060_000}).append(nil))
	f.Add(append((&Header{Kind: KindNil, Epoch: 9}).append(nil), "tail"...))
	f.Fuzz(func(t *testing.T, data []byte) {
		h, v, err := decodeHeader(data)
		if err == nil {
			if re := append(h.append(nil), v...); !bytes.Equal(re, data) {
				t.Fatalf("decode+append = %x; want %x", re, data)
			}
		}

		var fields [41]byte
		n := copy(fields[:], data)
		built := Header{
			Kind:      KindValue + Kind(fields[0]&1),
			Epoch:     binary.BigEndian.Uint32(fields[1:]),
			Session:   binary.BigEndian.Uint32(fields[5:]),
			FetchedAt: int64(binary.BigEndian.Uint64(fields[9:])),
			SoftAt:    int64(binary.BigEndian.Uint64(fields[17:])),
			HardAt:    int64(binary.BigEndian.Uint64(fields[25:])),
			ExpireAt:  int64(binary.BigEndian.Uint64(fields[33:])),
		}
		value := data[n:]
		got, gotValue, err := decodeHeader(append(built.append(nil), value...))
		if err != nil {
			t.Fatalf("decode of appended %+v: %v", built, err)
		}
		if got != built || !bytes.Equal(gotValue, value) {
			t.Fatalf("round trip = %+v %q; want %+v %q", got, gotValue, built, value)
		}
	})
}
