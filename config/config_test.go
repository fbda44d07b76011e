package config

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"featcache/internal/testkit"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name      string
		input     string
		shouldErr bool
		errSubstr string
		check     func(t *testing.T, c *Config)
	}{
		// Documents that hold nothing are the defaults.
		{name: "empty file", input: ``},
		{name: "only comments", input: "# nothing here\n# at all\n"},
		{name: "empty mapping", input: `{}`},
		{name: "null document", input: `~`},
		{name: "sections with every field commented out", input: "upstream:\n  # timeout: 2s\nlocal:\nlimits:\ncommands:\npolicies:\n",
			check: func(t *testing.T, c *Config) {
				if !reflect.DeepEqual(c, Default()) {
					t.Errorf("got %+v; want the defaults", c)
				}
			}},

		// Top level.
		{name: "listen and admin", input: "listen: \"0.0.0.0:7000\"\nadmin: \":9999\"\npassword: s3cret\n",
			check: func(t *testing.T, c *Config) {
				if c.Listen != "0.0.0.0:7000" || c.Admin != ":9999" || c.Password != "s3cret" {
					t.Errorf("got listen %q admin %q password %q", c.Listen, c.Admin, c.Password)
				}
			}},
		{name: "admin empty disables", input: `admin: ""`,
			check: wantConfig(func(c *Config) string { return c.Admin }, "")},
		{name: "password as a number is its text", input: `password: 12345`,
			check: wantConfig(func(c *Config) string { return c.Password }, "12345")},
		// Password files: Parse takes the paths, Load reads them (TestLoadPasswordFiles).
		{name: "password files", input: "password_file: /run/secrets/clients\nupstream:\n  password_file: /run/secrets/redis\n",
			check: func(t *testing.T, c *Config) {
				if c.PasswordFile != "/run/secrets/clients" || c.Upstream.PasswordFile != "/run/secrets/redis" ||
					c.Password != "" || c.Upstream.Password != "" {
					t.Errorf("got password_file %q upstream.password_file %q, passwords %q %q; want the paths and no password read",
						c.PasswordFile, c.Upstream.PasswordFile, c.Password, c.Upstream.Password)
				}
			}},
		{name: "password files empty with passwords", input: "password: a\npassword_file: \"\"\nupstream: {password: b, password_file: \"\"}\n",
			check: func(t *testing.T, c *Config) {
				if c.Password != "a" || c.Upstream.Password != "b" {
					t.Errorf("got passwords %q %q; want a, b", c.Password, c.Upstream.Password)
				}
			}},
		{name: "password and password_file", input: "password: a\npassword_file: /run/secrets/clients\n", shouldErr: true,
			errSubstr: `password_file: set password or password_file, not both (line 2)`},
		{name: "password_file before password", input: "password_file: /run/secrets/clients\npassword: a\n", shouldErr: true,
			errSubstr: `password_file: set password or password_file, not both (line 1)`},
		{name: "upstream password and password_file", input: "upstream:\n  password: a\n  password_file: /run/secrets/redis\n",
			shouldErr: true, errSubstr: `upstream.password_file: set upstream.password or upstream.password_file, not both (line 3)`},
		{name: "password_file a list", input: "password_file: [a, b]\n", shouldErr: true,
			errSubstr: `password_file: expected a string (write "" for an empty one), got a list (line 1)`},
		{name: "upstream password_file null", input: "upstream:\n  password_file:\n", shouldErr: true,
			errSubstr: `upstream.password_file: expected a string (write "" for an empty one), got nothing (line 2)`},
		{name: "unknown top-level field", input: "listen: \"127.0.0.1:1\"\nlisten_addr: x\n", shouldErr: true,
			errSubstr: `unknown top-level field "listen_addr" (line 2)`},
		{name: "field given twice", input: "listen: \":1\"\nlisten: \":2\"\n", shouldErr: true,
			errSubstr: `field "listen" given twice (lines 1 and 2)`},
		{name: "top level is a list", input: "- a\n- b\n", shouldErr: true, errSubstr: `at the top, got a list (line 1)`},
		{name: "top level is a scalar", input: "hello\n", shouldErr: true, errSubstr: `at the top, got "hello"`},
		{name: "two documents", input: "listen: \":1\"\n---\nlisten: \":2\"\n", shouldErr: true,
			errSubstr: `more than one YAML document (the second starts at line 2)`},
		{name: "invalid yaml", input: "upstream:\n  timeout: [1s\n", shouldErr: true, errSubstr: `yaml:`},
		{name: "listen without port", input: `listen: "127.0.0.1"`, shouldErr: true,
			errSubstr: `listen: invalid address "127.0.0.1" (want host:port`},
		{name: "listen port not a number", input: `listen: "127.0.0.1:http"`, shouldErr: true,
			errSubstr: `listen: invalid port "http" in "127.0.0.1:http"`},
		{name: "listen port too large", input: `listen: "127.0.0.1:70000"`, shouldErr: true,
			errSubstr: `listen: invalid port "70000"`},
		{name: "listen null", input: `listen:`, shouldErr: true,
			errSubstr: `listen: expected a string (write "" for an empty one), got nothing (line 1)`},
		{name: "listen empty", input: `listen: ""`, shouldErr: true, errSubstr: `listen: invalid address ""`},
		{name: "listen is a list", input: `listen: [a, b]`, shouldErr: true, errSubstr: `listen: expected a string (write "" for an empty one), got a list (line 1)`},
		{name: "admin invalid", input: `admin: "localhost"`, shouldErr: true, errSubstr: `admin: invalid address "localhost"`},

		// upstream
		{name: "revalidate rate zero", input: "upstream: {revalidate_rate: 0}", shouldErr: true,
			errSubstr: `upstream.revalidate_rate: must be at least 1 key per second, got 0`},
		// tracking loss and snapshots
		{name: "on_tracking_loss revalidate", input: `
policies:
  - {name: p, prefix: "p:", on_tracking_loss: revalidate}
  - {name: q, prefix: "q:"}
`, check: func(t *testing.T, c *Config) {
			if c.Policies[0].OnTrackingLoss != LossRevalidate || c.Policies[1].OnTrackingLoss != LossFlush {
				t.Errorf("on_tracking_loss: got %v, %v; want revalidate, flush", c.Policies[0].OnTrackingLoss, c.Policies[1].OnTrackingLoss)
			}
		}},
		{name: "on_tracking_loss invalid", input: "policies:\n  - {name: p, prefix: \"p:\", on_tracking_loss: keep}\n",
			shouldErr: true, errSubstr: `policy "p": on_tracking_loss: invalid value "keep" (use flush or revalidate) (line 2)`},
		{name: "on_tracking_loss without cache", input: "policies:\n  - {name: p, prefix: \"p:\", cache: false, on_tracking_loss: revalidate}\n",
			shouldErr: true, errSubstr: `policy "p": on_tracking_loss has no effect with cache: false`},
		{name: "snapshot pointer", input: `
policies:
  - {name: credit, prefix: "credit:", snapshot_pointer: "fs:version:credit"}
`, check: func(t *testing.T, c *Config) {
			if got := c.Policies[0].SnapshotPointer; got != "fs:version:credit" {
				t.Errorf("snapshot_pointer: got %q", got)
			}
			if got := strings.Join(NewMatcher(c.Policies).TrackingPrefixes(), ","); got != "credit:,fs:version:credit" {
				t.Errorf("tracking prefixes: got %q; the pointer must be tracked too", got)
			}
		}},
		{name: "snapshot pointer empty", input: "policies:\n  - {name: c, prefix: \"c:\", snapshot_pointer: \"\"}\n",
			shouldErr: true, errSubstr: `policy "c": snapshot_pointer: must name a key, got "" (line 2)`},
		{name: "snapshot pointer inside the policy", input: "policies:\n  - {name: c, prefix: \"c:\", snapshot_pointer: \"c:version\"}\n",
			shouldErr: true, errSubstr: `policy "c": snapshot_pointer "c:version" is itself a key of the policy`},
		{name: "upstream fields", input: `
upstream:
  addresses: ["10.0.0.1:6379", "10.0.0.2:6379"]
  username: featcache
  password: pw
  tracking: false
  timeout: 750ms
  conns: 8
  revalidate_rate: 250
`, check: wantConfig(func(c *Config) Upstream { return c.Upstream }, Upstream{Addresses: []string{"10.0.0.1:6379", "10.0.0.2:6379"}, Username: "featcache", Password: "pw",
			Tracking: false, Timeout: 750 * time.Millisecond, Conns: 8, RevalidateRate: 250})},
		{name: "upstream block list", input: "upstream:\n  addresses:\n    - \"redis-a:6379\"\n    - \"redis-b:6379\"\n",
			check: func(t *testing.T, c *Config) {
				if got := strings.Join(c.Upstream.Addresses, ","); got != "redis-a:6379,redis-b:6379" {
					t.Errorf("got %q", got)
				}
			}},
		{name: "upstream unknown field", input: "upstream:\n  adresses: [\"a:1\"]\n", shouldErr: true,
			errSubstr: `upstream: unknown field "adresses" (line 2)`},
		{name: "upstream unknown field later line", input: "listen: \":1\"\n\nupstream:\n  timeout: 1s\n  adresses: [\"a:1\"]\n", shouldErr: true,
			errSubstr: `upstream: unknown field "adresses" (line 5)`},
		{name: "upstream is a scalar", input: "upstream: \"127.0.0.1:6379\"\n", shouldErr: true,
			errSubstr: `upstream: expected a mapping of fields, got "127.0.0.1:6379" (line 1)`},
		{name: "upstream addresses empty", input: "upstream:\n  addresses: []\n", shouldErr: true,
			errSubstr: `upstream.addresses: must name at least one host:port`},
		{name: "upstream addresses scalar", input: "upstream:\n  addresses: \"a:1\"\n", shouldErr: true,
			errSubstr: `upstream.addresses: expected a list such as`},
		{name: "upstream address without host", input: "upstream:\n  addresses: [\":6379\"]\n", shouldErr: true,
			errSubstr: `upstream.addresses[0]: invalid address ":6379" (want a host and a port other than 0)`},
		{name: "upstream address without port", input: "upstream:\n  addresses: [\"a:1\", \"redis\"]\n", shouldErr: true,
			errSubstr: `upstream.addresses[1]: invalid address "redis"`},
		{name: "upstream address null entry", input: "upstream:\n  addresses: [\"a:1\", ~]\n", shouldErr: true,
			errSubstr: `upstream.addresses[1]: expected a string`},
		{name: "upstream address twice", input: "upstream:\n  addresses: [\"a:1\", \"a:1\"]\n", shouldErr: true,
			errSubstr: `upstream.addresses: "a:1" is listed twice`},
		{name: "upstream tracking invalid", input: "upstream:\n  tracking: maybe\n", shouldErr: true,
			errSubstr: `upstream.tracking: invalid boolean "maybe" (use true or false) (line 2)`},
		{name: "upstream timeout invalid", input: "upstream:\n  timeout: 1x\n", shouldErr: true,
			errSubstr: `upstream.timeout: invalid duration "1x"`},
		{name: "upstream timeout without unit", input: "upstream:\n  timeout: 5\n", shouldErr: true,
			errSubstr: `upstream.timeout: invalid duration "5" (use a number with a unit: 750ms, 30s, 6h) (line 2)`},
		{name: "upstream timeout zero", input: "upstream:\n  timeout: 0s\n", shouldErr: true,
			errSubstr: `upstream.timeout: must be greater than 0, got "0s"`},
		{name: "upstream timeout negative", input: "upstream:\n  timeout: -1s\n", shouldErr: true,
			errSubstr: `upstream.timeout: negative duration "-1s" is invalid (line 2)`},
		{name: "upstream command_timeout default", input: "upstream:\n  timeout: 2s\n",
			check: wantConfig(func(c *Config) time.Duration { return c.Upstream.CommandTimeout }, 0)},
		{name: "upstream command_timeout 0 is no bound", input: "upstream:\n  command_timeout: 0\n",
			check: wantConfig(func(c *Config) time.Duration { return c.Upstream.CommandTimeout }, 0)},
		{name: "upstream command_timeout", input: "upstream:\n  command_timeout: 30s\n",
			check: wantConfig(func(c *Config) time.Duration { return c.Upstream.CommandTimeout }, 30*time.Second)},
		{name: "upstream command_timeout negative", input: "upstream:\n  command_timeout: -1s\n", shouldErr: true,
			errSubstr: `upstream.command_timeout: negative duration "-1s" is invalid (line 2)`},
		{name: "upstream command_timeout without unit", input: "upstream:\n  command_timeout: 30\n", shouldErr: true,
			errSubstr: `upstream.command_timeout: invalid duration "30" (use a number with a unit: 750ms, 30s, 6h) (line 2)`},
		{name: "upstream command_timeout invalid", input: "upstream:\n  command_timeout: soon\n", shouldErr: true,
			errSubstr: `upstream.command_timeout: invalid duration "soon"`},
		{name: "upstream conns zero", input: "upstream:\n  conns: 0\n", shouldErr: true,
			errSubstr: `upstream.conns: must be between 1 and 64, got 0`},
		{name: "upstream conns too many", input: "upstream:\n  conns: 65\n", shouldErr: true,
			errSubstr: `upstream.conns: must be between 1 and 64, got 65`},
		{name: "upstream conns 64", input: "upstream:\n  conns: 64\n"},
		{name: "upstream conns not a number", input: "upstream:\n  conns: four\n", shouldErr: true,
			errSubstr: `upstream.conns: invalid integer "four" (line 2)`},

		// upstream.sentinel
		{name: "sentinel", input: "upstream:\n  sentinel: {master_set: mymaster, addresses: [\"s1:26379\", \"s2:26379\"], password: sp}\n",
			check: func(t *testing.T, c *Config) {
				want := Sentinel{MasterSet: "mymaster", Addresses: []string{"s1:26379", "s2:26379"}, Password: "sp"}
				if !reflect.DeepEqual(c.Upstream.Sentinel, want) || !c.Upstream.Sentinel.Enabled() {
					t.Errorf("got %+v; want %+v", c.Upstream.Sentinel, want)
				}
			}},
		{name: "sentinel shown off", input: "upstream:\n  addresses: [\"a:1\"]\n  sentinel: {master_set: \"\", addresses: [], password: \"\"}\n",
			check: func(t *testing.T, c *Config) {
				if c.Upstream.Sentinel.Enabled() || !reflect.DeepEqual(c.Upstream.Sentinel, Sentinel{}) {
					t.Errorf("got %+v; want it off", c.Upstream.Sentinel)
				}
			}},
		{name: "sentinel and addresses", input: "upstream:\n  addresses: [\"a:1\", \"b:1\"]\n  sentinel:\n    master_set: m\n    addresses: [\"s:26379\"]\n",
			shouldErr: true, errSubstr: `upstream.sentinel: set upstream.addresses or upstream.sentinel, not both (with sentinel, the sentinels name the primary) (line 3)`},
		{name: "sentinel without master_set", input: "upstream:\n  sentinel: {addresses: [\"s:26379\"]}\n", shouldErr: true,
			errSubstr: `upstream.sentinel.master_set: required with upstream.sentinel.addresses`},
		{name: "sentinel without addresses", input: "upstream:\n  sentinel: {master_set: mymaster}\n", shouldErr: true,
			errSubstr: `upstream.sentinel.addresses: master set "mymaster" needs at least one sentinel host:port`},
		{name: "sentinel empty addresses", input: "upstream:\n  sentinel: {master_set: mymaster, addresses: []}\n", shouldErr: true,
			errSubstr: `upstream.sentinel.addresses: master set "mymaster" needs at least one sentinel host:port`},
		{name: "sentinel password alone", input: "upstream:\n  sentinel: {password: x}\n", shouldErr: true,
			errSubstr: `upstream.sentinel.password: has no effect without upstream.sentinel.master_set and addresses`},
		{name: "sentinel address without port", input: "upstream:\n  sentinel: {master_set: m, addresses: [\"s\"]}\n", shouldErr: true,
			errSubstr: `upstream.sentinel.addresses[0]: invalid address "s"`},
		{name: "sentinel address twice", input: "upstream:\n  sentinel: {master_set: m, addresses: [\"s:1\", \"s:1\"]}\n", shouldErr: true,
			errSubstr: `upstream.sentinel.addresses: "s:1" is listed twice`},
		{name: "sentinel master_set with a space", input: "upstream:\n  sentinel: {master_set: \"my master\", addresses: [\"s:1\"]}\n", shouldErr: true,
			errSubstr: `upstream.sentinel.master_set: invalid name "my master"`},
		{name: "sentinel unknown field", input: "upstream:\n  sentinel: {master_name: m}\n", shouldErr: true,
			errSubstr: `upstream.sentinel: unknown field "master_name"`},

		// local
		{name: "local max_memory units", input: "local:\n  max_memory: 1GB\n",
			check: wantConfig(func(c *Config) int64 { return c.Local.MaxMemory }, 1<<30)},
		{name: "local max_memory bytes", input: "local:\n  max_memory: 2097152\n",
			check: wantConfig(func(c *Config) int64 { return c.Local.MaxMemory }, 2<<20)},
		{name: "local unknown field", input: "local:\n  max_mem: 1GB\n", shouldErr: true,
			errSubstr: `local: unknown field "max_mem" (line 2)`},
		{name: "local max_memory invalid", input: "local:\n  max_memory: 12XB\n", shouldErr: true,
			errSubstr: `local.max_memory: invalid size "12XB" (use a number of bytes, or KB, MB, GB) (line 2)`},
		{name: "local max_memory too small", input: "local:\n  max_memory: 512KB\n", shouldErr: true,
			errSubstr: `local.max_memory: must be at least 1MB, got "512KB"`},
		{name: "local max_memory negative", input: "local:\n  max_memory: -1MB\n", shouldErr: true,
			errSubstr: `local.max_memory: invalid size "-1MB"`},
		{name: "local admission_threshold default off", input: "local:\n  max_memory: 64MB\n",
			check: wantConfig(func(c *Config) int { return c.Local.AdmissionThreshold }, 0)},
		{name: "local admission_threshold", input: "local:\n  admission_threshold: 3\n",
			check: wantConfig(func(c *Config) int { return c.Local.AdmissionThreshold }, 3)},
		{name: "local admission_threshold too large", input: "local:\n  admission_threshold: 17\n", shouldErr: true,
			errSubstr: `local.admission_threshold: must be between 0 (off) and 16, got 17`},
		{name: "local admission_threshold negative", input: "local:\n  admission_threshold: -1\n", shouldErr: true,
			errSubstr: `local.admission_threshold: must be between 0 (off) and 16, got -1`},
		{name: "local admission_threshold not a number", input: "local:\n  admission_threshold: often\n", shouldErr: true,
			errSubstr: `local.admission_threshold: invalid integer "often" (line 2)`},

		// limits
		{name: "limits fields", input: "limits:\n  max_request_bytes: 1MB\n  max_args: 1000\n  max_inline_bytes: 4KB\n  max_clients: 50\n",
			check: wantConfig(func(c *Config) Limits { return c.Limits }, Limits{MaxRequestBytes: 1 << 20, MaxArgs: 1000, MaxInlineBytes: 4 << 10, MaxClients: 50,
				MaxOutputBytes: 64 << 20, OutputTimeout: 30 * time.Second, MaxClientsMemory: 256 << 20,
				MaxTrackedKeys: 1000000})},
		{name: "limits max_tracked_keys", input: "limits:\n  max_tracked_keys: 500\n",
			check: wantConfig(func(c *Config) int { return c.Limits.MaxTrackedKeys }, 500)},
		{name: "limits max_tracked_keys zero", input: "limits:\n  max_tracked_keys: 0\n", shouldErr: true,
			errSubstr: `limits.max_tracked_keys: must be at least 1, got 0`},
		{name: "limits unknown field", input: "limits:\n  max_arguments: 3\n", shouldErr: true,
			errSubstr: `limits: unknown field "max_arguments" (line 2)`},
		{name: "limits max_request_bytes too small", input: "limits:\n  max_request_bytes: 1000\n", shouldErr: true,
			errSubstr: `limits.max_request_bytes: must be at least 1KB, got "1000B"`},
		{name: "limits max_request_bytes invalid", input: "limits:\n  max_request_bytes: lots\n", shouldErr: true,
			errSubstr: `limits.max_request_bytes: invalid size "lots"`},
		{name: "limits max_args zero", input: "limits:\n  max_args: 0\n", shouldErr: true,
			errSubstr: `limits.max_args: must be at least 1, got 0`},
		{name: "limits max_args size", input: "limits:\n  max_args: 1MB\n", shouldErr: true,
			errSubstr: `limits.max_args: invalid integer "1MB"`},
		{name: "limits max_inline_bytes too small", input: "limits:\n  max_inline_bytes: 512B\n", shouldErr: true,
			errSubstr: `limits.max_inline_bytes: must be at least 1KB, got "512B"`},
		{name: "limits max_clients zero", input: "limits:\n  max_clients: 0\n", shouldErr: true,
			errSubstr: `limits.max_clients: must be at least 1, got 0`},
		{name: "limits client fields", input: "limits:\n  idle_timeout: 5m\n  max_output_bytes: 8MB\n  output_timeout: 10s\n  max_clients_memory: 1GB\n",
			check: func(t *testing.T, c *Config) {
				l := c.Limits
				if l.IdleTimeout != 5*time.Minute || l.MaxOutputBytes != 8<<20 || l.OutputTimeout != 10*time.Second ||
					l.MaxClientsMemory != 1<<30 {
					t.Errorf("got %+v", l)
				}
			}},
		{name: "limits idle_timeout 0 is never", input: "limits:\n  idle_timeout: 0\n",
			check: wantConfig(func(c *Config) time.Duration { return c.Limits.IdleTimeout }, 0)},
		{name: "limits idle_timeout negative", input: "limits:\n  idle_timeout: -1s\n", shouldErr: true,
			errSubstr: `limits.idle_timeout: negative duration "-1s" is invalid (line 2)`},
		{name: "limits idle_timeout without unit", input: "limits:\n  idle_timeout: 300\n", shouldErr: true,
			errSubstr: `limits.idle_timeout: invalid duration "300"`},
		{name: "limits max_output_bytes too small", input: "limits:\n  max_output_bytes: 100\n", shouldErr: true,
			errSubstr: `limits.max_output_bytes: must be at least 1KB, got "100B"`},
		{name: "limits max_output_bytes invalid", input: "limits:\n  max_output_bytes: huge\n", shouldErr: true,
			errSubstr: `limits.max_output_bytes: invalid size "huge" (use a number of bytes, or KB, MB, GB) (line 2)`},
		{name: "limits output_timeout zero", input: "limits:\n  output_timeout: 0s\n", shouldErr: true,
			errSubstr: `limits.output_timeout: must be greater than 0, got "0s"`},
		{name: "limits max_clients_memory below one request and reply", input: "limits:\n  max_clients_memory: 190MB\n", shouldErr: true,
			errSubstr: `limits.max_clients_memory: must hold at least one largest request, twice (as read and as sent upstream), and one largest reply (2 x max_request_bytes + max_output_bytes = 192MB), got "190MB"`},
		{name: "limits max_clients_memory follows smaller limits", input: "limits:\n  max_request_bytes: 1MB\n  max_output_bytes: 1MB\n  max_clients_memory: 3MB\n",
			check: wantConfig(func(c *Config) int64 { return c.Limits.MaxClientsMemory }, 3<<20)},
		{name: "limits sizes that would overflow", input: "limits:\n  max_request_bytes: 8000000000GB\n  max_output_bytes: 8000000000GB\n", shouldErr: true,
			errSubstr: `limits.max_clients_memory: must hold at least one largest request, twice`},

		// protected mode
		{name: "protected mode refuses an open non-loopback listener", input: `listen: "0.0.0.0:6380"`, shouldErr: true,
			errSubstr: `listen: "0.0.0.0:6380" is not a loopback address and clients need no credentials (protected mode): set password, or tls.client_ca_file for client certificates, or protected_mode: false to serve it open`},
		{name: "protected mode: every interface", input: `listen: ":6380"`, shouldErr: true,
			errSubstr: `listen: ":6380" is not a loopback address`},
		{name: "protected mode: IPv6 any", input: `listen: "[::]:6380"`, shouldErr: true,
			errSubstr: `listen: "[::]:6380" is not a loopback address`},
		{name: "protected mode: a host name", input: `listen: "featcache.svc:6380"`, shouldErr: true,
			errSubstr: `listen: "featcache.svc:6380" is not a loopback address`},
		{name: "protected mode: a private address", input: `listen: "10.1.2.3:6380"`, shouldErr: true,
			errSubstr: `(protected mode)`},
		{name: "protected mode: loopback v4", input: `listen: "127.0.0.2:6380"`},
		{name: "protected mode: loopback v6", input: `listen: "[::1]:6380"`},
		{name: "protected mode: localhost", input: `listen: "LocalHost:6380"`},
		{name: "protected mode: satisfied by a password", input: "listen: \":6380\"\npassword: pw\n"},
		{name: "protected mode: satisfied by client certificates",
			input: "listen: \":6380\"\ntls: {cert_file: c.pem, key_file: k.pem, client_ca_file: ca.pem}\n"},
		{name: "protected mode: not by server TLS alone", input: "listen: \":6380\"\ntls: {cert_file: c.pem, key_file: k.pem}\n",
			shouldErr: true, errSubstr: `(protected mode)`},
		{name: "protected mode off", input: "listen: \"0.0.0.0:6380\"\nprotected_mode: false\n",
			check: wantConfig(func(c *Config) bool { return c.ProtectedMode }, false)},
		{name: "protected mode invalid", input: "protected_mode: off\n", shouldErr: true,
			errSubstr: `protected_mode: invalid boolean "off" (use true or false) (line 1)`},

		// tls
		{name: "tls fields", input: "tls:\n  cert_file: /etc/fc/cert.pem\n  key_file: /etc/fc/key.pem\n  client_ca_file: /etc/fc/ca.pem\n",
			check: func(t *testing.T, c *Config) {
				want := TLS{CertFile: "/etc/fc/cert.pem", KeyFile: "/etc/fc/key.pem", ClientCAFile: "/etc/fc/ca.pem"}
				if c.TLS != want || !c.TLS.Enabled() {
					t.Errorf("got %+v; want %+v", c.TLS, want)
				}
			}},
		{name: "tls unknown field", input: "tls:\n  ca_file: x\n", shouldErr: true,
			errSubstr: `tls: unknown field "ca_file" (line 2)`},
		{name: "tls cert without key", input: "tls:\n  cert_file: c.pem\n", shouldErr: true,
			errSubstr: `tls.cert_file: is set but tls.key_file is not`},
		{name: "tls key without cert", input: "tls:\n  key_file: k.pem\n", shouldErr: true,
			errSubstr: `tls.key_file: is set but tls.cert_file is not`},
		{name: "tls client CA without cert", input: "tls:\n  client_ca_file: ca.pem\n", shouldErr: true,
			errSubstr: `tls.client_ca_file: needs tls.cert_file and tls.key_file`},
		{name: "tls cert null", input: "tls:\n  cert_file:\n", shouldErr: true,
			errSubstr: `tls.cert_file: expected a string (write "" for an empty one), got nothing (line 2)`},

		// upstream.tls
		{name: "upstream tls fields", input: `
upstream:
  tls:
    enabled: true
    ca_file: ca.pem
    cert_file: c.pem
    key_file: k.pem
    server_name: redis.internal
`, check: wantConfig(func(c *Config) UpstreamTLS { return c.Upstream.TLS }, UpstreamTLS{Enabled: true, CAFile: "ca.pem", CertFile: "c.pem", KeyFile: "k.pem", ServerName: "redis.internal"})},
		{name: "upstream tls insecure", input: "upstream:\n  tls: {enabled: true, insecure_skip_verify: true}\n",
			check: wantConfig(func(c *Config) bool { return c.Upstream.TLS.InsecureSkipVerify }, true)},
		{name: "upstream tls field without enabled", input: "upstream:\n  tls:\n    ca_file: ca.pem\n", shouldErr: true,
			errSubstr: `upstream.tls.ca_file: has no effect without upstream.tls.enabled: true`},
		{name: "upstream tls insecure without enabled", input: "upstream:\n  tls: {insecure_skip_verify: true}\n", shouldErr: true,
			errSubstr: `upstream.tls.insecure_skip_verify: has no effect without upstream.tls.enabled: true`},
		{name: "upstream tls cert without key", input: "upstream:\n  tls: {enabled: true, cert_file: c.pem}\n", shouldErr: true,
			errSubstr: `upstream.tls.cert_file: is set but upstream.tls.key_file is not`},
		{name: "upstream tls insecure with a CA", input: "upstream:\n  tls: {enabled: true, insecure_skip_verify: true, ca_file: ca.pem}\n", shouldErr: true,
			errSubstr: `upstream.tls.insecure_skip_verify: true ignores upstream.tls.ca_file and server_name`},
		{name: "upstream tls unknown field", input: "upstream:\n  tls: {enable: true}\n", shouldErr: true,
			errSubstr: `upstream.tls: unknown field "enable" (line 2)`},
		{name: "upstream tls enabled invalid", input: "upstream:\n  tls: {enabled: yes}\n", shouldErr: true,
			errSubstr: `upstream.tls.enabled: invalid boolean "yes"`},

		// commands
		{name: "commands deny replaces the default", input: "commands:\n  deny: [FLUSHALL, \"Client|Kill\"]\n",
			check: wantConfig(func(c *Config) []string { return c.Commands.Deny }, []string{"flushall", "client|kill"})},
		{name: "commands deny nothing", input: "commands:\n  deny: []\n",
			check: func(t *testing.T, c *Config) {
				if len(c.Commands.Deny) != 0 {
					t.Errorf("got %q; want none", c.Commands.Deny)
				}
			}},
		{name: "commands deny null", input: "commands:\n  deny:\n", shouldErr: true,
			errSubstr: `commands.deny: expected a list such as ["a", "b"] (or [] for none), got nothing (line 2)`},
		{name: "commands unknown field", input: "commands:\n  allow: [get]\n", shouldErr: true,
			errSubstr: `commands: unknown field "allow" (line 2)`},
		{name: "commands deny empty subcommand", input: "commands:\n  deny: [\"client|\"]\n", shouldErr: true,
			errSubstr: `commands.deny[0]: invalid entry "client|"`},
		{name: "commands deny two bars", input: "commands:\n  deny: [\"a|b|c\"]\n", shouldErr: true,
			errSubstr: `commands.deny[0]: invalid entry "a|b|c"`},
		{name: "commands deny space", input: "commands:\n  deny: [\"client kill\"]\n", shouldErr: true,
			errSubstr: `commands.deny[0]: invalid entry "client kill" (command names have no spaces`},
		{name: "commands deny twice", input: "commands:\n  deny: [config, CONFIG]\n", shouldErr: true,
			errSubstr: `commands.deny: "config" is listed twice`},

		// limits.max_conn_age, shutdown, admin_pprof
		{name: "max_conn_age", input: "limits:\n  max_conn_age: 10m\n",
			check: wantConfig(func(c *Config) time.Duration { return c.Limits.MaxConnAge }, 10*time.Minute)},
		{name: "max_conn_age too short", input: "limits:\n  max_conn_age: 100ms\n", shouldErr: true,
			errSubstr: `limits.max_conn_age: must be 0 (never) or at least 1s, got "100ms"`},
		{name: "max_conn_age not a duration", input: "limits:\n  max_conn_age: 10\n", shouldErr: true,
			errSubstr: `limits.max_conn_age: invalid duration "10" (use a number with a unit: 750ms, 30s, 6h) (line 2)`},
		{name: "shutdown fields", input: "shutdown_delay: 0s\nshutdown_timeout: 1m\nadmin_pprof: true\n",
			check: func(t *testing.T, c *Config) {
				if c.ShutdownDelay != 0 || c.ShutdownTimeout != time.Minute || !c.AdminPprof {
					t.Errorf("got delay %v timeout %v pprof %v; want 0s 1m true", c.ShutdownDelay, c.ShutdownTimeout, c.AdminPprof)
				}
			}},
		{name: "shutdown_timeout zero", input: "shutdown_timeout: 0s\n", shouldErr: true,
			errSubstr: `shutdown_timeout: must be greater than 0, got "0s"`},
		{name: "shutdown_delay negative", input: "shutdown_delay: -1s\n", shouldErr: true,
			errSubstr: `shutdown_delay: negative duration "-1s" is invalid (line 1)`},
		{name: "admin_pprof invalid", input: "admin_pprof: yes\n", shouldErr: true,
			errSubstr: `admin_pprof: invalid boolean "yes" (use true or false) (line 1)`},

		// log
		{name: "log fields", input: "log:\n  format: JSON\n  level: debug\n  slow_command: 50ms\n",
			check: wantConfig(func(c *Config) Log { return c.Log }, Log{Format: "json", Level: slog.LevelDebug, SlowCommand: 50 * time.Millisecond})},
		{name: "log level warn", input: "log:\n  level: WARN\n",
			check: wantConfig(func(c *Config) slog.Level { return c.Log.Level }, slog.LevelWarn)},
		{name: "log format invalid", input: "log:\n  format: logfmt\n", shouldErr: true,
			errSubstr: `log.format: invalid value "logfmt" (use text or json) (line 2)`},
		{name: "log level invalid", input: "log:\n  level: verbose\n", shouldErr: true,
			errSubstr: `log.level: invalid value "verbose" (use debug, info, warn or error) (line 2)`},
		{name: "log unknown field", input: "log:\n  file: /tmp/x\n", shouldErr: true,
			errSubstr: `log: unknown field "file" (line 2)`},
		{name: "log slow_command invalid", input: "log:\n  slow_command: fast\n", shouldErr: true,
			errSubstr: `log.slow_command: invalid duration "fast"`},

		// warm
		{name: "warm as the issue shows it", input: `
warm:
  sources:
    - file: "/var/lib/featcache/warm.txt"   # one key per line, hottest first
    - zset: "warm:credit"                     # a Redis sorted set, highest score first
  ready_after: 10000
  rate: 20000
  hotkeys_file: "/var/lib/featcache/hotkeys.txt"
  hotkeys_zset: "featcache:hotkeys"
`, check: func(t *testing.T, c *Config) {
			want := Warm{
				Sources:    []WarmSource{{File: "/var/lib/featcache/warm.txt"}, {Zset: "warm:credit"}},
				ReadyAfter: 10000, ReadyTimeout: 2 * time.Minute, Rate: 20000,
				HotkeysFile: "/var/lib/featcache/hotkeys.txt", HotkeysZset: "featcache:hotkeys",
				HotkeysSize: 10000, HotkeysInterval: time.Minute,
			}
			if !reflect.DeepEqual(c.Warm, want) {
				t.Errorf("got %+v; want %+v", c.Warm, want)
			}
			if got := c.Warm.Sources[1].String(); got != "zset warm:credit" {
				t.Errorf("source String() = %q; want %q", got, "zset warm:credit")
			}
		}},
		{name: "warm every field", input: "warm:\n  ready_timeout: 0s\n  hotkeys_size: 500\n  hotkeys_interval: 30s\n  hotkeys_touch: 100\n",
			check: func(t *testing.T, c *Config) {
				w := c.Warm
				if w.ReadyTimeout != 0 || w.HotkeysSize != 500 || w.HotkeysInterval != 30*time.Second || w.HotkeysTouch != 100 {
					t.Errorf("got %+v", w)
				}
			}},
		{name: "warm source with both", input: "warm:\n  sources:\n    - {file: a, zset: b}\n", shouldErr: true,
			errSubstr: `warm.sources[0]: give exactly one of file and zset (line 3)`},
		{name: "warm source with neither", input: "warm:\n  sources:\n    - {}\n", shouldErr: true,
			errSubstr: `warm.sources[0]: give exactly one of file and zset (line 3)`},
		{name: "warm source empty path", input: "warm:\n  sources:\n    - file: \"\"\n", shouldErr: true,
			errSubstr: `warm.sources[0]: file must not be empty (line 3)`},
		{name: "warm source unknown kind", input: "warm:\n  sources:\n    - {list: x}\n", shouldErr: true,
			errSubstr: `warm.sources[0]: unknown field "list" (line 3)`},
		{name: "warm source as a string", input: "warm:\n  sources:\n    - /tmp/keys.txt\n", shouldErr: true,
			errSubstr: `warm.sources[0]: expected a mapping of fields, got "/tmp/keys.txt" (line 3)`},
		{name: "warm sources not a list", input: "warm:\n  sources: /tmp/keys.txt\n", shouldErr: true,
			errSubstr: `warm.sources: expected a list such as [{file: "/path"}, {zset: "key"}], got "/tmp/keys.txt" (line 2)`},
		{name: "warm rate zero", input: "warm:\n  rate: 0\n", shouldErr: true,
			errSubstr: `warm.rate: must be at least 1 key per second, got 0`},
		{name: "warm ready_after negative", input: "warm:\n  ready_after: -1\n", shouldErr: true,
			errSubstr: `warm.ready_after: must not be negative, got -1`},
		{name: "warm hotkeys_size too large", input: "warm:\n  hotkeys_size: 2000000\n", shouldErr: true,
			errSubstr: `warm.hotkeys_size: must be between 0 (off) and 1000000, got 2000000`},
		{name: "warm hotkeys_interval too short", input: "warm:\n  hotkeys_interval: 10ms\n", shouldErr: true,
			errSubstr: `warm.hotkeys_interval: must be at least 1s, got "10ms"`},
		{name: "warm hotkeys_touch negative", input: "warm:\n  hotkeys_touch: -5\n", shouldErr: true,
			errSubstr: `warm.hotkeys_touch: must not be negative, got -5`},
		{name: "warm hotkeys file without tracker", input: "warm:\n  hotkeys_size: 0\n  hotkeys_file: /tmp/h\n", shouldErr: true,
			errSubstr: `warm.hotkeys_size: 0 turns the hot-key tracker off`},
		{name: "warm unknown field", input: "warm:\n  ready: 10\n", shouldErr: true,
			errSubstr: `warm: unknown field "ready" (line 2)`},

		// policies: shape
		{name: "policies not a list", input: "policies:\n  name: a\n", shouldErr: true,
			errSubstr: `policies: expected a list of policies, got a mapping (line 2)`},
		{name: "policy not a mapping", input: "policies:\n  - profile\n", shouldErr: true,
			errSubstr: `policy #1: expected a mapping with a name and a prefix or pattern, got "profile" (line 2)`},
		{name: "policy name missing", input: "policies:\n  - {name: a, prefix: \"a:\"}\n  - {name: b, prefix: \"b:\"}\n  - {prefix: \"c:\"}\n", shouldErr: true,
			errSubstr: `policy #3: name is required`},
		{name: "policy name empty", input: "policies:\n  - {name: \"\", prefix: \"c:\"}\n", shouldErr: true,
			errSubstr: `policy #1: name is required`},
		{name: "policy name null", input: "policies:\n  - {name: , prefix: \"c:\"}\n", shouldErr: true,
			errSubstr: `policy #1: name: expected a string`},
		{name: "policy duplicate name", input: "policies:\n  - {name: x, prefix: \"a:\"}\n  - {name: x, prefix: \"b:\"}\n", shouldErr: true,
			errSubstr: `duplicate policy name "x" (policies #1 and #2)`},
		{name: "policy unknown field", input: `
listen: "127.0.0.1:6380"
policies:
  - name: cart
    prefix: "cart:"
    hard_ttl: 2m
  - name: profile
    prefix: "profile:"
    hard_ttl: 24h
    soft_ttl: 6h
    jitter: 0.15
    negative_ttl: 30s
    on_upstream_error: serve_stale
    sofft_ttl: 6h
`, shouldErr: true, errSubstr: `policy "profile": unknown field "sofft_ttl" (line 14)`},
		{name: "policy unknown field before its name", input: "policies:\n  - ttl: 1m\n    name: p\n    prefix: \"p:\"\n", shouldErr: true,
			errSubstr: `policy "p": unknown field "ttl" (line 2)`},
		{name: "policy unknown field without name", input: "policies:\n  - ttl: 1m\n    prefix: \"p:\"\n", shouldErr: true,
			errSubstr: `policy #1: unknown field "ttl" (line 2)`},
		{name: "policy field twice", input: "policies:\n  - name: p\n    prefix: \"p:\"\n    prefix: \"q:\"\n", shouldErr: true,
			errSubstr: `policy "p": field "prefix" given twice (lines 3 and 4)`},

		// policies: prefix and pattern
		{name: "policy both prefix and pattern", input: "policies:\n  - {name: p, prefix: \"a:\", pattern: \"a:*\"}\n", shouldErr: true,
			errSubstr: `policy "p": has both prefix "a:" and pattern "a:*"; give exactly one`},
		{name: "policy neither prefix nor pattern", input: "policies:\n  - {name: p, hard_ttl: 1m}\n", shouldErr: true,
			errSubstr: `policy "p": needs a prefix, a pattern or a suffix`},
		{name: "policy empty pattern", input: "policies:\n  - {name: p, pattern: \"\"}\n", shouldErr: true,
			errSubstr: `policy "p": pattern "" would match only the empty key; use prefix: "" for the default policy`},
		{name: "policy prefix null", input: "policies:\n  - {name: p, prefix: }\n", shouldErr: true,
			errSubstr: `policy "p": prefix: expected a string (write "" for an empty one), got nothing`},
		{name: "default policy", input: "policies:\n  - {name: default, prefix: \"\"}\n",
			check: func(t *testing.T, c *Config) {
				p := c.Policies[0]
				if !p.IsPrefix || p.Prefix != "" || p.Pattern != "" {
					t.Errorf("got %+v; want the default prefix policy", p)
				}
			}},
		{name: "duplicate prefix", input: "policies:\n  - {name: a, prefix: \"x:\"}\n  - {name: b, prefix: \"x:\"}\n", shouldErr: true,
			errSubstr: `policy "b": prefix "x:" is already the prefix of policy "a"`},
		{name: "duplicate default", input: "policies:\n  - {name: a, prefix: \"\"}\n  - {name: b, prefix: \"\"}\n", shouldErr: true,
			errSubstr: `policy "b": prefix "" is already the prefix of policy "a"`},
		{name: "duplicate pattern", input: "policies:\n  - {name: a, pattern: \"x:*\"}\n  - {name: b, pattern: \"x:*\"}\n", shouldErr: true,
			errSubstr: `policy "b": pattern "x:*" is already the pattern of policy "a"`},
		{name: "same text as prefix and pattern", input: "policies:\n  - {name: a, pattern: \"x:\"}\n  - {name: b, prefix: \"x:\"}\n"},
		{name: "pattern unterminated bracket", input: "policies:\n  - {name: p, pattern: \"user:[0-9\"}\n", shouldErr: true,
			errSubstr: `policy "p": pattern "user:[0-9": "[" at byte 5 is never closed`},
		{name: "pattern range eats bracket", input: "policies:\n  - {name: p, pattern: \"user:[a-]\"}\n", shouldErr: true,
			errSubstr: `policy "p": pattern "user:[a-]": "[" at byte 5 is never closed: a "-" before "]"`},
		{name: "pattern trailing backslash", input: "policies:\n  - {name: p, pattern: 'user:*\\'}\n", shouldErr: true,
			errSubstr: `policy "p": pattern "user:*\\": trailing "\\" escapes nothing`},
		{name: "pattern escapes", input: "policies:\n  - {name: p, pattern: 'user:\\[*\\]'}\n",
			check: wantConfig(func(c *Config) string { return c.Policies[0].Pattern }, `user:\[*\]`)},

		// policies: values and defaults
		{name: "policy defaults", input: "policies:\n  - {name: a, prefix: \"a:\"}\n  - {name: b, pattern: \"b:*\"}\n",
			check: wantConfig(func(c *Config) []*Policy { return c.Policies }, []*Policy{
				{Name: "a", Prefix: "a:", IsPrefix: true, Cache: true, SoftTTL: time.Minute, HardTTL: time.Minute, Jitter: 0.1, Index: 0},
				{Name: "b", Pattern: "b:*", Cache: true, SoftTTL: time.Minute, HardTTL: time.Minute, Jitter: 0.1, Index: 1},
			})},
		{name: "policy soft_ttl defaults to hard_ttl", input: "policies:\n  - {name: a, prefix: \"a:\", hard_ttl: 10m}\n",
			check: func(t *testing.T, c *Config) {
				if p := c.Policies[0]; p.SoftTTL != 10*time.Minute || p.HardTTL != 10*time.Minute {
					t.Errorf("got soft %v hard %v; want 10m 10m", p.SoftTTL, p.HardTTL)
				}
			}},
		{name: "policy soft_ttl below default hard_ttl", input: "policies:\n  - {name: a, prefix: \"a:\", soft_ttl: 20s}\n",
			check: func(t *testing.T, c *Config) {
				if p := c.Policies[0]; p.SoftTTL != 20*time.Second || p.HardTTL != time.Minute {
					t.Errorf("got soft %v hard %v; want 20s 1m", p.SoftTTL, p.HardTTL)
				}
			}},
		{name: "policy all fields", input: `
policies:
  - name: profile
    prefix: "profile:"
    cache: true
    soft_ttl: 6h
    hard_ttl: 24h
    jitter: 0.15
    negative_ttl: 30s
    on_upstream_error: serve_stale
    max_stale: 1h
`, check: wantConfig(func(c *Config) *Policy { return c.Policies[0] }, &Policy{Name: "profile", Prefix: "profile:", IsPrefix: true, Cache: true, SoftTTL: 6 * time.Hour,
			HardTTL: 24 * time.Hour, Jitter: 0.15, NegativeTTL: 30 * time.Second, OnUpstreamError: ErrorServeStale,
			MaxStale: time.Hour})},
		{name: "policy serve_stale default max_stale", input: "policies:\n  - {name: a, prefix: \"a:\", on_upstream_error: serve_stale}\n",
			check: wantConfig(func(c *Config) time.Duration { return c.Policies[0].MaxStale }, 5*time.Minute)},
		{name: "policy jitter zero", input: "policies:\n  - {name: a, prefix: \"a:\", jitter: 0}\n",
			check: wantConfig(func(c *Config) float64 { return c.Policies[0].Jitter }, 0)},
		{name: "policy soft_ttl greater than hard_ttl", input: "policies:\n  - {name: profile, prefix: \"p:\", soft_ttl: 7h, hard_ttl: 6h}\n", shouldErr: true,
			errSubstr: `policy "profile": soft_ttl "7h" is greater than hard_ttl "6h"`},
		{name: "policy soft_ttl greater than default hard_ttl", input: "policies:\n  - {name: p, prefix: \"p:\", soft_ttl: 5m}\n", shouldErr: true,
			errSubstr: `policy "p": soft_ttl "5m" is greater than hard_ttl "1m" (the default); set hard_ttl`},
		{name: "policy hard_ttl zero", input: "policies:\n  - {name: p, prefix: \"p:\", hard_ttl: 0s}\n", shouldErr: true,
			errSubstr: `policy "p": hard_ttl must be greater than 0, got "0s"`},
		{name: "policy hard_ttl invalid", input: "policies:\n  - {name: p, prefix: \"p:\", hard_ttl: 1d}\n", shouldErr: true,
			errSubstr: `policy "p": hard_ttl: invalid duration "1d"`},
		{name: "policy soft_ttl negative", input: "policies:\n  - {name: p, prefix: \"p:\", soft_ttl: -5s}\n", shouldErr: true,
			errSubstr: `policy "p": soft_ttl: negative duration "-5s" is invalid (line 2)`},
		{name: "policy negative_ttl negative", input: "policies:\n  - {name: p, prefix: \"p:\", negative_ttl: -1m}\n", shouldErr: true,
			errSubstr: `policy "p": negative_ttl: negative duration "-1m" is invalid`},
		{name: "policy max_stale negative", input: "policies:\n  - {name: p, prefix: \"p:\", on_upstream_error: serve_stale, max_stale: -1m}\n", shouldErr: true,
			errSubstr: `policy "p": max_stale: negative duration "-1m" is invalid`},
		{name: "policy jitter one", input: "policies:\n  - {name: p, prefix: \"p:\", jitter: 1}\n", shouldErr: true,
			errSubstr: `policy "p": jitter must be at least 0 and less than 1, got 1`},
		{name: "policy jitter negative", input: "policies:\n  - {name: p, prefix: \"p:\", jitter: -0.1}\n", shouldErr: true,
			errSubstr: `policy "p": jitter must be at least 0 and less than 1, got -0.1`},
		{name: "policy jitter not a number", input: "policies:\n  - {name: p, prefix: \"p:\", jitter: 10%}\n", shouldErr: true,
			errSubstr: `policy "p": jitter: invalid number "10%"`},
		{name: "policy jitter nan", input: "policies:\n  - {name: p, prefix: \"p:\", jitter: .nan}\n", shouldErr: true,
			errSubstr: `policy "p": jitter: invalid number ".nan"`},
		{name: "policy on_upstream_error invalid", input: "policies:\n  - {name: p, prefix: \"p:\", on_upstream_error: stale}\n", shouldErr: true,
			errSubstr: `policy "p": on_upstream_error: invalid value "stale" (use fail or serve_stale) (line 2)`},
		// An aliased value's error names the line of the value itself, the anchor, as every value decoder does
		// (cache: *m says line 2 too).
		{name: "policy on_upstream_error invalid alias", input: "policies:\n  - name: &m p\n    prefix: \"p:\"\n    on_upstream_error: *m\n",
			shouldErr: true, errSubstr: `policy "p": on_upstream_error: invalid value "p" (use fail or serve_stale) (line 2)`},
		{name: "policy cache invalid alias", input: "policies:\n  - name: &m p\n    prefix: \"p:\"\n    cache: *m\n",
			shouldErr: true, errSubstr: `policy "p": cache: invalid boolean "p" (use true or false) (line 2)`},
		// So do the fields whose own checks come after the value's decoding.
		{name: "policy suffix empty alias", input: "password: &e \"\"\npolicies:\n  - name: p\n    suffix: *e\n",
			shouldErr: true, errSubstr: `policy "p": suffix: must not be "" (use prefix: "" for the default policy) (line 1)`},
		{name: "policy snapshot_pointer empty alias", input: "password: &e \"\"\npolicies:\n  - {name: p, prefix: \"p:\", snapshot_pointer: *e}\n",
			shouldErr: true, errSubstr: `policy "p": snapshot_pointer: must name a key, got "" (line 1)`},
		{name: "policy cache invalid", input: "policies:\n  - {name: p, prefix: \"p:\", cache: no}\n", shouldErr: true,
			errSubstr: `policy "p": cache: invalid boolean "no" (use true or false)`},
		{name: "policy max_stale with default fail", input: "policies:\n  - {name: p, prefix: \"p:\", max_stale: 1h}\n", shouldErr: true,
			errSubstr: `policy "p": max_stale has no effect with on_upstream_error: fail (the default); set on_upstream_error: serve_stale`},
		{name: "policy max_stale with fail", input: "policies:\n  - {name: p, prefix: \"p:\", on_upstream_error: fail, max_stale: 0s}\n", shouldErr: true,
			errSubstr: `policy "p": max_stale has no effect with on_upstream_error: fail; set`},
		{name: "policy max_stale zero with serve_stale", input: "policies:\n  - {name: p, prefix: \"p:\", on_upstream_error: serve_stale, max_stale: 0s}\n", shouldErr: true,
			errSubstr: `policy "p": max_stale must be greater than 0 with on_upstream_error: serve_stale, got "0s"`},
		{name: "policy cache false", input: "policies:\n  - {name: s, prefix: \"session:\", cache: false}\n",
			check: wantConfig(func(c *Config) *Policy { return c.Policies[0] }, &Policy{Name: "s", Prefix: "session:", IsPrefix: true})},
	}
	for _, f := range []string{"soft_ttl: 1m", "hard_ttl: 1m", "jitter: 0", "negative_ttl: 1s", "on_upstream_error: fail", "max_stale: 1m"} {
		name := strings.SplitN(f, ":", 2)[0]
		tests = append(tests, struct {
			name      string
			input     string
			shouldErr bool
			errSubstr string
			check     func(t *testing.T, c *Config)
		}{
			name:      "policy cache false with " + name,
			input:     "policies:\n  - name: s\n    prefix: \"session:\"\n    cache: false\n    " + f + "\n",
			shouldErr: true,
			errSubstr: `policy "s": ` + name + ` has no effect with cache: false (line 5)`,
		})
	}

	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse([]byte(tc.input))
			if tc.shouldErr {
				if err == nil {
					t.Fatalf("got no error; want one containing %q", tc.errSubstr)
				}
				if !strings.Contains(err.Error(), tc.errSubstr) {
					t.Fatalf("got error %q; want it to contain %q", err, tc.errSubstr)
				}
				return
			}
			if err != nil {
				t.Fatalf("got error %q; want none", err)
			}
			if tc.check != nil {
				tc.check(t, c)
			}
		})
	}
}

