// Package config holds featcache's configuration file (loading, defaults, validation) and the matcher that finds
// the caching policy of a key.
//
// A Policy says whether and how long the values of a set of keys are cached: a soft TTL after which a read is served
// and refreshed in the background, a hard TTL after which an entry is never served, jitter, how long a missing key
// is remembered, and what to do when the upstream fails. A policy matches keys by prefix or by Redis glob pattern;
// Matcher picks one policy per key (see Matcher for the precedence rule).
//
// Everything here is immutable once built: a Config from Parse or Load and a Matcher from NewMatcher may be read by
// any number of goroutines at once.
package config

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Defaults of a policy's fields, applied by Parse to every policy with cache: true.
const (
	// DefaultHardTTL is a policy's hard_ttl when the file gives none.
	DefaultHardTTL = time.Minute
	// DefaultJitter is a policy's jitter when the file gives none.
	DefaultJitter = 0.1
	// DefaultMaxStale is a policy's max_stale when it has on_upstream_error: serve_stale and the file gives none.
	DefaultMaxStale = 5 * time.Minute
)

// ErrorMode says what a cached read does when its key must be fetched and the upstream fails (errors, timeouts,
// LOADING, BUSY, MASTERDOWN, CLUSTERDOWN).
type ErrorMode uint8

const (
	// ErrorFail replies to the client with the upstream's error, as Redis would have. It is the default
	// (on_upstream_error: fail).
	ErrorFail ErrorMode = iota
	// ErrorServeStale serves an entry past its hard TTL, at most Policy.MaxStale past it and never past the key's
	// upstream expiry, for as long as the upstream fails (on_upstream_error: serve_stale).
	ErrorServeStale
)

// errorModes are the ErrorMode values as the configuration file writes them.
var errorModes = []string{ErrorFail: "fail", ErrorServeStale: "serve_stale"}

// String returns the mode as written in the configuration file: "fail" or "serve_stale".
func (m ErrorMode) String() string { return modeName(errorModes, m, "ErrorMode") }

// parseErrorMode parses the on_upstream_error value s.
func parseErrorMode(s string) (ErrorMode, bool) { return parseMode[ErrorMode](errorModes, s) }

// LossMode says what happens to a policy's entries when the tracking connection that guarded them drops.
type LossMode uint8

const (
	// LossFlush stops serving the entries at once: invalidations may have been missed (on_tracking_loss: flush,
	// the default).
	LossFlush LossMode = iota
	// LossRevalidate keeps the entries as unverified: they are served only within their soft TTL and re-fetched
	// in the background at a bounded rate (upstream.revalidate_rate), and flushed after all if the server that
	// comes back is not the same one (its run_id changed) (on_tracking_loss: revalidate).
	LossRevalidate
)

// lossModes are the LossMode values as the configuration file writes them.
var lossModes = []string{LossFlush: "flush", LossRevalidate: "revalidate"}

// String returns the mode as written in the configuration file: "flush" or "revalidate".
func (m LossMode) String() string { return modeName(lossModes, m, "LossMode") }

// parseLossMode parses the on_tracking_loss value s.
func parseLossMode(s string) (LossMode, bool) { return parseMode[LossMode](lossModes, s) }

// modeName returns the name of the mode m in names, or typ(m) for a value names does not hold.
func modeName[M ~uint8](names []string, m M, typ string) string {
	if int(m) < len(names) {
		return names[m]
	}
	return fmt.Sprintf("%s(%d)", typ, uint8(m))
}

// parseMode returns the mode named s in names.
func parseMode[M ~uint8](names []string, s string) (M, bool) {
	i := slices.Index(names, s)
	if i < 0 {
		return 0, false
	}
	return M(i), true
}

