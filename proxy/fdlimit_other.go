//go:build !linux

package proxy

import "net"

// shortOfFDs cannot tell a descriptor's place on this platform: limits.max_clients alone bounds the clients.
func shortOfFDs(net.Conn) bool { return false }
