package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Defaults of the configuration file, applied by Default and Parse to every field the file does not give.
const (
	// DefaultListen is the address of the RESP listener.
	DefaultListen = "127.0.0.1:6380"
	// DefaultAdmin is the address of the admin HTTP listener (/metrics, /healthz, /readyz).
	DefaultAdmin = "127.0.0.1:9121"
	// DefaultUpstreamAddress is the one upstream node used when upstream.addresses is not given.
	DefaultUpstreamAddress = "127.0.0.1:6379"
	// DefaultTimeout bounds every upstream wait except blocking commands.
	DefaultTimeout = time.Second
	// DefaultConns is the number of shared connections to each upstream node.
	DefaultConns = 4
	// MaxConns is the largest upstream.conns accepted.
	MaxConns = 64
	// DefaultRevalidateRate is how many unverified entries per second are re-fetched after tracking came back.
	DefaultRevalidateRate = 1000
	// DefaultMaxMemory is the size of the local in-memory tier.
	DefaultMaxMemory = 256 * mib
	// MinMaxMemory is the smallest local.max_memory accepted.
	MinMaxMemory = 1 * mib
	// DefaultMaxRequestBytes bounds the bytes of one client command.
	DefaultMaxRequestBytes = 64 * mib
	// DefaultMaxArgs bounds the number of arguments of one client command.
	DefaultMaxArgs = 1 << 20
	// DefaultMaxInlineBytes bounds the length of one inline (non-RESP) command line.
	DefaultMaxInlineBytes = 64 * kib
	// DefaultMaxClients bounds the number of client connections open at once.
	DefaultMaxClients = 10000
	// MinMaxConnAge is the shortest limits.max_conn_age accepted other than 0, so that a slip cannot make every
	// client reconnect continuously.
	MinMaxConnAge = time.Second
	// DefaultShutdownDelay is how long featcache keeps serving after SIGTERM, with /readyz answering 503, so that
	// load balancers stop sending it new connections before it stops accepting them.
	DefaultShutdownDelay = 5 * time.Second
	// DefaultShutdownTimeout bounds how long featcache waits, after the delay, for clients to finish the commands
	// and pipelines they sent.
	DefaultShutdownTimeout = 20 * time.Second
	// DefaultLogFormat is the format of the log lines on standard error.
	DefaultLogFormat = "text"
	// DefaultMaxOutputBytes bounds the reply bytes featcache holds for one client that the client has not read.
	DefaultMaxOutputBytes = 64 * mib
	// DefaultOutputTimeout is how long a client may leave featcache's replies unread before it is disconnected.
	DefaultOutputTimeout = 30 * time.Second
	// DefaultMaxClientsMemory bounds the buffer memory all clients together hold beyond each one's small
	// baseline.
	DefaultMaxClientsMemory = 256 * mib
	// DefaultMaxTrackedKeys bounds the keys featcache remembers for clients with CLIENT TRACKING on in the
	// default mode, as Redis's tracking-table-max-keys does by default.
	DefaultMaxTrackedKeys = 1_000_000
)

// DefaultDeny is the commands.deny list used when the file gives none: commands that would let a client change or
// stop the upstream server, pause its clients, read its replication stream or every client's commands, or block
// its event loop. CONFIG GET is not in it: featcache answers it with secrets redacted. It must not be modified;
// Default returns a copy.
var DefaultDeny = []string{
	"acl", "bgrewriteaof", "bgsave", "client|pause", "client|unpause", "config|resetstat", "config|rewrite",
	"config|set", "debug", "failover", "module", "monitor", "psync", "replconf", "replicaof", "save", "shutdown",
	"slaveof", "sync",
}