// Policy is how the values of the keys it matches are cached. Policies come from Parse (which fills in defaults and
// validates them) and must not be modified once a Matcher holds them.
//
// A policy with Cache false has every TTL, Jitter, OnUpstreamError and MaxStale at zero: its keys are forwarded.
type Policy struct {
	// Name identifies the policy in errors, metrics and CACHE EXPLAIN. It is required and unique.
	Name string
	// Prefix is the key prefix the policy matches when IsPrefix is true. Prefix "" with IsPrefix true is the
	// default policy, which matches every key no other policy matches.
	Prefix string
	// IsPrefix is true when the policy matches by Prefix; then Pattern is "".
	IsPrefix bool
	// Pattern is the Redis glob the policy matches when IsPrefix is false.
	Pattern string
	// Suffix is the key suffix the policy matches when IsSuffix is true (Feast puts the project at the end of its
	// binary keys). It is never "".
	Suffix   string
	IsSuffix bool
	// View is set for a Feast feature view's policy (from the feast section): it matches no key but applies to the
	// view's hash fields (see Matcher.FieldPolicy). Then Prefix, Pattern and Suffix are "".
	View *FeatureView

	// Cache is false for keys that are never cached but always forwarded. Default true.
	Cache bool
	// SoftTTL is the age after which an entry is still served but refreshed in the background. Default HardTTL
	// (no refresh ahead).
	SoftTTL time.Duration
	// HardTTL is the age after which an entry is never served (except by ErrorServeStale). Default DefaultHardTTL.
	HardTTL time.Duration
	// Jitter shortens each entry's soft and hard deadlines by a random fraction up to this, so that entries
	// filled together do not expire together. In [0, 1). Default DefaultJitter.
	Jitter float64
	// NegativeTTL is how long a missing key (a Redis nil) is remembered. Zero, the default, means a nil is never
	// cached.
	NegativeTTL time.Duration
	// OnUpstreamError is what a read does when the upstream fails. Default ErrorFail.
	OnUpstreamError ErrorMode
	// MaxStale is, with ErrorServeStale, how far past HardTTL an entry may be served at most; default
	// DefaultMaxStale. It is zero with ErrorFail.
	MaxStale time.Duration
	// OnTrackingLoss is what happens to the policy's entries when tracking is lost. Default LossFlush.
	OnTrackingLoss LossMode
	// SnapshotPointer names a key whose value is the current version of the policy's keys: a client's logical
	// key K is read and written as the physical key K + ":" + version. "" means no versioning.
	SnapshotPointer string

	// Index is the policy's position in Config.Policies, so that per-policy counters can live in a slice. Parse
	// sets it.
	Index int
}

// cachingFields are the policy fields that mean something only for a cached policy.
var cachingFields = map[string]bool{
	"soft_ttl": true, "hard_ttl": true, "jitter": true, "negative_ttl": true, "on_upstream_error": true,
	"max_stale": true, "on_tracking_loss": true, "snapshot_pointer": true,
}

// decodePolicies decodes the policies list. A null list is no policies.
func decodePolicies(n *yaml.Node) ([]*Policy, error) {
	n = resolve(n)
	if isNull(n) {
		return nil, nil
	}
	if n.Kind != yaml.SequenceNode {
		return nil, fmt.Errorf("policies: expected a list of policies, got %s (line %d)", kindName(n), n.Line)
	}
	return decodeItems(n, decodePolicy)
}

// decodePolicy decodes the i-th policy of the list and applies the defaults. Rules that depend on which fields the
// file gives (a field without effect) are checked here; rules on values are left to validatePolicy.
func decodePolicy(n *yaml.Node, i int) (*Policy, error) {
	n = resolve(n)
	label := fmt.Sprintf("policy #%d", i+1)
	if n.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("%s: expected a mapping with a name and a prefix or pattern, got %s (line %d)", label, kindName(n), n.Line)
	}
	label = policyLabel(n, label)
	p := &Policy{Cache: true, Index: i}
	fs, err := decodeFields(n, label, ": ", p.fieldTable())
	if err != nil {
		return nil, err
	}
	given := make(map[string]*yaml.Node, len(fs))
	for _, f := range fs {
		given[f.name] = f.key
	}
	if p.Name == "" {
		return nil, fmt.Errorf("policy #%d: name is required (line %d)", i+1, n.Line)
	}
	if err := p.checkMatchFields(label, given); err != nil {
		return nil, err
	}
	if !p.Cache {
		for _, f := range fs {
			if cachingFields[f.name] {
				return nil, fmt.Errorf("%s: %s has no effect with cache: false (line %d)", label, f.name, f.key.Line)
			}
		}
		return p, nil
	}
	if err := p.applyDefaults(label, given); err != nil {
		return nil, err
	}
	return p, nil
}

