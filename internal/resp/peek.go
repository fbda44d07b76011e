package resp

import "syscall"

// Peek looks at a socket without reading from it or waiting: data reports bytes waiting to be read, closed that
// the peer has closed it (EOF) or it failed. It consumes nothing, so the next read still gets every byte. Under
// TLS, the socket beneath holds records, not the bytes the TLS connection will return.
func Peek(raw syscall.RawConn) (data, closed bool) {
	err := raw.Read(func(fd uintptr) bool {
		var b [1]byte
		n, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		data = err == nil && n > 0
		closed = (err == nil && n == 0) || (err != nil && err != syscall.EAGAIN && err != syscall.EINTR)
		return true // one look, never a wait
	})
	return data, closed || err != nil
}
