package main

import (
	"fmt"
	"strconv"
	"strings"
)

// size is a byte count written as in featcache's configuration: 256MB, 64KB, 1GB (powers of 1024) or bytes.
type size struct {
	bytes int64
	text  string
}

func mustSize(s string) size {
	var z size
	if err := z.Set(s); err != nil {
		panic(err)
	}
	return z
}

func (z size) String() string { return z.text }

func (z *size) Set(s string) error {
	t := strings.ToUpper(strings.TrimSpace(s))
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"GB", 1 << 30}, {"MB", 1 << 20}, {"KB", 1 << 10}, {"B", 1}} {
		if strings.HasSuffix(t, u.suffix) {
			t, mult = strings.TrimSuffix(t, u.suffix), u.mult
			break
		}
	}
	n, err := strconv.ParseFloat(t, 64)
	if err != nil || n <= 0 {
		return fmt.Errorf("invalid size %q (examples: 256MB, 1GB)", s)
	}
	z.bytes, z.text = int64(n*float64(mult)), s
	return nil
}

func (z size) MarshalText() ([]byte, error) { return []byte(z.text), nil }

func (z *size) UnmarshalText(b []byte) error { return z.Set(string(b)) }

// namedAddr is an extra target given with -target name=host:port.
type namedAddr struct {
	Name string `json:"name"`
	Addr string `json:"addr"`
}

func (t namedAddr) String() string { return t.Name + "=" + t.Addr }

type targetList []namedAddr

func (l *targetList) String() string {
	var parts []string
	for _, t := range *l {
		parts = append(parts, t.String())
	}
	return strings.Join(parts, ",")
}

func (l *targetList) Set(v string) error {
	name, addr, ok := strings.Cut(v, "=")
	if !ok || name == "" || addr == "" {
		return fmt.Errorf("want name=host:port, got %q", v)
	}
	*l = append(*l, namedAddr{Name: name, Addr: addr})
	return nil
}