// policyLabel names the policy n in every later message, also for fields that come before its name: by its name
// when it has one, else label.
func policyLabel(n *yaml.Node, label string) string {
	for j := 0; j+1 < len(n.Content); j += 2 {
		k, v := n.Content[j], resolve(n.Content[j+1])
		if k.Value == "name" && v.Kind == yaml.ScalarNode && !isNull(v) && v.Value != "" {
			return fmt.Sprintf("policy %q", v.Value)
		}
	}
	return label
}

// fieldTable returns the fields of a policy, each decoding into p. A field's name in errors is the policy's label
// and the field.
func (p *Policy) fieldTable() fieldTable {
	return fieldTable{
		"name": into(&p.Name, stringValue),
		"prefix": func(f field, name string) (err error) {
			p.IsPrefix = true
			p.Prefix, err = stringValue(f.val, name)
			return err
		},
		"pattern": into(&p.Pattern, stringValue),
		"suffix": func(f field, name string) (err error) {
			p.IsSuffix = true
			if p.Suffix, err = stringValue(f.val, name); err == nil && p.Suffix == "" {
				err = fmt.Errorf("%s: must not be \"\" (use prefix: \"\" for the default policy) (line %d)", name, resolve(f.val).Line)
			}
			return err
		},
		"cache":             into(&p.Cache, boolValue),
		"soft_ttl":          into(&p.SoftTTL, durationValue),
		"hard_ttl":          into(&p.HardTTL, durationValue),
		"jitter":            into(&p.Jitter, floatValue),
		"negative_ttl":      into(&p.NegativeTTL, durationValue),
		"on_upstream_error": oneOf(&p.OnUpstreamError, parseErrorMode, "fail or serve_stale"),
		"max_stale":         into(&p.MaxStale, durationValue),
		"on_tracking_loss":  oneOf(&p.OnTrackingLoss, parseLossMode, "flush or revalidate"),
		"snapshot_pointer": func(f field, name string) (err error) {
			if p.SnapshotPointer, err = stringValue(f.val, name); err == nil && p.SnapshotPointer == "" {
				err = fmt.Errorf("%s: must name a key, got \"\" (line %d)", name, resolve(f.val).Line)
			}
			return err
		},
	}
}

// checkMatchFields checks that the policy gives one way to match keys: a prefix, a pattern or a suffix. given holds
// the key node of each field the file gives.
func (p *Policy) checkMatchFields(label string, given map[string]*yaml.Node) error {
	if given["prefix"] != nil && given["pattern"] != nil {
		return fmt.Errorf("%s: has both prefix %q and pattern %q; give exactly one", label, p.Prefix, p.Pattern)
	}
	if given["suffix"] != nil && (given["prefix"] != nil || given["pattern"] != nil) {
		return fmt.Errorf("%s: has a suffix and a prefix or pattern; give exactly one", label)
	}
	if k := given["pattern"]; k != nil && p.Pattern == "" {
		return fmt.Errorf("%s: pattern \"\" would match only the empty key; use prefix: \"\" for the default policy (line %d)", label, k.Line)
	}
	return nil
}

// applyDefaults gives a cached policy the defaults of the fields the file does not give (given holds the key node
// of each field it gives), and refuses a max_stale without serve_stale and a soft_ttl over the default hard_ttl.
func (p *Policy) applyDefaults(label string, given map[string]*yaml.Node) error {
	if k := given["max_stale"]; k != nil && p.OnUpstreamError == ErrorFail {
		how := "on_upstream_error: fail"
		if given["on_upstream_error"] == nil {
			how += " (the default)"
		}
		return fmt.Errorf("%s: max_stale has no effect with %s; set on_upstream_error: serve_stale (line %d)", label, how, k.Line)
	}
	if given["hard_ttl"] == nil {
		p.HardTTL = DefaultHardTTL
	}
	if given["soft_ttl"] == nil {
		p.SoftTTL = p.HardTTL
	}
	if given["jitter"] == nil {
		p.Jitter = DefaultJitter
	}
	if given["max_stale"] == nil && p.OnUpstreamError == ErrorServeStale {
		p.MaxStale = DefaultMaxStale
	}
	if given["soft_ttl"] != nil && given["hard_ttl"] == nil && p.SoftTTL > p.HardTTL {
		return fmt.Errorf("%s: soft_ttl %q is greater than hard_ttl %q (the default); set hard_ttl", label,
			formatDuration(p.SoftTTL), formatDuration(p.HardTTL))
	}
	return nil
}

