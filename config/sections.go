package config

import (
	"fmt"
	"log/slog"
	"strings"

	"gopkg.in/yaml.v3"
)

// decode sets the fields the document root gives.
func (c *Config) decode(root *yaml.Node) error {
	if r := resolve(root); r.Kind != yaml.MappingNode && !isNull(r) {
		return fmt.Errorf("expected a mapping of fields (listen, upstream, policies, ...) at the top, got %s (line %d)", kindName(r), r.Line)
	}
	var feast []*Policy
	passwordFileLine := 0
	err := decodeSection(root, "", fieldTable{
		"listen":           into(&c.Listen, stringValue),
		"admin":            into(&c.Admin, stringValue),
		"admin_pprof":      into(&c.AdminPprof, boolValue),
		"event_loops":      into(&c.EventLoops, boolValue),
		"password":         into(&c.Password, stringValue),
		"password_file":    noting(&passwordFileLine, into(&c.PasswordFile, stringValue)),
		"protected_mode":   into(&c.ProtectedMode, boolValue),
		"tls":              section(c.TLS.decode),
		"shutdown_delay":   into(&c.ShutdownDelay, durationValue),
		"shutdown_timeout": into(&c.ShutdownTimeout, durationValue),
		"log":              section(c.Log.decode),
		"upstream":         section(c.Upstream.decode),
		"local":            section(c.Local.decode),
		"limits":           section(c.Limits.decode),
		"commands":         section(c.Commands.decode),
		"warm":             section(c.Warm.decode),
		"policies": func(f field, _ string) (err error) {
			c.Policies, err = decodePolicies(f.val)
			return err
		},
		"feast": func(f field, _ string) (err error) {
			feast, err = decodeFeast(f.val)
			return err
		},
	})
	if err != nil {
		return err
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
	addressesLine, sentinelLine, passwordFileLine := 0, 0, 0
	err := decodeSection(n, "upstream", fieldTable{
		"addresses":       noting(&addressesLine, into(&u.Addresses, stringList)),
		"sentinel":        noting(&sentinelLine, section(u.Sentinel.decode)),
		"username":        into(&u.Username, stringValue),
		"password":        into(&u.Password, stringValue),
		"password_file":   noting(&passwordFileLine, into(&u.PasswordFile, stringValue)),
		"tracking":        into(&u.Tracking, boolValue),
		"timeout":         into(&u.Timeout, durationValue),
		"command_timeout": into(&u.CommandTimeout, durationValue),
		"conns":           into(&u.Conns, intValue),
		"revalidate_rate": into(&u.RevalidateRate, intValue),
		"tls":             section(u.TLS.decode),
	})
	if err != nil {
		return err
	}
	if addressesLine != 0 && u.Sentinel.Enabled() {
		return fmt.Errorf("upstream.sentinel: set upstream.addresses or upstream.sentinel, not both (with sentinel, "+
			"the sentinels name the primary) (line %d)", sentinelLine)
	}
	if u.Password != "" && u.PasswordFile != "" {
		return fmt.Errorf("upstream.password_file: set upstream.password or upstream.password_file, not both (line %d)", passwordFileLine)
	}
	return nil
}

func (s *Sentinel) decode(n *yaml.Node) error {
	return decodeSection(n, "upstream.sentinel", fieldTable{
		"master_set": into(&s.MasterSet, stringValue),
		"addresses": func(f field, name string) (err error) {
			s.Addresses, err = stringList(f.val, name)
			if len(s.Addresses) == 0 {
				s.Addresses = nil // [] is the default, none
			}
			return err
		},
		"password": into(&s.Password, stringValue),
	})
}

func (t *TLS) decode(n *yaml.Node) error {
	return decodeSection(n, "tls", fieldTable{
		"cert_file":      into(&t.CertFile, stringValue),
		"key_file":       into(&t.KeyFile, stringValue),
		"client_ca_file": into(&t.ClientCAFile, stringValue),
	})
}

func (t *UpstreamTLS) decode(n *yaml.Node) error {
	return decodeSection(n, "upstream.tls", fieldTable{
		"enabled":              into(&t.Enabled, boolValue),
		"ca_file":              into(&t.CAFile, stringValue),
		"cert_file":            into(&t.CertFile, stringValue),
		"key_file":             into(&t.KeyFile, stringValue),
		"server_name":          into(&t.ServerName, stringValue),
		"insecure_skip_verify": into(&t.InsecureSkipVerify, boolValue),
	})
}

func (l *Local) decode(n *yaml.Node) error {
	return decodeSection(n, "local", fieldTable{
		"max_memory":          into(&l.MaxMemory, sizeValue),
		"admission_threshold": into(&l.AdmissionThreshold, intValue),
	})
}

func (l *Limits) decode(n *yaml.Node) error {
	return decodeSection(n, "limits", fieldTable{
		"max_request_bytes": into(&l.MaxRequestBytes, sizeValue),
		"max_args":          into(&l.MaxArgs, intValue),
		"max_inline_bytes": func(f field, name string) error {
			v, err := sizeValue(f.val, name)
			if err != nil {
				return err
			}
			if int64(int(v)) != v {
				return fmt.Errorf("%s: size %q is too large (line %d)", name, resolve(f.val).Value, resolve(f.val).Line)
			}
			l.MaxInlineBytes = int(v)
			return nil
		},
		"max_clients":        into(&l.MaxClients, intValue),
		"max_conn_age":       into(&l.MaxConnAge, durationValue),
		"idle_timeout":       into(&l.IdleTimeout, durationValue),
		"max_output_bytes":   into(&l.MaxOutputBytes, sizeValue),
		"output_timeout":     into(&l.OutputTimeout, durationValue),
		"max_clients_memory": into(&l.MaxClientsMemory, sizeValue),
		"max_tracked_keys":   into(&l.MaxTrackedKeys, intValue),
	})
}

func (l *Log) decode(n *yaml.Node) error {
	return decodeSection(n, "log", fieldTable{
		"format":       oneOf(&l.Format, parseLogFormat, "text or json"),
		"level":        oneOf(&l.Level, parseLevel, "debug, info, warn or error"),
		"slow_command": into(&l.SlowCommand, durationValue),
	})
}

// parseLogFormat parses a log format name, in any case, into its lower-case form.
func parseLogFormat(s string) (string, bool) {
	s = strings.ToLower(s)
	return s, s == "text" || s == "json"
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
	return decodeSection(n, "commands", fieldTable{
		// A given list replaces the default one entirely, so that the file alone says what is refused.
		"deny": func(f field, name string) (err error) {
			if c.Deny, err = stringList(f.val, name); err != nil {
				return err
			}
			for i, s := range c.Deny {
				c.Deny[i] = strings.ToLower(s)
			}
			return nil
		},
	})
}
