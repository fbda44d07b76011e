package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"featcache/localcache"
	"featcache/policy"
	"featcache/upstream"
)

// Options configures a Server. Config, Cache and Upstream are required.
type Options struct {
	// Config is the loaded configuration: policies, password, limits and the command deny list are read from it.
	Config *policy.Config
	// Cache is the local tier.
	Cache *localcache.Cache
	// Upstream carries forwarded traffic and fetches, and keeps the local tier consistent through tracking.
	// Writes whose keys Redis cannot name wait for its tracking barrier; without tracking they flush the tier.
	Upstream *upstream.Client
	// Commands is Redis's command metadata. If nil, the server fetches COMMAND from the upstream at start and
	// falls back to the Redis 7.0 table it embeds while the upstream is unreachable.
	Commands Commands
	// Logger receives connection-level events; if nil, slog.Default().
	Logger *slog.Logger
	// Now is the clock; if nil, time.Now. Tests move it to walk entries through their states.
	Now func() time.Time
	// TLSHandshakeTimeout bounds the TLS handshake of a client accepted on a TLS listener. If zero,
	// DefaultTLSHandshakeTimeout is used.
	TLSHandshakeTimeout time.Duration
}

// Server is the RESP listener: it owns client connections and runs each one's request path.
type Server struct {
	opt   Options
	log   *slog.Logger
	now   func() time.Time
	cache *localcache.Cache
	up    *upstream.Client

	policies atomic.Pointer[policySet]
	tbl      atomic.Pointer[table]
	hello    atomic.Pointer[serverInfo]

	reached atomic.Bool // the upstream answered at least once
	nextID  atomic.Int64
	clients atomic.Int64
	stats   Stats

	maxOutput int64  // limits.max_output_bytes
	budget    budget // limits.max_clients_memory, shared by every client

	mu       sync.Mutex
	lns      []net.Listener
	conns    map[*client]struct{}
	closed   bool
	watching bool          // the watchdog runs
	stop     chan struct{} // closed when the server closes: ends the watchdog
	wg       sync.WaitGroup
}

// policySet is the matcher with each policy converted once to what the local tier needs.
type policySet struct {
	matcher *policy.Matcher
	local   []localcache.Policy // by policy.Policy.Index
}

// serverInfo is what HELLO reports: the upstream's own identity, so clients see the Redis they expect.
type serverInfo struct {
	version string
	mode    string
	role    string
}

// New returns a Server. It does not listen; call Serve.
func New(opt Options) (*Server, error) {
	if opt.Config == nil || opt.Cache == nil || opt.Upstream == nil {
		return nil, errors.New("proxy: Options.Config, Cache and Upstream are required")
	}
	if opt.Logger == nil {
		opt.Logger = slog.Default()
	}
	if opt.Now == nil {
		opt.Now = opt.Cache.Now // the tier's clock: entries' deadlines are on it
	}
	if opt.TLSHandshakeTimeout <= 0 {
		opt.TLSHandshakeTimeout = DefaultTLSHandshakeTimeout
	}
	lim := opt.Config.Limits
	if lim.MaxOutputBytes <= 0 || lim.OutputTimeout <= 0 || lim.MaxClientsMemory <= 0 || lim.MaxClients <= 0 {
		return nil, errors.New("proxy: Options.Config.Limits are not set: use a Config from policy.Parse or policy.Default")
	}
	s := &Server{
		opt: opt, log: opt.Logger, now: opt.Now,
		cache: opt.Cache, up: opt.Upstream,
		conns:     make(map[*client]struct{}),
		maxOutput: lim.MaxOutputBytes,
		stop:      make(chan struct{}),
	}
	s.budget.limit = lim.MaxClientsMemory
	s.SetPolicies(opt.Config.Policies)
	s.hello.Store(&serverInfo{version: "7.0.0", mode: "standalone", role: "master"})
	cmds := opt.Commands
	if cmds == nil {
		var err error
		if cmds, err = s.fetchCommands(); err != nil {
			s.log.Warn("command table: upstream unreachable, using the embedded Redis 7.0 table until it answers", "err", err)
			if cmds, err = embeddedCommands(); err != nil {
				return nil, err
			}
			go s.refreshCommandsLater()
		}
	}
	s.tbl.Store(newTable(cmds, opt.Config.Commands.Deny))
	return s, nil
}

// SetPolicies replaces the policies; lookups that start afterwards use the new ones.
func (s *Server) SetPolicies(ps []*policy.Policy) {
	set := &policySet{matcher: policy.NewMatcher(ps), local: make([]localcache.Policy, len(ps))}
	for _, p := range ps {
		set.local[p.Index] = localcache.Policy{
			SoftTTL: p.SoftTTL, HardTTL: p.HardTTL, Jitter: p.Jitter, NegativeTTL: p.NegativeTTL,
			ServeStale: p.OnUpstreamError == policy.ErrorServeStale, MaxStale: p.MaxStale,
		}
	}
	s.policies.Store(set)
}

// fetchCommands reads COMMAND and INFO server from the upstream.
func (s *Server) fetchCommands() (Commands, error) {
	call := upstream.NewCall()
	req := upstream.AppendCommand(nil, "COMMAND")
	req = upstream.AppendCommand(req, "INFO", "server")
	if err := s.up.Do(call, req, 2); err != nil {
		return nil, err
	}
	s.reached.Store(true)
	cmds, err := ParseCommands(call.Frame(0))
	if err != nil {
		return nil, fmt.Errorf("proxy: COMMAND reply: %w", err)
	}
	if info, _, ok := bulkString(call.Frame(1)); ok {
		s.hello.Store(parseServerInfo(string(info)))
	}
	return cmds, nil
}

