package resp

import (
	"net"
	"syscall"
)

// Peek looks at a connection's socket without reading from it or waiting: data reports bytes waiting to be read,
// closed that the peer has closed it (EOF) or it failed. It consumes nothing, so the next read still gets every
// byte. ok is false for a connection without a socket to look at (it reports nothing); one whose socket is gone
// is closed. Under TLS, pass the connection beneath, whose bytes are records, not what the TLS connection returns.
func Peek(nc net.Conn) (data, closed, ok bool) {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return false, false, false
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return false, true, true
	}
	err = raw.Read(func(fd uintptr) bool {
		var b [1]byte
		n, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		data = err == nil && n > 0
		closed = (err == nil && n == 0) || (err != nil && err != syscall.EAGAIN && err != syscall.EINTR)
		return true // one look, never a wait
	})
	return data, closed || err != nil, true
}
