package feast

import (
	"encoding/hex"
	"testing"
	"time"
)

func TestMurmur3(t *testing.T) {
	// Reference values of MurmurHash3 x86_32, seed 0 (Python's mmh3.hash(s, signed=False)).
	for _, tt := range []struct {
		in   string
		want uint32
	}{
		{"", 0},
		{"foo", 4138058784},
		{"hello", 0x248bfa47},
		{"The quick brown fox jumps over the lazy dog", 0x2e4ff723},
		{"driver_hourly_stats:conv_rate", 3672334433},
	} {
		if got := murmur3_32([]byte(tt.in), 0); got != tt.want {
			t.Errorf("murmur3_32(%q) = %d; want %d", tt.in, got, tt.want)
		}
	}
	if got := hex.EncodeToString(FieldID("driver_hourly_stats", "conv_rate")); got != "6160e3da" {
		t.Errorf("FieldID = %s; want 6160e3da (little endian)", got)
	}
}

func TestKeyAndTimestamp(t *testing.T) {
	key := AppendKey(nil, "proj", []string{"driver_id", "customer_id"}, []Value{Int64(1001), String("c9")})
	want := "02000000" + // two join keys
		"02000000" + "0b000000" + hex.EncodeToString([]byte("customer_id")) + // sorted by name
		"02000000" + "09000000" + hex.EncodeToString([]byte("driver_id")) +
		"02000000" + "02000000" + hex.EncodeToString([]byte("c9")) +
		"04000000" + "08000000" + "e903000000000000" +
		hex.EncodeToString([]byte("proj"))
	if got := hex.EncodeToString(key); got != want {
		t.Fatalf("key\n got %s\nwant %s", got, want)
	}
	ts := time.Unix(1700000000, 123)
	got, ok := ParseTimestamp(AppendTimestamp(nil, ts))
	if !ok || !got.Equal(ts) {
		t.Fatalf("timestamp round trip: %v %v", got, ok)
	}
	if _, ok := ParseTimestamp([]byte{0x0a, 0x01}); ok {
		t.Fatal("a length-delimited field parsed as a timestamp")
	}
}