func (s *Server) refreshCommandsLater() {
	for delay := 100 * time.Millisecond; ; delay = min(2*delay, 5*time.Second) {
		time.Sleep(delay)
		s.mu.Lock()
		closed := s.closed
		s.mu.Unlock()
		if closed {
			return
		}
		if cmds, err := s.fetchCommands(); err == nil {
			s.tbl.Store(newTable(cmds, s.opt.Config.Commands.Deny))
			s.log.Info("command table: loaded from upstream", "commands", len(cmds))
			return
		}
	}
}

// Serve accepts client connections on ln until Close. It returns nil after Close.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return errors.New("proxy: server closed")
	}
	s.lns = append(s.lns, ln)
	if !s.watching {
		s.watching = true
		s.wg.Add(1)
		go s.watchdog()
	}
	s.mu.Unlock()
	var delay time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			s.mu.Lock()
			closed := s.closed
			s.mu.Unlock()
			if closed {
				return nil
			}
			if isTemporary(err) {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				time.Sleep(delay)
				continue
			}
			return err
		}
		delay = 0
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			nc.Close()
			continue
		}
		if len(s.conns) >= s.opt.Config.Limits.MaxClients {
			s.stats.Rejected.Add(1)
			s.wg.Add(1)
			s.mu.Unlock()
			go s.reject(nc)
			continue
		}
		c := s.newClient(nc)
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go s.serveClient(c)
	}
}

// isTemporary treats accept errors such as EMFILE as transient: the listener stays up.
func isTemporary(err error) bool {
	type temporary interface{ Temporary() bool }
	t, ok := err.(temporary)
	return ok && t.Temporary()
}

// serveClient runs one client's connection. A panic ends only this connection: it is logged with its stack and
// the client gets an error reply.
func (s *Server) serveClient(c *client) {
	s.clients.Add(1)
	defer func() {
		if r := recover(); r != nil {
			s.stats.Panics.Add(1)
			s.log.Error("connection panic", "client", c.id, "panic", r, "stack", string(debug.Stack()))
			c.abandonFills(fmt.Errorf("featcache: internal error"))
			c.out = append(c.out[:0], "-ERR featcache internal error, connection closed\r\n"...)
			c.flush()
		}
		c.close()
		s.clients.Add(-1)
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		s.wg.Done()
	}()
	c.serve()
}

// Close stops accepting, closes every client connection and waits for their goroutines to end.
func (s *Server) Close() error {
	s.mu.Lock()
	s.stopWatchdog()
	lns := s.lns
	conns := make([]*client, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, ln := range lns {
		ln.Close()
	}
	for _, c := range conns {
		c.nc.Close()
	}
	s.wg.Wait()
	return nil
}

// Shutdown stops accepting, closes idle clients and waits for the others to finish the pipelines they sent, until
// ctx ends; then it closes what is left.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.stopWatchdog()
	lns := s.lns
	for c := range s.conns {
		c.draining.Store(true)
		// A client waiting for its next command has nothing in progress: wake it, so that it leaves now rather
		// than when ctx ends. A client in the middle of a batch finishes it: the deadline only stops reads.
		c.nc.SetReadDeadline(time.Now())
	}
	s.mu.Unlock()
	for _, ln := range lns {
		ln.Close()
	}
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		s.Close()
		return ctx.Err()
	}
}

// stopWatchdog marks the server closed and stops the watchdog once. The caller holds s.mu.
func (s *Server) stopWatchdog() {
	if !s.closed {
		close(s.stop)
	}
	s.closed = true
}

// Clients is the number of connected clients.
func (s *Server) Clients() int64 { return s.clients.Load() }

// Stats counts what the request path did. Fields are updated atomically and safe to read at any time.
type Stats struct {
	Commands      atomic.Int64 // commands executed
	Hits          atomic.Int64 // cached reads answered from memory (fresh)
	StaleHits     atomic.Int64 // soft-stale entries served while a refresh runs
	StaleOnError  atomic.Int64 // entries served past hard TTL because the upstream failed (serve_stale)
	Misses        atomic.Int64 // cached reads fetched from the upstream
	Bypass        atomic.Int64 // reads of keys no caching policy covers, forwarded
	Refreshes     atomic.Int64 // background refreshes started
	UpstreamReads atomic.Int64 // keys fetched from the upstream (GET+PTTL pairs)
	RoundTrips    atomic.Int64 // upstream round trips of pipeline segments (misses and forwarded commands)
	Forwarded     atomic.Int64 // commands forwarded over shared connections
	Invalidations atomic.Int64 // keys invalidated by writes through featcache
	Barriers      atomic.Int64 // tracking barriers waited for after scripts and commands with unknown keys
	Errors        atomic.Int64 // error replies featcache produced itself (upstream failures, refused commands)
	Panics        atomic.Int64 // connections ended by a recovered panic

	Rejected           atomic.Int64 // connections refused by limits.max_clients
	ProtocolErrors     atomic.Int64 // connections closed for a protocol error or a request limit
	IdleTimeouts       atomic.Int64 // clients closed by limits.idle_timeout
	OutputTimeouts     atomic.Int64 // clients closed for leaving replies unread (limits.output_timeout)
	OutputLimits       atomic.Int64 // clients closed for a reply over limits.max_output_bytes
	MemoryLimits       atomic.Int64 // clients closed because limits.max_clients_memory was reached
	TLSHandshakeErrors atomic.Int64 // client TLS handshakes that failed or timed out
}

// ClientMemory is the buffer memory clients hold beyond their baselines: what they reserved from
// limits.max_clients_memory.
func (s *Server) ClientMemory() int64 { return s.budget.used.Load() }

// Stats returns the server's counters.
func (s *Server) Stats() *Stats { return &s.stats }
