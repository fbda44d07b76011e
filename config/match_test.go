package config

import (
	"bytes"
	"fmt"
	"reflect"
	"sort"
	"strings"
	"testing"
)

// testPolicies builds cached policies from specs: "prefix:..." for a prefix policy, "pattern:..." for a pattern
// policy, "nocache:..." for an uncached prefix policy. Each policy is named after its spec.
func testPolicies(specs ...string) []*Policy {
	out := make([]*Policy, len(specs))
	for i, s := range specs {
		kind, arg, _ := strings.Cut(s, ":")
		p := &Policy{Name: s, Cache: true, Index: i}
		switch kind {
		case "prefix":
			p.IsPrefix, p.Prefix = true, arg
		case "pattern":
			p.Pattern = arg
		case "nocache":
			p.IsPrefix, p.Prefix, p.Cache = true, arg, false
		default:
			panic("bad spec " + s)
		}
		out[i] = p
	}
	return out
}

// expectMatches checks that m matches each key of want to the policy named by its value.
func expectMatches(t *testing.T, m *Matcher, want map[string]string) {
	t.Helper()
	for key, name := range want {
		if p := m.Match([]byte(key)); p == nil || p.Name != name {
			t.Errorf("Match(%q) = %v; want policy %q", key, p, name)
		}
	}
}

func TestMatch(t *testing.T) {
	tests := []struct {
		name     string
		policies []string
		key      string
		want     string // policy name; "" for none
	}{
		{name: "no policies", key: "a", want: ""},
		{name: "no match", policies: []string{"prefix:a:", "pattern:b*"}, key: "c:1", want: ""},
		{name: "prefix", policies: []string{"prefix:a:"}, key: "a:1", want: "prefix:a:"},
		{name: "prefix is the whole key", policies: []string{"prefix:a:"}, key: "a:", want: "prefix:a:"},
		{name: "key shorter than prefix", policies: []string{"prefix:a:"}, key: "a", want: ""},
		{name: "default", policies: []string{"prefix:", "prefix:a:"}, key: "zzz", want: "prefix:"},
		{name: "default matches empty key", policies: []string{"prefix:", "prefix:a:"}, key: "", want: "prefix:"},
		{name: "empty key without default", policies: []string{"prefix:a:"}, key: "", want: ""},
		{name: "longest prefix wins", policies: []string{"prefix:emb:", "prefix:emb:user:", "prefix:"}, key: "emb:user:1", want: "prefix:emb:user:"},
		{name: "longest prefix wins in any order", policies: []string{"prefix:emb:user:", "prefix:emb:", "prefix:"}, key: "emb:user:1", want: "prefix:emb:user:"},
		{name: "shorter prefix when longer does not match", policies: []string{"prefix:emb:", "prefix:emb:user:"}, key: "emb:item:1", want: "prefix:emb:"},
		{name: "partial match of longer prefix", policies: []string{"prefix:emb:", "prefix:emb:user:"}, key: "emb:us", want: "prefix:emb:"},
		{name: "nested prefixes", policies: []string{"prefix:a", "prefix:ab", "prefix:abc", "prefix:abcd"}, key: "abcx", want: "prefix:abc"},
		{name: "case-sensitive", policies: []string{"prefix:Profile:"}, key: "profile:1", want: ""},
		{name: "pattern before prefix", policies: []string{"prefix:customer:", "pattern:customer:*:credit_features:*"}, key: "customer:1:credit_features:x", want: "pattern:customer:*:credit_features:*"},
		{name: "pattern before longer prefix", policies: []string{"prefix:customer:1:credit_features:", "pattern:customer:*"}, key: "customer:1:credit_features:x", want: "pattern:customer:*"},
		{name: "prefix when pattern does not match", policies: []string{"prefix:customer:", "pattern:customer:*:credit_features:*"}, key: "customer:1:name", want: "prefix:customer:"},
		{name: "first pattern wins", policies: []string{"pattern:a*", "pattern:ab*"}, key: "abc", want: "pattern:a*"},
		{name: "first pattern wins other order", policies: []string{"pattern:ab*", "pattern:a*"}, key: "abc", want: "pattern:ab*"},
		{name: "pattern before default", policies: []string{"prefix:", "pattern:*x"}, key: "yx", want: "pattern:*x"},
		{name: "uncached prefix is still a match", policies: []string{"prefix:", "nocache:session:"}, key: "session:1", want: "nocache:session:"},
		{name: "binary prefix", policies: []string{"prefix:\x00\xff", "prefix:\x00"}, key: "\x00\xff\x00", want: "prefix:\x00\xff"},
		{name: "binary prefix shorter", policies: []string{"prefix:\x00\xff", "prefix:\x00"}, key: "\x00\xfe", want: "prefix:\x00"},
		{name: "binary key no NUL confusion", policies: []string{"prefix:a\x00b"}, key: "a", want: ""},
		{name: "binary pattern", policies: []string{"pattern:\xff?\x00"}, key: "\xff\x01\x00", want: "pattern:\xff?\x00"},
		{name: "invalid UTF-8 key", policies: []string{"prefix:\xc3"}, key: "\xc3\x28", want: "prefix:\xc3"},
		{name: "invalid pattern matches nothing", policies: []string{"pattern:a[", "prefix:"}, key: "a[", want: "prefix:"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := NewMatcher(testPolicies(tc.policies...))
			p := m.Match([]byte(tc.key))
			got := ""
			if p != nil {
				got = p.Name
			}
			if got != tc.want {
				t.Errorf("Match(%q) = %q; want %q", tc.key, got, tc.want)
			}
		})
	}
}

