package policy

import (
	"encoding/binary"
	"fmt"
	"math/bits"
	"time"

	"gopkg.in/yaml.v3"
)

// Feast's Redis online store keeps each entity's features in one hash: the key is the serialized entity key with
// the project name as a suffix, each feature is the field murmur3_32("<feature_view>:<feature>") (4 bytes, little
// endian) holding a serialized ValueProto, and "_ts:<feature_view>" holds the row's event time (a serialized
// google.protobuf.Timestamp). Readers send a pipeline of HMGET key <feature fields...> _ts:<view>, one per entity
// and feature view.
//
// The feast section of the configuration names the project and its feature views:
//
//	feast:
//	  project: driver_ranking      # the key suffix
//	  soft_ttl: 1m                 # the key policy ("feast"): fields of no configured view
//	  hard_ttl: 5m
//	  feature_views:
//	    - name: driver_hourly_stats
//	      features: [conv_rate, acc_rate, avg_daily_trips]
//	      soft_ttl: 30s            # the view's own policy ("feast:driver_hourly_stats") for its fields
//	      hard_ttl: 2m
//	      max_event_age: 2h        # features of a row whose event time is older are served as missing (nil)
//
// It becomes ordinary policies: "feast", matching keys by the project suffix, and one per feature view, which
// match no key but apply to the view's fields (Matcher.FieldPolicy).

// FeastKeyPolicy is the name of the policy the feast section creates for the project's keys.
const FeastKeyPolicy = "feast"

// FeatureView is a Feast feature view: the hash fields its features live in.
type FeatureView struct {
	// Name is the feature view's name.
	Name string
	// Features are the view's feature names, in the order the configuration gives them.
	Features []string
	// FieldIDs are the hash fields of Features: murmur3_32("<view>:<feature>") as 4 little-endian bytes.
	FieldIDs [][]byte
	// EventTimeField is the field holding the row's event time: "_ts:<view>".
	EventTimeField string
	// MaxEventAge, when positive, makes a feature of a row whose event time is older than this count as missing.
	// Zero means no limit.
	MaxEventAge time.Duration
}

