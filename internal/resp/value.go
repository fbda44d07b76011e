package resp

import (
	"bytes"
	"fmt"
)

// Value is one decoded RESP2 value, nested arrays included. Decoding copies every string, so a Value shares nothing
// with the bytes it came from. It suits replies read once or rarely (COMMAND at start, CONFIG GET, a bench's
// statistics); the request path works on frames instead (Scanner, BulkPayload, ArrayElements), which copy nothing.
type Value struct {
	// Type is the frame's type byte: TypeSimple, TypeError, TypeInteger, TypeBulk or TypeArray.
	Type byte
	// Null is true for the null bulk string and the null array.
	Null bool
	// Str is a simple string, a bulk string's payload, or an error's text without its '-'.
	Str string
	// Int is an integer's value.
	Int int64
	// Elems are an array's elements.
	Elems []Value
}

// Text returns a simple string or a bulk string that is not null.
func (v Value) Text() (string, bool) {
	if (v.Type == TypeSimple || v.Type == TypeBulk) && !v.Null {
		return v.Str, true
	}
	return "", false
}

// MaxDecodeDepth bounds how deeply Decode follows nested arrays; COMMAND's reply nests 6 levels deep (subcommands'
// key specs).
const MaxDecodeDepth = 16

// Decode decodes the value at the start of b and returns it with the number of bytes it took. The value must be
// whole: Decode is for replies already read, and reports a truncated one as an error naming the offset. Declared
// lengths are checked against the bytes that follow before anything is allocated for them.
func Decode(b []byte) (Value, int, error) {
	d := decoder{b: b}
	v, err := d.value(0)
	return v, d.pos, err
}

// decoder decodes RESP2 values from b, starting at pos.
type decoder struct {
	b   []byte
	pos int
}

func (d *decoder) errorf(format string, a ...any) error {
	return fmt.Errorf("offset %d: %s", d.pos, fmt.Sprintf(format, a...))
}

// line returns the next line without its CRLF and moves past it.
func (d *decoder) line() ([]byte, error) {
	i := bytes.Index(d.b[d.pos:], []byte("\r\n"))
	if i < 0 {
		return nil, d.errorf("truncated line")
	}
	l := d.b[d.pos : d.pos+i]
	d.pos += i + 2
	return l, nil
}

// value decodes one value, nested ones included.
func (d *decoder) value(depth int) (Value, error) {
	if depth > MaxDecodeDepth {
		return Value{}, d.errorf("nested deeper than %d", MaxDecodeDepth)
	}
	l, err := d.line()
	if err != nil {
		return Value{}, err
	}
	if len(l) == 0 {
		return Value{}, d.errorf("empty line")
	}
	v := Value{Type: l[0]}
	switch l[0] {
	case TypeSimple, TypeError:
		v.Str = string(l[1:])
		return v, nil
	case TypeInteger:
		n, ok := ParseInt(l[1:])
		if !ok {
			return v, d.errorf("bad integer %q", l)
		}
		v.Int = n
		return v, nil
	case TypeBulk, TypeArray:
		n, ok := ParseInt(l[1:])
		if !ok || n < -1 {
			return v, d.errorf("bad length %q", l)
		}
		if n == -1 {
			v.Null = true
			return v, nil
		}
		// Every element takes at least 3 bytes and a bulk string its length plus CRLF, so a length beyond the
		// remaining input is a lie, refused before it sizes an allocation.
		if n > int64(len(d.b)-d.pos) {
			return v, d.errorf("length %d past the end of the reply", n)
		}
		if l[0] == TypeBulk {
			end := d.pos + int(n)
			if end+2 > len(d.b) || d.b[end] != '\r' || d.b[end+1] != '\n' {
				return v, d.errorf("bulk string of %d bytes is not followed by CRLF", n)
			}
			v.Str = string(d.b[d.pos:end])
			d.pos = end + 2
			return v, nil
		}
		v.Elems = make([]Value, 0, n)
		for i := int64(0); i < n; i++ {
			e, err := d.value(depth + 1)
			if err != nil {
				return v, err
			}
			v.Elems = append(v.Elems, e)
		}
		return v, nil
	}
	return v, d.errorf("unknown type byte %q", l[0])
}
