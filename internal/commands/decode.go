package commands

import (
	"bytes"
	"errors"
	"fmt"
)

// respValue is one decoded RESP2 value. The command table is read once at start, so a value tree is simple and
// cheap enough; the request path never uses it.
type respValue struct {
	kind  byte // '+', '-', ':', '$' or '*'
	null  bool // $-1 or *-1
	str   string
	num   int64
	elems []respValue
}

// text returns a simple or bulk string.
func (v respValue) text() (string, bool) {
	if (v.kind == '+' || v.kind == '$') && !v.null {
		return v.str, true
	}
	return "", false
}

// int32 returns an integer that fits in a C int, as Redis's COMMAND integers do.
func (v respValue) int32() (int, bool) {
	if v.kind != ':' || v.num < minSpecValue || v.num > -minSpecValue-1 {
		return 0, false
	}
	return int(v.num), true
}

// respMap is a flat RESP2 key/value array read as a map.
type respMap map[string]respValue

// pairs reads an array of alternating names and values.
func (v respValue) pairs() (respMap, error) {
	if v.kind != '*' || v.null || len(v.elems)%2 != 0 {
		return nil, errors.New("not a flat array of name/value pairs")
	}
	m := make(respMap, len(v.elems)/2)
	for i := 0; i < len(v.elems); i += 2 {
		k, ok := v.elems[i].text()
		if !ok {
			return nil, errors.New("a field name is not a string")
		}
		m[k] = v.elems[i+1]
	}
	return m, nil
}

// intField returns m[name] as an integer no lower than min.
func (m respMap) intField(name string, min int) (int, error) {
	n, ok := m[name].int32()
	if !ok {
		return 0, fmt.Errorf("%s is missing or not an integer", name)
	}
	if n < min {
		return 0, fmt.Errorf("%s %d is below %d", name, n, min)
	}
	return n, nil
}

// maxRespDepth bounds nesting; COMMAND replies nest 6 levels deep (subcommand key specs).
const maxRespDepth = 16

// respDecoder decodes RESP2 values from b, starting at pos.
type respDecoder struct {
	b   []byte
	pos int
}

func (d *respDecoder) errorf(format string, a ...any) error {
	return fmt.Errorf("offset %d: %s", d.pos, fmt.Sprintf(format, a...))
}

// line returns the next line without its CRLF and moves past it.
func (d *respDecoder) line() ([]byte, error) {
	i := bytes.Index(d.b[d.pos:], []byte("\r\n"))
	if i < 0 {
		return nil, d.errorf("truncated line")
	}
	l := d.b[d.pos : d.pos+i]
	d.pos += i + 2
	return l, nil
}

// value decodes one value, nested ones included.
func (d *respDecoder) value(depth int) (respValue, error) {
	if depth > maxRespDepth {
		return respValue{}, d.errorf("nested deeper than %d", maxRespDepth)
	}
	l, err := d.line()
	if err != nil {
		return respValue{}, err
	}
	if len(l) == 0 {
		return respValue{}, d.errorf("empty line")
	}
	v := respValue{kind: l[0]}
	switch l[0] {
	case '+', '-':
		v.str = string(l[1:])
		return v, nil
	case ':':
		n, ok := ParseInt(l[1:])
		if !ok {
			return v, d.errorf("bad integer %q", l)
		}
		v.num = n
		return v, nil
	case '$', '*':
		n, ok := ParseInt(l[1:])
		if !ok || n < -1 {
			return v, d.errorf("bad length %q", l)
		}
		if n == -1 {
			v.null = true
			return v, nil
		}
		// Every element takes at least 3 bytes and a bulk string its length plus CRLF, so a length beyond the
		// remaining input is a lie, refused before it sizes an allocation.
		if n > int64(len(d.b)-d.pos) {
			return v, d.errorf("length %d past the end of the reply", n)
		}
		if l[0] == '$' {
			end := d.pos + int(n)
			if end+2 > len(d.b) || d.b[end] != '\r' || d.b[end+1] != '\n' {
				return v, d.errorf("bulk string of %d bytes is not followed by CRLF", n)
			}
			v.str = string(d.b[d.pos:end])
			d.pos = end + 2
			return v, nil
		}
		v.elems = make([]respValue, 0, n)
		for i := int64(0); i < n; i++ {
			e, err := d.value(depth + 1)
			if err != nil {
				return v, err
			}
			v.elems = append(v.elems, e)
		}
		return v, nil
	}
	return v, d.errorf("unknown type byte %q", l[0])
}