// wantConfig returns a TestParse check that the part of the parsed Config that part picks is want
// (reflect.DeepEqual, so a slice or a *Policy compares by its contents).
func wantConfig[T any](part func(*Config) T, want T) func(*testing.T, *Config) {
	return func(t *testing.T, c *Config) {
		t.Helper()
		if got := part(c); !reflect.DeepEqual(got, want) {
			t.Errorf("got %+v; want %+v", got, want)
		}
	}
}

func TestDefault(t *testing.T) {
	c := Default()
	want := &Config{
		Listen:        "127.0.0.1:6380",
		Admin:         "127.0.0.1:9121",
		ProtectedMode: true,
		EventLoops:    true,
		Upstream: Upstream{Addresses: []string{"127.0.0.1:6379"}, Tracking: true, Timeout: time.Second,
			Conns: 4, RevalidateRate: 1000},
		Local: Local{MaxMemory: 256 << 20},
		Limits: Limits{MaxRequestBytes: 64 << 20, MaxArgs: 1048576, MaxInlineBytes: 64 << 10, MaxClients: 10000,
			IdleTimeout: 0, MaxOutputBytes: 64 << 20, OutputTimeout: 30 * time.Second, MaxClientsMemory: 256 << 20,
			MaxTrackedKeys: 1000000},
		Commands: Commands{Deny: []string{"acl", "bgrewriteaof", "bgsave", "client|pause", "client|unpause",
			"config|resetstat", "config|rewrite", "config|set", "debug", "failover", "module", "monitor", "psync",
			"replconf", "replicaof", "save", "shutdown", "slaveof", "sync"}},
		ShutdownDelay:   5 * time.Second,
		ShutdownTimeout: 20 * time.Second,
		Log:             Log{Format: "text", Level: slog.LevelInfo},
		Warm:            Warm{Rate: 20000, ReadyTimeout: 2 * time.Minute, HotkeysSize: 10000, HotkeysInterval: time.Minute},
	}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("got %+v; want %+v", c, want)
	}
	if err := c.Validate(); err != nil {
		t.Errorf("Default().Validate() = %q; want nil", err)
	}
	parsed, err := Parse(nil)
	if err != nil || !reflect.DeepEqual(parsed, want) {
		t.Errorf("Parse(nil) = %+v, %v; want the defaults", parsed, err)
	}
	// Default must hand out its own deny list.
	c.Commands.Deny[0] = "changed"
	if DefaultDeny[0] != "acl" || Default().Commands.Deny[0] != "acl" {
		t.Errorf("changing one Default() changed DefaultDeny")
	}
}

