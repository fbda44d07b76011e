package config

import (
	"errors"
	"fmt"
	"math"
	"net"
	"slices"
	"strconv"
	"strings"
)

// Validate checks every field of c, as Parse does after decoding. It is for a Config built or changed in code, for
// example after command-line flags override the listen, admin or upstream addresses.
func (c *Config) Validate() error {
	// The order is the order of the errors a file with several mistakes gets, one at a time.
	for _, check := range []func() error{
		c.checkAddresses, c.Upstream.validate, c.Local.validate, c.Limits.validateRequests, c.checkShutdown,
		c.Log.validate, c.Warm.validate, c.Limits.validateOutput, c.Commands.validate, c.validateTLS,
		c.checkProtectedMode,
	} {
		if err := check(); err != nil {
			return err
		}
	}
	return validatePolicies(c.Policies)
}

// checkAddresses checks the listen and admin addresses.
func (c *Config) checkAddresses() error {
	if err := checkAddress("listen", c.Listen, false); err != nil {
		return err
	}
	if c.Admin != "" {
		return checkAddress("admin", c.Admin, false)
	}
	return nil
}

// checkShutdown checks the shutdown delay and timeout.
func (c *Config) checkShutdown() error {
	if c.ShutdownDelay < 0 {
		return fmt.Errorf("shutdown_delay: must not be negative, got %q", formatDuration(c.ShutdownDelay))
	}
	if c.ShutdownTimeout <= 0 {
		return fmt.Errorf("shutdown_timeout: must be greater than 0, got %q", formatDuration(c.ShutdownTimeout))
	}
	return nil
}

// checkList checks each entry of the list field name with check, in order, and refuses an entry listed twice.
func checkList(name string, list []string, check func(i int, s string) error) error {
	for i, s := range list {
		if err := check(i, s); err != nil {
			return err
		}
		if slices.Contains(list[:i], s) {
			return fmt.Errorf("%s: %q is listed twice", name, s)
		}
	}
	return nil
}

// checkAddressList checks the host:port list field name.
func checkAddressList(name string, list []string) error {
	return checkList(name, list, func(i int, a string) error {
		return checkAddress(fmt.Sprintf("%s[%d]", name, i), a, true)
	})
}

// validate checks the upstream section: its addresses, its sentinel section, timeouts, revalidation rate and
// connections.
func (u *Upstream) validate() error {
	if len(u.Addresses) == 0 {
		return errors.New(`upstream.addresses: must name at least one host:port, for example ["127.0.0.1:6379"]`)
	}
	if err := checkAddressList("upstream.addresses", u.Addresses); err != nil {
		return err
	}
	if err := u.Sentinel.validate(); err != nil {
		return err
	}
	if u.Timeout <= 0 {
		return fmt.Errorf("upstream.timeout: must be greater than 0, got %q", formatDuration(u.Timeout))
	}
	if u.CommandTimeout < 0 {
		return fmt.Errorf("upstream.command_timeout: must be 0 (no bound) or greater, got %q", formatDuration(u.CommandTimeout))
	}
	if u.RevalidateRate < 1 {
		return fmt.Errorf("upstream.revalidate_rate: must be at least 1 key per second, got %d", u.RevalidateRate)
	}
	if u.Conns < 1 || u.Conns > MaxConns {
		return fmt.Errorf("upstream.conns: must be between 1 and %d, got %d", MaxConns, u.Conns)
	}
	return nil
}

// validate checks the local section.
func (l *Local) validate() error {
	if l.MaxMemory < MinMaxMemory {
		return fmt.Errorf("local.max_memory: must be at least %s, got %q", formatSize(MinMaxMemory), formatSize(l.MaxMemory))
	}
	if t := l.AdmissionThreshold; t < 0 || t > MaxAdmissionThreshold {
		return fmt.Errorf("local.admission_threshold: must be between 0 (off) and %d, got %d", MaxAdmissionThreshold, t)
	}
	return nil
}

