package config

import (
	"sort"
	"strings"
)

// Matcher finds the policy of a key. It follows one rule:
//
// Patterns are tried first, in file order, and the first pattern that matches wins; otherwise the longest matching
// suffix wins; otherwise the longest matching prefix wins; prefix "" is the default policy; a key that matches
// nothing has no policy and is forwarded uncached.
//
// Patterns come first because a pattern is written for keys whose feature set is not at their front
// ("customer:*:credit_features:*"), which a prefix policy such as "customer:" would otherwise swallow. Since every
// pattern is tried on every key, keep patterns few; prefixes cost O(key length) whatever their number.
//
// A Matcher is immutable: Match may be called from any number of goroutines at once.
type Matcher struct {
	patterns []patternPolicy
	suffixes trie // over reversed suffixes, walked from the key's end
	trie     trie
	fields   map[string]*Policy // Feast hash field -> its feature view's policy
	tracking []string
}

// patternPolicy is a pattern policy with its compiled glob.
type patternPolicy struct {
	glob   *glob
	policy *Policy
}

// NewMatcher returns a matcher over policies, which should come from Parse (or have passed Config.Validate): the
// matcher keeps the pointers and returns them from Match, so the policies must not be modified afterwards. Should
// two policies have the same prefix or pattern anyway, the first in the list wins; a pattern that does not compile
// matches no key. NewMatcher(nil) matches nothing.
func NewMatcher(policies []*Policy) *Matcher {
	m := &Matcher{}
	var prefixes, suffixes []*Policy
	for _, p := range policies {
		switch {
		case p.IsPrefix:
			prefixes = append(prefixes, p)
			continue
		case p.IsSuffix:
			suffixes = append(suffixes, p)
			continue
		case p.View != nil:
			if m.fields == nil {
				m.fields = map[string]*Policy{}
			}
			for _, f := range p.View.FieldIDs {
				m.fields[string(f)] = p
			}
			m.fields[p.View.EventTimeField] = p
			continue
		}
		g, err := compileGlob(p.Pattern)
		if err != nil {
			continue
		}
		m.patterns = append(m.patterns, patternPolicy{glob: g, policy: p})
	}
	m.trie = buildTrie(prefixes, func(p *Policy) string { return p.Prefix })
	m.suffixes = buildTrie(suffixes, func(p *Policy) string { return reverse(p.Suffix) })
	m.tracking = trackingPrefixes(policies)
	return m
}

// Match returns the policy of key, or nil when no policy matches and the key is to be forwarded uncached. It does
// not allocate and does not retain key. A nil Matcher matches nothing.
func (m *Matcher) Match(key []byte) *Policy {
	if m == nil {
		return nil
	}
	for i := range m.patterns {
		if m.patterns[i].glob.match(key) {
			return m.patterns[i].policy
		}
	}
	if len(m.suffixes.nodes) > 1 {
		if p := m.suffixes.longestSuffix(key); p != nil {
			return p
		}
	}
	return m.trie.longest(key)
}

// FieldPolicy returns the policy of a hash field that belongs to a configured Feast feature view (one of its
// features' field ids, or its "_ts:<view>" field), or nil: the field then takes its key's policy. It does not
// allocate.
func (m *Matcher) FieldPolicy(field []byte) *Policy {
	if m == nil || m.fields == nil {
		return nil
	}
	return m.fields[string(field)]
}

// TrackingPrefixes returns the prefixes that a Redis CLIENT TRACKING ON BCAST PREFIX ... must name so that every key
// of a cached policy is tracked: the prefix of each prefix policy with Cache true, the literal start of each
// such pattern (its bytes before the first "*", "?", "[" or "\"), and each such policy's snapshot pointer key. Redis rejects prefixes that overlap, so only the
// shortest of overlapping ones is kept (this tracks some keys that need not be, never too few); when the set holds
// "" the result is [""], every key. The result is sorted, empty when no policy caches, and the caller's to modify.
func (m *Matcher) TrackingPrefixes() []string {
	if m == nil || len(m.tracking) == 0 {
		return nil
	}
	return append([]string(nil), m.tracking...)
}

// trackingPrefixes computes what TrackingPrefixes returns.
func trackingPrefixes(policies []*Policy) []string {
	var all []string
	for _, p := range policies {
		if !p.Cache {
			continue
		}
		switch {
		case p.IsPrefix:
			all = append(all, p.Prefix)
		case p.IsSuffix:
			all = append(all, "") // a key with a given suffix may start with anything
		case p.View != nil:
			continue // fields, not keys: the view's keys are its key policy's
		default:
			all = append(all, globLiteralPrefix(p.Pattern))
		}
		if p.SnapshotPointer != "" {
			all = append(all, p.SnapshotPointer) // the pointer is cached and must be invalidated like the keys
		}
	}
	// In sorted order a string's prefixes come before it, and if any kept string is a prefix of s then the kept
	// string just before s is one too (everything between them in sorted order also starts with it).
	sort.Strings(all)
	var out []string
	for _, s := range all {
		if n := len(out); n > 0 && strings.HasPrefix(s, out[n-1]) {
			continue
		}
		out = append(out, s)
	}
	return out
}

