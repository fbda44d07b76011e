package config

import (
	"fmt"
	"strings"
)

// This file holds the Redis glob used by pattern policies. It follows stringmatchlen in Redis's util.c, the matcher
// behind KEYS, SCAN MATCH and PSUBSCRIBE, so a pattern means in featcache what it means to redis-cli:
//
//	*       any sequence of bytes, the empty one included
//	?       any one byte
//	[abc]   one byte of the set; [^abc] one byte not in it; [a-z] a range (either order: [z-a] is the same)
//	\x      the byte x itself, also inside brackets
//
// Matching is byte-wise and case-sensitive; keys are binary and nothing assumes UTF-8. Two details follow Redis
// although they surprise: "[]" is an empty set that matches nothing (and "[^]" any byte), and the empty key is
// matched by no pattern except the empty one (stringmatchlen("*", "") is 0; only KEYS and SCAN special-case a lone
// "*"). Where Redis reads a pattern ambiguously, compileGlob refuses it instead: a "[" that is never closed, a
// trailing lone "\", and a range whose end swallows the "]" ("[a-]").
//
// One difference remains: Redis compares range bounds as C chars, which are signed on x86, so there a range with a
// bound at or above 0x80 means something else than on ARM. Here ranges compare unsigned bytes on every platform.

// tokenKind says what one compiled pattern element matches.
type tokenKind uint8

const (
	tokByte tokenKind = iota // one given byte
	tokAny                   // ?: any one byte
	tokSet                   // [...]: one byte of a set
	tokStar                  // *: any sequence of bytes
)

// token is one element of a compiled pattern. Every token but a star consumes exactly one byte of the key, which is
// what makes the single-star backtracking in match both correct and linear per star.
type token struct {
	kind tokenKind
	b    byte  // tokByte: the byte
	set  int32 // tokSet: index into glob.sets
}

// byteSet is a set of bytes as a 256-bit map.
type byteSet [4]uint64

func (s *byteSet) add(c byte)      { s[c>>6] |= 1 << (c & 63) }
func (s *byteSet) has(c byte) bool { return s[c>>6]&(1<<(c&63)) != 0 }
func (s *byteSet) addRange(lo, hi byte) {
	for c := int(lo); c <= int(hi); c++ {
		s.add(byte(c))
	}
}
func (s *byteSet) invert() {
	for i := range s {
		s[i] = ^s[i]
	}
}

// glob is a compiled Redis glob. It is immutable, so one glob may be used by any number of goroutines at once.
type glob struct {
	pattern string
	tokens  []token
	sets    []byteSet
	// literal is the run of literal bytes the pattern starts with (escapes resolved): a key without it cannot match,
	// which rejects most keys with one comparison.
	literal string
	// minLen is the number of tokens that consume a byte: shorter keys cannot match.
	minLen int
}