// Config is featcache's whole configuration file. Parse and Load return it with every default filled in and every
// field validated; a Config built in code should be checked with Validate before use.
type Config struct {
	// Listen is the RESP listener's host:port. Default DefaultListen.
	Listen string
	// Admin is the admin HTTP listener's host:port; "" disables it. Default DefaultAdmin.
	Admin string
	// Password, if not "", must be given by clients with AUTH (AUTH pass, or AUTH default pass). Default "".
	Password string
	// PasswordFile, if not "", names a file that holds Password (a mounted Secret, say), so that the configuration
	// itself holds no secret. Load reads it (and so does every reload), trimming trailing newlines; Parse does
	// not. A file may not give both password and password_file. Default "".
	PasswordFile string
	// ProtectedMode refuses a configuration whose Listen address is not a loopback one while clients need neither
	// a password nor a client certificate (TLS.ClientCAFile). Default true.
	ProtectedMode bool
	// TLS, when its CertFile is set, makes the RESP listener accept TLS connections only.
	TLS TLS
	// Upstream is the Redis featcache reads from and writes to.
	Upstream Upstream
	// Local is the in-process cache tier.
	Local Local
	// Limits bound what one client can make featcache hold.
	Limits Limits
	// Commands says which commands featcache refuses.
	Commands Commands
	// Policies are the caching policies in file order; Policy.Index is the position here. Default none: every key
	// is forwarded uncached.
	Policies []*Policy

	// AdminPprof serves Go's /debug/pprof handlers on the admin listener. Default false.
	AdminPprof bool
	// EventLoops serves the batches of cached GETs that plain TCP clients send from event loops, one per CPU
	// featcache may use, instead of from each client's goroutine (Linux; elsewhere it has no effect). Default true.
	EventLoops bool
	// ShutdownDelay is how long featcache keeps serving after SIGTERM while /readyz answers 503, before it stops
	// accepting connections. Default DefaultShutdownDelay.
	ShutdownDelay time.Duration
	// ShutdownTimeout bounds the wait, after ShutdownDelay, for clients to finish what they sent; connections still
	// open then are closed. Greater than 0. Default DefaultShutdownTimeout.
	ShutdownTimeout time.Duration
	// Log says how featcache logs.
	Log Log
	// Warm configures warm starts and the hot-key list.
	Warm Warm
}

// Log configures featcache's log lines (log/slog, on standard error).
type Log struct {
	// Format is "text" (key=value) or "json". Default DefaultLogFormat.
	Format string
	// Level is the lowest level logged: debug, info, warn or error. Default info.
	Level slog.Level
	// SlowCommand, when greater than 0, logs every client pipeline that takes longer than this to answer, with
	// its command names (never its arguments). Default 0: off.
	SlowCommand time.Duration
}

// Upstream is the upstream Redis: one node, the seed nodes of a cluster, or a primary found through Sentinel.
type Upstream struct {
	// Addresses are host:port entries: one node, or cluster seed nodes. Default [DefaultUpstreamAddress]; never
	// empty. Not used when Sentinel is enabled; a file may not set both.
	Addresses []string
	// Sentinel, when enabled, finds the primary through Redis Sentinel instead of Addresses. Default off.
	Sentinel Sentinel
	// Username is the ACL user featcache authenticates as; "" means the default user. Default "".
	Username string
	// Password is the upstream password; "" means no AUTH. Default "".
	Password string
	// PasswordFile, if not "", names a file that holds Password, read like Config.PasswordFile. Default "".
	PasswordFile string
	// Tracking turns on server-assisted invalidation; false means TTL-only freshness (for servers without client
	// tracking). Default true.
	Tracking bool
	// Timeout bounds featcache's own upstream waits: cache fills (past it, serve_stale policies answer from
	// memory), health checks, connection setup and the tracking connection's calls. Greater than 0. Default
	// DefaultTimeout.
	Timeout time.Duration
	// CommandTimeout bounds the wait for the reply of a command forwarded for a client (over shared or pinned
	// connections; blocking commands keep their own timeouts); past it the client gets an error and Redis's late
	// reply is dropped. 0 means no bound: featcache waits as a direct client of Redis would, however long a
	// script or slow command runs. Not negative. Default 0.
	CommandTimeout time.Duration
	// Conns is the number of shared connections per upstream node, 1 to MaxConns. Default DefaultConns.
	Conns int
	// RevalidateRate bounds, in keys per second, the background re-fetches of entries left unverified by a
	// tracking loss (policies with on_tracking_loss: revalidate), so a recovering store is not hammered. Bursts
	// of up to a tenth of a second's worth are allowed. Default DefaultRevalidateRate; at least 1.
	RevalidateRate int
	// TLS configures TLS to the upstream. Default off.
	TLS UpstreamTLS
}

