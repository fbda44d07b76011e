//go:build !linux

package resp

import "syscall"

// inq is Linux's (inq_linux.go): elsewhere SetDirect reports false and ReadDirect is not used.
type inq struct{}

func enableDirect(syscall.RawConn) bool { return false }

func (q *inq) recv(fd int, b []byte) (n, left int, err error) { return 0, 0, syscall.ENOTSUP }