// validateRequests checks the limits on requests and connections. Validate checks them before the other sections,
// and the output limits (validateOutput) after.
func (l *Limits) validateRequests() error {
	if l.MaxRequestBytes < kib {
		return fmt.Errorf("limits.max_request_bytes: must be at least 1KB, got %q", formatSize(l.MaxRequestBytes))
	}
	if l.MaxArgs < 1 {
		return fmt.Errorf("limits.max_args: must be at least 1, got %d", l.MaxArgs)
	}
	if l.MaxInlineBytes < kib {
		return fmt.Errorf("limits.max_inline_bytes: must be at least 1KB, got %q", formatSize(int64(l.MaxInlineBytes)))
	}
	if l.MaxClients < 1 {
		return fmt.Errorf("limits.max_clients: must be at least 1, got %d", l.MaxClients)
	}
	if l.MaxConnAge != 0 && l.MaxConnAge < MinMaxConnAge {
		return fmt.Errorf("limits.max_conn_age: must be 0 (never) or at least 1s, got %q", formatDuration(l.MaxConnAge))
	}
	return nil
}

// validateOutput checks the limits on idle clients, replies and the memory of all clients.
func (l *Limits) validateOutput() error {
	if l.IdleTimeout < 0 {
		return fmt.Errorf("limits.idle_timeout: must not be negative, got %q", formatDuration(l.IdleTimeout))
	}
	if l.MaxOutputBytes < kib {
		return fmt.Errorf("limits.max_output_bytes: must be at least 1KB, got %q", formatSize(l.MaxOutputBytes))
	}
	if l.OutputTimeout <= 0 {
		return fmt.Errorf("limits.output_timeout: must be greater than 0, got %q", formatDuration(l.OutputTimeout))
	}
	if l.MaxTrackedKeys < 1 {
		return fmt.Errorf("limits.max_tracked_keys: must be at least 1, got %d", l.MaxTrackedKeys)
	}
	// A request is held twice while it is forwarded: in the read buffer and in the upstream payload.
	if need := 2*min(l.MaxRequestBytes, math.MaxInt64/4) + min(l.MaxOutputBytes, math.MaxInt64/4); l.MaxClientsMemory < need {
		return fmt.Errorf("limits.max_clients_memory: must hold at least one largest request, twice (as read and "+
			"as sent upstream), and one largest reply (2 x max_request_bytes + max_output_bytes = %s), got %q",
			formatSize(need), formatSize(l.MaxClientsMemory))
	}
	return nil
}

// validate checks the log section.
func (l *Log) validate() error {
	if l.Format != "text" && l.Format != "json" {
		return fmt.Errorf("log.format: invalid value %q (use text or json)", l.Format)
	}
	if l.SlowCommand < 0 {
		return fmt.Errorf("log.slow_command: must not be negative, got %q", formatDuration(l.SlowCommand))
	}
	return nil
}

// validate checks the commands section: each deny entry a well-formed command or command|subcommand, listed once.
func (c *Commands) validate() error {
	return checkList("commands.deny", c.Deny, func(i int, d string) error {
		if err := checkDenyEntry(d); err != nil {
			return fmt.Errorf("commands.deny[%d]: %w", i, err)
		}
		return nil
	})
}

// validate checks the sentinel section: off, or a master set with at least one sentinel.
func (s *Sentinel) validate() error {
	switch {
	case !s.Enabled():
		if s.Password != "" {
			return errors.New("upstream.sentinel.password: has no effect without upstream.sentinel.master_set and addresses")
		}
		return nil
	case s.MasterSet == "":
		return errors.New(`upstream.sentinel.master_set: required with upstream.sentinel.addresses (the name in ` +
			`"sentinel monitor NAME ...", for example mymaster)`)
	case len(s.Addresses) == 0:
		return fmt.Errorf(`upstream.sentinel.addresses: master set %q needs at least one sentinel host:port, for `+
			`example ["127.0.0.1:26379"]`, s.MasterSet)
	case strings.ContainsFunc(s.MasterSet, func(r rune) bool { return r <= ' ' || r == 0x7f }):
		return fmt.Errorf("upstream.sentinel.master_set: invalid name %q (no spaces or control characters)", s.MasterSet)
	}
	if err := checkAddressList("upstream.sentinel.addresses", s.Addresses); err != nil {
		return err
	}
	return nil
}

