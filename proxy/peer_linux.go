package proxy

import "golang.org/x/sys/unix"

// tcpCloseWait is the kernel's TCP_CLOSE_WAIT state: the peer has sent its FIN, the socket still has data to read.
const tcpCloseWait = 8

// peerFinished reports whether the peer of the TCP socket fd has closed its side of the connection, even while
// bytes it sent before are still unread (pipelined commands, or a TLS close_notify alert, which a peek cannot
// tell from a close). Redis, which keeps reading a blocked client's socket, sees such a close at once too.
func peerFinished(fd int) bool {
	info, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
	return err == nil && info.State == tcpCloseWait
}
