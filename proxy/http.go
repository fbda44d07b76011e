package proxy

import (
	"net/http"
	"net/http/pprof"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// AdminHandler serves the admin HTTP surface: /metrics (Prometheus: featcache's metrics, Go runtime and process
// metrics), /healthz (the process is alive), /readyz (see Ready) and, with admin_pprof, /debug/pprof/.
func (s *Server) AdminHandler() http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	reg.MustRegister(newStatsCollector(s), s.metrics.upstream)
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		if ok, why := s.readiness(); !ok {
			http.Error(w, "not ready: "+why, http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ready\n"))
	})
	if s.opt.Config.AdminPprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	return mux
}

// Ready reports whether featcache should receive traffic (/readyz answers 200): it is listening and not draining,
// the upstream answered at least once since start, and the start-up warm-up loaded warm.ready_after keys (or read
// all its sources, or ran for warm.ready_timeout). Once ready it stays ready while Redis is slow or down, since
// cached entries, and serve_stale policies, keep answering: upstream health is featcache_upstream_up.
func (s *Server) Ready() bool {
	ok, _ := s.readiness()
	return ok
}

// readiness is Ready with the reason when not ready.
func (s *Server) readiness() (bool, string) {
	s.mu.Lock()
	listening := len(s.lns) > 0 && !s.closed
	s.mu.Unlock()
	switch {
	case s.draining.Load():
		return false, "shutting down"
	case !listening:
		return false, "not listening yet"
	case !s.reached.Load() && !s.up.Reached():
		return false, "waiting for a first answer from the upstream"
	case !s.warmer.Ready():
		ws := s.warmer.Stats()
		return false, "warming up: " + strconv.FormatInt(ws.StartupLoaded, 10) + " of " + strconv.Itoa(s.opt.Config.Warm.ReadyAfter) + " keys loaded"
	}
	return true, ""
}
