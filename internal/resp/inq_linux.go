//go:build linux

package resp

import (
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Inq reads a TCP socket with recvmsg and TCP_INQ, which tells after each read how many bytes are left in the
// socket: ReadDirect waits at once when none are. A read that returned less than it had room for cannot tell it
// alone: a FIN that arrived with the last bytes is left behind them, for the next read to return as EOF, with no
// readiness to come for it. TCP_INQ counts a received FIN as a byte left (Linux 4.18, net/ipv4/tcp.c,
// tcp_inq_hint: "After receiving a FIN, tell the user-space to continue reading by returning a non-zero inq").
// The message header lives in the Inq (the Reader's, the bench floor's), so that a read allocates nothing.
type Inq struct {
	msg unix.Msghdr
	iov unix.Iovec
	oob [unix.SizeofCmsghdr + 8]byte // room for one TCP_CM_INQ message (an int, padded)
}

// EnableInq turns TCP_INQ on for the socket; false for a socket without it (not TCP).
func EnableInq(raw syscall.RawConn) bool {
	ok := false
	raw.Control(func(fd uintptr) {
		ok = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_INQ, 1) == nil
	})
	return ok
}

// Recv reads from fd into b without waiting, and returns the bytes read and the bytes left in the socket after
// them (1 when the kernel did not say: read again to know).
func (q *Inq) Recv(fd int, b []byte) (n, left int, err error) {
	q.iov.Base = &b[0]
	q.iov.SetLen(len(b))
	q.msg.Iov = &q.iov
	q.msg.SetIovlen(1)
	q.msg.Control = &q.oob[0]
	q.msg.SetControllen(len(q.oob))
	q.msg.Flags = 0
	for {
		r, _, e := syscall.Syscall(unix.SYS_RECVMSG, uintptr(fd), uintptr(unsafe.Pointer(&q.msg)), unix.MSG_DONTWAIT)
		switch {
		case e == syscall.EINTR:
			continue
		case e != 0:
			return 0, 0, e
		}
		left = 1
		if q.msg.Controllen >= unix.SizeofCmsghdr+4 {
			h := (*unix.Cmsghdr)(unsafe.Pointer(&q.oob[0]))
			if h.Level == unix.IPPROTO_TCP && h.Type == unix.TCP_CM_INQ {
				left = int(*(*int32)(unsafe.Pointer(&q.oob[unix.SizeofCmsghdr])))
			}
		}
		raceAcquire(fd)
		return int(r), left, nil
	}
}
