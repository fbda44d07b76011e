package resp

import "bytes"

// inline parses the inline command at r.start once its '\n' has arrived, appending its arguments to args. The
// search for '\n' resumes where the previous one stopped, so a long line arriving in small reads costs O(length).
//
// Redis finds the line end with strchr, which stops at a NUL byte, so a line containing NUL never completes there
// and the connection waits until 64 KiB have accumulated. featcache treats NUL as an ordinary byte.
func (r *Reader) inline(args *[][]byte) (bool, error) {
	b := r.buf[r.start:r.end]
	st := &r.st
	// The '\n' may come at most MaxInlineBytes bytes after the line start. Redis's test is "more than 64 KiB
	// buffered and no '\n'", whose outcome depends on how the bytes were split into reads; a bound on the line
	// itself gives the same answer for every split.
	window := b[:min(len(b), r.lim.MaxInlineBytes+1)]
	i := bytes.IndexByte(window[st.off:], '\n')
	if i < 0 {
		r.work += int64(len(window) - st.off)
		if len(window) > r.lim.MaxInlineBytes {
			return false, ErrTooBigInlineRequest
		}
		st.off = len(window)
		return false, nil
	}
	r.work += int64(i + 1)
	nl := st.off + i
	line := b[:nl]
	if len(line) > 0 && line[len(line)-1] == '\r' {
		line = line[:len(line)-1]
	}
	var ok bool
	if *args, ok = splitInline(*args, line); !ok {
		return false, ErrUnbalancedQuotes
	}
	st.off = nl + 1
	return true, nil
}

// splitInline splits an inline command line into arguments like Redis's sdssplitargs and appends them to args.
// It unescapes in place: every output byte consumes at least one input byte, so the write position never passes
// the read position, and the line is never read again (inline commands have no Raw). The arguments therefore
// live in the read buffer like multi-bulk ones and need no storage of their own.
//
// Rules, from sdssplitargs: blanks (isspace: space, \t, \n, \v, \f, \r) separate arguments, but inside an
// unquoted argument only space, \t, \n and \r end it (so "a\vb" is one argument). A quote may start in the middle
// of an argument ("ab\"c d\"" is "abc d"). Double quotes take \xHH and the escapes \n \r \t \b \a; any other
// escaped byte stands for itself. Single quotes take only \'. A closing quote must be followed by a blank or the
// end of the line, and an unterminated quote is an error; both report false.
func splitInline(args [][]byte, line []byte) ([][]byte, bool) {
	n := len(line)
	p, w := 0, 0
	for {
		for p < n && isInlineSpace(line[p]) {
			p++
		}
		if p == n {
			return args, true
		}
		start := w
		var quote byte // the quote the argument is inside: '"', '\'' or 0 for none
		for done := false; !done; {
			switch {
			case quote != 0:
				if p == n {
					return args, false
				}
				c := line[p]
				switch {
				case quote == '"' && c == '\\' && p+3 < n && line[p+1] == 'x' && isInlineHex(line[p+2]) && isInlineHex(line[p+3]):
					line[w] = inlineUnhex(line[p+2])<<4 | inlineUnhex(line[p+3])
					w++
					p += 3
				case quote == '"' && c == '\\' && p+1 < n:
					p++
					line[w] = inlineUnescape(line[p])
					w++
				case quote == '\'' && c == '\\' && p+1 < n && line[p+1] == '\'':
					p++
					line[w] = '\''
					w++
				case c == quote:
					if p+1 < n && !isInlineSpace(line[p+1]) {
						return args, false
					}
					done = true
				default:
					line[w] = c
					w++
				}
			case p == n:
				done = true
			default:
				switch c := line[p]; c {
				case ' ', '\n', '\r', '\t':
					done = true
				case '"', '\'':
					quote = c
				default:
					line[w] = c
					w++
				}
			}
			if p < n {
				p++
			}
		}
		args = append(args, line[start:w:w])
	}
}

// isInlineSpace is C's isspace in the C locale.
func isInlineSpace(c byte) bool {
	return c == ' ' || (c >= '\t' && c <= '\r')
}

func isInlineHex(c byte) bool {
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')
}

func inlineUnhex(c byte) byte {
	switch {
	case c >= 'a':
		return c - 'a' + 10
	case c >= 'A':
		return c - 'A' + 10
	}
	return c - '0'
}

// inlineUnescape maps the byte after a backslash inside double quotes.
func inlineUnescape(c byte) byte {
	switch c {
	case 'n':
		return '\n'
	case 'r':
		return '\r'
	case 't':
		return '\t'
	case 'b':
		return '\b'
	case 'a':
		return '\a'
	}
	return c
}
