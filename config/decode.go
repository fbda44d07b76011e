package config

import (
	"fmt"
	"math"
	"math/big"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// The configuration is decoded from yaml.Node trees by hand rather than by yaml.Unmarshal into structs: that way
// every error can name the section or policy, the field, the value and the line, a null is never silently taken for
// a default, and a field given twice is an error instead of the last one winning.

// field is one "name: value" pair of a YAML mapping.
type field struct {
	name string
	key  *yaml.Node
	val  *yaml.Node
}

// fields returns the pairs of the mapping n in file order. where names the mapping in errors ("upstream",
// `policy "profile"`; "" for the top level). A field not in table, a field given twice and a key that is not a
// plain string are errors. A null node (a section with every field commented out) is an empty mapping.
func fields(n *yaml.Node, where string, table fieldTable) ([]field, error) {
	n = resolve(n)
	prefix := where + ": "
	if where == "" {
		prefix = ""
	}
	if isNull(n) {
		return nil, nil
	}
	if n.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("%sexpected a mapping of fields, got %s (line %d)", prefix, kindName(n), n.Line)
	}
	seen := make(map[string]*yaml.Node, len(n.Content)/2)
	out := make([]field, 0, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := resolve(n.Content[i]), n.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			return nil, fmt.Errorf("%sexpected a field name, got %s (line %d)", prefix, kindName(k), k.Line)
		}
		if table[k.Value] == nil {
			if where == "" {
				return nil, fmt.Errorf("unknown top-level field %q (line %d)", k.Value, k.Line)
			}
			return nil, fmt.Errorf("%sunknown field %q (line %d)", prefix, k.Value, k.Line)
		}
		if first, dup := seen[k.Value]; dup {
			return nil, fmt.Errorf("%sfield %q given twice (lines %d and %d)", prefix, k.Value, first.Line, k.Line)
		}
		seen[k.Value] = k
		out = append(out, field{name: k.Value, key: k, val: v})
	}
	return out, nil
}

// decodeFunc decodes the value of the field f into its place; name is the field as errors name it
// ("upstream.conns", `policy "profile": hard_ttl`).
type decodeFunc func(f field, name string) error

// fieldTable is what a mapping of the file may hold: each field's name and the function that decodes its value.
type fieldTable map[string]decodeFunc

// decodeSection decodes the mapping n with table, field by field in file order. where names the mapping in errors
// as fields does; a field's name in errors is where.field ("upstream.conns"), or the field alone at the top level.
func decodeSection(n *yaml.Node, where string, table fieldTable) error {
	_, err := decodeFields(n, where, ".", table)
	return err
}

// decodeFields decodes the mapping n with table as decodeSection does and returns the fields the file gives. A
// field's name in errors is where, sep and the field (`policy "profile": hard_ttl` with sep ": "), or the field
// alone when where is "".
func decodeFields(n *yaml.Node, where, sep string, table fieldTable) ([]field, error) {
	fs, err := fields(n, where, table)
	if err != nil {
		return nil, err
	}
	for _, f := range fs {
		name := f.name
		if where != "" {
			name = where + sep + f.name
		}
		if err := table[f.name](f, name); err != nil {
			return nil, err
		}
	}
	return fs, nil
}

// noting returns decode, which also notes in *line the line of the field's key, for errors that a later field
// or the section as a whole finds.
func noting(line *int, decode decodeFunc) decodeFunc {
	return func(f field, name string) error {
		*line = f.key.Line
		return decode(f, name)
	}
}

// section returns the decodeFunc of a field that is a section of its own, decoded by decode.
func section(decode func(*yaml.Node) error) decodeFunc {
	return func(f field, _ string) error { return decode(f.val) }
}

// decodeItems decodes each item of the list n with decode, which also gets the item's position.
func decodeItems[T any](n *yaml.Node, decode func(item *yaml.Node, i int) (T, error)) ([]T, error) {
	out := make([]T, 0, len(n.Content))
	for i, item := range n.Content {
		v, err := decode(item, i)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, nil
}

// into returns the decodeFunc that decodes a value with decode (stringValue, durationValue, ...) into *p.
func into[T any](p *T, decode func(n *yaml.Node, name string) (T, error)) decodeFunc {
	return func(f field, name string) (err error) {
		*p, err = decode(f.val, name)
		return err
	}
}

// oneOf returns the decodeFunc of a string field that takes one of a few words: parse turns the word into *p, and
// use lists the words for the error when it does not know it ("fail or serve_stale").
func oneOf[T any](p *T, parse func(string) (T, bool), use string) decodeFunc {
	return func(f field, name string) error {
		s, err := stringValue(f.val, name)
		if err != nil {
			return err
		}
		v, ok := parse(s)
		if !ok {
			return fmt.Errorf("%s: invalid value %q (use %s) (line %d)", name, s, use, resolve(f.val).Line)
		}
		*p = v
		return nil
	}
}

func contains(list []string, s string) bool {
	for _, e := range list {
		if e == s {
			return true
		}
	}
	return false
}

// resolve follows YAML aliases (*anchor) to the node they stand for.
func resolve(n *yaml.Node) *yaml.Node {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

// isNull reports whether n is an empty value ("field:" with nothing after it, "~" or "null").
func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.Tag == "!!null"
}

// kindName describes what n is, for "expected X, got Y" messages.
func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		if isNull(n) {
			return "nothing"
		}
		return fmt.Sprintf("%q", n.Value)
	}
	return "an unexpected YAML node"
}