// Sentinel says where featcache finds its primary through Redis Sentinel. The zero value is off.
type Sentinel struct {
	// MasterSet is the name the sentinels monitor the primary under ("sentinel monitor NAME ..."). Required when
	// Addresses is set. Default "".
	MasterSet string
	// Addresses are the sentinels' host:port entries. Required when MasterSet is set. Default none.
	Addresses []string
	// Password authenticates featcache to the sentinels (their requirepass); "" means no AUTH. The data nodes'
	// password is Upstream.Password. Default "".
	Password string
}

// Enabled reports whether the primary is found through Sentinel.
func (s *Sentinel) Enabled() bool { return s.MasterSet != "" || len(s.Addresses) > 0 }

// TLS is the RESP listener's TLS configuration. The zero value is plain TCP.
type TLS struct {
	// CertFile and KeyFile are PEM files of the server certificate (with its chain) and its private key; both or
	// neither. Default "": no TLS.
	CertFile, KeyFile string
	// ClientCAFile, if set, is a PEM file of the CAs client certificates must chain to: clients without such a
	// certificate cannot connect (mutual TLS). Needs CertFile. Default "": no client certificates asked for.
	ClientCAFile string
}

// Enabled reports whether the listener speaks TLS.
func (t *TLS) Enabled() bool { return t.CertFile != "" }

// UpstreamTLS is the TLS configuration of featcache's connections to the upstream. The zero value is plain TCP.
type UpstreamTLS struct {
	// Enabled turns TLS on. The other fields need it. Default false.
	Enabled bool
	// CAFile is a PEM file of the CAs the upstream's certificate must chain to. Default "": the system's roots.
	CAFile string
	// CertFile and KeyFile are PEM files of a client certificate and its key, for an upstream that asks for one
	// (Redis tls-auth-clients yes); both or neither. Default "".
	CertFile, KeyFile string
	// ServerName is the name the upstream's certificate must hold. Default "": the host of each upstream address.
	ServerName string
	// InsecureSkipVerify accepts any upstream certificate: the connection is encrypted but not authenticated.
	// For tests only. Default false.
	InsecureSkipVerify bool
}

// Local is the in-process cache tier.
type Local struct {
	// MaxMemory is the size of the tier in bytes, at least MinMaxMemory; the Go memory limit is derived from it.
	// Default DefaultMaxMemory.
	MaxMemory int64
	// AdmissionThreshold, between 2 and MaxAdmissionThreshold, puts a frequency filter in front of the tier: once
	// the tier has had to evict, a fill is stored only from its key's AdmissionThreshold-th recent miss
	// (localcache.AdmissionOptions). 0 (the default) or 1: every fill is stored.
	AdmissionThreshold int
}

// MaxAdmissionThreshold is the largest local.admission_threshold: the filter counts up to 16 requests of a key.
const MaxAdmissionThreshold = 16