// validateTLS checks that the TLS fields are given together where they must be. Whether the files exist and hold
// certificates is checked when they are loaded (TLS.ServerConfig, UpstreamTLS.ClientConfig), at start.
func (c *Config) validateTLS() error {
	t := &c.TLS
	switch {
	case t.CertFile == "" && t.KeyFile != "":
		return errors.New("tls.key_file: is set but tls.cert_file is not (set both, or neither for plain TCP)")
	case t.CertFile != "" && t.KeyFile == "":
		return errors.New("tls.cert_file: is set but tls.key_file is not (set both, or neither for plain TCP)")
	case t.ClientCAFile != "" && t.CertFile == "":
		return errors.New("tls.client_ca_file: needs tls.cert_file and tls.key_file (client certificates are asked for over TLS)")
	}
	u := &c.Upstream.TLS
	if !u.Enabled {
		for _, f := range []struct {
			name string
			set  bool
		}{
			{"ca_file", u.CAFile != ""}, {"cert_file", u.CertFile != ""}, {"key_file", u.KeyFile != ""},
			{"server_name", u.ServerName != ""}, {"insecure_skip_verify", u.InsecureSkipVerify},
		} {
			if f.set {
				return fmt.Errorf("upstream.tls.%s: has no effect without upstream.tls.enabled: true", f.name)
			}
		}
		return nil
	}
	switch {
	case u.CertFile == "" && u.KeyFile != "":
		return errors.New("upstream.tls.key_file: is set but upstream.tls.cert_file is not (set both, or neither)")
	case u.CertFile != "" && u.KeyFile == "":
		return errors.New("upstream.tls.cert_file: is set but upstream.tls.key_file is not (set both, or neither)")
	case u.InsecureSkipVerify && (u.CAFile != "" || u.ServerName != ""):
		return errors.New("upstream.tls.insecure_skip_verify: true ignores upstream.tls.ca_file and server_name; set one or the other")
	}
	return nil
}

// checkProtectedMode refuses to serve a non-loopback address to clients that need no credentials: featcache speaks
// to the store as its own upstream user, so an open listener would hand the store to whoever can reach it.
// Redis's own protected mode answers such clients -DENIED; featcache refuses to start instead.
func (c *Config) checkProtectedMode() error {
	if !c.ProtectedMode || c.Password != "" || c.TLS.ClientCAFile != "" || isLoopbackAddress(c.Listen) {
		return nil
	}
	return fmt.Errorf("listen: %q is not a loopback address and clients need no credentials (protected mode): set "+
		"password, or tls.client_ca_file for client certificates, or protected_mode: false to serve it open", c.Listen)
}

// isLoopbackAddress reports whether a listen address accepts loopback connections only. An empty host (every
// interface) is not loopback; a name other than "localhost" is not trusted to be, since resolving it at start would
// not say what it resolves to later.
func isLoopbackAddress(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// checkAddress checks a host:port. Listeners may leave the host empty (":6380", every interface) and use port 0 (any
// free port); upstream addresses need both.
func checkAddress(name, addr string, upstream bool) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%s: invalid address %q (want host:port, for example 127.0.0.1:6379)", name, addr)
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return fmt.Errorf("%s: invalid port %q in %q (want a number from 0 to 65535)", name, port, addr)
	}
	if upstream && (host == "" || p == 0) {
		return fmt.Errorf("%s: invalid address %q (want a host and a port other than 0)", name, addr)
	}
	return nil
}

// checkDenyEntry checks one commands.deny entry: "name" or "name|subcommand", lower case, no spaces.
func checkDenyEntry(d string) error {
	name, sub, hasSub := strings.Cut(d, "|")
	switch {
	case d != strings.ToLower(d):
		return fmt.Errorf("%q must be lower case", d)
	case name == "" || (hasSub && sub == "") || strings.Contains(sub, "|"):
		return fmt.Errorf("invalid entry %q (want a command such as \"config\" or a command|subcommand such as \"client|kill\")", d)
	case strings.ContainsFunc(d, func(r rune) bool { return r <= ' ' || r == 0x7f }):
		return fmt.Errorf("invalid entry %q (command names have no spaces or control characters)", d)
	}
	return nil
}
