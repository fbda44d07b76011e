// Command featcache is a Redis-protocol caching proxy for ML feature serving: it answers feature reads from
// process memory, keeps that memory consistent with the Redis online store, and forwards everything else.
//
//	featcache -config config.yaml [-listen ADDR] [-upstream ADDR[,ADDR]] [-admin ADDR]
//	featcache -config config.yaml -check
//	featcache -version
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
	"runtime"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"featcache/config"
	"featcache/localcache"
	"featcache/proxy"
	"featcache/upstream"
)

// memoryHeadroom is what featcache's resident set may take above local.max_memory and what clients reserved from
// limits.max_clients_memory: the tier's index, client baselines, fills in flight, garbage not yet collected, the
// runtime itself, and the binary's own pages.
const memoryHeadroom = 64 << 20

// uncountedMemory is the part of memoryHeadroom kept out of the Go memory limit, which counts only memory the Go
// runtime maps: the binary's text, rodata and pclntab pages (13 MiB resident, measured with go run ./bench memory)
// and the C library's in a cgo build (1.3 MiB). With a full tier the garbage collector keeps the runtime's memory
// near the limit, so without this margin the resident set would sit that much above local.max_memory + 64 MiB.
const uncountedMemory = 16 << 20

// memoryLimit is the Go memory limit for a tier of maxMemory bytes while clients reserve nothing.
func memoryLimit(maxMemory int64) int64 { return maxMemory + memoryHeadroom - uncountedMemory }

// version is featcache's version as -version prints it. A release sets it when building:
//
//	go build -trimpath -ldflags "-X main.version=v1.2.0" .
//
// Without it, -version prints what the Go toolchain recorded in the binary: the module version (from the VCS tag,
// or a pseudo-version of the commit), the commit and whether the tree was modified.
var version string

func main() {
	sig := make(chan os.Signal, 2)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	err := run(os.Args[1:], os.Stdout, os.Stderr, sig)
	var usage usageError
	switch {
	case err == nil:
	case errors.As(err, &usage):
		fmt.Fprintf(os.Stderr, "featcache: %v\nRun 'featcache -h' for usage.\n", err)
		os.Exit(2)
	default:
		fmt.Fprintln(os.Stderr, "featcache:", err)
		os.Exit(1)
	}
}

// usageError is a command line that featcache cannot run: an unknown flag, a bad flag value, a stray argument.
// main exits 2 for it, as the flag package does.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

// run is featcache: it parses args, loads and validates the configuration, serves until SIGTERM or SIGINT arrives
// on sig (SIGHUP reloads the configuration), then shuts down gracefully. Logs go to logw; what was asked for on the
// command line (-h, -version, -check) goes to stdout. Its steps follow, in the order it takes them.
func run(args []string, stdout, logw io.Writer, sig <-chan os.Signal) error {
	fl, err := parseFlags(args)
	if err != nil {
		return err
	}
	if fl.help {
		printUsage(stdout, fl.set)
		return nil
	}
	if fl.version {
		fmt.Fprintln(stdout, "featcache", versionString())
		return nil
	}
	cfg, err := fl.load()
	if err != nil {
		return err
	}
	tlsc, err := loadTLS(cfg)
	if err != nil {
		return err
	}
	if fl.check {
		printCheck(stdout, fl.configPath, cfg)
		return nil
	}
	log, level := newLogger(cfg.Log, logw)

	cache, err := newTier(cfg.Local)
	if err != nil {
		return err
	}
	defer cache.Close()
	up, err := newUpstream(cfg, tlsc.upstream, cache, log)
	if err != nil {
		return err
	}
	defer up.Close()
	srv, err := proxy.New(proxy.Options{Config: cfg, Cache: cache, Upstream: up, Logger: log, Reload: fl.load, LogLevel: level,
		MemoryLimitBase: memoryLimit(cfg.Local.MaxMemory), Version: versionString()})
	if err != nil {
		return err
	}
	ln, adminLn, err := listen(cfg, tlsc.server)
	if err != nil {
		srv.Close()
		return err
	}
	// Logged before serving: a client that is answered, or a probe that finds featcache ready, finds the line.
	logStarted(log, cfg, fl.configPath, tlsc, ln, adminLn)
	serveErr, adminSrv := serve(srv, ln, adminLn)
	srv.StartWarmup()

	stop, err := waitForStop(sig, srv, serveErr)
	if err != nil {
		return err
	}
	return shutdown(log, srv, adminSrv, stop, sig)
}