// TestMatchWideFanout covers a node with more children than the linear search handles, so the binary search runs.
func TestMatchWideFanout(t *testing.T) {
	var specs []string
	for c := 0; c < 256; c += 3 {
		specs = append(specs, "prefix:k"+string([]byte{byte(c)}))
	}
	m := NewMatcher(testPolicies(specs...))
	for c := 0; c < 256; c++ {
		key := []byte{'k', byte(c), 'z'}
		p := m.Match(key)
		if c%3 == 0 {
			if p == nil || p.Prefix != string(key[:2]) {
				t.Errorf("Match(%q) = %v; want prefix %q", key, p, key[:2])
			}
		} else if p != nil {
			t.Errorf("Match(%q) = %q; want none", key, p.Prefix)
		}
	}
}

func TestMatchNil(t *testing.T) {
	var m *Matcher
	if p := m.Match([]byte("a")); p != nil {
		t.Errorf("nil Matcher matched %v", p)
	}
	if p := NewMatcher(nil).Match([]byte("a")); p != nil {
		t.Errorf("empty Matcher matched %v", p)
	}
	if got := NewMatcher(nil).TrackingPrefixes(); len(got) != 0 {
		t.Errorf("empty Matcher tracks %q", got)
	}
}

func TestTrackingPrefixes(t *testing.T) {
	tests := []struct {
		name     string
		policies []string
		want     []string
	}{
		{name: "none", want: nil},
		{name: "only uncached", policies: []string{"nocache:session:"}, want: nil},
		{name: "prefixes sorted", policies: []string{"prefix:profile:", "prefix:cart:"}, want: []string{"cart:", "profile:"}},
		{name: "uncached left out", policies: []string{"prefix:cart:", "nocache:session:"}, want: []string{"cart:"}},
		{name: "overlap keeps shortest", policies: []string{"prefix:emb:user:", "prefix:emb:", "prefix:emb:item:"}, want: []string{"emb:"}},
		{name: "default covers all", policies: []string{"prefix:cart:", "prefix:"}, want: []string{""}},
		{name: "pattern literal prefix", policies: []string{"pattern:customer:*:credit_features:*", "prefix:cart:"}, want: []string{"cart:", "customer:"}},
		{name: "pattern overlaps prefix", policies: []string{"pattern:cart:?:x", "prefix:cart:"}, want: []string{"cart:"}},
		{name: "pattern literal prefix stops at escape", policies: []string{`pattern:a\*b`}, want: []string{"a"}},
		{name: "pattern literal prefix stops at bracket", policies: []string{"pattern:ab[cd]"}, want: []string{"ab"}},
		{name: "pattern without literal prefix", policies: []string{"pattern:*:credit", "prefix:cart:"}, want: []string{""}},
		{name: "duplicates collapse", policies: []string{"pattern:cart:*", "prefix:cart:"}, want: []string{"cart:"}},
		{name: "siblings stay", policies: []string{"prefix:ab", "prefix:ac", "prefix:a"}, want: []string{"a"}},
		{name: "no false overlap", policies: []string{"prefix:ab", "prefix:a:", "prefix:b"}, want: []string{"a:", "ab", "b"}},
		{name: "binary", policies: []string{"prefix:\xff", "prefix:\x00\x01", "prefix:\x00"}, want: []string{"\x00", "\xff"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := NewMatcher(testPolicies(tc.policies...))
			got := m.TrackingPrefixes()
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %q; want %q", got, tc.want)
			}
			if len(got) > 0 {
				got[0] = "changed"
				if again := m.TrackingPrefixes(); again[0] == "changed" {
					t.Errorf("TrackingPrefixes returned the matcher's own slice")
				}
			}
		})
	}
}

