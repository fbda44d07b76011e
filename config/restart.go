package config

import (
	"reflect"
	"slices"
)

// RestartFields names the settings that differ between c and running and that a reload cannot apply: the
// listeners and event loops, the upstream connections, the size of the local tier, the request limits the connection guard was
// built with, the deny list, the password and the log format. A reload applies everything else (policies, warm,
// log level and slow_command, limits.max_conn_age, shutdown_delay and shutdown_timeout) and reports these as
// needing a restart. Field names are written as in the file; values are never part of the result, since some
// are secrets.
func (c *Config) RestartFields(running *Config) []string {
	var out []string
	diff := func(name string, a, b any) {
		if !reflect.DeepEqual(a, b) {
			out = append(out, name)
		}
	}
	diff("listen", c.Listen, running.Listen)
	diff("admin", c.Admin, running.Admin)
	diff("admin_pprof", c.AdminPprof, running.AdminPprof)
	diff("event_loops", c.EventLoops, running.EventLoops)
	diff("password", c.Password, running.Password)
	diff("password_file", c.PasswordFile, running.PasswordFile)
	diff("upstream.addresses", c.Upstream.Addresses, running.Upstream.Addresses)
	diff("upstream.sentinel", c.Upstream.Sentinel, running.Upstream.Sentinel)
	diff("upstream.username", c.Upstream.Username, running.Upstream.Username)
	diff("upstream.password", c.Upstream.Password, running.Upstream.Password)
	diff("upstream.password_file", c.Upstream.PasswordFile, running.Upstream.PasswordFile)
	diff("upstream.tracking", c.Upstream.Tracking, running.Upstream.Tracking)
	diff("upstream.timeout", c.Upstream.Timeout, running.Upstream.Timeout)
	diff("upstream.command_timeout", c.Upstream.CommandTimeout, running.Upstream.CommandTimeout)
	diff("upstream.conns", c.Upstream.Conns, running.Upstream.Conns)
	diff("local.max_memory", c.Local.MaxMemory, running.Local.MaxMemory)
	diff("local.admission_threshold", c.Local.AdmissionThreshold, running.Local.AdmissionThreshold)
	diff("limits.max_request_bytes", c.Limits.MaxRequestBytes, running.Limits.MaxRequestBytes)
	diff("limits.max_args", c.Limits.MaxArgs, running.Limits.MaxArgs)
	diff("limits.max_inline_bytes", c.Limits.MaxInlineBytes, running.Limits.MaxInlineBytes)
	diff("limits.max_clients", c.Limits.MaxClients, running.Limits.MaxClients)
	diff("commands.deny", c.Commands.Deny, running.Commands.Deny)
	diff("log.format", c.Log.Format, running.Log.Format)
	return out
}

// NextStartFields names the warm settings that differ between c and running and that only the warm-up at start
// reads (sources, ready_after, ready_timeout): a reload keeps them for the next start, and CACHE WARM starts a
// warm-up now.
func (c *Config) NextStartFields(running *Config) []string {
	var out []string
	if !slices.Equal(c.Warm.Sources, running.Warm.Sources) {
		out = append(out, "warm.sources")
	}
	if c.Warm.ReadyAfter != running.Warm.ReadyAfter {
		out = append(out, "warm.ready_after")
	}
	if c.Warm.ReadyTimeout != running.Warm.ReadyTimeout {
		out = append(out, "warm.ready_timeout")
	}
	return out
}

// WithRestartFields returns a copy of c whose restart-only settings (see RestartFields) are running's: what
// featcache runs with after a reload that applied c.
func (c *Config) WithRestartFields(running *Config) *Config {
	n := *c
	n.Listen, n.Admin, n.AdminPprof, n.EventLoops = running.Listen, running.Admin, running.AdminPprof, running.EventLoops
	n.Password, n.PasswordFile = running.Password, running.PasswordFile
	n.Upstream = running.Upstream
	n.Local = running.Local
	maxAge := n.Limits.MaxConnAge
	n.Limits = running.Limits
	n.Limits.MaxConnAge = maxAge
	n.Commands = running.Commands
	n.Log.Format = running.Log.Format
	return &n
}