// compileGlob compiles a Redis glob pattern. It fails, naming the pattern, on an unterminated "[" and on a trailing
// lone "\", which Redis would read as something other than what was probably meant.
func compileGlob(p string) (*glob, error) {
	g := &glob{pattern: p}
	for i := 0; i < len(p); i++ {
		switch c := p[i]; c {
		case '*':
			// Consecutive stars mean one star.
			if n := len(g.tokens); n == 0 || g.tokens[n-1].kind != tokStar {
				g.tokens = append(g.tokens, token{kind: tokStar})
			}
		case '?':
			g.tokens = append(g.tokens, token{kind: tokAny})
		case '\\':
			if i+1 == len(p) {
				return nil, fmt.Errorf("pattern %q: trailing %q escapes nothing (write %q for a literal backslash)", p, `\`, `\\`)
			}
			i++
			g.tokens = append(g.tokens, token{kind: tokByte, b: p[i]})
		case '[':
			set, end, err := parseSet(p, i)
			if err != nil {
				return nil, err
			}
			g.tokens = append(g.tokens, token{kind: tokSet, set: int32(len(g.sets))})
			g.sets = append(g.sets, set)
			i = end
		default:
			g.tokens = append(g.tokens, token{kind: tokByte, b: c})
		}
	}
	var lit []byte
	for _, t := range g.tokens {
		if t.kind != tokByte {
			break
		}
		lit = append(lit, t.b)
	}
	g.literal = string(lit)
	for _, t := range g.tokens {
		if t.kind != tokStar {
			g.minLen++
		}
	}
	return g, nil
}

// parseSet parses the bracket expression that starts at p[open] == '[' the way stringmatchlen does, and returns the
// set and the index of its closing "]". Inside brackets "\x" is the byte x, "a-z" is a range when a byte follows
// the "-" (even a "]"), and a "]" right after "[" or "[^" closes an empty set.
func parseSet(p string, open int) (byteSet, int, error) {
	var set byteSet
	i := open + 1
	negate := i < len(p) && p[i] == '^'
	if negate {
		i++
	}
	rangeAteBracket := false
	for {
		switch {
		case i < len(p)-1 && p[i] == '\\':
			i++
			set.add(p[i])
		case i < len(p) && p[i] == ']':
			if negate {
				set.invert()
			}
			return set, i, nil
		case i >= len(p):
			if rangeAteBracket {
				return set, 0, fmt.Errorf("pattern %q: %q at byte %d is never closed: a %q before %q makes the %q the end of a range (write %q for a literal %q)",
					p, "[", open, "-", "]", "]", `\-`, "-")
			}
			return set, 0, fmt.Errorf("pattern %q: %q at byte %d is never closed (write %q for a literal %q)", p, "[", open, `\[`, "[")
		case i+2 < len(p) && p[i+1] == '-':
			lo, hi := p[i], p[i+2]
			if lo > hi {
				lo, hi = hi, lo
			}
			set.addRange(lo, hi)
			if p[i+2] == ']' {
				rangeAteBracket = true
			}
			i += 2
		default:
			set.add(p[i])
		}
		i++
	}
}

// match reports whether key matches the pattern. It does not allocate and does not retain key.
func (g *glob) match(key []byte) bool {
	ok, _ := g.matchSteps(key)
	return ok
}

// matchSteps is match that also returns how many steps it took, so tests can prove the bound (len(key)+1) *
// (len(tokens)+1) + len(tokens) that rules out exponential backtracking.
//
// The algorithm is the classic iterative wildcard match: remember only the last star seen and the key position it
// started at; on a mismatch let that star swallow one more byte and retry what follows it. Remembering earlier stars
// is never needed because every other token consumes exactly one byte: if the tail after the last star cannot match
// from some position, giving an earlier star more bytes cannot help (this is the "skipLongerMatches" argument in
// Redis's own stringmatchlen).
func (g *glob) matchSteps(key []byte) (bool, int) {
	if len(key) == 0 {
		// stringmatchlen never matches the empty string against a non-empty pattern, not even "*".
		return len(g.tokens) == 0, 1
	}
	if len(key) < g.minLen || len(key) < len(g.literal) || string(key[:len(g.literal)]) != g.literal {
		return false, 1
	}
	tokens := g.tokens
	steps := 0
	ti, ki := 0, 0
	starTi, starKi := -1, 0
	for ki < len(key) {
		steps++
		if ti < len(tokens) {
			t := &tokens[ti]
			switch t.kind {
			case tokStar:
				starTi, starKi = ti, ki
				ti++
				continue
			case tokByte:
				if key[ki] == t.b {
					ti++
					ki++
					continue
				}
			case tokAny:
				ti++
				ki++
				continue
			case tokSet:
				if g.sets[t.set].has(key[ki]) {
					ti++
					ki++
					continue
				}
			}
		}
		if starTi < 0 {
			return false, steps
		}
		starKi++
		ki = starKi
		ti = starTi + 1
	}
	for ti < len(tokens) && tokens[ti].kind == tokStar {
		steps++
		ti++
	}
	return ti == len(tokens), steps
}

// globLiteralPrefix returns the bytes of pattern p before its first "*", "?", "[" or "\": every key the pattern
// matches starts with them.
func globLiteralPrefix(p string) string {
	if i := strings.IndexAny(p, `*?[\`); i >= 0 {
		return p[:i]
	}
	return p
}
