package config

import (
	"fmt"
	"time"

	"gopkg.in/yaml.v3"
)

// Defaults of the warm section.
const (
	// DefaultWarmRate is warm.rate when the file gives none: keys read from the upstream per second, at most, by
	// warm-ups.
	DefaultWarmRate = 20000
	// DefaultWarmReadyTimeout is warm.ready_timeout when the file gives none.
	DefaultWarmReadyTimeout = 2 * time.Minute
	// DefaultHotkeysSize is warm.hotkeys_size when the file gives none.
	DefaultHotkeysSize = 10000
	// MaxHotkeysSize is the largest warm.hotkeys_size accepted.
	MaxHotkeysSize = 1000000
	// DefaultHotkeysInterval is warm.hotkeys_interval when the file gives none.
	DefaultHotkeysInterval = time.Minute
	// MinHotkeysInterval is the shortest warm.hotkeys_interval accepted.
	MinHotkeysInterval = time.Second
)

// Warm configures warm starts (loading lists of keys into the local tier before and after /readyz turns 200) and
// the hot-key list (the keys traffic proved hot, kept so that the next instance warms from them).
type Warm struct {
	// Sources are read at start, in order, after the hot-key lists (HotkeysFile, then HotkeysZset). Default none.
	Sources []WarmSource
	// ReadyAfter is how many keys the start-up warm-up must have loaded before /readyz answers 200; when the
	// sources hold fewer keys, the end of the sources is enough. Default 0: readiness does not wait for warming.
	ReadyAfter int
	// ReadyTimeout bounds how long readiness waits for ReadyAfter keys (the warm-up goes on in the background
	// afterwards); 0 means no bound. Default DefaultWarmReadyTimeout.
	ReadyTimeout time.Duration
	// Rate is the most keys per second that warm-ups read from the upstream, before and after ready, so that
	// warming never floods the store. At least 1. Default DefaultWarmRate.
	Rate int
	// HotkeysFile, if not "", is where the hot-key list is written (periodically and at shutdown) and read as the
	// first source at start. Default "".
	HotkeysFile string
	// HotkeysZset, if not "", is the Redis sorted set the hot-key list is also written to (score: requests counted)
	// and read as a source at start, since a pod's disk is lost with it. Default "".
	HotkeysZset string
	// HotkeysSize is how many keys the hot-key tracker keeps per policy, and the most keys written; 0 turns the
	// tracker off. 0 to MaxHotkeysSize. Default DefaultHotkeysSize.
	HotkeysSize int
	// HotkeysInterval is how often the hot-key list is written, and how often its counts are halved so that it
	// follows what is hot now. At least MinHotkeysInterval. Default DefaultHotkeysInterval.
	HotkeysInterval time.Duration
	// HotkeysTouch, when greater than 0, is how many hot keys per second featcache TOUCHes on the upstream while
	// that upstream evicts by LRU or LFU (maxmemory-policy *-lru or *-lfu), because reads featcache answers from
	// memory never reach Redis and would let it evict the hottest keys first. Default 0: off.
	HotkeysTouch int
}

// WarmSource is one list of keys to warm from, hottest first: exactly one of File and Zset is set.
type WarmSource struct {
	// File is a text file with one key per line (see docs/operations.md, Warm starts, for quoting).
	File string
	// Zset is a Redis sorted set whose members are keys; the highest score comes first.
	Zset string
}

// String describes the source as CACHE WARM takes it: "file PATH" or "zset KEY".
func (s WarmSource) String() string {
	if s.File != "" {
		return "file " + s.File
	}
	return "zset " + s.Zset
}

func (w *Warm) decode(n *yaml.Node) error {
	return decodeSection(n, "warm", fieldTable{
		"sources": func(f field, _ string) (err error) {
			w.Sources, err = decodeWarmSources(f.val)
			return err
		},
		"ready_after":      into(&w.ReadyAfter, intValue),
		"ready_timeout":    into(&w.ReadyTimeout, durationValue),
		"rate":             into(&w.Rate, intValue),
		"hotkeys_file":     into(&w.HotkeysFile, stringValue),
		"hotkeys_zset":     into(&w.HotkeysZset, stringValue),
		"hotkeys_size":     into(&w.HotkeysSize, intValue),
		"hotkeys_interval": into(&w.HotkeysInterval, durationValue),
		"hotkeys_touch":    into(&w.HotkeysTouch, intValue),
	})
}

// decodeWarmSources decodes warm.sources: a list of {file: PATH} or {zset: KEY} mappings. A null list is none.
func decodeWarmSources(n *yaml.Node) ([]WarmSource, error) {
	n = resolve(n)
	if isNull(n) || n.Kind == yaml.SequenceNode && len(n.Content) == 0 {
		return nil, nil
	}
	if n.Kind != yaml.SequenceNode {
		return nil, fmt.Errorf("warm.sources: expected a list such as [{file: \"/path\"}, {zset: \"key\"}], got %s (line %d)", kindName(n), n.Line)
	}
	return decodeItems(n, decodeWarmSource)
}

// decodeWarmSource decodes the i-th item of warm.sources.
func decodeWarmSource(item *yaml.Node, i int) (WarmSource, error) {
	where := fmt.Sprintf("warm.sources[%d]", i)
	var s WarmSource
	fs, err := decodeFields(item, where, ".", fieldTable{
		"file": into(&s.File, stringValue),
		"zset": into(&s.Zset, stringValue),
	})
	if err != nil {
		return s, err
	}
	if len(fs) != 1 {
		return s, fmt.Errorf("%s: give exactly one of file and zset (line %d)", where, resolve(item).Line)
	}
	if s.File == "" && s.Zset == "" {
		return s, fmt.Errorf("%s: %s must not be empty (line %d)", where, fs[0].name, fs[0].key.Line)
	}
	return s, nil
}

// validate checks the warm section's values.
func (w *Warm) validate() error {
	for i, s := range w.Sources {
		if (s.File == "") == (s.Zset == "") {
			return fmt.Errorf("warm.sources[%d]: give exactly one of file and zset", i)
		}
	}
	switch {
	case w.ReadyAfter < 0:
		return fmt.Errorf("warm.ready_after: must not be negative, got %d", w.ReadyAfter)
	case w.ReadyTimeout < 0:
		return fmt.Errorf("warm.ready_timeout: must not be negative, got %q", formatDuration(w.ReadyTimeout))
	case w.Rate < 1:
		return fmt.Errorf("warm.rate: must be at least 1 key per second, got %d", w.Rate)
	case w.HotkeysSize < 0 || w.HotkeysSize > MaxHotkeysSize:
		return fmt.Errorf("warm.hotkeys_size: must be between 0 (off) and %d, got %d", MaxHotkeysSize, w.HotkeysSize)
	case w.HotkeysInterval < MinHotkeysInterval:
		return fmt.Errorf("warm.hotkeys_interval: must be at least 1s, got %q", formatDuration(w.HotkeysInterval))
	case w.HotkeysTouch < 0:
		return fmt.Errorf("warm.hotkeys_touch: must not be negative, got %d", w.HotkeysTouch)
	case w.HotkeysSize == 0 && (w.HotkeysFile != "" || w.HotkeysZset != "" || w.HotkeysTouch > 0):
		return fmt.Errorf("warm.hotkeys_size: 0 turns the hot-key tracker off, so hotkeys_file, hotkeys_zset and hotkeys_touch have nothing to write or touch")
	}
	return nil
}
