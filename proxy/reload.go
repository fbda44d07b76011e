package proxy

import (
	"context"
	"errors"
	"slices"
	"strings"
	"time"

	"featcache/config"
)

// ReloadResult says what a reload applied and what it could not.
type ReloadResult struct {
	// Policies is the number of policies now in force.
	Policies int
	// TrackingChanged is true when the tracked BCAST prefixes changed.
	TrackingChanged bool
	// RestartNeeded names the changed settings that only a restart applies (config.Config.RestartFields); they
	// keep their running values.
	RestartNeeded []string
	// NextStart names the changed settings that only the warm-up at the next start reads
	// (config.Config.NextStartFields).
	NextStart []string
}

// ErrReloadUnavailable means the server was built without Options.Reload.
var ErrReloadUnavailable = errors.New("proxy: reload is not available (no configuration file)")

// coverage is one switch of the tracked prefixes: from since on, the prefixes in old may not have covered every
// key that the new ones do (see notBefore).
type coverage struct {
	since time.Time
	old   []string
}

// Reload reads the configuration again (Options.Reload) and applies what can change while running: policies,
// warm settings, log level and slow_command, limits.max_conn_age (for new connections), shutdown_delay and
// shutdown_timeout. An invalid configuration is rejected whole and logged, and the running one stays. Settings
// that need a restart keep their running values and are reported.
//
// When the new policies cache keys that tracking did not cover, tracking is switched to the new prefixes first
// (make before break, upstream.Client.SetPrefixes), and entries of those keys stored before the switch, which no
// invalidation guarded, are never served (localcache.Policy.NotBefore). Then the policies are swapped in one
// atomic store: every lookup from then on uses the new ones, so an entry is judged by its new policy's deadlines
// at its next lookup and a policy switched to cache: false stops being served from memory at once. If tracking
// with the new prefixes cannot be established while the current tracking is up, the reload is rejected.
func (s *Server) Reload() (ReloadResult, error) {
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	s.metrics.lastReload.Store(time.Now().Unix())
	res, err := s.reload()
	if err != nil {
		s.metrics.reloadsFailed.Add(1)
		s.metrics.lastReloadOK.Store(false)
		s.log.Error("reload: rejected, the running configuration stays", "err", err)
		return res, err
	}
	s.metrics.reloadsOK.Add(1)
	s.metrics.lastReloadOK.Store(true)
	s.log.Info("reload: applied", "policies", res.Policies, "tracking_prefixes_changed", res.TrackingChanged,
		"restart_needed", strings.Join(res.RestartNeeded, ","), "next_start", strings.Join(res.NextStart, ","))
	return res, nil
}

func (s *Server) reload() (ReloadResult, error) {
	if s.opt.Reload == nil {
		return ReloadResult{}, ErrReloadUnavailable
	}
	next, err := s.opt.Reload()
	if err != nil {
		return ReloadResult{}, err
	}
	running := s.cfg.Load()
	applied := next.WithRestartFields(running)
	if err := applied.Validate(); err != nil {
		return ReloadResult{}, err
	}
	res := ReloadResult{
		Policies:      len(applied.Policies),
		RestartNeeded: next.RestartFields(running),
		NextStart:     next.NextStartFields(running),
	}
	if enabled, _ := s.up.Tracking(); enabled {
		old := s.up.Prefixes()
		want := config.NewMatcher(applied.Policies).TrackingPrefixes()
		slices.Sort(want)
		if !slices.Equal(old, want) {
			ctx, cancel := context.WithTimeout(context.Background(), max(5*time.Second, 5*s.up.Timeout()))
			err := s.up.SetPrefixes(ctx, want)
			cancel()
			if err != nil {
				return ReloadResult{}, err
			}
			s.coverage = append(s.coverage, coverage{since: s.now(), old: old})
			res.TrackingChanged = true
		}
	}
	if s.hot.SetSize(applied.Warm.HotkeysSize) {
		s.log.Info("reload: hot-key tracker resized, its counts start afresh", "hotkeys_size", applied.Warm.HotkeysSize)
	}
	s.setPolicies(applied.Policies)
	// A key whose invalidations came from one stream may come from the other now (tracking.go): the clients
	// tracking through featcache start afresh.
	s.ctrack.Flushed()
	s.warmer.SetRate(applied.Warm.Rate)
	s.persister.SetConfig(persistConfig(applied))
	if s.opt.LogLevel != nil {
		s.opt.LogLevel.Set(applied.Log.Level)
	}
	s.cfg.Store(applied)
	return res, nil
}

// notBefore is the localcache.Policy.NotBefore of p: the last time some of p's keys started being tracked after
// a time when they were not, so that entries stored while nothing announced writes to them are never served. A
// policy whose keys were tracked at every switch gets the zero time. Keys are judged by the policy's literal
// prefix (a pattern's bytes before its first wildcard), which errs on the side of ignoring entries. Called under
// reloadMu, or before the server is shared.
func (s *Server) notBefore(p *config.Policy) time.Time {
	if !p.Cache {
		return time.Time{}
	}
	lit := config.NewMatcher([]*config.Policy{p}).TrackingPrefixes()
	var t time.Time
	for _, c := range s.coverage {
		if len(lit) == 1 && !covered(lit[0], c.old) && c.since.After(t) {
			t = c.since
		}
	}
	return t
}

// covered reports whether every key starting with prefix was tracked under the BCAST prefixes tracked. An empty
// list tracks every key (CLIENT TRACKING ON BCAST without PREFIX).
func covered(prefix string, tracked []string) bool {
	if len(tracked) == 0 {
		return true
	}
	for _, t := range tracked {
		if strings.HasPrefix(prefix, t) {
			return true
		}
	}
	return false
}

// Config returns the running configuration: the one the server started with, as reloads changed it. It must not
// be modified.
func (s *Server) Config() *config.Config { return s.cfg.Load() }