// flags is featcache's command line.
type flags struct {
	set        *flag.FlagSet
	configPath string
	listen     string
	upstreams  string
	admin      string
	adminGiven bool // -admin was given, "" included: "" turns the admin listener off
	check      bool
	version    bool
	help       bool // -h or -help: print the usage and exit
}

// parseFlags parses the command line; its errors are usageErrors.
func parseFlags(args []string) (*flags, error) {
	fl := &flags{set: flag.NewFlagSet("featcache", flag.ContinueOnError)}
	fs := fl.set
	fs.SetOutput(io.Discard) // errors are returned; -h prints the usage to stdout in run
	fs.StringVar(&fl.configPath, "config", "", "configuration `FILE` (YAML); without it every default applies (see config.yaml)")
	fs.StringVar(&fl.listen, "listen", "", "RESP listen `ADDR` (host:port), overrides listen")
	fs.StringVar(&fl.upstreams, "upstream", "", "upstream `ADDR[,ADDR]`, overrides upstream.addresses (and upstream.sentinel)")
	fs.StringVar(&fl.admin, "admin", "", "admin HTTP `ADDR` (/metrics, /healthz, /readyz), overrides admin; \"\" turns it off")
	fs.BoolVar(&fl.check, "check", false, "check the configuration (the file, its password and TLS files, the flags) and exit:\n"+
		"0 and one OK line when featcache could start with it, else 1 and the error naming the field;\n"+
		"nothing is listened on and Redis is not contacted")
	fs.BoolVar(&fl.version, "version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fl.help = true
			return fl, nil
		}
		return nil, usageError{err}
	}
	fs.Visit(func(f *flag.Flag) { fl.adminGiven = fl.adminGiven || f.Name == "admin" })
	if fs.NArg() > 0 {
		return nil, usageError{fmt.Errorf("unexpected argument %q: flags come first, and the configuration file is given "+
			"with -config %s", fs.Arg(0), fs.Arg(0))}
	}
	return fl, nil
}

// load reads the file and applies the flags; a reload (SIGHUP, CACHE RELOAD) calls it again. The flags replace
// the file's values before they are judged: a file's listen on every interface is no protected-mode refusal when
// -listen names a loopback address.
func (fl *flags) load() (*config.Config, error) {
	var replaced []string
	override := func(cfg *config.Config) {
		if fl.listen != "" {
			cfg.Listen = fl.listen
		}
		if fl.upstreams != "" {
			cfg.Upstream.Addresses = strings.Split(fl.upstreams, ",")
			cfg.Upstream.Sentinel = config.Sentinel{}
		}
		if fl.adminGiven {
			cfg.Admin = fl.admin
		}
	}
	if fl.listen != "" {
		replaced = append(replaced, "listen")
	}
	if fl.upstreams != "" {
		replaced = append(replaced, "upstream.addresses", "upstream.sentinel")
	}
	if fl.adminGiven {
		replaced = append(replaced, "admin")
	}
	cfg := config.Default()
	if fl.configPath != "" {
		var err error
		if cfg, err = config.LoadOverridden(fl.configPath, override, replaced...); err != nil {
			return nil, err
		}
	}
	override(cfg)
	return cfg, cfg.Validate()
}

// tlsConfigs are the TLS configurations the configuration's files make: nil where TLS is off.
type tlsConfigs struct {
	server   *tls.Config // the RESP listener's
	upstream *tls.Config // featcache's connections to Redis
}

// loadTLS reads the configuration's certificates and keys.
func loadTLS(cfg *config.Config) (tlsConfigs, error) {
	server, err := cfg.TLS.ServerConfig()
	if err != nil {
		return tlsConfigs{}, err
	}
	upstreamTLS, err := cfg.Upstream.TLS.ClientConfig()
	if err != nil {
		return tlsConfigs{}, err
	}
	return tlsConfigs{server: server, upstream: upstreamTLS}, nil
}

// printCheck writes -check's OK line: the file, the listeners, the upstream and how featcache authenticates to it.
func printCheck(stdout io.Writer, configPath string, cfg *config.Config) {
	file := configPath
	if file == "" {
		file = "the defaults (no -config)"
	}
	auth := "without a password"
	if cfg.Upstream.Password != "" {
		auth = "with a password"
	}
	if cfg.Upstream.Username != "" {
		auth = "as user " + cfg.Upstream.Username + " " + auth
	}
	fmt.Fprintf(stdout, "featcache: configuration OK: %s (listen %s, admin %s, upstream %s %s, %d policies)\n",
		file, cfg.Listen, orNone(cfg.Admin), upstreamName(cfg.Upstream), auth, len(cfg.Policies))
}