// trie finds the longest matching prefix policy in O(key length) whatever the number of prefixes. It is a
// path-compressed byte trie: chains of nodes with one child and no policy are merged into one edge whose label is
// compared as a string, so a lookup mostly compares runs of bytes. Nodes live in one slice; the children of a node
// are nodes[lo:hi], sorted by the first byte of their label, which first[lo:hi] repeats for a compact search.
type trie struct {
	nodes []trieNode
	first []byte
}

// trieNode is one node of the trie; nodes[0] is the root, whose policy is the default policy ("" prefix).
type trieNode struct {
	label  string  // the bytes of the edge from the parent to this node
	policy *Policy // the policy whose prefix ends here, or nil
	lo, hi int32   // children are nodes[lo:hi]
}

// buildNode is a node of the uncompressed trie that buildTrie starts from.
type buildNode struct {
	policy *Policy
	kids   map[byte]*buildNode
}

// buildTrie builds the trie of the policies' strings (label gives a policy's prefix, or its reversed suffix).
// For a string given twice the first policy wins.
func buildTrie(policies []*Policy, label func(*Policy) string) trie {
	root := &buildNode{}
	for _, p := range policies {
		n := root
		s := label(p)
		for i := 0; i < len(s); i++ {
			c := s[i]
			k := n.kids[c]
			if k == nil {
				if n.kids == nil {
					n.kids = map[byte]*buildNode{}
				}
				k = &buildNode{}
				n.kids[c] = k
			}
			n = k
		}
		if n.policy == nil {
			n.policy = p
		}
	}
	// Lay the nodes out breadth first, so that the children of each node are adjacent.
	t := trie{nodes: []trieNode{{policy: root.policy}}, first: []byte{0}}
	type pending struct {
		index int
		node  *buildNode
	}
	queue := []pending{{0, root}}
	for len(queue) > 0 {
		it := queue[0]
		queue = queue[1:]
		lo := len(t.nodes)
		for _, c := range sortedKeys(it.node.kids) {
			label := []byte{c}
			n := it.node.kids[c]
			for n.policy == nil && len(n.kids) == 1 {
				for c2, k := range n.kids {
					label = append(label, c2)
					n = k
				}
			}
			t.nodes = append(t.nodes, trieNode{label: string(label), policy: n.policy})
			t.first = append(t.first, c)
			queue = append(queue, pending{len(t.nodes) - 1, n})
		}
		t.nodes[it.index].lo, t.nodes[it.index].hi = int32(lo), int32(len(t.nodes))
	}
	return t
}

func sortedKeys(m map[byte]*buildNode) []byte {
	keys := make([]byte, 0, len(m))
	for c := range m {
		keys = append(keys, c)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i] < keys[j] })
	return keys
}

// longest returns the policy of the longest prefix of key, or nil. It does not allocate.
func (t *trie) longest(key []byte) *Policy {
	if len(t.nodes) == 0 {
		return nil
	}
	n := &t.nodes[0]
	best := n.policy
	for len(key) > 0 && n.hi > n.lo {
		// child's search, with its common case of a few children written out here: child is too large to
		// inline, and its call per node cost BenchmarkMatch nested_prefix 469 instructions against 452 without
		// it (docs/performance.md, the third round). In ns/op the two are within noise of each other.
		j := -1
		if lo, hi := int(n.lo), int(n.hi); hi-lo <= 8 {
			for i := lo; i < hi; i++ {
				if t.first[i] == key[0] {
					j = i
					break
				}
			}
		} else {
			j = t.child(n, key[0])
		}
		if j < 0 {
			break
		}
		c := &t.nodes[j]
		if len(key) < len(c.label) || string(key[:len(c.label)]) != c.label {
			break
		}
		key = key[len(c.label):]
		n = c
		if n.policy != nil {
			best = n.policy
		}
	}
	return best
}

// longestSuffix returns the policy of the longest suffix of key in a trie built over reversed suffixes, walking
// key from its last byte; like longest, in O(key length) and without allocating.
func (t *trie) longestSuffix(key []byte) *Policy {
	n := &t.nodes[0]
	best := n.policy
	end := len(key)
	for end > 0 {
		j := t.child(n, key[end-1])
		if j < 0 {
			break
		}
		c := &t.nodes[j]
		if end < len(c.label) {
			break
		}
		for i := 0; i < len(c.label); i++ {
			if c.label[i] != key[end-1-i] {
				return best
			}
		}
		end -= len(c.label)
		n = c
		if n.policy != nil {
			best = n.policy
		}
	}
	return best
}

func reverse(s string) string {
	b := []byte(s)
	for i, j := 0, len(b)-1; i < j; i, j = i+1, j-1 {
		b[i], b[j] = b[j], b[i]
	}
	return string(b)
}

// child returns the index of n's child whose label starts with b, or -1.
func (t *trie) child(n *trieNode, b byte) int {
	lo, hi := int(n.lo), int(n.hi)
	if hi-lo <= 8 {
		for i := lo; i < hi; i++ {
			if t.first[i] == b {
				return i
			}
		}
		return -1
	}
	for lo < hi {
		mid := int(uint(lo+hi) >> 1)
		if t.first[mid] < b {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	if lo < int(n.hi) && t.first[lo] == b {
		return lo
	}
	return -1
}