// validatePolicies checks every policy on its own and then the set: unique names, prefixes and patterns.
func validatePolicies(policies []*Policy) error {
	names := map[string]int{}
	prefixes := map[string]int{}
	patterns := map[string]int{}
	suffixes := map[string]int{}
	fieldIDs := map[string]int{}
	for i, p := range policies {
		if p == nil {
			return fmt.Errorf("policy #%d: is nil", i+1)
		}
		if err := validatePolicy(p, i); err != nil {
			return err
		}
		if j, dup := names[p.Name]; dup {
			return fmt.Errorf("duplicate policy name %q (policies #%d and #%d)", p.Name, j+1, i+1)
		}
		names[p.Name] = i
		switch {
		case p.View != nil:
			for _, f := range append(append([][]byte(nil), p.View.FieldIDs...), []byte(p.View.EventTimeField)) {
				if j, dup := fieldIDs[string(f)]; dup {
					return fmt.Errorf("policy %q: hash field %q is already a field of policy %q (two features hash alike)", p.Name, f, policies[j].Name)
				}
				fieldIDs[string(f)] = i
			}
		case p.IsSuffix:
			if j, dup := suffixes[p.Suffix]; dup {
				return fmt.Errorf("policy %q: suffix %q is already the suffix of policy %q", p.Name, p.Suffix, policies[j].Name)
			}
			suffixes[p.Suffix] = i
		case p.IsPrefix:
			if j, dup := prefixes[p.Prefix]; dup {
				return fmt.Errorf("policy %q: prefix %q is already the prefix of policy %q", p.Name, p.Prefix, policies[j].Name)
			}
			prefixes[p.Prefix] = i
		default:
			if j, dup := patterns[p.Pattern]; dup {
				return fmt.Errorf("policy %q: pattern %q is already the pattern of policy %q", p.Name, p.Pattern, policies[j].Name)
			}
			patterns[p.Pattern] = i
		}
	}
	return nil
}

// validatePolicy checks the values of the policy at position i of Config.Policies.
func validatePolicy(p *Policy, i int) error {
	if p.Name == "" {
		return fmt.Errorf("policy #%d: name is required", i+1)
	}
	label := fmt.Sprintf("policy %q", p.Name)
	if p.Index != i {
		return fmt.Errorf("%s: Index is %d but the policy is #%d of the list (Index counts from 0)", label, p.Index, i+1)
	}
	if err := p.validateMatch(label); err != nil {
		return err
	}
	durations := p.durations()
	for _, f := range durations {
		if f.d < 0 {
			return fmt.Errorf("%s: %s must not be negative, got %q", label, f.name, formatDuration(f.d))
		}
	}
	if p.View != nil && p.View.MaxEventAge < 0 {
		return fmt.Errorf("%s: max_event_age must not be negative, got %q", label, formatDuration(p.View.MaxEventAge))
	}
	if p.OnTrackingLoss > LossRevalidate {
		return fmt.Errorf("%s: on_tracking_loss: invalid value %s (use flush or revalidate)", label, p.OnTrackingLoss)
	}
	if ptr := p.SnapshotPointer; ptr != "" && matchesKey(p, ptr) {
		// Reading the pointer would need the pointer first.
		return fmt.Errorf("%s: snapshot_pointer %q is itself a key of the policy; choose a pointer key outside it", label, ptr)
	}
	if p.OnUpstreamError > ErrorServeStale {
		return fmt.Errorf("%s: on_upstream_error: invalid value %s (use fail or serve_stale)", label, p.OnUpstreamError)
	}
	if !p.Cache {
		return p.validateUncached(label, durations)
	}
	return p.validateCached(label)
}

