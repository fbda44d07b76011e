package proxy

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// AdminHandler serves the admin HTTP surface: /metrics (Prometheus), /healthz (the process is alive) and /readyz
// (listening, and the upstream answered at least once since start; it stays ready while Redis is slow or down,
// since cached entries keep being served: upstream health is a metric).
func (s *Server) AdminHandler() http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	reg.MustRegister(newStatsCollector(s))
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		if !s.Ready() {
			http.Error(w, "not ready: waiting for the listener and a first upstream answer", http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ready\n"))
	})
	return mux
}

// Ready reports whether featcache is listening and has reached the upstream once.
func (s *Server) Ready() bool {
	s.mu.Lock()
	listening := len(s.lns) > 0 && !s.closed
	s.mu.Unlock()
	return listening && s.reached.Load()
}

// statsCollector exports the request path's counters and the local tier's figures.
type statsCollector struct {
	s     *Server
	descs map[string]*prometheus.Desc
}

func newStatsCollector(s *Server) *statsCollector {
	d := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc("featcache_"+name, help, nil, nil)
	}
	return &statsCollector{s: s, descs: map[string]*prometheus.Desc{
		"hits":          d("hits_total", "Cached reads answered from memory while fresh."),
		"stale":         d("stale_hits_total", "Soft-stale entries served while a background refresh runs."),
		"stale_error":   d("stale_on_error_total", "Entries served past their hard TTL because the upstream failed (serve_stale)."),
		"misses":        d("misses_total", "Cached reads fetched from the upstream."),
		"bypass":        d("bypass_total", "Reads of keys no caching policy covers, forwarded."),
		"refreshes":     d("refreshes_total", "Background refreshes started."),
		"upreads":       d("upstream_reads_total", "Keys fetched from the upstream."),
		"forwarded":     d("forwarded_total", "Commands forwarded to the upstream."),
		"invalidations": d("write_invalidations_total", "Keys invalidated by writes through featcache."),
		"errors":        d("errors_total", "Error replies featcache produced itself."),
		"clients":       d("client_connections", "Connected clients."),
		"entries":       d("local_entries", "Entries in the local tier."),
		"evictions":     d("evictions_total", "Entries evicted from the local tier to make room."),
		"tracking":      d("tracking_up", "1 while server-assisted invalidation is established."),
		"rejected":      d("rejected_connections_total", "Connections refused by limits.max_clients."),
		"buffers":       d("client_buffer_bytes", "Client buffer bytes reserved from limits.max_clients_memory."),
		"disconnects": prometheus.NewDesc("featcache_client_limit_disconnects_total",
			"Clients disconnected by a limit, by reason.", []string{"reason"}, nil),
	}}
}

func (c *statsCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.descs {
		ch <- d
	}
}

func (c *statsCollector) Collect(ch chan<- prometheus.Metric) {
	st := &c.s.stats
	counter := func(name string, v int64) {
		ch <- prometheus.MustNewConstMetric(c.descs[name], prometheus.CounterValue, float64(v))
	}
	gauge := func(name string, v float64) {
		ch <- prometheus.MustNewConstMetric(c.descs[name], prometheus.GaugeValue, v)
	}
	counter("hits", st.Hits.Load())
	counter("stale", st.StaleHits.Load())
	counter("stale_error", st.StaleOnError.Load())
	counter("misses", st.Misses.Load())
	counter("bypass", st.Bypass.Load())
	counter("refreshes", st.Refreshes.Load())
	counter("upreads", st.UpstreamReads.Load())
	counter("forwarded", st.Forwarded.Load())
	counter("invalidations", st.Invalidations.Load())
	counter("errors", st.Errors.Load())
	gauge("clients", float64(c.s.clients.Load()))
	counter("rejected", st.Rejected.Load())
	gauge("buffers", float64(c.s.ClientMemory()))
	for reason, v := range map[string]int64{
		"protocol":       st.ProtocolErrors.Load(),
		"idle_timeout":   st.IdleTimeouts.Load(),
		"output_timeout": st.OutputTimeouts.Load(),
		"output_limit":   st.OutputLimits.Load(),
		"memory_limit":   st.MemoryLimits.Load(),
		"tls_handshake":  st.TLSHandshakeErrors.Load(),
	} {
		ch <- prometheus.MustNewConstMetric(c.descs["disconnects"], prometheus.CounterValue, float64(v), reason)
	}
	ls := c.s.cache.Stats()
	gauge("entries", float64(ls.Entries))
	counter("evictions", ls.Evictions)
	up := 0.0
	if _, ok := c.s.up.Tracking(); ok {
		up = 1
	}
	gauge("tracking", up)
}