// benchPolicies are 20 prefix policies, a default and 2 patterns, like a busy feature store's configuration.
func benchPolicies() []*Policy {
	specs := []string{"pattern:customer:*:credit_features:*", "pattern:acct:*:risk:v[0-9]*", "prefix:"}
	for _, p := range []string{"profile", "spend7d", "spend30d", "cart", "fraud", "emb:user", "emb:item", "session",
		"clicks1h", "clicks1d", "views", "orders", "returns", "device", "geo", "merchant", "txn", "score", "segment",
		"ab"} {
		specs = append(specs, "prefix:"+p+":")
	}
	return testPolicies(specs...)
}

func TestMatchAllocs(t *testing.T) {
	m := NewMatcher(benchPolicies())
	keys := [][]byte{
		[]byte("profile:1234567"), []byte("emb:user:42"), []byte("customer:9:credit_features:limit"),
		[]byte("acct:1:risk:v2"), []byte("unknown:key"), []byte(""), []byte("\x00\xff"),
	}
	for _, key := range keys {
		if n := testing.AllocsPerRun(1000, func() { m.Match(key) }); n != 0 {
			t.Errorf("Match(%q) allocates %v times per run; want 0", key, n)
		}
	}
}

func BenchmarkMatch(b *testing.B) {
	m := NewMatcher(benchPolicies())
	for _, bc := range []struct{ name, key string }{
		{"prefix", "spend30d:1234567890"},
		{"nested_prefix", "emb:user:1234567890"},
		{"pattern", "customer:1234567890:credit_features:limit"},
		{"default", "unknown:1234567890"},
	} {
		key := []byte(bc.key)
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(key)))
			for b.Loop() {
				m.Match(key)
			}
		})
	}
	b.Run("parallel", func(b *testing.B) {
		key := []byte("profile:1234567890")
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				m.Match(key)
			}
		})
	})
}

// bruteMatch is the specification of prefix and suffix matching: scan every policy, keep the longest suffix of
// key, else the longest prefix, the first one on ties.
func bruteMatch(policies []*Policy, key []byte) *Policy {
	var suffix, prefix *Policy
	for _, p := range policies {
		switch {
		case p.IsSuffix && bytes.HasSuffix(key, []byte(p.Suffix)) && (suffix == nil || len(p.Suffix) > len(suffix.Suffix)):
			suffix = p
		case p.IsPrefix && bytes.HasPrefix(key, []byte(p.Prefix)) && (prefix == nil || len(p.Prefix) > len(prefix.Prefix)):
			prefix = p
		}
	}
	if suffix != nil {
		return suffix
	}
	return prefix
}

// fuzzPolicies decodes a policy set from data: each policy is a length byte and that many bytes (its low 7 bits
// mod 9), so prefixes and suffixes may hold any byte, NUL and 0xff included, and may repeat. The length byte's high
// bit makes a suffix policy, unless its suffix would be "" (which Validate refuses); otherwise it is a prefix
// policy, "" included.
func fuzzPolicies(data []byte) []*Policy {
	var out []*Policy
	for len(data) > 0 && len(out) < 64 {
		n, suffix := int(data[0]&0x7f)%9, data[0]&0x80 != 0
		data = data[1:]
		if n > len(data) {
			n = len(data)
		}
		p := &Policy{Name: fmt.Sprint(len(out)), Cache: true, Index: len(out)}
		if suffix && n > 0 {
			p.IsSuffix, p.Suffix = true, string(data[:n])
		} else {
			p.IsPrefix, p.Prefix = true, string(data[:n])
		}
		out = append(out, p)
		data = data[n:]
	}
	return out
}

