package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"featcache/internal/commands"

	"featcache/config"
	"featcache/internal/resp"
	"featcache/localcache"
	"featcache/upstream"
	"featcache/warm"
)

// Options configures a Server. Config, Cache and Upstream are required.
type Options struct {
	// Config is the loaded configuration: policies, password, limits and the command deny list are read from it.
	Config *config.Config
	// Cache is the local tier.
	Cache *localcache.Cache
	// Upstream carries forwarded traffic and fetches, and keeps the local tier consistent through tracking.
	// Writes whose keys Redis cannot name wait for its tracking barrier; without tracking they flush the tier.
	Upstream *upstream.Client
	// Commands is Redis's command metadata. If nil, the server fetches COMMAND from the upstream at start and
	// falls back to the Redis 7.0 table it embeds while the upstream is unreachable.
	Commands commands.Table
	// Logger receives connection-level events; if nil, slog.Default().
	Logger *slog.Logger
	// Now is the clock; if nil, the local tier's (Cache.Now). Tests move it to walk entries through their states.
	// With Now nil, request latency is timed on the readings each batch takes anyway, so the tier's clock must then
	// follow real time (it does unless localcache.Options.Now was set, and then set this too).
	Now func() time.Time
	// Reload returns the configuration a reload applies (SIGHUP, CACHE RELOAD): main reads the file again and
	// applies its command-line overrides. If nil, reloads are refused.
	Reload func() (*config.Config, error)
	// LogLevel, if not nil, is set from log.level at each reload.
	LogLevel *slog.LevelVar
	// MemoryLimitBase, if greater than 0, makes the server keep the Go memory limit (debug.SetMemoryLimit) at this
	// many bytes plus what clients reserved from limits.max_clients_memory (in whole 16MB steps, rounded down), and
	// at least 16MB above the live heap and the runtime's own memory: main sets it to local.max_memory plus headroom.
	MemoryLimitBase int64
	// TLSHandshakeTimeout bounds the TLS handshake of a client accepted on a TLS listener. If zero,
	// DefaultTLSHandshakeTimeout is used.
	TLSHandshakeTimeout time.Duration
	// Version is featcache's version as -version prints it, for featcache_build_info and INFO featcache. If "",
	// "unknown".
	Version string
}

// Server is the RESP listener: it owns client connections and runs each one's request path.
type Server struct {
	opt   Options
	log   *slog.Logger
	now   func() time.Time
	cache *localcache.Cache
	up    *upstream.Client
	// ctrack serves CLIENT TRACKING to featcache's clients (tracking.go).
	ctrack *clientTracking

	// ttlWarned is when (unix ns) the log last said that the upstream refuses PTTL (warnTTLRefused).
	ttlWarned atomic.Int64

	policies atomic.Pointer[policySet]
	tbl      atomic.Pointer[table]
	hello    atomic.Pointer[serverInfo]
	// noRoleUntil (unix ns) is set when the upstream refuses INFO (an ACL without it, a renamed command):
	// refreshRole asks again only after roleRetry, rather than filling Redis's ACL LOG every second, and resumes
	// once INFO is allowed again.
	noRoleUntil atomic.Int64
	resp3       atomic.Int32 // whether the upstream switches protocols with HELLO: 0 not known yet, 1 yes, 2 no
	dbCount     atomic.Int64 // the upstream's number of databases, once read (connection.go: databases)

	cmds       atomic.Pointer[commands.Table] // the command table's source, for rebuilding it (installTable)
	tblMu      sync.Mutex                     // serializes installTable
	reached    atomic.Bool                    // the upstream answered at least once
	revalidate *tokenBucket                   // bounds re-fetches of entries left unverified by a tracking loss
	nextID     atomic.Int64
	clients    atomic.Int64
	stats      Stats
	metrics    *serverMetrics
	version    string // Options.Version
	realClock  bool   // now is the local tier's own clock, which follows real time: batches are timed on its readings

	cfg       atomic.Pointer[config.Config] // the running configuration: Options.Config as reloads changed it
	reloadMu  sync.Mutex                    // one reload at a time
	coverage  []coverage                    // tracking prefix switches, for NotBefore (reload.go); under reloadMu
	hot       *warm.HotKeys
	hotGap    hotSampling
	warmer    *warm.Warmer
	persister *warm.Persister
	bgOnce    sync.Once // StartWarmup
	draining  atomic.Bool
	shutdown  atomic.Int64 // unix nanoseconds when Shutdown began; 0 before

	maxOutput int64  // limits.max_output_bytes
	budget    budget // limits.max_clients_memory, shared by every client

	mu       sync.Mutex
	lns      []net.Listener
	conns    map[*client]struct{}
	closed   bool
	watching bool                         // the watchdog runs
	loops    atomic.Pointer[[]*eventLoop] // the event loops (loop.go), started with the watchdog; none when off
	loopsWG  sync.WaitGroup               // the loops' goroutines: they end in Close, after the clients' (wg)
	stop     chan struct{}                // closed when the server closes or starts shutting down: ends the watchdog
	closing  chan struct{}                // closed by Close: ends the upstream waits of the clients still running
	wg       sync.WaitGroup
}

