package commands

import _ "embed"

// redis70Reply is the raw COMMAND reply of redis-server 7.0.15. Regenerate it with:
// go test -run TestCommandReplyLive -update-command-reply ./internal/commands/
//
//go:embed commands-redis-7.0.resp
var redis70Reply []byte

// Embedded returns Redis 7.0's command table, parsed from the COMMAND reply of redis-server 7.0.15 that is built
// into featcache: the table the proxy uses until the upstream answers COMMAND, and the one tests use without a
// Redis. Each call parses anew, so the caller may modify the table it gets.
func Embedded() (Table, error) { return Parse(redis70Reply) }