// TestValidate covers what Parse cannot produce: a Config built or changed in code.
func TestValidate(t *testing.T) {
	valid := func() *Config {
		c := Default()
		c.Policies = []*Policy{
			{Name: "a", Prefix: "a:", IsPrefix: true, Cache: true, SoftTTL: time.Second, HardTTL: time.Minute},
			{Name: "b", Pattern: "b:*", Cache: false, Index: 1},
		}
		return c
	}
	tests := []struct {
		name      string
		change    func(c *Config)
		shouldErr bool
		errSubstr string
	}{
		{name: "valid", change: func(c *Config) {}},
		{name: "flag overrides listen", change: func(c *Config) { c.Listen = "nope" }, shouldErr: true,
			errSubstr: `listen: invalid address "nope"`},
		{name: "flag overrides listen to every interface", change: func(c *Config) { c.Listen = ":6380" }, shouldErr: true,
			errSubstr: `listen: ":6380" is not a loopback address and clients need no credentials (protected mode)`},
		{name: "flag overrides listen, protected mode off", change: func(c *Config) { c.Listen = ":6380"; c.ProtectedMode = false }},
		{name: "negative idle timeout", change: func(c *Config) { c.Limits.IdleTimeout = -time.Second }, shouldErr: true,
			errSubstr: `limits.idle_timeout: must not be negative, got "-1s"`},
		{name: "negative command timeout", change: func(c *Config) { c.Upstream.CommandTimeout = -time.Second }, shouldErr: true,
			errSubstr: `upstream.command_timeout: must be 0 (no bound) or greater, got "-1s"`},
		{name: "no output timeout", change: func(c *Config) { c.Limits.OutputTimeout = 0 }, shouldErr: true,
			errSubstr: `limits.output_timeout: must be greater than 0, got "0s"`},
		{name: "no upstream", change: func(c *Config) { c.Upstream.Addresses = nil }, shouldErr: true,
			errSubstr: `upstream.addresses: must name at least one host:port`},
		{name: "upper-case deny", change: func(c *Config) { c.Commands.Deny = []string{"CONFIG"} }, shouldErr: true,
			errSubstr: `commands.deny[0]: "CONFIG" must be lower case`},
		{name: "nil policy", change: func(c *Config) { c.Policies[1] = nil }, shouldErr: true,
			errSubstr: `policy #2: is nil`},
		{name: "no name", change: func(c *Config) { c.Policies[1].Name = "" }, shouldErr: true,
			errSubstr: `policy #2: name is required`},
		{name: "wrong index", change: func(c *Config) { c.Policies[1].Index = 0 }, shouldErr: true,
			errSubstr: `policy "b": Index is 0 but the policy is #2 of the list`},
		{name: "prefix without IsPrefix", change: func(c *Config) { c.Policies[0].IsPrefix = false; c.Policies[0].Pattern = "" },
			shouldErr: true, errSubstr: `policy "a": prefix "a:" is set but IsPrefix is false`},
		{name: "both", change: func(c *Config) { c.Policies[0].Pattern = "x" }, shouldErr: true,
			errSubstr: `policy "a": has both prefix "a:" and pattern "x"`},
		{name: "neither", change: func(c *Config) { c.Policies[1].Pattern = "" }, shouldErr: true,
			errSubstr: `policy "b": needs a prefix, a pattern or a suffix`},
		{name: "bad pattern", change: func(c *Config) { c.Policies[1].Pattern = "b[" }, shouldErr: true,
			errSubstr: `policy "b": pattern "b[": "[" at byte 1 is never closed`},
		{name: "negative soft_ttl", change: func(c *Config) { c.Policies[0].SoftTTL = -time.Second }, shouldErr: true,
			errSubstr: `policy "a": soft_ttl must not be negative, got "-1s"`},
		{name: "zero hard_ttl", change: func(c *Config) { c.Policies[0].SoftTTL, c.Policies[0].HardTTL = 0, 0 }, shouldErr: true,
			errSubstr: `policy "a": hard_ttl must be greater than 0, got "0s"`},
		{name: "soft over hard", change: func(c *Config) { c.Policies[0].SoftTTL = 90 * time.Minute }, shouldErr: true,
			errSubstr: `policy "a": soft_ttl "1h30m" is greater than hard_ttl "1m"`},
		{name: "jitter", change: func(c *Config) { c.Policies[0].Jitter = 1 }, shouldErr: true,
			errSubstr: `policy "a": jitter must be at least 0 and less than 1, got 1`},
		{name: "unknown mode", change: func(c *Config) { c.Policies[0].OnUpstreamError = 7 }, shouldErr: true,
			errSubstr: `policy "a": on_upstream_error: invalid value ErrorMode(7)`},
		{name: "max_stale with fail", change: func(c *Config) { c.Policies[0].MaxStale = time.Minute }, shouldErr: true,
			errSubstr: `policy "a": max_stale has no effect with on_upstream_error: fail, got "1m"`},
		{name: "serve_stale without max_stale", change: func(c *Config) { c.Policies[0].OnUpstreamError = ErrorServeStale }, shouldErr: true,
			errSubstr: `policy "a": max_stale must be greater than 0 with on_upstream_error: serve_stale`},
		{name: "ttl without cache", change: func(c *Config) { c.Policies[1].HardTTL = time.Minute }, shouldErr: true,
			errSubstr: `policy "b": hard_ttl has no effect with cache: false, got "1m"`},
		{name: "jitter without cache", change: func(c *Config) { c.Policies[1].Jitter = 0.1 }, shouldErr: true,
			errSubstr: `policy "b": jitter has no effect with cache: false, got 0.1`},
		{name: "mode without cache", change: func(c *Config) { c.Policies[1].OnUpstreamError = ErrorServeStale }, shouldErr: true,
			errSubstr: `policy "b": on_upstream_error has no effect with cache: false, got serve_stale`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := valid()
			tc.change(c)
			err := c.Validate()
			if tc.shouldErr {
				if err == nil || !strings.Contains(err.Error(), tc.errSubstr) {
					t.Fatalf("got error %v; want one containing %q", err, tc.errSubstr)
				}
				return
			}
			if err != nil {
				t.Fatalf("got error %q; want none", err)
			}
		})
	}
}

