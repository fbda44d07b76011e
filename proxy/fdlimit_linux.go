package proxy

import (
	"net"
	"syscall"
)

// reservedFDs is how many file descriptors below the process's limit are kept for what featcache opens on its
// clients' behalf (dedicated upstream connections for transactions, WATCH, blocking commands and subscriptions,
// reconnections, the admin listener's connections, warm files), as Redis keeps 32 below its own limit.
const reservedFDs = 64

// shortOfFDs reports whether the client connection nc took one of the last reservedFDs file descriptors the
// process may open. The kernel hands out the lowest free descriptor, so its number is about how many are open.
// Redis lowers maxclients to fit its descriptor limit and answers the clients beyond it; featcache does the same
// at each accept, so that a low limit ends in Redis's error for the newest client, never in connections left
// unanswered in the listen backlog or in sessions that cannot reach Redis.
func shortOfFDs(nc net.Conn) bool {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return false
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	fd := -1
	raw.Control(func(f uintptr) { fd = int(f) })
	var lim syscall.Rlimit
	if fd < 0 || syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim) != nil {
		return false
	}
	return uint64(fd) >= lim.Cur-min(lim.Cur, reservedFDs)
}