// newLogger makes the process's logger, writing to logw, and sets it as slog's default. Its level is a LevelVar
// so that a reload can change it.
func newLogger(lc config.Log, logw io.Writer) (*slog.Logger, *slog.LevelVar) {
	level := new(slog.LevelVar)
	level.Set(lc.Level)
	hopts := &slog.HandlerOptions{Level: level}
	var handler slog.Handler = slog.NewTextHandler(logw, hopts)
	if lc.Format == "json" {
		handler = slog.NewJSONHandler(logw, hopts)
	}
	log := slog.New(handler)
	slog.SetDefault(log)
	return log, level
}

// newTier sets the Go memory limit and makes the local tier.
func newTier(lc config.Local) (*localcache.Cache, error) {
	// freecache's buffer lives on the Go heap: without a limit the GC would let the heap grow to twice it. Client
	// buffers beyond their baselines are reserved from limits.max_clients_memory; the server raises the limit by
	// what is reserved (MemoryLimitBase), so it is memoryLimit(local.max_memory) while clients hold little.
	debug.SetMemoryLimit(memoryLimit(lc.MaxMemory))
	return localcache.New(localcache.Options{MaxMemory: lc.MaxMemory,
		Admission: localcache.AdmissionOptions{Threshold: lc.AdmissionThreshold}})
}

// newUpstream makes the upstream client, which invalidates cache.
func newUpstream(cfg *config.Config, upstreamTLS *tls.Config, cache *localcache.Cache, log *slog.Logger) (*upstream.Client, error) {
	return upstream.New(proxy.UpstreamOptions(cfg, upstreamTLS, cache, log))
}

// listen opens the RESP listener (with TLS when serverTLS is set) and the admin listener (nil when admin is off).
// Both listeners are open before anything is served, so that a taken port stops featcache at once, naming which
// listener failed.
func listen(cfg *config.Config, serverTLS *tls.Config) (ln, adminLn net.Listener, err error) {
	ln, err = listenOn("RESP listener", "listen", cfg.Listen)
	if err != nil {
		return nil, nil, err
	}
	if serverTLS != nil {
		ln = tls.NewListener(ln, serverTLS)
	}
	if cfg.Admin != "" {
		if adminLn, err = listenOn("admin listener", "admin", cfg.Admin); err != nil {
			ln.Close()
			return nil, nil, err
		}
	}
	return ln, adminLn, nil
}

// serve serves RESP on ln and, when adminLn is set, the admin HTTP handler on it, each in its own goroutine.
// Serve's error arrives on serveErr; adminSrv is nil without an admin listener.
func serve(srv *proxy.Server, ln, adminLn net.Listener) (serveErr <-chan error, adminSrv *http.Server) {
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	if adminLn != nil {
		adminSrv = &http.Server{Handler: srv.AdminHandler(), ReadHeaderTimeout: 5 * time.Second}
		go adminSrv.Serve(adminLn)
	}
	return errc, adminSrv
}

// logStarted logs what featcache started with: its listeners, its upstream and its configuration.
func logStarted(log *slog.Logger, cfg *config.Config, configPath string, tlsc tlsConfigs, ln, adminLn net.Listener) {
	adminAddr := ""
	if adminLn != nil {
		adminAddr = adminLn.Addr().String()
	}
	log.Info("featcache started", "listen", ln.Addr().String(), "tls", tlsc.server != nil,
		"client_certificates", cfg.TLS.ClientCAFile != "", "auth", cfg.Password != "", "admin", adminAddr,
		"upstream", upstreamName(cfg.Upstream), "upstream_tls", tlsc.upstream != nil,
		"tracking", cfg.Upstream.Tracking, "max_memory", cfg.Local.MaxMemory, "policies", len(cfg.Policies),
		"config", configPath)
	log.Info("config", "policies", policyNames(cfg.Policies), "warm_sources", len(cfg.Warm.Sources),
		"ready_after", cfg.Warm.ReadyAfter, "warm_rate", cfg.Warm.Rate, "hotkeys_file", cfg.Warm.HotkeysFile,
		"hotkeys_zset", cfg.Warm.HotkeysZset, "max_conn_age", cfg.Limits.MaxConnAge,
		"shutdown_delay", cfg.ShutdownDelay, "shutdown_timeout", cfg.ShutdownTimeout, "log_level", cfg.Log.Level.String(),
		"upstream_auth", cfg.Upstream.Password != "", "upstream_user", cfg.Upstream.Username)
}