// validateMatch checks that p matches keys in exactly one way (prefix, pattern, suffix or feature view), and that
// its pattern compiles.
func (p *Policy) validateMatch(label string) error {
	kinds := 0
	for _, is := range []bool{p.IsPrefix, p.Pattern != "", p.IsSuffix, p.View != nil} {
		if is {
			kinds++
		}
	}
	switch {
	case p.IsPrefix && p.Pattern != "":
		return fmt.Errorf("%s: has both prefix %q and pattern %q; give exactly one", label, p.Prefix, p.Pattern)
	case kinds > 1:
		return fmt.Errorf("%s: matches by more than one of prefix, pattern, suffix and feature view; give exactly one", label)
	case !p.IsPrefix && p.Prefix != "":
		return fmt.Errorf("%s: prefix %q is set but IsPrefix is false", label, p.Prefix)
	case !p.IsSuffix && p.Suffix != "":
		return fmt.Errorf("%s: suffix %q is set but IsSuffix is false", label, p.Suffix)
	case p.IsSuffix && p.Suffix == "":
		return fmt.Errorf("%s: suffix must not be \"\" (use prefix: \"\" for the default policy)", label)
	case kinds == 0:
		return fmt.Errorf("%s: needs a prefix, a pattern or a suffix (prefix: \"\" makes it the default policy)", label)
	}
	if p.Pattern != "" {
		if _, err := compileGlob(p.Pattern); err != nil {
			return fmt.Errorf("%s: %w", label, err)
		}
	}
	return nil
}

// policyDuration is one duration field of a policy, named as the file names it.
type policyDuration struct {
	name string
	d    time.Duration
}

// durations returns p's duration fields.
func (p *Policy) durations() []policyDuration {
	return []policyDuration{{"soft_ttl", p.SoftTTL}, {"hard_ttl", p.HardTTL}, {"negative_ttl", p.NegativeTTL},
		{"max_stale", p.MaxStale}}
}

// validateUncached checks that a policy with cache: false sets none of the fields that mean something only for a
// cached policy.
func (p *Policy) validateUncached(label string, durations []policyDuration) error {
	for _, f := range durations {
		if f.d != 0 {
			return fmt.Errorf("%s: %s has no effect with cache: false, got %q", label, f.name, formatDuration(f.d))
		}
	}
	if p.Jitter != 0 {
		return fmt.Errorf("%s: jitter has no effect with cache: false, got %v", label, p.Jitter)
	}
	if p.OnUpstreamError != ErrorFail {
		return fmt.Errorf("%s: on_upstream_error has no effect with cache: false, got %s", label, p.OnUpstreamError)
	}
	if p.OnTrackingLoss != LossFlush {
		return fmt.Errorf("%s: on_tracking_loss has no effect with cache: false, got %s", label, p.OnTrackingLoss)
	}
	return nil
}

// validateCached checks the TTLs, jitter and serve-stale bound of a cached policy.
func (p *Policy) validateCached(label string) error {
	if p.HardTTL <= 0 {
		return fmt.Errorf("%s: hard_ttl must be greater than 0, got %q (use cache: false for keys that are never cached)", label, formatDuration(p.HardTTL))
	}
	if p.SoftTTL > p.HardTTL {
		return fmt.Errorf("%s: soft_ttl %q is greater than hard_ttl %q", label, formatDuration(p.SoftTTL), formatDuration(p.HardTTL))
	}
	if math.IsNaN(p.Jitter) || p.Jitter < 0 || p.Jitter >= 1 {
		return fmt.Errorf("%s: jitter must be at least 0 and less than 1, got %v", label, p.Jitter)
	}
	if p.OnUpstreamError == ErrorFail && p.MaxStale != 0 {
		return fmt.Errorf("%s: max_stale has no effect with on_upstream_error: fail, got %q", label, formatDuration(p.MaxStale))
	}
	if p.OnUpstreamError == ErrorServeStale && p.MaxStale <= 0 {
		return fmt.Errorf("%s: max_stale must be greater than 0 with on_upstream_error: serve_stale, got %q (use on_upstream_error: fail to never serve stale)", label, formatDuration(p.MaxStale))
	}
	return nil
}

// matchesKey reports whether p, on its own, matches key.
func matchesKey(p *Policy, key string) bool {
	switch {
	case p.IsPrefix:
		return strings.HasPrefix(key, p.Prefix)
	case p.IsSuffix:
		return strings.HasSuffix(key, p.Suffix)
	case p.View != nil:
		return false
	}
	g, err := compileGlob(p.Pattern)
	return err == nil && g.match([]byte(key))
}
