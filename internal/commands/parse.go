package commands

import (
	"errors"
	"fmt"
	"strings"

	"featcache/internal/resp"
)

// ErrBadReply means a COMMAND reply could not be read as a command table: it was not one valid RESP2 value, it
// was an error reply, or its entries do not have the shape Redis documents for COMMAND. Parse wraps it with
// the place and the reason.
var ErrBadReply = errors.New("commands: bad COMMAND reply")

// Parse builds the command table from reply, the raw RESP2 bytes Redis sends for COMMAND (or COMMAND INFO
// name ...; null entries for unknown names are skipped). reply is not retained.
//
// Entries of Redis before 7.0 have no key specs: Parse then derives a range spec from the legacy
// first/last/step positions and, for a command flagged movablekeys, adds an unknown spec, so that Keys reports such a
// command as incomplete instead of silently finding no keys.
func Parse(reply []byte) (Table, error) {
	v, n, err := resp.Decode(reply)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadReply, err)
	}
	if n != len(reply) {
		return nil, fmt.Errorf("%w: %d bytes after the reply", ErrBadReply, len(reply)-n)
	}
	if v.Type == resp.TypeError {
		return nil, fmt.Errorf("%w: upstream replied %q", ErrBadReply, v.Str)
	}
	if v.Type != resp.TypeArray || v.Null {
		return nil, fmt.Errorf("%w: not an array", ErrBadReply)
	}
	cmds := make(Table, len(v.Elems))
	for i, e := range v.Elems {
		if e.Null {
			continue // COMMAND INFO of an unknown name
		}
		ci, err := parseCommandEntry(e)
		if err != nil {
			return nil, fmt.Errorf("%w: entry %d: %v", ErrBadReply, i, err)
		}
		cmds[ci.Name] = ci
	}
	return cmds, nil
}

// parseCommandEntry reads one entry: [name, arity, flags, first, last, step, acl categories, tips, key specs,
// subcommands]. Redis 6 sends the first 6 or 7 elements only.
func parseCommandEntry(e resp.Value) (*Info, error) {
	if e.Type != resp.TypeArray || len(e.Elems) < 6 {
		return nil, errors.New("not an array of at least 6 elements")
	}
	name, ok := e.Elems[0].Text()
	if !ok || name == "" {
		return nil, errors.New("the command name is not a string")
	}
	ci := &Info{Name: string(resp.AppendLower(nil, []byte(name)))}
	bad := func(what string) error {
		return fmt.Errorf("command %q: %s", ci.Name, what)
	}
	ints := [4]*int{&ci.Arity, &ci.FirstKey, &ci.LastKey, &ci.KeyStep}
	for j, idx := range [4]int{1, 3, 4, 5} {
		n, ok := specInt(e.Elems[idx])
		if !ok {
			return nil, bad(fmt.Sprintf("element %d is not an integer", idx))
		}
		*ints[j] = n
	}
	if e.Elems[2].Type != resp.TypeArray {
		return nil, bad("flags are not an array")
	}
	for _, f := range e.Elems[2].Elems {
		s, ok := f.Text()
		if !ok {
			return nil, bad("a flag is not a string")
		}
		ci.Flags |= commandFlags[s]
	}
	if len(e.Elems) >= 9 {
		specs := e.Elems[8]
		if specs.Type != resp.TypeArray {
			return nil, bad("key specs are not an array")
		}
		for k, s := range specs.Elems {
			ks, err := parseKeySpec(s)
			if err != nil {
				return nil, bad(fmt.Sprintf("key spec %d: %v", k, err))
			}
			ci.KeySpecs = append(ci.KeySpecs, ks)
		}
	} else {
		ci.KeySpecs = legacyKeySpecs(ci)
	}
	if len(e.Elems) >= 10 {
		subs := e.Elems[9]
		if subs.Type != resp.TypeArray {
			return nil, bad("subcommands are not an array")
		}
		for _, s := range subs.Elems {
			sub, err := parseCommandEntry(s)
			if err != nil {
				return nil, bad(fmt.Sprintf("subcommand: %v", err))
			}
			if ci.Subcommands == nil {
				ci.Subcommands = make(map[string]*Info, len(subs.Elems))
			}
			_, short, found := strings.Cut(sub.Name, "|")
			if !found {
				short = sub.Name
			}
			ci.Subcommands[short] = sub
		}
	}
	return ci, nil
}

// legacyKeySpecs derives key specs from the legacy positions of a pre-7.0 entry.
func legacyKeySpecs(ci *Info) []KeySpec {
	var specs []KeySpec
	if ci.FirstKey > 0 && ci.KeyStep > 0 {
		last := ci.LastKey
		if last >= 0 {
			last -= ci.FirstKey
		}
		specs = append(specs, KeySpec{
			BeginSearch: BeginSearch{Type: BeginIndex, Index: ci.FirstKey},
			FindKeys:    FindKeys{Type: FindRange, LastKey: last, KeyStep: ci.KeyStep},
		})
	}
	if ci.Flags.Has(FlagMovableKeys) {
		specs = append(specs, KeySpec{Flags: KeyIncomplete})
	}
	return specs
}