func TestParseAliases(t *testing.T) {
	c, err := Parse([]byte(`
policies:
  - &fast {name: cart, prefix: "cart:", soft_ttl: 30s, hard_ttl: 2m}
  - name: basket
    prefix: "basket:"
    soft_ttl: *ttl
    hard_ttl: &ttl2 2m
`))
	if err == nil {
		t.Fatalf("got %+v; want an error for the undefined alias", c)
	}
	c, err = Parse([]byte(`
defaults: &d {soft_ttl: 30s}
`))
	if err == nil || !strings.Contains(err.Error(), `unknown top-level field "defaults"`) {
		t.Fatalf("got %v; want the unknown field error", err)
	}
	c, err = Parse([]byte(`
policies:
  - name: cart
    prefix: "cart:"
    soft_ttl: &soft 30s
    hard_ttl: &hard 2m
  - name: basket
    prefix: "basket:"
    soft_ttl: *soft
    hard_ttl: *hard
`))
	if err != nil {
		t.Fatal(err)
	}
	if p := c.Policies[1]; p.SoftTTL != 30*time.Second || p.HardTTL != 2*time.Minute {
		t.Errorf("got soft %v hard %v; want 30s 2m", p.SoftTTL, p.HardTTL)
	}
}

func TestParseSize(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		ok   bool
	}{
		{"0", 0, true},
		{"1024", 1024, true},
		{"512B", 512, true},
		{"64KB", 64 << 10, true},
		{"64kb", 64 << 10, true},
		{"64KiB", 64 << 10, true},
		{"256MB", 256 << 20, true},
		{"256 MB", 256 << 20, true},
		{"256mib", 256 << 20, true},
		{"1GB", 1 << 30, true},
		{"1GiB", 1 << 30, true},
		{"1.5GB", 3 << 29, true},
		{"0.5KB", 512, true},
		{"9000000000GB", 0, false}, // overflows int64
		{"0.1KB", 0, false},        // not a whole number of bytes
		{"12XB", 0, false},
		{"1TB", 0, false},
		{"MB", 0, false},
		{"", 0, false},
		{"-1MB", 0, false},
		{"+1MB", 0, false},
		{"1e3", 0, false},
		{"0x10", 0, false},
		{"1/2KB", 0, false},
		{"1.2.3KB", 0, false},
		{".KB", 0, false},
		{"1m", 0, false},
	}
	for _, tc := range tests {
		got, ok := parseSize(tc.in)
		if got != tc.want || ok != tc.ok {
			t.Errorf("parseSize(%q) = %d, %v; want %d, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

func TestFormat(t *testing.T) {
	durations := map[time.Duration]string{
		0: "0s", 6 * time.Hour: "6h", 90 * time.Minute: "1h30m", time.Minute: "1m", 10 * time.Minute: "10m",
		750 * time.Millisecond: "750ms", 61 * time.Second: "1m1s", -time.Second: "-1s", time.Hour + time.Second: "1h0m1s",
	}
	for d, want := range durations {
		if got := formatDuration(d); got != want {
			t.Errorf("formatDuration(%v) = %q; want %q", d, got, want)
		}
	}
	sizes := map[int64]string{0: "0B", 1000: "1000B", 1024: "1KB", 1 << 20: "1MB", 3 << 29: "1536MB", 1 << 30: "1GB"}
	for n, want := range sizes {
		if got := formatSize(n); got != want {
			t.Errorf("formatSize(%d) = %q; want %q", n, got, want)
		}
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	if err := os.WriteFile(good, []byte("listen: \"127.0.0.1:7000\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := Load(good)
	if err != nil || c.Listen != "127.0.0.1:7000" {
		t.Fatalf("Load = %+v, %v; want listen 127.0.0.1:7000", c, err)
	}
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("upstream:\n  timeout: 1x\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = Load(bad)
	if want := bad + `: upstream.timeout: invalid duration "1x"`; err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Fatalf("got %v; want an error starting with %q", err, want)
	}
	missing := filepath.Join(dir, "missing.yaml")
	if _, err := Load(missing); err == nil || !strings.Contains(err.Error(), missing) {
		t.Fatalf("got %v; want an error naming %s", err, missing)
	}
}

// TestLoadPasswordFiles: Load reads password_file and upstream.password_file into the passwords, without their
// trailing newlines, and a file it cannot use is an error naming the field and the path; a reload reads the files
// again.
func TestLoadPasswordFiles(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string { return testkit.WriteFile(t, dir, name, content) }
	plain := write("plain", "s3cret")
	newline := write("newline", "s3cret\n")
	crlf := write("crlf", "s3cret\r\n")
	spaces := write("spaces", " two words \n\n")
	inner := write("inner", "line1\nline2\n")
	empty := write("empty", "")
	onlyNewline := write("only-newline", "\n")
	huge := write("huge", strings.Repeat("x", MaxPasswordFileBytes+1))
	missing := filepath.Join(dir, "missing")

	tests := []struct {
		name           string
		input          string
		shouldErr      bool
		errSubstr      string
		client, server string
	}{
		{name: "no files", input: "password: a\nupstream: {password: b}\n", client: "a", server: "b"},
		{name: "both files", input: fmt.Sprintf("password_file: %q\nupstream:\n  password_file: %q\n", plain, newline),
			client: "s3cret", server: "s3cret"},
		{name: "crlf trimmed", input: fmt.Sprintf("upstream: {password_file: %q}\n", crlf), server: "s3cret"},
		{name: "spaces kept, newlines trimmed", input: fmt.Sprintf("password_file: %q\n", spaces), client: " two words "},
		{name: "inner newline kept", input: fmt.Sprintf("password_file: %q\n", inner), client: "line1\nline2"},
		{name: "client file, inline upstream", input: fmt.Sprintf("password_file: %q\nupstream: {password: b}\n", plain),
			client: "s3cret", server: "b"},
		{name: "missing file", input: fmt.Sprintf("upstream: {password_file: %q}\n", missing), shouldErr: true,
			errSubstr: "upstream.password_file: open " + missing + ": no such file or directory"},
		{name: "missing client file", input: fmt.Sprintf("password_file: %q\n", missing), shouldErr: true,
			errSubstr: "password_file: open " + missing + ": no such file or directory"},
		{name: "a directory", input: fmt.Sprintf("password_file: %q\n", dir), shouldErr: true,
			errSubstr: "password_file: read " + dir + ": "},
		{name: "empty file", input: fmt.Sprintf("upstream: {password_file: %q}\n", empty), shouldErr: true,
			errSubstr: "upstream.password_file: " + empty + " is empty"},
		{name: "only a newline", input: fmt.Sprintf("password_file: %q\n", onlyNewline), shouldErr: true,
			errSubstr: "password_file: " + onlyNewline + " is empty"},
		{name: "huge file", input: fmt.Sprintf("password_file: %q\n", huge), shouldErr: true,
			errSubstr: "password_file: " + huge + " holds more than 64KB"},
		{name: "both forms", input: fmt.Sprintf("upstream: {password: b, password_file: %q}\n", plain), shouldErr: true,
			errSubstr: "upstream.password_file: set upstream.password or upstream.password_file, not both"},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := filepath.Join(dir, fmt.Sprintf("featcache-%d.yaml", i))
			if err := os.WriteFile(cfg, []byte(tc.input), 0o600); err != nil {
				t.Fatal(err)
			}
			c, err := Load(cfg)
			if tc.shouldErr {
				if err == nil || !strings.Contains(err.Error(), tc.errSubstr) || !strings.HasPrefix(err.Error(), cfg+": ") {
					t.Fatalf("got error %v; want one starting with %s and containing %q", err, cfg, tc.errSubstr)
				}
				return
			}
			if err != nil {
				t.Fatalf("got error %q; want none", err)
			}
			if c.Password != tc.client || c.Upstream.Password != tc.server {
				t.Errorf("got password %q, upstream.password %q; want %q, %q", c.Password, c.Upstream.Password, tc.client, tc.server)
			}
		})
	}

	// A reload is a Load: it reads the rotated secret, and RestartFields names it (without its value).
	rotating := write("rotating", "first\n")
	cfg := write("rotating.yaml", fmt.Sprintf("upstream: {password_file: %q}\n", rotating))
	running, err := Load(cfg)
	if err != nil {
		t.Fatal(err)
	}
	write("rotating", "second\n")
	next, err := Load(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if running.Upstream.Password != "first" || next.Upstream.Password != "second" {
		t.Fatalf("got %q then %q; want first then second", running.Upstream.Password, next.Upstream.Password)
	}
	if got, want := next.RestartFields(running), []string{"upstream.password"}; !reflect.DeepEqual(got, want) {
		t.Errorf("RestartFields after a rotated secret = %q; want %q", got, want)
	}
}

// TestExampleConfig checks that the documented config.yaml at the repository root loads and holds the policies it
// is meant to show.
func TestExampleConfig(t *testing.T) {
	c, err := Load("../config.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if c.Listen != "127.0.0.1:6380" || c.Admin != "127.0.0.1:9121" ||
		!reflect.DeepEqual(c.Upstream.Addresses, []string{"127.0.0.1:6379"}) {
		t.Errorf("got listen %q admin %q upstream %q", c.Listen, c.Admin, c.Upstream.Addresses)
	}
	type want struct {
		prefix, pattern string
		soft, hard      time.Duration
		cache           bool
	}
	wants := map[string]want{
		"profile": {prefix: "profile:", soft: 6 * time.Hour, hard: 24 * time.Hour, cache: true},
		"spend7d": {prefix: "spend7d:", soft: 5 * time.Minute, hard: 30 * time.Minute, cache: true},
		"cart":    {prefix: "cart:", soft: 30 * time.Second, hard: 120 * time.Second, cache: true},
		"fraud":   {prefix: "fraud:", soft: time.Minute, hard: 10 * time.Minute, cache: true},
		"emb":     {prefix: "emb:user:", soft: 15 * time.Minute, hard: 60 * time.Minute, cache: true},
		"credit":  {pattern: "customer:*:credit_features:*", soft: 5 * time.Minute, hard: 30 * time.Minute, cache: true},
		"default": {prefix: "", soft: 30 * time.Second, hard: 2 * time.Minute, cache: true},
		"session": {prefix: "session:", cache: false},
	}
	byName := map[string]*Policy{}
	for _, p := range c.Policies {
		byName[p.Name] = p
	}
	for name, w := range wants {
		p := byName[name]
		if p == nil {
			t.Errorf("policy %q missing", name)
			continue
		}
		if p.Prefix != w.prefix || p.IsPrefix != (w.pattern == "") || p.Pattern != w.pattern || p.Cache != w.cache ||
			p.SoftTTL != w.soft || p.HardTTL != w.hard {
			t.Errorf("policy %q = %+v; want %+v", name, p, w)
		}
	}
	if p := byName["profile"]; p != nil && (p.OnUpstreamError != ErrorServeStale || p.MaxStale <= 0) {
		t.Errorf("policy profile: got on_upstream_error %v max_stale %v; want serve_stale with a max_stale", p.OnUpstreamError, p.MaxStale)
	}
	var negative, jitter bool
	for _, p := range c.Policies {
		negative = negative || p.NegativeTTL > 0
		jitter = jitter || p.Jitter == 0.15
	}
	if !negative || !jitter {
		t.Errorf("want some policy with negative_ttl (got %v) and some with jitter 0.15 (got %v)", negative, jitter)
	}

	// The file shows every default with its default value.
	d := Default()
	if !reflect.DeepEqual(c.Upstream, d.Upstream) || c.Local != d.Local || c.Limits != d.Limits ||
		!reflect.DeepEqual(c.Commands, d.Commands) || c.Password != d.Password || c.PasswordFile != d.PasswordFile || c.Log != d.Log ||
		c.ShutdownDelay != d.ShutdownDelay || c.ShutdownTimeout != d.ShutdownTimeout || c.AdminPprof != d.AdminPprof ||
		!reflect.DeepEqual(c.Warm, d.Warm) || c.ProtectedMode != d.ProtectedMode || c.TLS != d.TLS {
		t.Errorf("config.yaml shows other values than the defaults:\n got %+v %+v %+v %+v\nwant %+v %+v %+v %+v",
			c.Upstream, c.Local, c.Limits, c.Commands, d.Upstream, d.Local, d.Limits, d.Commands)
	}

	// The precedence the file documents.
	m := NewMatcher(c.Policies)
	expectMatches(t, m, map[string]string{
		"profile:42":                        "profile",
		"customer:7:credit_features:limits": "credit",
		"session:abc":                       "session",
		"fraud:9:v3":                        "fraud",
		"emb:user:5":                        "emb",
		"emb:item:5":                        "default",
		"anything":                          "default",
	})
}

// FuzzParse checks that no configuration file makes Parse panic or hang, and that whatever it accepts passes
// Validate and builds a Matcher.
func FuzzParse(f *testing.F) {
	if example, err := os.ReadFile("../config.yaml"); err == nil {
		f.Add(example)
	}
	f.Add([]byte("policies:\n  - {name: a, prefix: \"a:\", soft_ttl: 1s, hard_ttl: 2s}\n  - {name: b, pattern: \"b[0-9]*\"}\n"))
	f.Add([]byte("upstream:\n  addresses: [\"a:1\"]\n  timeout: 1x\n"))
	f.Add([]byte("local:\n  max_memory: 1.5GB\nlimits:\n  max_inline_bytes: 4KB\n"))
	f.Add([]byte("a: &a [*a]\n"))
	f.Add([]byte("listen: \":6380\"\nprotected_mode: false\ntls: {cert_file: c, key_file: k, client_ca_file: ca}\n"))
	f.Add([]byte("upstream:\n  tls: {enabled: true, ca_file: ca, server_name: r, insecure_skip_verify: false}\n"))
	f.Add([]byte("upstream:\n  sentinel: {master_set: mymaster, addresses: [\"127.0.0.1:26379\"], password: p}\n"))
	f.Add([]byte("limits: {idle_timeout: 5m, max_output_bytes: 1KB, output_timeout: 1s, max_clients_memory: 1GB}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(data)
		if err != nil {
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("Parse accepted a config that Validate rejects: %v", err)
		}
		m := NewMatcher(c.Policies)
		m.Match(data)
		m.TrackingPrefixes()
	})
}

// TestRestartFields: a reload applies policies, warm, log level and the reloadable limits, and names every other
// changed setting as needing a restart, without its value.
func TestRestartFields(t *testing.T) {
	running, err := Parse([]byte(`
password: "old-secret"
policies:
  - {name: a, prefix: "a:", hard_ttl: 1h}
`))
	if err != nil {
		t.Fatal(err)
	}
	next, err := Parse([]byte(`
listen: "127.0.0.1:7000"
password: "new-secret"
local:
  max_memory: 512MB
  admission_threshold: 3
upstream:
  timeout: 2s
  command_timeout: 1m
  sentinel: {master_set: mymaster, addresses: ["127.0.0.1:26379"], password: "sentinel-secret"}
limits:
  max_clients: 5
  max_conn_age: 10m
log:
  format: json
  level: debug
shutdown_delay: 1s
warm:
  sources: [{file: /tmp/k}]
  ready_after: 5
  rate: 10
policies:
  - {name: a, prefix: "a:", hard_ttl: 1m}
`))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"listen", "password", "upstream.sentinel", "upstream.timeout", "upstream.command_timeout",
		"local.max_memory", "local.admission_threshold", "limits.max_clients", "log.format"}
	got := next.RestartFields(running)
	if !reflect.DeepEqual(got, want) {
		t.Errorf("RestartFields = %q; want %q", got, want)
	}
	if s := strings.Join(got, " "); strings.Contains(s, "secret") {
		t.Errorf("RestartFields shows a value: %q", s)
	}
	if got, want := next.NextStartFields(running), []string{"warm.sources", "warm.ready_after"}; !reflect.DeepEqual(got, want) {
		t.Errorf("NextStartFields = %q; want %q", got, want)
	}
	if got := running.RestartFields(running); len(got) != 0 {
		t.Errorf("RestartFields of an unchanged config = %q; want none", got)
	}

	applied := next.WithRestartFields(running)
	if applied.Listen != running.Listen || applied.Password != running.Password || applied.Local != running.Local ||
		applied.Upstream.Timeout != running.Upstream.Timeout || applied.Limits.MaxClients != running.Limits.MaxClients ||
		applied.Log.Format != running.Log.Format {
		t.Errorf("WithRestartFields kept a new restart-only value: %+v", applied)
	}
	if applied.Limits.MaxConnAge != 10*time.Minute || applied.Log.Level != slog.LevelDebug ||
		applied.ShutdownDelay != time.Second || applied.Warm.Rate != 10 || applied.Policies[0].HardTTL != time.Minute {
		t.Errorf("WithRestartFields dropped a reloadable value: %+v", applied)
	}
	if got := applied.RestartFields(running); len(got) != 0 {
		t.Errorf("after WithRestartFields, RestartFields = %q; want none", got)
	}
	if err := applied.Validate(); err != nil {
		t.Errorf("WithRestartFields result invalid: %v", err)
	}
}