// scalar returns the text of the scalar n as written (quotes removed). name is the full field name for errors,
// want says what the field takes.
func scalar(n *yaml.Node, name, want string) (string, error) {
	n = resolve(n)
	if n.Kind != yaml.ScalarNode || isNull(n) {
		return "", fmt.Errorf("%s: expected %s, got %s (line %d)", name, want, kindName(n), n.Line)
	}
	return n.Value, nil
}

// stringValue decodes a string field. An empty value must be written "" so that it is never a slip.
func stringValue(n *yaml.Node, name string) (string, error) {
	return scalar(n, name, `a string (write "" for an empty one)`)
}

// boolValue decodes true or false.
func boolValue(n *yaml.Node, name string) (bool, error) {
	s, err := scalar(n, name, "true or false")
	if err != nil {
		return false, err
	}
	switch strings.ToLower(s) {
	case "true":
		return true, nil
	case "false":
		return false, nil
	}
	return false, fmt.Errorf("%s: invalid boolean %q (use true or false) (line %d)", name, s, resolve(n).Line)
}

// intValue decodes a decimal integer.
func intValue(n *yaml.Node, name string) (int, error) {
	s, err := scalar(n, name, "an integer")
	if err != nil {
		return 0, err
	}
	v, err := strconv.ParseInt(s, 10, 0)
	if err != nil {
		return 0, fmt.Errorf("%s: invalid integer %q (line %d)", name, s, resolve(n).Line)
	}
	return int(v), nil
}

// floatValue decodes a finite number.
func floatValue(n *yaml.Node, name string) (float64, error) {
	s, err := scalar(n, name, "a number")
	if err != nil {
		return 0, err
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
		return 0, fmt.Errorf("%s: invalid number %q (line %d)", name, s, resolve(n).Line)
	}
	return v, nil
}

// durationValue decodes a non-negative duration in Go syntax ("750ms", "30s", "1h30m"). A bare 0 is zero; any other
// number needs a unit.
func durationValue(n *yaml.Node, name string) (time.Duration, error) {
	s, err := scalar(n, name, "a duration such as 750ms, 30s or 6h")
	if err != nil {
		return 0, err
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("%s: invalid duration %q (use a number with a unit: 750ms, 30s, 6h) (line %d)", name, s, resolve(n).Line)
	}
	if d < 0 {
		return 0, fmt.Errorf("%s: negative duration %q is invalid (line %d)", name, s, resolve(n).Line)
	}
	return d, nil
}

// Sizes in the configuration are powers of 1024, whichever way the unit is spelled.
const (
	kib = 1 << 10
	mib = 1 << 20
	gib = 1 << 30
)

// sizeUnits maps each accepted unit, lower-cased, to its number of bytes.
var sizeUnits = map[string]int64{
	"": 1, "b": 1,
	"kb": kib, "kib": kib,
	"mb": mib, "mib": mib,
	"gb": gib, "gib": gib,
}

// parseSize parses a size: a number of bytes, or a number with the unit B, KB, MB or GB (also KiB, MiB, GiB; any
// case; a space before the unit is allowed). Units are powers of 1024. The number may have a fraction when the
// result is a whole number of bytes ("1.5GB").
func parseSize(s string) (int64, bool) {
	t := strings.TrimSpace(s)
	i := len(t)
	for i > 0 && (t[i-1] < '0' || t[i-1] > '9') && t[i-1] != '.' {
		i--
	}
	num, unit := strings.TrimSpace(t[:i]), strings.ToLower(strings.TrimSpace(t[i:]))
	mult, ok := sizeUnits[unit]
	if !ok || strings.Trim(num, ".") == "" || strings.Trim(num, "0123456789.") != "" || strings.Count(num, ".") > 1 {
		return 0, false
	}
	r, ok := new(big.Rat).SetString(num)
	if !ok {
		return 0, false
	}
	r.Mul(r, new(big.Rat).SetInt64(mult))
	if !r.IsInt() || !r.Num().IsInt64() {
		return 0, false
	}
	return r.Num().Int64(), true
}