// parseKeySpec reads one key spec: a flat map with "flags", "begin_search" and "find_keys" (and "notes", ignored).
// Types Redis may add later become BeginUnknown/FindUnknown, which Keys reports as incomplete. Values that would make
// Keys meaningless (a step below 1, an index below 1, a limit without lastkey -1) are errors.
func parseKeySpec(v resp.Value) (KeySpec, error) {
	var ks KeySpec
	m, err := pairs(v)
	if err != nil {
		return ks, err
	}
	if f, ok := m["flags"]; ok {
		if f.Type != resp.TypeArray {
			return ks, errors.New("flags are not an array")
		}
		for _, e := range f.Elems {
			s, ok := e.Text()
			if !ok {
				return ks, errors.New("a flag is not a string")
			}
			ks.Flags |= keySpecFlags[s]
		}
	}
	typ, spec, err := typedSpec(m, "begin_search")
	if err != nil {
		return ks, err
	}
	switch typ {
	case "index":
		if ks.BeginSearch.Index, err = spec.intField("index", 1); err != nil {
			return ks, err
		}
		ks.BeginSearch.Type = BeginIndex
	case "keyword":
		kw, ok := spec["keyword"].Text()
		if !ok || kw == "" {
			return ks, errors.New("begin_search keyword is missing")
		}
		ks.BeginSearch.Keyword = kw
		if ks.BeginSearch.StartFrom, err = spec.intField("startfrom", minSpecValue); err != nil {
			return ks, err
		}
		ks.BeginSearch.Type = BeginKeyword
	}
	typ, spec, err = typedSpec(m, "find_keys")
	if err != nil {
		return ks, err
	}
	fk := &ks.FindKeys
	switch typ {
	case "range":
		if fk.LastKey, err = spec.intField("lastkey", minSpecValue); err != nil {
			return ks, err
		}
		if fk.KeyStep, err = spec.intField("keystep", 1); err != nil {
			return ks, err
		}
		if fk.Limit, err = spec.intField("limit", 0); err != nil {
			return ks, err
		}
		if fk.Limit > 0 && fk.LastKey != -1 {
			return ks, fmt.Errorf("find_keys limit %d with lastkey %d (must be -1)", fk.Limit, fk.LastKey)
		}
		fk.Type = FindRange
	case "keynum":
		if fk.KeyNumIdx, err = spec.intField("keynumidx", 0); err != nil {
			return ks, err
		}
		if fk.FirstKey, err = spec.intField("firstkey", 0); err != nil {
			return ks, err
		}
		if fk.KeyStep, err = spec.intField("keystep", 1); err != nil {
			return ks, err
		}
		fk.Type = FindKeynum
	}
	return ks, nil
}

// minSpecValue is the lowest value a key spec field may have where negative values are meaningful. Redis keeps
// these fields in C ints; bounding them keeps the index arithmetic of Keys far from overflow.
const minSpecValue = -(1 << 31)

// typedSpec reads m[field] as a flat map {"type": name, "spec": map} and returns the type name and the spec map.
func typedSpec(m respMap, field string) (string, respMap, error) {
	v, ok := m[field]
	if !ok {
		return "", nil, fmt.Errorf("%s is missing", field)
	}
	tm, err := pairs(v)
	if err != nil {
		return "", nil, fmt.Errorf("%s: %v", field, err)
	}
	typ, ok := tm["type"].Text()
	if !ok {
		return "", nil, fmt.Errorf("%s type is not a string", field)
	}
	spec := respMap{}
	if s, ok := tm["spec"]; ok {
		if spec, err = pairs(s); err != nil {
			return "", nil, fmt.Errorf("%s spec: %v", field, err)
		}
	}
	return typ, spec, nil
}

// specInt returns an integer that fits in a C int, as Redis's COMMAND integers do.
func specInt(v resp.Value) (int, bool) {
	if v.Type != resp.TypeInteger || v.Int < minSpecValue || v.Int > -minSpecValue-1 {
		return 0, false
	}
	return int(v.Int), true
}

// respMap is a flat RESP2 key/value array read as a map.
type respMap map[string]resp.Value

// pairs reads an array of alternating names and values.
func pairs(v resp.Value) (respMap, error) {
	if v.Type != resp.TypeArray || v.Null || len(v.Elems)%2 != 0 {
		return nil, errors.New("not a flat array of name/value pairs")
	}
	m := make(respMap, len(v.Elems)/2)
	for i := 0; i < len(v.Elems); i += 2 {
		k, ok := v.Elems[i].Text()
		if !ok {
			return nil, errors.New("a field name is not a string")
		}
		m[k] = v.Elems[i+1]
	}
	return m, nil
}

// intField returns m[name] as an integer no lower than min.
func (m respMap) intField(name string, min int) (int, error) {
	n, ok := specInt(m[name])
	if !ok {
		return 0, fmt.Errorf("%s is missing or not an integer", name)
	}
	if n < min {
		return 0, fmt.Errorf("%s %d is below %d", name, n, min)
	}
	return n, nil
}
