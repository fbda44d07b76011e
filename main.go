// Command featcache is a Redis-protocol caching proxy for ML feature serving: it answers feature reads from
// process memory, keeps that memory consistent with the Redis online store, and forwards everything else.
//
//	featcache -config config.yaml [-listen ADDR] [-upstream ADDR[,ADDR]] [-admin ADDR]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
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

// memoryHeadroom is what the Go memory limit allows above local.max_memory: connection buffers, fills in
// flight, the runtime itself.
const memoryHeadroom = 64 << 20

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "featcache:", err)
		os.Exit(1)
	}
}

func run() error {
	configPath := flag.String("config", "", "configuration file (YAML); without it every default applies")
	listen := flag.String("listen", "", "RESP listen address, overrides listen")
	upstreams := flag.String("upstream", "", "upstream address(es), comma-separated, override upstream.addresses")
	admin := flag.String("admin", "", "admin HTTP address (/metrics, /healthz, /readyz), overrides admin")
	flag.Parse()

	cfg := policy.Default()
	if *configPath != "" {
		var err error
		if cfg, err = policy.Load(*configPath); err != nil {
			return err
		}
	}
	if *listen != "" {
		cfg.Listen = *listen
	}
	if *upstreams != "" {
		cfg.Upstream.Addresses = strings.Split(*upstreams, ",")
	}
	if *admin != "" {
		cfg.Admin = *admin
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	slog.SetDefault(log)

	// freecache's buffer lives on the Go heap: without a limit the GC would let the heap grow to twice it.
	debug.SetMemoryLimit(cfg.Local.MaxMemory + memoryHeadroom)
	cache, err := localcache.New(localcache.Options{MaxMemory: cfg.Local.MaxMemory})
	if err != nil {
		return err
	}
	defer cache.Close()
	up, err := upstream.New(upstream.Options{
		Addresses: cfg.Upstream.Addresses,
		Username:  cfg.Upstream.Username,
		Password:  cfg.Upstream.Password,
		Conns:     cfg.Upstream.Conns,
		Timeout:   cfg.Upstream.Timeout,
		Tracking:  cfg.Upstream.Tracking,
		Prefixes:  policy.NewMatcher(cfg.Policies).TrackingPrefixes(),
		Cache:     cache,
		Logger:    log,
	})
	if err != nil {
		return err
	}
	defer up.Close()
	srv, err := proxy.New(proxy.Options{Config: cfg, Cache: cache, Upstream: up, Logger: log})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return err
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()

	var adminSrv *http.Server
	if cfg.Admin != "" {
		adminLn, err := net.Listen("tcp", cfg.Admin)
		if err != nil {
			return err
		}
		adminSrv = &http.Server{Handler: srv.AdminHandler(), ReadHeaderTimeout: 5 * time.Second}
		go adminSrv.Serve(adminLn)
	}
	log.Info("featcache started", "listen", ln.Addr().String(), "admin", cfg.Admin,
		"upstream", strings.Join(cfg.Upstream.Addresses, ","), "tracking", cfg.Upstream.Tracking,
		"max_memory", cfg.Local.MaxMemory, "policies", len(cfg.Policies))

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	select {
	case s := <-sig:
		log.Info("shutting down", "signal", s.String())
	case err := <-serveErr:
		if err != nil {
			return err
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if adminSrv != nil {
		adminSrv.Shutdown(ctx)
	}
	if err := srv.Shutdown(ctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	log.Info("featcache stopped")
	return nil
}
