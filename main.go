// Command featcache is a Redis-protocol caching proxy for ML feature serving: it answers feature reads from
// process memory, keeps that memory consistent with the Redis online store, and forwards everything else.
//
//	featcache -config config.yaml [-listen ADDR] [-upstream ADDR[,ADDR]] [-admin ADDR]
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"featcache/localcache"
	"featcache/policy"
	"featcache/proxy"
	"featcache/upstream"
)

// memoryHeadroom is what the Go memory limit allows above local.max_memory and what clients reserved from
// limits.max_clients_memory: client baselines, fills in flight, the runtime itself.
const memoryHeadroom = 64 << 20

func main() {
	sig := make(chan os.Signal, 2)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	if err := run(os.Args[1:], os.Stderr, sig); err != nil {
		fmt.Fprintln(os.Stderr, "featcache:", err)
		os.Exit(1)
	}
}

// run is featcache: it parses args, loads and validates the configuration, serves until SIGTERM or SIGINT arrives
// on sig (SIGHUP reloads the configuration), then shuts down gracefully. Logs go to logw.
func run(args []string, logw io.Writer, sig <-chan os.Signal) error {
	fs := flag.NewFlagSet("featcache", flag.ContinueOnError)
	fs.SetOutput(logw)
	configPath := fs.String("config", "", "configuration file (YAML); without it every default applies")
	listen := fs.String("listen", "", "RESP listen address, overrides listen")
	upstreams := fs.String("upstream", "", "upstream address(es), comma-separated, override upstream.addresses (and upstream.sentinel)")
	admin := fs.String("admin", "", "admin HTTP address (/metrics, /healthz, /readyz), overrides admin")
	if err := fs.Parse(args); err != nil {
		return err
	}

	// load reads the file and applies the flags; a reload (SIGHUP, CACHE RELOAD) calls it again.
	load := func() (*policy.Config, error) {
		cfg := policy.Default()
		if *configPath != "" {
			var err error
			if cfg, err = policy.Load(*configPath); err != nil {
				return nil, err
			}
		}
		if *listen != "" {
			cfg.Listen = *listen
		}
		if *upstreams != "" {
			cfg.Upstream.Addresses = strings.Split(*upstreams, ",")
			cfg.Upstream.Sentinel = policy.Sentinel{}
		}
		if *admin != "" {
			cfg.Admin = *admin
		}
		return cfg, cfg.Validate()
	}
	cfg, err := load()
	if err != nil {
		return err
	}
	serverTLS, err := cfg.TLS.ServerConfig()
	if err != nil {
		return err
	}
	upstreamTLS, err := cfg.Upstream.TLS.ClientConfig()
	if err != nil {
		return err
	}
	level := new(slog.LevelVar)
	level.Set(cfg.Log.Level)
	hopts := &slog.HandlerOptions{Level: level}
	var handler slog.Handler = slog.NewTextHandler(logw, hopts)
	if cfg.Log.Format == "json" {
		handler = slog.NewJSONHandler(logw, hopts)
	}
	log := slog.New(handler)
	slog.SetDefault(log)

	// freecache's buffer lives on the Go heap: without a limit the GC would let the heap grow to twice it. Client
	// buffers beyond their baselines are reserved from limits.max_clients_memory; the server raises the limit by
	// what is reserved (MemoryLimitBase), so it is local.max_memory + headroom while clients hold little.
	debug.SetMemoryLimit(cfg.Local.MaxMemory + memoryHeadroom)
	cache, err := localcache.New(localcache.Options{MaxMemory: cfg.Local.MaxMemory})
	if err != nil {
		return err
	}
	defer cache.Close()
	up, err := upstream.New(upstream.Options{
		Addresses:      cfg.Upstream.Addresses,
		Sentinel:       sentinelOptions(cfg.Upstream.Sentinel),
		Username:       cfg.Upstream.Username,
		Password:       cfg.Upstream.Password,
		TLS:            upstreamTLS,
		Conns:          cfg.Upstream.Conns,
		Timeout:        cfg.Upstream.Timeout,
		CommandTimeout: cfg.Upstream.CommandTimeout,
		Tracking:       cfg.Upstream.Tracking,
		Prefixes:       policy.NewMatcher(cfg.Policies).TrackingPrefixes(),
		Cache:          cache,
		Logger:         log,
	})
	if err != nil {
		return err
	}
	defer up.Close()
	srv, err := proxy.New(proxy.Options{Config: cfg, Cache: cache, Upstream: up, Logger: log, Reload: load, LogLevel: level,
		MemoryLimitBase: cfg.Local.MaxMemory + memoryHeadroom})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return err
	}
	if serverTLS != nil {
		ln = tls.NewListener(ln, serverTLS)
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()

	var adminSrv *http.Server
	adminAddr := ""
	if cfg.Admin != "" {
		adminLn, err := net.Listen("tcp", cfg.Admin)
		if err != nil {
			srv.Close()
			return err
		}
		adminAddr = adminLn.Addr().String()
		adminSrv = &http.Server{Handler: srv.AdminHandler(), ReadHeaderTimeout: 5 * time.Second}
		go adminSrv.Serve(adminLn)
	}
	log.Info("featcache started", "listen", ln.Addr().String(), "tls", serverTLS != nil,
		"client_certificates", cfg.TLS.ClientCAFile != "", "auth", cfg.Password != "", "admin", adminAddr,
		"upstream", upstreamName(cfg.Upstream), "upstream_tls", upstreamTLS != nil,
		"tracking", cfg.Upstream.Tracking, "max_memory", cfg.Local.MaxMemory, "policies", len(cfg.Policies),
		"config", *configPath)
	log.Info("config", "policies", policyNames(cfg.Policies), "warm_sources", len(cfg.Warm.Sources),
		"ready_after", cfg.Warm.ReadyAfter, "warm_rate", cfg.Warm.Rate, "hotkeys_file", cfg.Warm.HotkeysFile,
		"hotkeys_zset", cfg.Warm.HotkeysZset, "max_conn_age", cfg.Limits.MaxConnAge,
		"shutdown_delay", cfg.ShutdownDelay, "shutdown_timeout", cfg.ShutdownTimeout, "log_level", cfg.Log.Level.String(),
		"upstream_auth", cfg.Upstream.Password != "", "upstream_user", cfg.Upstream.Username)
	srv.StartWarmup()

	var stop os.Signal
	for stop == nil {
		select {
		case s := <-sig:
			if s == syscall.SIGHUP {
				srv.Reload() // logs what it applied, or why it rejected the file
				continue
			}
			stop = s
		case err := <-serveErr:
			if err != nil {
				return err
			}
			stop = syscall.SIGTERM
		}
	}

	// Graceful shutdown: unready at once while serving on for shutdown_delay (SIGINT, or a second signal, skips
	// the rest of it), then stop accepting and finish every pipeline within shutdown_timeout, write the hot keys,
	// close the upstream.
	running := srv.Config()
	srv.Drain()
	if delay := running.ShutdownDelay; delay > 0 && stop != os.Interrupt {
		log.Info("shutdown: serving on while load balancers drain", "signal", stop.String(), "shutdown_delay", delay)
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case s := <-sig:
			log.Info("shutdown: second signal, skipping the rest of the delay", "signal", s.String())
		}
		t.Stop()
	}
	ctx, cancel := context.WithTimeout(context.Background(), running.ShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	if adminSrv != nil {
		actx, acancel := context.WithTimeout(context.Background(), time.Second)
		adminSrv.Shutdown(actx)
		acancel()
	}
	log.Info("featcache stopped")
	return nil
}

// sentinelOptions returns the upstream's Sentinel options, nil when Sentinel is off.
func sentinelOptions(s policy.Sentinel) *upstream.SentinelOptions {
	if !s.Enabled() {
		return nil
	}
	return &upstream.SentinelOptions{MasterSet: s.MasterSet, Addresses: s.Addresses, Password: s.Password}
}

// upstreamName is the upstream as the start-up log shows it: its addresses, or the master set and its sentinels.
func upstreamName(u policy.Upstream) string {
	if u.Sentinel.Enabled() {
		return "sentinel:" + u.Sentinel.MasterSet + "@" + strings.Join(u.Sentinel.Addresses, ",")
	}
	return strings.Join(u.Addresses, ",")
}

func policyNames(ps []*policy.Policy) string {
	names := make([]string, len(ps))
	for i, p := range ps {
		names[i] = p.Name
	}
	return strings.Join(names, ",")
}
