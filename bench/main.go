// Command bench is featcache's end-to-end benchmark: it starts redis-server, featcache and (when installed)
// twemproxy on free loopback ports, seeds Redis with a feature-store key space, drives every target with the
// same Zipf-distributed trace over raw RESP connections in interleaved rounds, runs redis-benchmark against the
// same servers, and writes results.md, results.json and latency.png into a results folder.
//
//	go run ./bench [-profile standard|hit|pipeline|passthrough|zipf|remote|custom] [flags]
//	make bench                  # the standard profile, under 5 minutes on 2 cores
//	go run ./bench relay -listen ADDR -upstream ADDR -delay 500us    # the delay relay on its own
//	go run ./bench floor -listen ADDR   # the floor (a minimal GET-from-freecache server) on its own
//	go run ./bench floor -epoll -listen ADDR   # the same server on one thread's epoll loop
//	go run ./bench report DIR   # rewrite DIR/results.md and DIR/latency.png from DIR/results.json
//	go run ./bench staleness    # time from a write to Redis (or through another featcache) until featcache serves it
//	go run ./bench tracking     # CLIENT TRACKING through featcache next to Redis: staleness, invalidations/s, memory per key
//	go run ./bench feast        # Feast's layout and read pattern (pipelined HMGET), featcache next to direct Redis
//	go run ./bench memory       # where featcache's resident set goes with a full tier, phase by phase
//	go run ./bench admission    # the tier with and without its admission filter against an exact LRU, on Zipf traces
//	make feast-remote           # the same with Redis 0.5 ms away each way, and open-loop phases
//
// Profiles are named presets of the workload flags; a flag given on the command line wins over the preset.
//
//	hit          GET of 1 KiB values, 10,000 keys all cached (prefilled), 50 connections, no pipelining
//	pipeline     the same with -pipeline 16
//	passthrough  SET of 1 KiB values: featcache's write pass-through against twemproxy and Redis
//	zipf         GETs, Zipf 1.1 over 1,000,000 feature bundles of 1-2 KiB, local.max_memory 256MB: hit ratio
//	             against an exact LRU of the same size, RSS, GC
//	remote       zipf with 5% 16 KiB embeddings, Redis 0.5 ms away each way for every target (a store in
//	             another zone), then open-loop phases at 25%, 50% and 90% of direct Redis's throughput:
//	             featcache's tail latency against the direct client's at the same offered load
//	standard     hit, pipeline, passthrough, zipf and remote in turn, scaled down (250,000 keys and 64MB for zipf
//	             and remote, 3 rounds of 2 s, 3 open-loop rounds of 2 s); redis-benchmark runs with hit only.
//	             results.md lists each step's exact command line.
//	custom       the flags as given (the default)
//
// -cluster N adds a featcache in front of a Redis Cluster of N masters, "featcache-cluster", measured in the same
// rounds as the others (bench/cluster.go); the remote step of the standard profile is skipped then.
//
// Workload flags: -keys N (key indexes 0..N-1; index i is "emb:{i}", 16 KiB, for a share -emb-share of the
// indexes, else "feat:{i}", 1-2 KiB drawn from i or exactly -value-size bytes), -zipf S (exponent > 1 of the key
// choice, index 0 the most popular; 0 = uniform), -writes F (share of SETs), -mget N (keys per read; 1 sends
// GET), -conns, -pipeline (requests in flight per connection), -duration or -requests (per target per round),
// -rounds, -warmup, -prefill (one GET of every key, least popular first, through featcache and -target endpoints
// before the warm-up), -seed.
//
// Targets: redis-server directly; featcache, built from this module (or -featcache BINARY|DIR), run with
// -max-memory as local.max_memory and policies caching "feat:", "emb:" and redis-benchmark's "key:" keys;
// twemproxy (-twemproxy auto|on|off|PATH); and any -target name=host:port, seeded through its own address.
// -redis-benchmark, -rb-keys, -rb-requests
// and -rb-rounds control the redis-benchmark runs; -alloc-requests the allocation phase; -out the results folder
// (default bench/results/<timestamp>).
//
// Pinning (-pin, default on with two or more CPUs): the servers run under taskset -c -server-cpus (0) and this
// program re-executes itself under taskset -c -client-cpus (1), so its GOMAXPROCS is 1 and the load generator,
// redis-benchmark and the bench's bookkeeping share one core that the measured server never runs on.
//
// A remote store (-remote-delay D, the remote profile; bench/netns.go): with -delay-mode auto (the default) or
// netem, the bench re-executes itself inside a network namespace of its own, featcache-bench-<pid>, where
// redis-server, featcache and the load generator all run on 127.0.0.1, and while a delayed profile runs, lo has a
// prio qdisc whose netem band delays only the TCP packets to and from Redis's port, by D each way. The kernel holds
// the packets: no user-space CPU is spent on the delay. The parent process waits outside and deletes the namespace
// when the run ends, Ctrl-C included. Where the namespace or the qdiscs cannot be made (no ip or tc, not root, a
// kernel without sch_prio or sch_netem), -delay-mode auto falls back to the user-space relay (relay.go), which runs
// on the server core (-relay-cpus moves it) and competes with the measured server; the report gives its CPU per
// round. The progress lines and results.md say which of the two ran, and why; a PING to Redis must show the delay.
//
// Open-loop phases (-open-loads 25%,50%,90%; bench/openloop.go) follow a profile's rounds: Poisson arrivals at
// each rate, the same schedule for every target, a pool of -open-conns connections per target, latency from each
// request's intended send time (no coordinated omission), and featcache's requests classified hit, stale or miss
// by a CACHE EXPLAIN ahead of every -open-mark-th one. Shares are of direct Redis's median closed-loop throughput
// in the same run; -open-duration and -open-rounds default to -duration and -rounds.
//
// The report: per target, throughput and p50/p95/p99/p99.9 latency (medians across rounds, targets
// interleaved within each round so machine drift hits all alike); for featcache the split of hits, stale serves
// and misses, upstream reads per 1,000 requests (what the store is spared), CPU seconds and µs per request,
// peak RSS, heap allocations per cached GET end to end, GC pauses; the exact LRU's hit ratio for the same trace
// and memory; the open-loop tables per rate (and latency per answer class); redis-benchmark's figures; and the
// machine. results.md ends with how each figure is measured.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