// FuzzMatch compares the tries' answers (longest suffix, else longest prefix) with a scan of every policy, for
// random sets of prefix and suffix policies and keys, and checks that TrackingPrefixes covers every policy without
// overlaps.
func FuzzMatch(f *testing.F) {
	f.Add([]byte("\x08profile:\x05cart:\x00"), []byte("profile:1"))
	f.Add([]byte("\x04emb:\x09emb:user:\x09emb:item:"), []byte("emb:user:42"))
	f.Add([]byte("\x01a\x02ab\x03abc\x04abcd"), []byte("abcx"))
	f.Add([]byte("\x02\x00\xff\x01\x00\x01\xff"), []byte{0, 0xff, 0})
	f.Add([]byte("\x02ab\x02ab\x01a"), []byte("abab"))
	// Suffix policies (length byte 0x80|n): Feast's project suffix next to prefixes, nested and repeated suffixes.
	f.Add([]byte("\x86_proj1\x05user:\x00"), []byte("user:\x02\x00\x00\x00_proj1"))
	f.Add([]byte("\x81b\x82ab\x83cab\x83cab\x01c"), []byte("ccab"))
	f.Add([]byte("\x80\x81\xff\x02\xff\x00"), []byte{0xff, 0, 0xff})
	f.Fuzz(func(t *testing.T, data []byte, key []byte) {
		policies := fuzzPolicies(data)
		m := NewMatcher(policies)
		keys := [][]byte{key}
		for _, p := range policies {
			if p.IsSuffix {
				keys = append(keys, []byte(p.Suffix), append(bytes.Clone(key), p.Suffix...))
			} else {
				keys = append(keys, []byte(p.Prefix), append([]byte(p.Prefix), key...))
			}
		}
		for _, k := range keys {
			if got, want := m.Match(k), bruteMatch(policies, k); got != want {
				t.Fatalf("Match(%q) over %d policies = %v; want %v", k, len(policies), got, want)
			}
		}

		tracked := m.TrackingPrefixes()
		if !sort.StringsAreSorted(tracked) {
			t.Fatalf("TrackingPrefixes %q not sorted", tracked)
		}
		for i, a := range tracked {
			for j, b := range tracked {
				if i != j && strings.HasPrefix(b, a) {
					t.Fatalf("TrackingPrefixes %q: %q overlaps %q", tracked, a, b)
				}
			}
		}
		for _, p := range policies {
			// A suffix policy's Prefix is "": its keys may start with anything, so only "" covers them.
			covered := false
			for _, a := range tracked {
				covered = covered || strings.HasPrefix(p.Prefix, a)
			}
			if !covered {
				t.Fatalf("TrackingPrefixes %q does not cover %q", tracked, p.Prefix)
			}
		}
		if (len(policies) == 0) != (len(tracked) == 0) {
			t.Fatalf("TrackingPrefixes %q for %d policies", tracked, len(policies))
		}
	})
}

// ExampleMatcher shows the precedence rule.
func ExampleMatcher() {
	c, err := Parse([]byte(`
policies:
  - {name: default, prefix: ""}
  - {name: customer, prefix: "customer:"}
  - {name: credit, pattern: "customer:*:credit_features:*"}
`))
	if err != nil {
		panic(err)
	}
	m := NewMatcher(c.Policies)
	for _, key := range []string{"customer:1:credit_features:limit", "customer:1:name", "other"} {
		fmt.Println(key, "->", m.Match([]byte(key)).Name)
	}
	fmt.Printf("%q\n", m.TrackingPrefixes())
	// Output:
	// customer:1:credit_features:limit -> credit
	// customer:1:name -> customer
	// other -> default
	// [""]
}