// sizeValue decodes a size field (see parseSize).
func sizeValue(n *yaml.Node, name string) (int64, error) {
	s, err := scalar(n, name, "a size such as 64KB, 256MB or 1GB")
	if err != nil {
		return 0, err
	}
	v, ok := parseSize(s)
	if !ok {
		return 0, fmt.Errorf("%s: invalid size %q (use a number of bytes, or KB, MB, GB) (line %d)", name, s, resolve(n).Line)
	}
	return v, nil
}

// stringList decodes a list of strings; [] is an empty, non-nil list.
func stringList(n *yaml.Node, name string) ([]string, error) {
	n = resolve(n)
	if n.Kind != yaml.SequenceNode {
		return nil, fmt.Errorf("%s: expected a list such as [\"a\", \"b\"] (or [] for none), got %s (line %d)", name, kindName(n), n.Line)
	}
	out := make([]string, 0, len(n.Content))
	for i, item := range n.Content {
		s, err := stringValue(item, fmt.Sprintf("%s[%d]", name, i))
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}

// formatDuration prints d as it would be written in the file: "6h" and "1h30m" rather than "6h0m0s" and
// "1h30m0s".
func formatDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}

// formatSize prints n bytes in the largest unit that divides it: "256MB", "64KB", "1000B".
func formatSize(n int64) string {
	switch {
	case n != 0 && n%gib == 0:
		return strconv.FormatInt(n/gib, 10) + "GB"
	case n != 0 && n%mib == 0:
		return strconv.FormatInt(n/mib, 10) + "MB"
	case n != 0 && n%kib == 0:
		return strconv.FormatInt(n/kib, 10) + "KB"
	}
	return strconv.FormatInt(n, 10) + "B"
}

// fieldLines returns the line of every field the document root gives, under the name errors give the field
// ("limits.max_clients", "upstream.tls.ca_file", `policy "profile": hard_ttl`, and `policy "profile"` for the
// policy itself), so that an error Validate finds in a value that decoded well can name its line too. A Feast
// section's fields are named as the policies they become ("feast" and "feast:<view>").
func fieldLines(root *yaml.Node) map[string]int {
	lines := make(map[string]int)
	var walk func(n *yaml.Node, where string)
	walk = func(n *yaml.Node, where string) {
		n = resolve(n)
		if n.Kind != yaml.MappingNode {
			return
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := resolve(n.Content[i]), resolve(n.Content[i+1])
			if k.Kind != yaml.ScalarNode {
				continue
			}
			name := k.Value
			if where != "" {
				name = where + "." + k.Value
			}
			lines[name] = k.Line
			switch name {
			case "policies":
				if v.Kind == yaml.SequenceNode {
					for j, item := range v.Content {
						notePolicy(lines, resolve(item), policyLabel(resolve(item), fmt.Sprintf("policy #%d", j+1)))
					}
				}
			case "feast":
				notePolicy(lines, v, `policy "feast"`)
				walk(v, name)
			case "feast.feature_views":
				if v.Kind == yaml.SequenceNode {
					for _, item := range v.Content {
						if label := policyLabel(resolve(item), ""); label != "" {
							notePolicy(lines, resolve(item), `policy "feast:`+strings.TrimPrefix(label, `policy "`))
						}
					}
				}
			default:
				walk(v, name)
			}
		}
	}
	walk(root, "")
	return lines
}

// notePolicy notes in lines the line of the policy mapping n, under label, and of each of its fields, under
// label: field.
func notePolicy(lines map[string]int, n *yaml.Node, label string) {
	if n.Kind != yaml.MappingNode {
		return
	}
	lines[label] = n.Line
	for i := 0; i+1 < len(n.Content); i += 2 {
		if k := resolve(n.Content[i]); k.Kind == yaml.ScalarNode {
			lines[label+": "+k.Value] = k.Line
		}
	}
}

// withLine adds to err, an error that names a field at its start ("limits.max_clients: must be ...") and no line,
// the line of that field in the file, from lines (fieldLines). The longest field name that starts the message wins,
// so `policy "a": soft_ttl` is preferred to `policy "a"`. err is returned as it is when it names no field the file
// gives, or a line already.
func withLine(err error, lines map[string]int) error {
	msg := err.Error()
	if strings.Contains(msg, "(line ") {
		return err
	}
	best, line := "", 0
	for name, l := range lines {
		rest, ok := strings.CutPrefix(msg, name)
		if !ok || len(name) <= len(best) || (rest != "" && !strings.ContainsAny(rest[:1], ":[ ")) {
			continue
		}
		best, line = name, l
	}
	if line == 0 {
		return err
	}
	return fmt.Errorf("%w (line %d)", err, line)
}