// waitForStop serves until SIGTERM or SIGINT arrives on sig, reloading the configuration on each SIGHUP, and
// returns the signal that stops featcache. When Serve ends without an error, featcache stops as for SIGTERM; when
// it fails, its error is returned.
func waitForStop(sig <-chan os.Signal, srv *proxy.Server, serveErr <-chan error) (os.Signal, error) {
	for {
		select {
		case s := <-sig:
			if s == syscall.SIGHUP {
				srv.Reload() // logs what it applied, or why it rejected the file
				continue
			}
			return s, nil
		case err := <-serveErr:
			if err != nil {
				return nil, err
			}
			return syscall.SIGTERM, nil
		}
	}
}

// shutdown stops featcache gracefully after the signal stop: unready at once while serving on for shutdown_delay
// (SIGINT, or a second signal on sig, skips the rest of it), then stop accepting and finish every pipeline within
// shutdown_timeout, write the hot keys, stop the admin server. run's deferred calls then close the upstream and
// the tier.
func shutdown(log *slog.Logger, srv *proxy.Server, adminSrv *http.Server, stop os.Signal, sig <-chan os.Signal) error {
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

// upstreamName is the upstream as the start-up log shows it: its addresses, or the master set and its sentinels.
func upstreamName(u config.Upstream) string {
	if u.Sentinel.Enabled() {
		return "sentinel:" + u.Sentinel.MasterSet + "@" + strings.Join(u.Sentinel.Addresses, ",")
	}
	return strings.Join(u.Addresses, ",")
}

func policyNames(ps []*config.Policy) string {
	names := make([]string, len(ps))
	for i, p := range ps {
		names[i] = p.Name
	}
	return strings.Join(names, ",")
}

// listenOn opens a TCP listener; its error names the listener (what), its address and the field and flag that set
// it, since "address already in use" alone does not say which of featcache's two ports is taken.
func listenOn(what, field, addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err == nil {
		return ln, nil
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Err != nil {
		err = op.Err // "bind: address already in use": the address is named below
	}
	hint := fmt.Sprintf("set %s in the configuration, or -%s, to a free address", field, field)
	if field == "admin" {
		hint += `, or admin: "" to run without the admin listener`
	}
	return nil, fmt.Errorf("%s %s: %w (%s)", what, addr, err, hint)
}

// versionString is the version -version prints: the release version set with -ldflags, else the module version
// the Go toolchain recorded; then the commit, its time and whether the tree was modified, when recorded, and the
// Go version and platform.
func versionString() string {
	v := version
	var details []string
	if bi, ok := debug.ReadBuildInfo(); ok {
		if v == "" {
			v = bi.Main.Version
		}
		var rev, at, modified string
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.time":
				at = s.Value
			case "vcs.modified":
				modified = s.Value
			}
		}
		if rev != "" {
			details = append(details, "commit "+rev[:min(len(rev), 12)])
		}
		if at != "" {
			details = append(details, at)
		}
		if modified == "true" {
			details = append(details, "modified")
		}
	}
	if v == "" {
		v = "(devel)"
	}
	details = append(details, runtime.Version()+" "+runtime.GOOS+"/"+runtime.GOARCH)
	return v + " (" + strings.Join(details, ", ") + ")"
}

// printUsage writes -h's text: what featcache is, how it is called, and its flags.
func printUsage(w io.Writer, fs *flag.FlagSet) {
	fmt.Fprint(w, `featcache: a Redis-protocol caching proxy for ML feature serving.

Usage:
  featcache -config FILE [-listen ADDR] [-upstream ADDR[,ADDR]] [-admin ADDR]
  featcache -config FILE -check
  featcache -version

The flags override the file. SIGHUP reloads the file; SIGTERM drains and stops (SIGINT without the delay).
Every field of the file is documented, with its default, in config.yaml.

Flags:
`)
	fs.SetOutput(w)
	fs.PrintDefaults()
	fs.SetOutput(io.Discard)
}

// orNone is s, or "none" when s is empty (a disabled listener).
func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}