// New returns a Server. It does not listen; call Serve.
func New(opt Options) (*Server, error) {
	if opt.Config == nil || opt.Cache == nil || opt.Upstream == nil {
		return nil, errors.New("proxy: Options.Config, Cache and Upstream are required")
	}
	if opt.Logger == nil {
		opt.Logger = slog.Default()
	}
	realClock := opt.Now == nil
	if opt.Now == nil {
		opt.Now = opt.Cache.Clock() // the tier's clock: entries' deadlines are on it
	}
	if opt.TLSHandshakeTimeout <= 0 {
		opt.TLSHandshakeTimeout = DefaultTLSHandshakeTimeout
	}
	if opt.Version == "" {
		opt.Version = "unknown"
	}
	lim := opt.Config.Limits
	if lim.MaxOutputBytes <= 0 || lim.OutputTimeout <= 0 || lim.MaxClientsMemory <= 0 || lim.MaxClients <= 0 {
		return nil, errors.New("proxy: Options.Config.Limits are not set: use a Config from config.Parse or config.Default")
	}
	s := &Server{
		opt: opt, log: opt.Logger, now: opt.Now,
		cache: opt.Cache, up: opt.Upstream,
		conns:     make(map[*client]struct{}),
		metrics:   newMetrics(),
		realClock: realClock, version: opt.Version,
		maxOutput: lim.MaxOutputBytes,
		stop:      make(chan struct{}),
		closing:   make(chan struct{}),
	}
	s.budget.limit = lim.MaxClientsMemory
	if opt.MemoryLimitBase > 0 {
		s.budget.base = opt.MemoryLimitBase
		s.budget.set.Store(opt.MemoryLimitBase)
		debug.SetMemoryLimit(opt.MemoryLimitBase)
	}
	cfg := opt.Config
	s.cfg.Store(cfg)
	s.ctrack = newClientTracking(s)
	s.up.SetWatcher(s.ctrack)
	s.revalidate = newTokenBucket(cfg.Upstream.RevalidateRate, opt.Now)
	s.hot = warm.NewHotKeys(cfg.Warm.HotkeysSize)
	s.warmer = warm.New(warm.Options{
		Filler: s, Rate: cfg.Warm.Rate, ReadyAfter: cfg.Warm.ReadyAfter, ReadyTimeout: cfg.Warm.ReadyTimeout,
		Logger: s.log,
	})
	s.persister = warm.NewPersister(s.hot, s.up, persistConfig(cfg), s.log)
	s.setPolicies(cfg.Policies)
	s.hello.Store(&serverInfo{version: "7.0.0", mode: "standalone", role: "master"})
	cmds := opt.Commands
	if cmds == nil {
		var err error
		if cmds, err = s.fetchCommands(); err != nil {
			s.log.Warn("command table: not read from the upstream (unreachable, or COMMAND refused); using the "+
				"embedded Redis 7.0 table until it answers", "err", err)
			if cmds, err = commands.Embedded(); err != nil {
				return nil, err
			}
			go s.refreshCommandsLater()
		}
	}
	s.installTable(cmds)
	select {
	case <-s.up.Decided():
	default:
		// Nothing answered yet: once the upstream does, a Redis Cluster needs its rules in the table.
		go func() {
			select {
			case <-s.up.Decided():
				s.installTable(nil)
				if si := s.hello.Load(); s.clustered() && si.mode != "standalone" {
					s.hello.Store(&serverInfo{version: si.version, mode: "standalone", role: si.role})
				}
			case <-s.stop:
			}
		}()
	}
	return s, nil
}