// Limits bound the resources one client can take.
type Limits struct {
	// MaxRequestBytes bounds the bytes of one command, at least 1KB. Default DefaultMaxRequestBytes.
	MaxRequestBytes int64
	// MaxArgs bounds the number of arguments of one command, at least 1. Default DefaultMaxArgs.
	MaxArgs int
	// MaxInlineBytes bounds one inline command line, at least 1KB. Default DefaultMaxInlineBytes.
	MaxInlineBytes int
	// MaxClients bounds the client connections open at once, at least 1. Default DefaultMaxClients.
	MaxClients int
	// MaxConnAge, when greater than 0, closes a client connection once it is this old (shortened by up to 10% at
	// random, so that connections opened together do not all close together), between two pipelines and never
	// inside a transaction or a subscription, so that load rebalances after a scale-out. 0 or at least
	// MinMaxConnAge. Default 0: connections live as long as their clients keep them.
	MaxConnAge time.Duration
	// IdleTimeout closes a client that sent no command for this long; 0 never does. Subscribed clients and
	// clients waiting in a blocking command are never idle. Default 0.
	IdleTimeout time.Duration
	// MaxOutputBytes bounds the reply bytes featcache holds for one client that the client has not read yet, at
	// least 1KB: a client whose single reply would exceed it is disconnected. Default DefaultMaxOutputBytes.
	MaxOutputBytes int64
	// OutputTimeout disconnects a client that leaves featcache's replies unread for this long (a write to it
	// makes no progress). Greater than 0. Default DefaultOutputTimeout.
	OutputTimeout time.Duration
	// MaxClientsMemory bounds the request and reply buffer bytes all clients together hold beyond each client's
	// baseline (ClientBaselineBytes). It must hold at least one largest request twice (read, and sent upstream)
	// and one largest reply (2 x MaxRequestBytes + MaxOutputBytes). Default DefaultMaxClientsMemory.
	MaxClientsMemory int64
	// MaxTrackedKeys bounds the keys remembered for clients with CLIENT TRACKING on in the default mode (keys a
	// client read, until they are invalidated): past it, keys picked at random are invalidated for their clients
	// and forgotten, as Redis's tracking-table-max-keys does. At least 1. Default DefaultMaxTrackedKeys.
	MaxTrackedKeys int
}

// ClientBaselineBytes is the buffer memory every client may hold without drawing on limits.max_clients_memory: its
// initial read buffer and a batch of small replies. The process's memory is therefore bounded by local.max_memory
// + limits.max_clients x (ClientBaselineBytes + a goroutine and a socket) + limits.max_clients_memory.
const ClientBaselineBytes = 128 * kib

// Commands says which commands featcache refuses.
type Commands struct {
	// Deny lists refused commands in lower case: a command name ("config") refuses the command with every
	// subcommand, "command|subcommand" ("client|kill") only that subcommand. Clients' command names match
	// case-insensitively. A list in the file replaces the default entirely; an empty list refuses nothing. Default
	// DefaultDeny.
	Deny []string
}

// Default returns a Config with every default filled in and no policies.
func Default() *Config {
	return &Config{
		Listen:        DefaultListen,
		Admin:         DefaultAdmin,
		ProtectedMode: true,
		EventLoops:    true,
		Upstream: Upstream{
			Addresses: []string{DefaultUpstreamAddress},
			Tracking:  true,
			Timeout:   DefaultTimeout,
			Conns:     DefaultConns,

			RevalidateRate: DefaultRevalidateRate,
		},
		Local: Local{MaxMemory: DefaultMaxMemory},
		Limits: Limits{
			MaxRequestBytes:  DefaultMaxRequestBytes,
			MaxArgs:          DefaultMaxArgs,
			MaxInlineBytes:   DefaultMaxInlineBytes,
			MaxClients:       DefaultMaxClients,
			MaxOutputBytes:   DefaultMaxOutputBytes,
			OutputTimeout:    DefaultOutputTimeout,
			MaxClientsMemory: DefaultMaxClientsMemory,
			MaxTrackedKeys:   DefaultMaxTrackedKeys,
		},
		Commands:        Commands{Deny: append([]string(nil), DefaultDeny...)},
		ShutdownDelay:   DefaultShutdownDelay,
		ShutdownTimeout: DefaultShutdownTimeout,
		Log:             Log{Format: DefaultLogFormat, Level: slog.LevelInfo},
		Warm: Warm{
			Rate:            DefaultWarmRate,
			ReadyTimeout:    DefaultWarmReadyTimeout,
			HotkeysSize:     DefaultHotkeysSize,
			HotkeysInterval: DefaultHotkeysInterval,
		},
	}
}

// Load reads and parses the configuration file at path, then reads the password files it names (password_file,
// upstream.password_file) into Password and Upstream.Password. Its errors start with the path.
func Load(path string) (*Config, error) {
	return LoadOverridden(path, nil)
}

