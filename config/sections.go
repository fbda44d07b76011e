package config

import (
	"fmt"
	"log/slog"
	"strings"

	"gopkg.in/yaml.v3"
)

// topFields are the top-level fields of the file.
var topFields = []string{"listen", "admin", "admin_pprof", "password", "password_file", "protected_mode", "tls", "shutdown_delay",
	"shutdown_timeout", "log", "upstream", "local", "limits", "commands", "warm", "policies", "feast"}

// decode sets the fields the document root gives.
func (c *Config) decode(root *yaml.Node) error {
	if r := resolve(root); r.Kind != yaml.MappingNode && !isNull(r) {
		return fmt.Errorf("expected a mapping of fields (listen, upstream, policies, ...) at the top, got %s (line %d)", kindName(r), r.Line)
	}
	fs, err := fields(root, "", topFields)
	if err != nil {
		return err
	}
	var feast []*Policy
	passwordFileLine := 0
	for _, f := range fs {
		switch f.name {
		case "feast":
			feast, err = decodeFeast(f.val)
		case "listen":
			c.Listen, err = stringValue(f.val, "listen")
		case "admin":
			c.Admin, err = stringValue(f.val, "admin")
		case "admin_pprof":
			c.AdminPprof, err = boolValue(f.val, "admin_pprof")
		case "shutdown_delay":
			c.ShutdownDelay, err = durationValue(f.val, "shutdown_delay")
		case "shutdown_timeout":
			c.ShutdownTimeout, err = durationValue(f.val, "shutdown_timeout")
		case "log":
			err = c.Log.decode(f.val)
		case "warm":
			err = c.Warm.decode(f.val)
		case "password":
			c.Password, err = stringValue(f.val, "password")
		case "password_file":
			c.PasswordFile, err = stringValue(f.val, "password_file")
			passwordFileLine = f.key.Line
		case "protected_mode":
			c.ProtectedMode, err = boolValue(f.val, "protected_mode")
		case "tls":
			err = c.TLS.decode(f.val)
		case "upstream":
			err = c.Upstream.decode(f.val)
		case "local":
			err = c.Local.decode(f.val)
		case "limits":
			err = c.Limits.decode(f.val)
		case "commands":
			err = c.Commands.decode(f.val)
		case "policies":
			c.Policies, err = decodePolicies(f.val)
		}
		if err != nil {
			return err
		}
	}
	if c.Password != "" && c.PasswordFile != "" {
		return fmt.Errorf("password_file: set password or password_file, not both (line %d)", passwordFileLine)
	}
	// The feast section's policies come after the file's own, whichever comes first in the file.
	for _, p := range feast {
		p.Index = len(c.Policies)
		c.Policies = append(c.Policies, p)
	}
	return nil
}

func (u *Upstream) decode(n *yaml.Node) error {
	fs, err := fields(n, "upstream", []string{"addresses", "sentinel", "username", "password", "password_file",
		"tracking", "timeout", "command_timeout", "conns", "revalidate_rate", "tls"})
	if err != nil {
		return err
	}
	addresses, sentinelLine, passwordFileLine := false, 0, 0
	for _, f := range fs {
		name := "upstream." + f.name
		switch f.name {
		case "addresses":
			u.Addresses, err = stringList(f.val, name)
			addresses = true
		case "sentinel":
			err = u.Sentinel.decode(f.val)
			sentinelLine = f.key.Line
		case "username":
			u.Username, err = stringValue(f.val, name)
		case "password":
			u.Password, err = stringValue(f.val, name)
		case "password_file":
			u.PasswordFile, err = stringValue(f.val, name)
			passwordFileLine = f.key.Line
		case "tracking":
			u.Tracking, err = boolValue(f.val, name)
		case "timeout":
			u.Timeout, err = durationValue(f.val, name)
		case "command_timeout":
			u.CommandTimeout, err = durationValue(f.val, name)
		case "conns":
			u.Conns, err = intValue(f.val, name)
		case "revalidate_rate":
			u.RevalidateRate, err = intValue(f.val, name)
		case "tls":
			err = u.TLS.decode(f.val)
		}
		if err != nil {
			return err
		}
	}
	if addresses && u.Sentinel.Enabled() {
		return fmt.Errorf("upstream.sentinel: set upstream.addresses or upstream.sentinel, not both (with sentinel, "+
			"the sentinels name the primary) (line %d)", sentinelLine)
	}
	if u.Password != "" && u.PasswordFile != "" {
		return fmt.Errorf("upstream.password_file: set upstream.password or upstream.password_file, not both (line %d)", passwordFileLine)
	}
	return nil
}