// FeastFieldID returns the hash field Feast stores feature of view in: murmur3_32 of "<view>:<feature>", seed 0,
// as 4 little-endian bytes.
func FeastFieldID(view, feature string) []byte {
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

// FeastValue is one entity value of an entity key: a string, bytes, int32 or int64 (the types Feast allows in
// entity keys).
type FeastValue struct {
	Type  uint32 // Feast's ValueType: 1 bytes, 2 string, 3 int32, 4 int64
	Bytes []byte // the value's serialization: utf-8, raw bytes, or little-endian integers
}

// FeastString, FeastInt64 and FeastInt32 build entity values.
func FeastString(s string) FeastValue { return FeastValue{Type: 2, Bytes: []byte(s)} }
func FeastInt64(v int64) FeastValue {
	return FeastValue{Type: 4, Bytes: binary.LittleEndian.AppendUint64(nil, uint64(v))}
}
func FeastInt32(v int32) FeastValue {
	return FeastValue{Type: 3, Bytes: binary.LittleEndian.AppendUint32(nil, uint32(v))}
}

// AppendFeastKey appends the Redis key of an entity as Feast writes it (entity key serialization version 3):
// the number of join keys, each join key sorted by name as (type STRING, length, bytes), then each value in the
// same order as (type, length, bytes), all little endian, then the project name. featcache itself never builds
// keys; tools and tests that write Feast's layout do.
func AppendFeastKey(dst []byte, project string, joinKeys []string, values []FeastValue) []byte {
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

// AppendFeastTimestamp appends a serialized google.protobuf.Timestamp (field 1 seconds, field 2 nanos, varints),
// as Feast writes in "_ts:<view>".
func AppendFeastTimestamp(dst []byte, t time.Time) []byte {
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

// ParseFeastTimestamp reads a serialized google.protobuf.Timestamp. ok is false for bytes that are not one.
func ParseFeastTimestamp(b []byte) (t time.Time, ok bool) {
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

// feastFields are the fields of the feast section; the policy fields are the key policy's.
var feastFields = []string{"project", "feature_views", "soft_ttl", "hard_ttl", "jitter", "negative_ttl",
	"on_upstream_error", "max_stale", "on_tracking_loss"}

// viewFields are the fields of a feature view: its name and features, and its policy's fields.
var viewFields = []string{"name", "features", "max_event_age", "soft_ttl", "hard_ttl", "jitter", "negative_ttl",
	"on_upstream_error", "max_stale", "on_tracking_loss"}

// decodeFeast decodes the feast section into policies: the key policy first, then one per feature view.
func decodeFeast(n *yaml.Node) ([]*Policy, error) {
	n = resolve(n)
	if isNull(n) {
		return nil, nil
	}
	fs, err := fields(n, "feast", feastFields)
	if err != nil {
		return nil, err
	}
	var project string
	var views *yaml.Node
	keyPolicy := &yaml.Node{Kind: yaml.MappingNode}
	for _, f := range fs {
		switch f.name {
		case "project":
			if project, err = stringValue(f.val, "feast.project"); err == nil && project == "" {
				err = fmt.Errorf("feast.project: must not be \"\" (line %d)", f.val.Line)
			}
		case "feature_views":
			views = f.val
		default:
			keyPolicy.Content = append(keyPolicy.Content, f.key, f.val)
		}
		if err != nil {
			return nil, err
		}
	}
	if project == "" {
		return nil, fmt.Errorf("feast: project is required (line %d)", n.Line)
	}
	keyPolicy.Content = append(keyPolicy.Content, strNode("name"), strNode(FeastKeyPolicy), strNode("suffix"), strNode(project))
	kp, err := decodePolicy(keyPolicy, 0)
	if err != nil {
		return nil, fmt.Errorf("feast: %w", err)
	}
	out := []*Policy{kp}
	views = resolve(views)
	if isNull(views) {
		return out, nil
	}
	if views.Kind != yaml.SequenceNode {
		return nil, fmt.Errorf("feast.feature_views: expected a list, got %s (line %d)", kindName(views), views.Line)
	}
	for i, vn := range views.Content {
		vn = resolve(vn)
		label := fmt.Sprintf("feast.feature_views #%d", i+1)
		vfs, err := fields(vn, label, viewFields)
		if err != nil {
			return nil, err
		}
		view := &FeatureView{}
		pol := &yaml.Node{Kind: yaml.MappingNode}
		for _, f := range vfs {
			switch f.name {
			case "name":
				view.Name, err = stringValue(f.val, label+": name")
			case "features":
				view.Features, err = stringList(f.val, label+": features")
			case "max_event_age":
				view.MaxEventAge, err = durationValue(f.val, label+": max_event_age")
			default:
				pol.Content = append(pol.Content, f.key, f.val)
			}
			if err != nil {
				return nil, err
			}
		}
		if view.Name == "" {
			return nil, fmt.Errorf("%s: name is required (line %d)", label, vn.Line)
		}
		if len(view.Features) == 0 {
			return nil, fmt.Errorf("feature view %q: features: list at least one feature (line %d)", view.Name, vn.Line)
		}
		for _, feat := range view.Features {
			view.FieldIDs = append(view.FieldIDs, FeastFieldID(view.Name, feat))
		}
		view.EventTimeField = "_ts:" + view.Name
		// The view's policy is decoded as a policy with a placeholder prefix, then turned into a field policy.
		pol.Content = append(pol.Content, strNode("name"), strNode(FeastKeyPolicy+":"+view.Name), strNode("prefix"), strNode(""))
		p, err := decodePolicy(pol, 0)
		if err != nil {
			return nil, fmt.Errorf("feature view %q: %w", view.Name, err)
		}
		p.IsPrefix, p.View = false, view
		out = append(out, p)
	}
	return out, nil
}

func strNode(s string) *yaml.Node { return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: s} }
