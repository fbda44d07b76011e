//go:build !linux

package resp

import "syscall"

// Inq is Linux's (inq_linux.go): elsewhere SetDirect reports false and ReadDirect is not used.
type Inq struct{}

func EnableInq(syscall.RawConn) bool { return false }

func (q *Inq) Recv(fd int, b []byte) (n, left int, err error) { return 0, 0, syscall.ENOTSUP }