func main() {
	var err error
	switch {
	case len(os.Args) > 1 && os.Args[1] == "relay":
		err = runRelay(os.Args[2:])
	case len(os.Args) > 1 && os.Args[1] == "floor":
		err = runFloor(os.Args[2:])
	case len(os.Args) > 2 && os.Args[1] == "report":
		err = rewriteReport(os.Args[2])
	case len(os.Args) > 1 && os.Args[1] == "staleness":
		err = runStaleness(os.Args[2:])
	case len(os.Args) > 1 && os.Args[1] == "tracking":
		err = runTracking(os.Args[2:])
	case len(os.Args) > 1 && os.Args[1] == "feast":
		err = runFeast(os.Args[2:])
	case len(os.Args) > 1 && os.Args[1] == "memory":
		err = runMemory(os.Args[2:])
	case len(os.Args) > 1 && os.Args[1] == "admission":
		err = runAdmission(os.Args[2:])
	default:
		err = run(os.Args[1:])
	}
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	var child childExit
	if errors.As(err, &child) {
		os.Exit(int(child)) // the child has reported its error
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// settings are the knobs of one profile run; flags bind to them and presets set them.
type settings struct {
	Profile        string        `json:"profile"`
	Workload       workload      `json:"workload"`
	Conns          int           `json:"conns"`
	Pipeline       int           `json:"pipeline"`
	Duration       time.Duration `json:"duration_ns"`
	Requests       int64         `json:"requests"`
	Rounds         int           `json:"rounds"`
	Warmup         time.Duration `json:"warmup_ns"`
	Prefill        bool          `json:"prefill"`
	MaxMemory      size          `json:"max_memory"`
	RemoteDelay    time.Duration `json:"remote_delay_ns"`
	NetemJitter    time.Duration `json:"netem_jitter_ns,omitempty"`
	Twemproxy      string        `json:"twemproxy"`
	Floor          bool          `json:"floor"`
	FloorEpoll     bool          `json:"floor_epoll,omitempty"`
	Targets        targetList    `json:"targets"`
	RedisBenchmark bool          `json:"redis_benchmark"`
	RBKeys         int           `json:"rb_keys"`
	RBRequests     int           `json:"rb_requests"`
	RBRounds       int           `json:"rb_rounds"`
	AllocRequests  int64         `json:"alloc_requests"`
	Cluster        int           `json:"cluster,omitempty"`
	Open           openSettings  `json:"open_loop"`
}

func defaultSettings() settings {
	return settings{
		Profile:  "custom",
		Workload: workload{Keys: 1_000_000, EmbShare: 0.05, Zipf: 1.1, Mget: 1, Seed: 1},
		Conns:    50, Pipeline: 1, Duration: 10 * time.Second, Rounds: 5, Warmup: 5 * time.Second,
		MaxMemory: mustSize("256MB"), Twemproxy: "auto",
		RedisBenchmark: true, RBKeys: 100_000, RBRequests: 200_000, RBRounds: 3,
		AllocRequests: 200_000,
		Open:          openSettings{Conns: 100, Mark: 4},
	}
}

// invocation holds the flags that are about the run as a whole, not about one profile.
type invocation struct {
	out         string
	pin         bool
	serverCPUs  string
	relayCPUs   string
	delayMode   string
	clientCPUs  string
	featcache   string
	redisServer string
	cpuProfile  string
	fcProfile   string
}

func newFlagSet(s *settings, inv *invocation) *flag.FlagSet {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.StringVar(&s.Profile, "profile", s.Profile, "preset: standard, hit, pipeline, passthrough, zipf, remote or custom")
	w := &s.Workload
	fs.IntVar(&w.Keys, "keys", w.Keys, "number of keys seeded and read")
	fs.Float64Var(&w.EmbShare, "emb-share", w.EmbShare, "share of keys that are 16 KiB embeddings (emb:{i})")
	fs.IntVar(&w.ValueSize, "value-size", w.ValueSize, "size of every feature bundle in bytes; 0 = 1-2 KiB drawn per key")
	fs.Float64Var(&w.Zipf, "zipf", w.Zipf, "Zipf exponent of the key choice (> 1); 0 = uniform")
	fs.Float64Var(&w.Writes, "writes", w.Writes, "share of requests that are SETs")
	fs.IntVar(&w.Mget, "mget", w.Mget, "keys per read request; 1 sends GET, more send MGET")
	fs.Uint64Var(&w.Seed, "seed", w.Seed, "seed of the trace and of the key families")
	fs.IntVar(&s.Conns, "conns", s.Conns, "connections per target")
	fs.IntVar(&s.Pipeline, "pipeline", s.Pipeline, "requests in flight per connection")
	fs.DurationVar(&s.Duration, "duration", s.Duration, "length of each target's turn in each round")
	fs.Int64Var(&s.Requests, "requests", s.Requests, "requests per target per round instead of -duration (if > 0)")
	fs.IntVar(&s.Rounds, "rounds", s.Rounds, "rounds; every target runs once per round, figures are medians")
	fs.DurationVar(&s.Warmup, "warmup", s.Warmup, "unmeasured load per target before the first round")
	fs.BoolVar(&s.Prefill, "prefill", s.Prefill, "GET every key once through featcache (and -target endpoints) before the warm-up")
	fs.Var(&s.MaxMemory, "max-memory", "featcache local.max_memory, and the simulated LRU's size")
	fs.DurationVar(&s.RemoteDelay, "remote-delay", s.RemoteDelay, "if > 0, Redis is this far away each way: netem in the bench's namespace, or the relay (-delay-mode)")
	fs.DurationVar(&s.RemoteDelay, "relay-delay", s.RemoteDelay, "the same as -remote-delay (its former name)")
	fs.DurationVar(&s.NetemJitter, "netem-jitter", s.NetemJitter, "with netem, jitter added to -remote-delay (netem may then reorder a stream's packets)")
	o := &s.Open
	fs.Var(&o.Loads, "open-loads", "open-loop phases after the rounds, at these arrival rates: shares of direct Redis's "+
		"closed-loop throughput (25%) or requests per second (5000), comma-separated; empty: none")
	fs.DurationVar(&o.Duration, "open-duration", o.Duration, "length of each target's open-loop phase per rate and round (0: -duration)")
	fs.IntVar(&o.Rounds, "open-rounds", o.Rounds, "open-loop rounds (0: -rounds)")
	fs.IntVar(&o.Conns, "open-conns", o.Conns, "connections per target in the open-loop phases (a pool: a request takes an idle one)")
	fs.IntVar(&o.Mark, "open-mark", o.Mark, "in the open-loop phases, every N-th featcache request is preceded by CACHE EXPLAIN of its keys, "+
		"to classify it as hit, stale or miss (0: none)")
	fs.StringVar(&s.Twemproxy, "twemproxy", s.Twemproxy, "twemproxy target: auto (if installed), on, off, or nutcracker's path")
	fs.BoolVar(&s.Floor, "floor", s.Floor, "also measure the floor, a minimal GET-from-freecache server (bench/floor.go), seeded with every key")
	fs.BoolVar(&s.FloorEpoll, "floor-epoll", s.FloorEpoll, "also measure the epoll floor, the floor on one thread's epoll loop (bench/floor_epoll.go)")
	fs.Var(&s.Targets, "target", "extra RESP endpoint name=host:port (repeatable)")
	fs.BoolVar(&s.RedisBenchmark, "redis-benchmark", s.RedisBenchmark, "also run redis-benchmark against every target")
	fs.IntVar(&s.RBKeys, "rb-keys", s.RBKeys, "redis-benchmark -r: keys key:000000000000.. pre-populated with 1 KiB")
	fs.IntVar(&s.RBRequests, "rb-requests", s.RBRequests, "redis-benchmark -n for unpipelined tests (x4 with -P 16)")
	fs.IntVar(&s.RBRounds, "rb-rounds", s.RBRounds, "redis-benchmark rounds (medians)")
	fs.Int64Var(&s.AllocRequests, "alloc-requests", s.AllocRequests, "GETs of the allocation phase; 0 skips it")
	fs.IntVar(&s.Cluster, "cluster", s.Cluster, "if > 0, also measure a featcache in front of a Redis Cluster of this many masters "+
		"(featcache-cluster), in the same rounds (no relay or redis-benchmark then)")
	fs.StringVar(&inv.out, "out", inv.out, "results folder (default bench/results/<timestamp>)")
	fs.BoolVar(&inv.pin, "pin", inv.pin, "pin servers and load generator to separate CPUs with taskset")
	fs.StringVar(&inv.serverCPUs, "server-cpus", inv.serverCPUs, "taskset CPU list for the servers")
	fs.StringVar(&inv.relayCPUs, "relay-cpus", inv.relayCPUs, "taskset CPU list for the relay (default: -server-cpus)")
	fs.StringVar(&inv.delayMode, "delay-mode", inv.delayMode, "how -remote-delay is made: netem (in a network namespace of the bench's own), "+
		"relay (user-space, on -relay-cpus), or auto (netem where the kernel has it, else the relay)")
	fs.StringVar(&inv.clientCPUs, "client-cpus", inv.clientCPUs, "taskset CPU list for the load generator")
	fs.StringVar(&inv.featcache, "featcache", inv.featcache, "featcache binary, or source folder to build (default: this module)")
	fs.StringVar(&inv.redisServer, "redis-server", inv.redisServer, "redis-server binary")
	fs.StringVar(&inv.cpuProfile, "cpuprofile", inv.cpuProfile, "write this program's own CPU profile (the load generator's) to a file")
	fs.StringVar(&inv.fcProfile, "featcache-cpuprofile", inv.fcProfile, "write featcache's CPU profile over its last round to a file (<profile>. is prefixed to the name)")
	return fs
}

// profileTitles names what each profile shows.
var profileTitles = map[string]string{
	"hit":         "GET 1 KiB, every key cached, no pipelining (the hit path)",
	"pipeline":    "GET 1 KiB, every key cached, pipelines of 16",
	"passthrough": "SET 1 KiB (write pass-through)",
	"zipf":        "Zipf GETs over feature bundles: hit ratio against an exact LRU, RSS",
	"remote":      "Zipf GETs with Redis 0.5 ms away each way (a store in another zone)",
	"custom":      "the workload as given on the command line",
}

// applyPreset sets a profile's values over the defaults.
func applyPreset(name string, s *settings) error {
	w := &s.Workload
	hot := func() { // a small key set of exact 1 KiB values, every key cached before measuring
		w.Keys, w.ValueSize, w.EmbShare, w.Zipf, w.Writes, w.Mget = 10_000, 1024, 0, 0, 0, 1
		s.Prefill, s.Floor, s.FloorEpoll = true, true, true
	}
	switch name {
	case "custom":
	case "hit":
		hot()
	case "pipeline":
		hot()
		s.Pipeline = 16
	case "passthrough":
		hot()
		w.Writes, s.Prefill, s.Floor, s.FloorEpoll = 1, false, false, false
		s.RedisBenchmark = false
	case "zipf":
		// The hit-ratio target workload: feature bundles only, so the LRU figure is comparable to it.
		// Prefilled, so the rounds measure a full cache whatever the machine's speed, not its filling.
		w.Keys, w.EmbShare, w.Zipf, w.Writes, w.Mget = 1_000_000, 0, 1.1, 0, 1
		s.MaxMemory, s.Prefill = mustSize("256MB"), true
		s.RedisBenchmark = false
	case "remote":
		w.Keys, w.EmbShare, w.Zipf, w.Writes, w.Mget = 1_000_000, 0.05, 1.1, 0, 1
		s.MaxMemory, s.Prefill = mustSize("256MB"), true
		s.RemoteDelay = 500 * time.Microsecond
		s.RedisBenchmark = false
		s.Open.Loads, s.Open.Duration, s.Open.Rounds = defaultOpenLoads(), 5*time.Second, 3
	default:
		return fmt.Errorf("unknown profile %q (standard, hit, pipeline, passthrough, zipf, remote, custom)", name)
	}
	s.Profile = name
	return nil
}

// standardSteps is the standard profile: every preset in turn, scaled so the whole run stays under five
// minutes on a 2-core machine: 3 rounds of 2 s, redis-benchmark only with hit (2 rounds, 40,000 requests over
// 10,000 keys), the allocation phase only with hit and pipeline, the remote step's open-loop phases 3 rounds of
// 2 s at each of its three rates. The zipf and remote steps keep the full profiles' ratio of cache size to key
// space (1,000,000 keys : 256MB) at a quarter of the size, and leave twemproxy out (it caches nothing: the hit
// and passthrough steps compare it).
func standardSteps() []func(*settings) {
	short := func(s *settings) {
		s.Rounds, s.Duration, s.Warmup = 3, 2*time.Second, 500*time.Millisecond
		s.RedisBenchmark, s.AllocRequests = false, 0
	}
	scaled := func(s *settings) {
		short(s)
		s.Workload.Keys, s.MaxMemory = 250_000, mustSize("64MB")
		s.Warmup, s.Twemproxy = time.Second, "off"
	}
	step := func(name string, f func(*settings)) func(*settings) {
		return func(s *settings) {
			applyPreset(name, s)
			f(s)
		}
	}
	return []func(*settings){
		step("hit", func(s *settings) {
			short(s)
			s.AllocRequests = 100_000
			s.RedisBenchmark, s.RBRounds, s.RBRequests, s.RBKeys = true, 2, 40_000, 10_000
		}),
		step("pipeline", func(s *settings) { short(s); s.AllocRequests = 100_000 }),
		step("passthrough", short),
		step("zipf", scaled),
		step("remote", func(s *settings) {
			scaled(s)
			s.Open.Duration, s.Open.Rounds = 2*time.Second, 3
		}),
	}
}

// commandLine is the profile as an explicit command line that reproduces it.
func (s settings) commandLine() string {
	w := s.Workload
	args := []string{"go run ./bench", "-profile " + s.Profile,
		fmt.Sprintf("-keys %d -value-size %d -emb-share %g -zipf %g -writes %g -mget %d -seed %d",
			w.Keys, w.ValueSize, w.EmbShare, w.Zipf, w.Writes, w.Mget, w.Seed),
		fmt.Sprintf("-conns %d -pipeline %d", s.Conns, s.Pipeline)}
	if s.Requests > 0 {
		args = append(args, fmt.Sprintf("-requests %d", s.Requests))
	} else {
		args = append(args, "-duration "+s.Duration.String())
	}
	args = append(args, fmt.Sprintf("-rounds %d -warmup %v -prefill=%t -max-memory %s -remote-delay %v -twemproxy %s",
		s.Rounds, s.Warmup, s.Prefill, s.MaxMemory, s.RemoteDelay, s.Twemproxy))
	if s.NetemJitter > 0 {
		args = append(args, fmt.Sprintf("-netem-jitter %v", s.NetemJitter))
	}
	if o := s.Open; len(o.Loads) > 0 {
		args = append(args, fmt.Sprintf("-open-loads %s -open-duration %v -open-rounds %d -open-conns %d -open-mark %d",
			o.Loads.String(), o.Duration, o.Rounds, o.Conns, o.Mark))
	}
	for _, t := range s.Targets {
		args = append(args, "-target "+t.String())
	}
	args = append(args, fmt.Sprintf("-redis-benchmark=%t", s.RedisBenchmark))
	if s.RedisBenchmark {
		args = append(args, fmt.Sprintf("-rb-keys %d -rb-requests %d -rb-rounds %d", s.RBKeys, s.RBRequests, s.RBRounds))
	}
	args = append(args, fmt.Sprintf("-alloc-requests %d", s.AllocRequests))
	if s.Cluster > 0 {
		args = append(args, fmt.Sprintf("-cluster %d", s.Cluster))
	}
	return strings.Join(args, " ")
}

func (s settings) roundLength() string {
	if s.Requests > 0 {
		return fmt.Sprintf("%d requests", s.Requests)
	}
	return s.Duration.String()
}

func (w workload) describe() string {
	var parts []string
	if w.Zipf > 0 {
		parts = append(parts, fmt.Sprintf("Zipf %g over %d keys", w.Zipf, w.Keys))
	} else {
		parts = append(parts, fmt.Sprintf("uniform over %d keys", w.Keys))
	}
	feat := "feature bundles of 1-2 KiB"
	if w.ValueSize > 0 {
		feat = fmt.Sprintf("values of %d bytes", w.ValueSize)
	}
	if w.EmbShare > 0 {
		feat += fmt.Sprintf(", %g%% 16 KiB embeddings", 100*w.EmbShare)
	}
	parts = append(parts, feat)
	op := "GET"
	if w.Mget > 1 {
		op = fmt.Sprintf("MGET of %d", w.Mget)
	}
	switch {
	case w.Writes >= 1:
		op = "SET"
	case w.Writes > 0:
		op = fmt.Sprintf("%s, %g%% SET", op, 100*w.Writes)
	}
	return strings.Join(append(parts, op), ", ")
}

func (s settings) validate() error {
	w := s.Workload
	switch {
	case w.Keys < 1:
		return errors.New("-keys must be at least 1")
	case w.Zipf != 0 && w.Zipf <= 1:
		return fmt.Errorf("-zipf %g: the exponent must be above 1 (or 0 for uniform)", w.Zipf)
	case w.EmbShare < 0 || w.EmbShare > 1 || w.Writes < 0 || w.Writes > 1:
		return errors.New("-emb-share and -writes are shares between 0 and 1")
	case w.Mget < 1 || s.Conns < 1 || s.Pipeline < 1 || s.Rounds < 1:
		return errors.New("-mget, -conns, -pipeline and -rounds must be at least 1")
	case w.ValueSize < 0 || w.ValueSize > len(valuePool):
		return fmt.Errorf("-value-size must be between 0 and %d", len(valuePool))
	case s.Requests <= 0 && s.Duration <= 0:
		return errors.New("one of -duration and -requests must be positive")
	case len(s.Open.Loads) > 0 && s.Open.duration(s) <= 0:
		return errors.New("open-loop phases need a positive -open-duration or -duration")
	}
	return s.Open.validate()
}

// run is the bench: it turns the command line into the profiles to run (profileSteps), re-executes itself pinned
// or in a network namespace where it must (relaunch), runs every profile and writes the report (runSteps).
func run(args []string) error {
	start := time.Now()
	base := defaultSettings()
	inv := invocation{pin: true, serverCPUs: "0", clientCPUs: "1", redisServer: "redis-server", delayMode: delayAuto}
	if err := newFlagSet(&base, &inv).Parse(args); err != nil {
		return err
	}
	steps, err := profileSteps(base.Profile, args)
	if err != nil {
		return err
	}

	root := moduleRoot()
	pin := decidePinning(inv)
	if err := checkDelayMode(inv.delayMode); err != nil {
		return err
	}
	delayed := slices.ContainsFunc(steps, func(s settings) bool { return s.RemoteDelay > 0 })
	if os.Getenv(envScratch) == "" {
		netns := delayed && inv.delayMode != delayRelay
		if handled, err := relaunch(args, pin, netns, inv.delayMode, inv.featcache, root); handled || err != nil {
			return err
		}
	}

	scratch := os.Getenv(envScratch)
	bin, from := os.Getenv(envFeatcache), os.Getenv(envFrom)
	if scratch == "" {
		var err error
		if scratch, bin, from, err = newScratch("featcache-bench-", inv.featcache, root); err != nil {
			return err
		}
	}
	defer os.RemoveAll(scratch)
	if pin.Enabled {
		if n, ok := affinityCPUs(); ok {
			pin.Verified = fmt.Sprintf("checked: the load generator's affinity holds %d CPU, GOMAXPROCS=%d",
				n, runtime.GOMAXPROCS(0))
		}
	}
	remote := remoteFromEnv()
	if delayed {
		if remote.netns != "" {
			fmt.Fprintf(os.Stderr, "bench: remote store by netem, inside network namespace %s\n", remote.netns)
		} else {
			fmt.Fprintf(os.Stderr, "bench: remote store by the user-space relay (%s)\n", remote.fallback)
		}
	}

	stop, release := stopOnSignal("bench")
	defer release()
	if inv.cpuProfile != "" {
		stopProfile, err := startCPUProfile(inv.cpuProfile)
		if err != nil {
			return err
		}
		defer stopProfile()
	}

	e := &env{scratch: scratch, featcache: bin, redisServer: inv.redisServer, pin: pin, stop: stop, fcProfile: inv.fcProfile,
		remote: remote}
	rep := &report{Started: start, Profile: base.Profile, Machine: readMachine(e, from)}
	out := inv.out
	if out == "" {
		out = filepath.Join(root, "bench", "results", start.Format("20060102-150405"))
	}
	return runSteps(e, steps, rep, out)
}

// profileSteps returns the settings of each profile to run: the standard profile's steps, or the one profile
// named. Each step starts from the defaults, takes its preset, then the command line (args) again, so an explicit
// flag always wins over a preset.
func profileSteps(profile string, args []string) ([]settings, error) {
	var steps []settings
	var presets []func(*settings)
	if profile == "standard" {
		presets = standardSteps()
	} else {
		name := profile
		presets = []func(*settings){func(s *settings) { applyPreset(name, s) }}
		if err := applyPreset(name, &settings{}); err != nil {
			return nil, err
		}
	}
	for _, preset := range presets {
		s := defaultSettings()
		preset(&s)
		name := s.Profile
		var ignored invocation
		if err := newFlagSet(&s, &ignored).Parse(args); err != nil {
			return nil, err
		}
		s.Profile = name
		if s.Cluster > 0 {
			if s.RemoteDelay > 0 {
				fmt.Fprintf(os.Stderr, "[%s] skipped: a remote store is not supported with -cluster\n", name)
				continue
			}
			s.RedisBenchmark = false
		}
		if err := s.validate(); err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		steps = append(steps, s)
	}
	return steps, nil
}

// stopOnSignal returns the flag that SIGINT or SIGTERM sets, saying so on stderr as name: the run stops after the
// current phase. release stops watching for the signals.
func stopOnSignal(name string) (stop *atomic.Bool, release func()) {
	stop = new(atomic.Bool)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		if _, ok := <-sig; ok {
			fmt.Fprintln(os.Stderr, name+": stopping after the current phase")
			stop.Store(true)
		}
	}()
	return stop, func() { signal.Stop(sig) }
}

// startCPUProfile starts this program's CPU profile into path; stop ends it and closes the file.
func startCPUProfile(path string) (stop func(), err error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
}

// runSteps runs each step's profile into rep, then writes the report to the folder out and prints its Markdown.
func runSteps(e *env, steps []settings, rep *report, out string) error {
	for _, s := range steps {
		t0 := time.Now()
		pr, err := runProfile(e, s)
		if err != nil {
			return fmt.Errorf("profile %s: %w", s.Profile, err)
		}
		pr.ElapsedSeconds = time.Since(t0).Seconds()
		rep.Profiles = append(rep.Profiles, pr)
	}
	rep.ElapsedSeconds = time.Since(rep.Started).Seconds()
	rep.Machine.LoadAvgEnd = loadAvg()
	if cpu, err := procCPU(os.Getpid()); err == nil {
		rep.Machine.BenchCPU = cpu.Seconds()
	}
	if err := rep.write(out); err != nil {
		return err
	}
	fmt.Print(rep.markdown())
	fmt.Fprintf(os.Stderr, "bench: results in %s (%.0f s)\n", out, rep.ElapsedSeconds)
	return nil
}
