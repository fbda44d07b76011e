package config

import (
	"fmt"
	"time"

	"gopkg.in/yaml.v3"

	"featcache/feast"
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

// feastPolicyFields are the policy fields the feast section gives for its key policy and each feature view for
// its field policy; the section sets the rest of each policy.
var feastPolicyFields = []string{"soft_ttl", "hard_ttl", "jitter", "negative_ttl", "on_upstream_error", "max_stale",
	"on_tracking_loss"}

// withPolicyFields adds the policy fields to table, each passed as given into the mapping pol, which is decoded
// as a policy afterwards.
func withPolicyFields(table fieldTable, pol *yaml.Node) fieldTable {
	for _, name := range feastPolicyFields {
		table[name] = func(f field, _ string) error {
			pol.Content = append(pol.Content, f.key, f.val)
			return nil
		}
	}
	return table
}

// decodeFeast decodes the feast section into policies: the key policy first, then one per feature view.
func decodeFeast(n *yaml.Node) ([]*Policy, error) {
	n = resolve(n)
	if isNull(n) {
		return nil, nil
	}
	var project string
	var views *yaml.Node
	keyPolicy := &yaml.Node{Kind: yaml.MappingNode}
	err := decodeSection(n, "feast", withPolicyFields(fieldTable{
		"project": func(f field, name string) (err error) {
			if project, err = stringValue(f.val, name); err == nil && project == "" {
				err = fmt.Errorf("%s: must not be \"\" (line %d)", name, resolve(f.val).Line)
			}
			return err
		},
		"feature_views": func(f field, _ string) error {
			views = f.val
			return nil
		},
	}, keyPolicy))
	if err != nil {
		return nil, err
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
	if views == nil {
		return out, nil // no feature_views: the key policy alone
	}
	views = resolve(views)
	if isNull(views) {
		return out, nil
	}
	if views.Kind != yaml.SequenceNode {
		return nil, fmt.Errorf("feast.feature_views: expected a list, got %s (line %d)", kindName(views), views.Line)
	}
	vps, err := decodeItems(views, decodeFeatureView)
	return append(out, vps...), err
}

// decodeFeatureView decodes the i-th feature view of the feast section into its field policy.
func decodeFeatureView(vn *yaml.Node, i int) (*Policy, error) {
	vn = resolve(vn)
	label := fmt.Sprintf("feast.feature_views #%d", i+1)
	view := &FeatureView{}
	pol := &yaml.Node{Kind: yaml.MappingNode}
	_, err := decodeFields(vn, label, ": ", withPolicyFields(fieldTable{
		"name":          into(&view.Name, stringValue),
		"features":      into(&view.Features, stringList),
		"max_event_age": into(&view.MaxEventAge, durationValue),
	}, pol))
	if err != nil {
		return nil, err
	}
	if view.Name == "" {
		return nil, fmt.Errorf("%s: name is required (line %d)", label, vn.Line)
	}
	if len(view.Features) == 0 {
		return nil, fmt.Errorf("feature view %q: features: list at least one feature (line %d)", view.Name, vn.Line)
	}
	for _, feat := range view.Features {
		view.FieldIDs = append(view.FieldIDs, feast.FieldID(view.Name, feat))
	}
	view.EventTimeField = "_ts:" + view.Name
	// The view's policy is decoded as a policy with a placeholder prefix, then turned into a field policy.
	pol.Content = append(pol.Content, strNode("name"), strNode(FeastKeyPolicy+":"+view.Name), strNode("prefix"), strNode(""))
	p, err := decodePolicy(pol, 0)
	if err != nil {
		return nil, fmt.Errorf("feature view %q: %w", view.Name, err)
	}
	p.IsPrefix, p.View = false, view
	return p, nil
}

func strNode(s string) *yaml.Node { return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: s} }