// clustered reports whether the upstream is a Redis Cluster (known once the upstream client has been answered).
func (s *Server) clustered() bool { return s.up.Cluster() != nil }

// offersRESP3 reports whether HELLO 3 is accepted: once the upstream is known (a single Redis, a Sentinel's
// primary, or a Redis Cluster) and known to switch protocols with HELLO (Redis 6 and later do). The first HELLO 3
// asks, with HELLO 3 and HELLO 2 on a shared connection: of the single node, or of every master of a cluster,
// all of which must switch.
func (s *Server) offersRESP3() bool {
	select {
	case <-s.up.Decided():
	default:
		return false
	}
	switch s.resp3.Load() {
	case 1:
		return true
	case 2:
		return false
	}
	switches, known := s.switchesProtocols()
	switch {
	case !known:
		return false // asked again at the next HELLO 3
	case switches:
		s.resp3.Store(1)
		return true
	}
	s.resp3.Store(2)
	return false
}

// helloBoth is HELLO 3 then HELLO 2, which leaves the connection as it was.
var helloBoth = append(append([]byte(nil), hello3Cmd...), hello2Cmd...)

// switchesProtocols asks the upstream whether it answers HELLO 3 with a map and HELLO 2 with an array: the single
// node, or every master of a Redis Cluster. known is false when a node did not answer.
func (s *Server) switchesProtocols() (switches, known bool) {
	call := upstream.NewCall()
	if cl := s.up.Cluster(); cl != nil {
		n := cl.Masters()
		if n == 0 {
			return false, false
		}
		for i := 0; i < n; i++ {
			if err := cl.DoMaster(call, i, helloBoth, 2); err != nil {
				return false, false
			}
			if !answeredBoth(call) {
				return false, true
			}
		}
		return true, true
	}
	var req upstream.Payload
	req.AppendRaw(upstream.NoSlot, hello3Cmd)
	req.AppendRaw(upstream.NoSlot, hello2Cmd)
	if err := s.up.Do(call, &req); err != nil {
		return false, false
	}
	return answeredBoth(call), true
}

// answeredBoth reports whether call holds the replies of a node that switches protocols: a map to HELLO 3, then
// an array to HELLO 2.
func answeredBoth(call *upstream.Call) bool {
	return call.Frame(0)[0] == resp.TypeMap && call.Frame(1)[0] == resp.TypeArray
}

// installTable builds the command table from cmds (nil: the last ones installed) and makes it current; in front
// of a Redis Cluster with the cluster rules. Installs are serialized, so the last one reflects whether the
// upstream is a cluster as known by then.
func (s *Server) installTable(cmds commands.Table) {
	s.tblMu.Lock()
	defer s.tblMu.Unlock()
	if cmds == nil {
		cmds = *s.cmds.Load()
	}
	s.cmds.Store(&cmds)
	tbl := newTable(cmds, s.opt.Config.Commands.Deny, s.clustered())
	s.metrics.bindCalls(tbl)
	s.tbl.Store(tbl)
}