// LoadOverridden is Load with override, when not nil, applied to the decoded configuration before it is validated:
// the command line's flags replace fields of the file, and what is judged (protected mode, addresses) is what
// featcache would run with, not the values they replace. replaced names the fields override sets ("listen",
// "upstream.addresses"): an error about one of them names neither the file nor a line of it.
func LoadOverridden(path string, override func(*Config), replaced ...string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err // *PathError already names the path
	}
	c, err := parse(data, override, replaced)
	var fromFlag replacedError
	if errors.As(err, &fromFlag) {
		return nil, fromFlag.err // the value is the command line's, not the file's
	}
	if err == nil {
		err = c.ReadPasswordFiles()
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// replacedError is parse's error about a value that override set (LoadOverridden): it names no place in the file.
type replacedError struct{ err error }

func (e replacedError) Error() string { return e.err.Error() }
func (e replacedError) Unwrap() error { return e.err }

// MaxPasswordFileBytes bounds what a password file may hold, so that a wrong path (a log, a device) is an error
// rather than a huge read.
const MaxPasswordFileBytes = 64 * kib

// ReadPasswordFiles sets Password from PasswordFile and Upstream.Password from Upstream.PasswordFile, where they are
// set. Trailing newlines (\n, \r\n) are removed, since secrets are often written with one. A missing, unreadable,
// empty or oversized file is an error naming the field and the path.
func (c *Config) ReadPasswordFiles() error {
	for _, f := range []struct {
		name     string
		path     string
		password *string
	}{
		{"password_file", c.PasswordFile, &c.Password},
		{"upstream.password_file", c.Upstream.PasswordFile, &c.Upstream.Password},
	} {
		if f.path == "" {
			continue
		}
		pw, err := readPasswordFile(f.path)
		if err != nil {
			return fmt.Errorf("%s: %w", f.name, err)
		}
		*f.password = pw
	}
	return nil
}

// readPasswordFile returns the contents of the file at path without trailing newlines.
func readPasswordFile(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err // *PathError names the path
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxPasswordFileBytes+1))
	if err != nil {
		return "", fmt.Errorf("read %s: %w", path, err)
	}
	if len(data) > MaxPasswordFileBytes {
		return "", fmt.Errorf("%s holds more than %s: not a password", path, formatSize(MaxPasswordFileBytes))
	}
	pw := strings.TrimRight(string(data), "\r\n")
	if pw == "" {
		return "", fmt.Errorf("%s is empty (without a password, leave the field out)", path)
	}
	return pw, nil
}

// Parse decodes a YAML configuration, applies the defaults and validates the result. An empty document, or one
// without policies, is valid. Unknown fields and invalid values are errors that name the section or policy, the
// field, the value and, where the file has one, the line.
func Parse(data []byte) (*Config, error) {
	return parse(data, nil, nil)
}

// parse is Parse with override applied before validation (see LoadOverridden).
func parse(data []byte, override func(*Config), replaced []string) (*Config, error) {
	root, err := parseDocument(data)
	if err != nil {
		return nil, err
	}
	c := Default()
	if root != nil {
		if err := c.decode(root); err != nil {
			return nil, err
		}
	}
	if override != nil {
		override(c)
	}
	if err := c.Validate(); err != nil {
		for _, r := range replaced {
			if rest, ok := strings.CutPrefix(err.Error(), r); ok && rest != "" && strings.ContainsAny(rest[:1], ":[ ") {
				return nil, replacedError{err}
			}
		}
		if root != nil {
			err = withLine(err, fieldLines(root))
		}
		return nil, err
	}
	return c, nil
}

// parseDocument returns the root node of the single YAML document in data, or nil when data holds no document.
func parseDocument(data []byte) (*yaml.Node, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, nil
		}
		return nil, err
	}
	var next yaml.Node
	if err := dec.Decode(&next); !errors.Is(err, io.EOF) {
		if err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("more than one YAML document (the second starts at line %d); featcache reads one", next.Line)
	}
	if doc.Kind == yaml.DocumentNode {
		if len(doc.Content) == 0 {
			return nil, nil
		}
		return doc.Content[0], nil
	}
	return &doc, nil
}