func (s *Sentinel) decode(n *yaml.Node) error {
	fs, err := fields(n, "upstream.sentinel", []string{"master_set", "addresses", "password"})
	if err != nil {
		return err
	}
	for _, f := range fs {
		name := "upstream.sentinel." + f.name
		switch f.name {
		case "master_set":
			s.MasterSet, err = stringValue(f.val, name)
		case "addresses":
			s.Addresses, err = stringList(f.val, name)
			if len(s.Addresses) == 0 {
				s.Addresses = nil // [] is the default, none
			}
		case "password":
			s.Password, err = stringValue(f.val, name)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (t *TLS) decode(n *yaml.Node) error {
	fs, err := fields(n, "tls", []string{"cert_file", "key_file", "client_ca_file"})
	if err != nil {
		return err
	}
	for _, f := range fs {
		name := "tls." + f.name
		switch f.name {
		case "cert_file":
			t.CertFile, err = stringValue(f.val, name)
		case "key_file":
			t.KeyFile, err = stringValue(f.val, name)
		case "client_ca_file":
			t.ClientCAFile, err = stringValue(f.val, name)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (t *UpstreamTLS) decode(n *yaml.Node) error {
	fs, err := fields(n, "upstream.tls", []string{"enabled", "ca_file", "cert_file", "key_file", "server_name",
		"insecure_skip_verify"})
	if err != nil {
		return err
	}
	for _, f := range fs {
		name := "upstream.tls." + f.name
		switch f.name {
		case "enabled":
			t.Enabled, err = boolValue(f.val, name)
		case "ca_file":
			t.CAFile, err = stringValue(f.val, name)
		case "cert_file":
			t.CertFile, err = stringValue(f.val, name)
		case "key_file":
			t.KeyFile, err = stringValue(f.val, name)
		case "server_name":
			t.ServerName, err = stringValue(f.val, name)
		case "insecure_skip_verify":
			t.InsecureSkipVerify, err = boolValue(f.val, name)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (l *Local) decode(n *yaml.Node) error {
	fs, err := fields(n, "local", []string{"max_memory", "admission_threshold"})
	if err != nil {
		return err
	}
	for _, f := range fs {
		switch f.name {
		case "max_memory":
			l.MaxMemory, err = sizeValue(f.val, "local."+f.name)
		case "admission_threshold":
			l.AdmissionThreshold, err = intValue(f.val, "local."+f.name)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (l *Limits) decode(n *yaml.Node) error {
	fs, err := fields(n, "limits", []string{"max_request_bytes", "max_args", "max_inline_bytes", "max_clients",
		"max_conn_age", "idle_timeout", "max_output_bytes", "output_timeout", "max_clients_memory",
		"max_tracked_keys"})
	if err != nil {
		return err
	}
	for _, f := range fs {
		name := "limits." + f.name
		switch f.name {
		case "max_request_bytes":
			l.MaxRequestBytes, err = sizeValue(f.val, name)
		case "max_args":
			l.MaxArgs, err = intValue(f.val, name)
		case "max_inline_bytes":
			var v int64
			if v, err = sizeValue(f.val, name); err == nil {
				if int64(int(v)) != v {
					err = fmt.Errorf("%s: size %q is too large (line %d)", name, f.val.Value, f.val.Line)
				}
				l.MaxInlineBytes = int(v)
			}
		case "max_clients":
			l.MaxClients, err = intValue(f.val, name)
		case "max_conn_age":
			l.MaxConnAge, err = durationValue(f.val, name)
		case "idle_timeout":
			l.IdleTimeout, err = durationValue(f.val, name)
		case "max_output_bytes":
			l.MaxOutputBytes, err = sizeValue(f.val, name)
		case "output_timeout":
			l.OutputTimeout, err = durationValue(f.val, name)
		case "max_clients_memory":
			l.MaxClientsMemory, err = sizeValue(f.val, name)
		case "max_tracked_keys":
			l.MaxTrackedKeys, err = intValue(f.val, name)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (l *Log) decode(n *yaml.Node) error {
	fs, err := fields(n, "log", []string{"format", "level", "slow_command"})
	if err != nil {
		return err
	}
	for _, f := range fs {
		name := "log." + f.name
		switch f.name {
		case "format":
			var s string
			if s, err = stringValue(f.val, name); err == nil {
				l.Format = strings.ToLower(s)
				if l.Format != "text" && l.Format != "json" {
					err = fmt.Errorf("%s: invalid value %q (use text or json) (line %d)", name, s, resolve(f.val).Line)
				}
			}
		case "level":
			var s string
			if s, err = stringValue(f.val, name); err == nil {
				var ok bool
				if l.Level, ok = parseLevel(s); !ok {
					err = fmt.Errorf("%s: invalid value %q (use debug, info, warn or error) (line %d)", name, s, resolve(f.val).Line)
				}
			}
		case "slow_command":
			l.SlowCommand, err = durationValue(f.val, name)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// parseLevel parses a log level name as slog writes it, in any case.
func parseLevel(s string) (slog.Level, bool) {
	switch strings.ToLower(s) {
	case "debug":
		return slog.LevelDebug, true
	case "info":
		return slog.LevelInfo, true
	case "warn", "warning":
		return slog.LevelWarn, true
	case "error":
		return slog.LevelError, true
	}
	return 0, false
}

func (c *Commands) decode(n *yaml.Node) error {
	fs, err := fields(n, "commands", []string{"deny"})
	if err != nil {
		return err
	}
	for _, f := range fs {
		// A given list replaces the default one entirely, so that the file alone says what is refused.
		if c.Deny, err = stringList(f.val, "commands.deny"); err != nil {
			return err
		}
		for i, s := range c.Deny {
			c.Deny[i] = strings.ToLower(s)
		}
	}
	return nil
}
