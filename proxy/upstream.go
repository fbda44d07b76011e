package proxy

import (
	"crypto/tls"
	"log/slog"

	"featcache/config"
	"featcache/upstream"
)

// UpstreamOptions are the options of the upstream client as cfg's upstream section and policies set them: cache
// receives the invalidations of the policies' tracking prefixes, and tlsCfg (upstream.tls's client configuration)
// secures the connections when not nil.
func UpstreamOptions(cfg *config.Config, tlsCfg *tls.Config, cache upstream.Invalidator, log *slog.Logger) upstream.Options {
	var sentinel *upstream.SentinelOptions
	if s := cfg.Upstream.Sentinel; s.Enabled() {
		sentinel = &upstream.SentinelOptions{MasterSet: s.MasterSet, Addresses: s.Addresses, Password: s.Password}
	}
	return upstream.Options{
		Addresses:      cfg.Upstream.Addresses,
		Sentinel:       sentinel,
		Username:       cfg.Upstream.Username,
		Password:       cfg.Upstream.Password,
		TLS:            tlsCfg,
		Conns:          cfg.Upstream.Conns,
		Timeout:        cfg.Upstream.Timeout,
		CommandTimeout: cfg.Upstream.CommandTimeout,
		Tracking:       cfg.Upstream.Tracking,
		Prefixes:       config.NewMatcher(cfg.Policies).TrackingPrefixes(),
		Cache:          cache,
		Logger:         log,
	}
}