// persistConfig is the hot-key persistence part of cfg.
func persistConfig(cfg *config.Config) warm.PersistConfig {
	w := cfg.Warm
	return warm.PersistConfig{File: w.HotkeysFile, Zset: w.HotkeysZset, Size: w.HotkeysSize,
		Interval: w.HotkeysInterval, Touch: w.HotkeysTouch}
}

// fetchCommands reads COMMAND, INFO server and INFO replication from the upstream.
func (s *Server) fetchCommands() (commands.Table, error) {
	call := upstream.NewCall()
	call.Req.AppendCommand(upstream.NoSlot, "COMMAND")
	call.Req.AppendCommand(upstream.NoSlot, "INFO", "server")
	call.Req.AppendCommand(upstream.NoSlot, "INFO", "replication")
	if err := s.up.Do(call, &call.Req); err != nil {
		return nil, err
	}
	s.reached.Store(true)
	cmds, err := commands.Parse(call.Frame(0))
	if err != nil {
		return nil, fmt.Errorf("proxy: COMMAND reply: %w", err)
	}
	if info, _, ok := resp.BulkPayload(call.Frame(1)); ok {
		si := parseServerInfo(string(info))
		if s.clustered() {
			si.mode = "standalone" // featcache shows its clients one Redis, whatever is behind it
		} else if repl, _, ok := resp.BulkPayload(call.Frame(2)); ok {
			if role, ok := parseRole(string(repl)); ok {
				si.role = role
			}
		}
		s.hello.Store(si)
	}
	return cmds, nil
}

// roleRetry is how long refreshRole waits after the upstream refused INFO before it asks again.
var roleRetry = time.Minute

// refreshRole keeps HELLO's role that of the upstream, which another client may change at any time (REPLICAOF,
// FAILOVER) and a Sentinel failover changes, as Redis's own HELLO reports its current role. In front of a cluster
// the role stays master: featcache routes to the masters.
func (s *Server) refreshRole() {
	if s.clustered() || time.Now().UnixNano() < s.noRoleUntil.Load() {
		return
	}
	call := upstream.NewCall()
	call.Req.AppendCommand(upstream.NoSlot, "INFO", "replication")
	if err := s.up.Do(call, &call.Req); err != nil {
		return
	}
	info, _, ok := resp.BulkPayload(call.Frame(0))
	if !ok {
		if upstream.Refused(call.Frame(0)) {
			s.noRoleUntil.Store(time.Now().Add(roleRetry).UnixNano())
		}
		return
	}
	role, ok := parseRole(string(info))
	if si := s.hello.Load(); ok && role != si.role {
		// A fetch of the command table may store its own meanwhile: the next round keeps this one's role.
		s.hello.CompareAndSwap(si, &serverInfo{version: si.version, mode: si.mode, role: role})
	}
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
			s.installTable(cmds)
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
		s.wg.Add(1)
		go s.every(time.Second, s.refreshRole)
		s.wg.Add(1)
		go s.every(time.Second, func() { s.hotGap.adjust(s.cachedReads()) })
		if s.budget.base > 0 {
			s.wg.Add(1)
			go s.watchHeap()
		}
		s.startLoops()
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
		s.metrics.accepted.Add(1)
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			nc.Close()
			continue
		}
		if len(s.conns) >= s.opt.Config.Limits.MaxClients || shortOfFDs(nc) {
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

// reject answers a connection beyond limits.max_clients, or short of file descriptors (shortOfFDs), as Redis does,
// and closes it.
func (s *Server) reject(nc net.Conn) {
	defer s.wg.Done()
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(rejectTimeout))
	nc.Write(resp.AppendError(nil, "ERR max number of clients reached"))
}

