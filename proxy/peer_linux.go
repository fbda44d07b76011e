package proxy

import (
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// tcpCloseWait is the kernel's TCP_CLOSE_WAIT state: the peer has sent its FIN, the socket still has data to read.
const tcpCloseWait = 8

// peerFinished reports whether the peer of the TCP socket fd has closed its side of the connection, even while
// bytes it sent before are still unread (pipelined commands, or a TLS close_notify alert, which a peek cannot
// tell from a close). Redis, which keeps reading a blocked client's socket, sees such a close at once too.
func peerFinished(fd int) bool {
	info, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
	return err == nil && info.State == tcpCloseWait
}

// unacknowledged returns how many bytes written on nc the peer has not acknowledged yet (SIOCOUTQ), or 0 where
// that cannot be known.
func unacknowledged(nc net.Conn) int {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return 0
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return 0
	}
	n := 0
	raw.Control(func(fd uintptr) {
		n, _ = unix.IoctlGetInt(int(fd), unix.SIOCOUTQ)
	})
	return n
}
