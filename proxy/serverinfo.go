package proxy

import "strings"

// serverInfo is what HELLO reports: the upstream's own identity, so clients see the Redis they expect.
type serverInfo struct {
	version string
	mode    string
	role    string
}

// parseServerInfo reads what HELLO reports from INFO server.
func parseServerInfo(info string) *serverInfo {
	si := &serverInfo{version: "7.0.0", mode: "standalone", role: "master"}
	for _, line := range strings.Split(info, "\n") {
		line = strings.TrimRight(line, "\r")
		if v, ok := strings.CutPrefix(line, "redis_version:"); ok {
			si.version = v
		} else if v, ok := strings.CutPrefix(line, "redis_mode:"); ok {
			si.mode = v
		}
	}
	return si
}

// parseRole reads HELLO's role from INFO replication: "master", or "replica" for a server that replicates
// another (INFO says role:slave). ok is false when info holds no role line.
func parseRole(info string) (role string, ok bool) {
	for _, line := range strings.Split(info, "\n") {
		switch strings.TrimRight(line, "\r") {
		case "role:master":
			return "master", true
		case "role:slave":
			return "replica", true
		}
	}
	return "", false
}