// serveClient runs one client's connection. A panic ends only this connection: it is logged with its stack and
// the client gets an error reply.
func (s *Server) serveClient(c *client) {
	s.clients.Add(1)
	defer func() {
		if r := recover(); r != nil {
			s.stats.Panics.Add(1)
			s.log.Error("connection panic", "client", c.id, "panic", r, "stack", string(debug.Stack()))
			c.abandonFills(errInternal)
			c.out = resp.AppendError(c.out[:0], "ERR featcache internal error, connection closed")
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

// Close stops accepting, closes every client connection and waits for their goroutines to end. It stops the
// warm-ups and the hot-key writes without writing the list (Shutdown does).
func (s *Server) Close() error {
	s.mu.Lock()
	s.stopWatchdog()
	select {
	case <-s.closing:
	default:
		close(s.closing)
	}
	lns := s.lns
	conns := make([]*client, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, ln := range lns {
		ln.Close()
	}
	for _, l := range s.eventLoops() {
		l.close()
	}
	for _, c := range conns {
		if _, ok := c.nc.(*tls.Conn); ok {
			c.nc.Close()
		} else {
			c.closeRaw() // without waiting for a batch running inside the socket's read
		}
	}
	s.wg.Wait()
	s.loopsWG.Wait()
	s.warmer.Close()
	s.persister.Close()
	return nil
}

// Drain starts a graceful shutdown: /readyz answers 503 from now on, so that load balancers stop sending new
// clients, while featcache goes on serving everyone, new connections included, until Shutdown.
func (s *Server) Drain() {
	if !s.draining.Swap(true) {
		s.log.Info("shutdown: draining, /readyz answers 503")
	}
}

// Shutdown stops accepting, lets every client finish the commands and pipelines it sent, with complete replies,
// and closes each connection at the first moment that loses nothing (see leave: idle connections at once) until
// ctx ends. A connection inside MULTI or a WATCH session is given until then to reach EXEC; a subscription is
// closed at once. At ctx's end the connections still busy are stopped after the batch they run, their replies
// written and the commands they sent since dropped unexecuted, and what is still open after stopGrace is
// closed. Then Shutdown stops the warm-ups and writes the hot-key list. It calls Drain first, and returns
// ctx.Err() when ctx ended first.
func (s *Server) Shutdown(ctx context.Context) error {
	s.Drain()
	s.shutdown.CompareAndSwap(0, time.Now().UnixNano())
	s.mu.Lock()
	s.stopWatchdog()
	lns := s.lns
	conns := make([]*client, 0, len(s.conns))
	for c := range s.conns {
		c.draining.Store(true)
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, ln := range lns {
		ln.Close()
	}
	// Wake the clients waiting for their next command; those running a batch see draining when it ends.
	for _, c := range conns {
		c.wake()
	}
	s.log.Info("shutdown: listener closed, finishing client pipelines", "clients", len(conns))
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		// Clients still pipelining, or inside MULTI: stop each at the end of its current batch, dropping what it
		// sent since; a moment later close what is left (a blocking command still waiting).
		s.log.Warn("shutdown: timeout, stopping the connections still busy", "clients", s.clients.Load())
		err = ctx.Err()
		s.mu.Lock()
		for c := range s.conns {
			c.stop()
		}
		s.mu.Unlock()
		t := time.NewTimer(stopGrace)
		select {
		case <-done:
		case <-t.C:
			s.log.Warn("shutdown: closing the connections that did not stop", "clients", s.clients.Load())
		}
		t.Stop()
	}
	s.Close()
	if perr := s.persister.Persist(context.Background()); perr == nil && s.hot.Len() > 0 {
		s.log.Info("shutdown: hot keys written", "keys", min(s.hot.Len(), s.cfg.Load().Warm.HotkeysSize))
	}
	return err
}

// stopGrace is how long Shutdown waits, after its deadline, for busy connections to stop at the end of their
// batch before it closes them: a batch's round trip plus closeGently's linger.
const stopGrace = 2 * time.Second

// shutdownAt is when Shutdown began.
func (s *Server) shutdownAt() time.Time { return time.Unix(0, s.shutdown.Load()) }

// Clients is the number of connected clients.
func (s *Server) Clients() int64 { return s.clients.Load() }

// ClientMemory is the buffer memory clients hold beyond their baselines: what they reserved from
// limits.max_clients_memory.
func (s *Server) ClientMemory() int64 { return s.budget.used.Load() }
