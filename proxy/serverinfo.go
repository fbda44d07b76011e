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
