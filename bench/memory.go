package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// runMemory is the memory investigation: where featcache's resident set goes with a full tier.
//
//	go run ./bench memory [-keys N] [-max-memory 64MB] [-zipf S] [-emb-share F] [-remote-delay D] [-conns C]
//	                      [-duration D] [-idle-clients N] [-env K=V]
//
// It starts redis-server and featcache (admin_pprof on), seeds the workload's feature bundles, fills the tier
// (every key once, least popular first, as the zipf profile's prefill), drives Zipf GETs for -duration, and
// then, with -idle-clients, opens that many more connections that each send one PING and stay idle. After each
// phase it reads featcache's /proc/<pid>/status (VmRSS, VmHWM), /proc/<pid>/smaps (resident bytes per mapping:
// the binary's file-backed pages apart from anonymous memory), the runtime's own accounts (runtime.MemStats from
// /debug/pprof/heap?debug=1; the memory limit and GOGC from /metrics) and, at the end, a heap profile, whose
// in-use bytes it attributes to the tier's ring buffers, the tier's index, client buffers and the rest. -env sets
// a variable in featcache's environment (GOGC=50, or GODEBUG=memprofilerate=1 to record every allocation instead
// of a sample of one per 512 KiB; that costs memory of its own).
func runMemory(args []string) error {
	cmd := newLabCommand("memory")
	w := zipfFlags(cmd.FlagSet, "feature bundles of 1-2 KiB seeded and read")
	cmd.Float64Var(&w.EmbShare, "emb-share", 0, "share of keys that are 16 KiB embeddings (the remote profile has 0.05)")
	delay := cmd.Duration("remote-delay", 0, "Redis this far away each way, through the bench's user-space relay (the remote profile's fallback)")
	maxMemory := mustSize("64MB")
	cmd.Var(&maxMemory, "max-memory", "featcache local.max_memory")
	conns := cmd.Int("conns", 50, "load connections")
	duration := cmd.Duration("duration", 20*time.Second, "length of the Zipf load after the fill")
	idle := cmd.Int("idle-clients", 0, "connections opened after the load, each sending one PING and staying idle")
	var envs targetList
	cmd.Var(&envs, "env", "NAME=VALUE in featcache's environment (repeatable)")
	profiles := cmd.String("profiles", "", "keep featcache's heap profile after each phase in this folder (1.pprof, 2.pprof, ...: "+
		"go tool pprof -sample_index=alloc_space -base 2.pprof 3.pprof shows what the load allocated)")
	keepLog := cmd.String("log", "", "copy featcache's log (its stderr: GODEBUG=gctrace=1 output too) to this file at the end")
	lab, err := cmd.open(args)
	if err != nil {
		return err
	}
	defer lab.close()
	for _, e := range envs {
		os.Setenv(e.Name, e.Addr) // featcache inherits this program's environment
	}
	f, bin, from, redisAddr := lab.fleet, lab.bin, lab.from, lab.redisAddr
	logf := func(format string, a ...any) { fmt.Fprintf(os.Stderr, "[memory] "+format+"\n", a...) }
	logf("seeding %d keys", w.Keys)
	if _, _, err := seedRedis(redisAddr, w); err != nil {
		return err
	}
	upstream := redisAddr
	if *delay > 0 {
		if upstream, _, err = f.startRelay(redisAddr, *delay); err != nil {
			return err
		}
		logf("Redis %v away each way, through the relay", *delay)
	}
	addr, p, admin, err := f.startFeatcache(bin, upstream, maxMemory.bytes, true)
	if err != nil {
		return err
	}
	if *keepLog != "" {
		defer saveLog(f, p, *keepLog)
	}
	phases := &memPhases{p: p, bin: bin, addr: addr, admin: admin, profiles: *profiles, logf: logf,
		sampler: startMemSampler(p.pid(), addr, admin), start: time.Now()}
	defer phases.sampler.stop()
	take := phases.take
	if err := take("started, tier empty"); err != nil {
		return err
	}
	lt, err := openLoadTarget("featcache", addr, w, *conns)
	if err != nil {
		return err
	}
	defer lt.close()
	if err := fillTier(lt, w, addr, p); err != nil {
		return err
	}
	if err := take("filled (every key once)"); err != nil {
		return err
	}
	stop := new(atomic.Bool)
	ph, err := lt.run(*duration, 0, 1, stop)
	if err != nil {
		return err
	}
	logf("load: %d requests in %v", ph.Requests, ph.Elapsed.Round(time.Millisecond))
	if err := take(fmt.Sprintf("after %v of Zipf GETs", *duration)); err != nil {
		return err
	}
	heap, err := heapProfile(admin, bin, filepath.Join(lab.scratch, "heap.pprof"))
	if err != nil {
		return err
	}
	if *idle > 0 {
		idlers, err := openIdleClients(addr, *idle)
		defer closeAll(idlers)
		if err != nil {
			return err
		}
		if err := take(fmt.Sprintf("plus %d idle clients", *idle)); err != nil {
			return err
		}
	}
	fmt.Print(memoryReport(phases.snaps, heap, maxMemory, from, envs, *conns, *w))
	return nil
}

// saveLog stops the fleet's processes, so that featcache's log (p's) is complete, and copies it to path.
func saveLog(f *fleet, p *proc, path string) {
	f.stopAll()
	if b, err := os.ReadFile(p.log); err == nil {
		os.WriteFile(path, b, 0o644)
	}
}

// fillTier reads every key of w once through lt, least popular first, and fails when a read was a nil or an
// error, with featcache's CACHE STATS (from addr) and the end of its log (p's).
func fillTier(lt *loadTarget, w *workload, addr string, p *proc) error {
	bad, err := lt.getAll(w.Keys, w.appendPrefillKey)
	if err != nil {
		return err
	}
	if bad > 0 {
		st, _ := cacheStats(addr)
		return fmt.Errorf("%d of %d GETs of the fill returned nil or an error; featcache's CACHE STATS:\n%s\nits log:\n%s",
			bad, w.Keys, st.text, tail(p.log))
	}
	return nil
}

// memPhases takes runMemory's snapshots of featcache's memory, one at the end of each phase.
type memPhases struct {
	p                *proc
	bin, addr, admin string
	profiles         string // the folder heap profiles are kept in; "" keeps none
	logf             func(format string, a ...any)
	sampler          *memSampler
	start            time.Time // when the current phase began
	snaps            []memSnapshot
}

// take snapshots the phase that ends now.
func (m *memPhases) take(phase string) error {
	s, err := snapshotMemory(m.p.pid(), m.bin, m.admin)
	if err != nil {
		return fmt.Errorf("%s: %w", phase, err)
	}
	s.Phase = phase
	if m.profiles != "" {
		if err := saveURL("http://"+m.admin+"/debug/pprof/heap", filepath.Join(m.profiles, strconv.Itoa(len(m.snaps)+1)+".pprof")); err != nil {
			return err
		}
	}
	s.PhasePeak, s.PhaseClients, s.PhaseLimit = m.sampler.phase()
	if st, err := cacheStats(m.addr); err == nil {
		s.Entries, s.GCCycles, s.Misses, s.Commands = st.m["entries"], st.m["gc_cycles"], st.m["upstream_reads"], st.m["commands"]
		s.GCPauseMax = time.Duration(st.m["gc_pause_max_us"]) * time.Microsecond
	}
	s.CPU, _ = procCPU(m.p.pid())
	s.Elapsed = time.Since(m.start)
	m.start = time.Now()
	m.snaps = append(m.snaps, s)
	m.logf("%-28s RSS %s (peak %s), entries %d", phase, mib(s.RSS), mib(s.Peak), s.Entries)
	return nil
}

// openIdleClients opens n connections to addr that each send one PING and stay idle. It returns those it opened,
// for the caller to close, also when one fails.
func openIdleClients(addr string, n int) ([]*respConn, error) {
	var idlers []*respConn
	for range n {
		rc, err := dialRESP(addr, 5*time.Second)
		if err != nil {
			return idlers, fmt.Errorf("idle client %d: %w", len(idlers), err)
		}
		idlers = append(idlers, rc)
		if _, err := rc.do("PING"); err != nil {
			return idlers, err
		}
	}
	return idlers, nil
}

// closeAll closes every connection of conns.
func closeAll(conns []*respConn) {
	for _, rc := range conns {
		rc.Close()
	}
}

// memSnapshot is featcache's memory at one moment, in bytes.
type memSnapshot struct {
	Phase     string
	Entries   int64
	RSS, Peak int64 // VmRSS, VmHWM
	// From /proc/<pid>/smaps: resident bytes of the binary's own mappings (text, rodata, pclntab: file pages;
	// data and bss: Anonymous once written) and of every anonymous mapping (the Go runtime's heap, stacks and
	// metadata).
	BinaryFile, BinaryAnon, Anon, Other int64
	Mem                                 map[string]int64 // runtime.MemStats fields
	Limit, GOGC                         int64            // the Go memory limit in effect, and GOGC
	// The highest VmRSS, client_buffer_bytes (CACHE STATS) and Go memory limit sampled during the phase that
	// ended with this snapshot.
	PhasePeak, PhaseClients, PhaseLimit int64
	// Cumulative since start: GC cycles, the longest GC pause (CACHE STATS) and CPU time (/proc/<pid>/stat).
	GCCycles   int64
	GCPauseMax time.Duration
	CPU        time.Duration
	Elapsed    time.Duration // of the phase
	Misses     int64         // cumulative upstream reads
	Commands   int64         // cumulative commands (CACHE STATS commands)
}

// memSampler polls featcache during a phase: VmRSS every 10 ms, its client buffers and its Go memory limit every
// 100 ms. VmHWM says how high the resident set went over the whole run; the sampler says in which phase, and what
// clients held then.
type memSampler struct {
	done                chan struct{}
	rss, clients, limit atomic.Int64
}

func startMemSampler(pid int, addr, admin string) *memSampler {
	m := &memSampler{done: make(chan struct{})}
	go func() {
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		var rc *respConn
		defer func() {
			if rc != nil {
				rc.Close()
			}
		}()
		for n := 0; ; n++ {
			select {
			case <-m.done:
				return
			case <-tick.C:
			}
			raise(&m.rss, procStatus(pid, "VmRSS"))
			if n%10 != 0 {
				continue
			}
			if rc == nil {
				rc, _ = dialRESP(addr, time.Second)
			}
			if rc != nil {
				if st, err := rc.cacheStats(); err == nil {
					raise(&m.clients, st.m["client_buffer_bytes"])
				} else {
					rc.Close()
					rc = nil
				}
			}
			if text, err := httpText("http://" + admin + "/metrics"); err == nil {
				raise(&m.limit, metricValue(text, "go_gc_gomemlimit_bytes"))
			}
		}
	}()
	return m
}

func raise(v *atomic.Int64, n int64) {
	for {
		old := v.Load()
		if n <= old || v.CompareAndSwap(old, n) {
			return
		}
	}
}

// phase returns the peaks since the previous call and starts the next phase.
func (m *memSampler) phase() (rss, clients, limit int64) {
	return m.rss.Swap(0), m.clients.Swap(0), m.limit.Swap(0)
}

func (m *memSampler) stop() { close(m.done) }

// metricValue returns the value of an unlabelled Prometheus metric in a /metrics text, 0 if absent.
func metricValue(text, name string) int64 {
	for line := range strings.Lines(text) {
		n, val, ok := strings.Cut(strings.TrimSpace(line), " ")
		if ok && n == name {
			v, _ := strconv.ParseFloat(val, 64)
			return int64(v)
		}
	}
	return 0
}

func snapshotMemory(pid int, bin, admin string) (memSnapshot, error) {
	s := memSnapshot{RSS: procStatus(pid, "VmRSS"), Peak: procStatus(pid, "VmHWM")}
	if err := readSmaps(pid, bin, &s); err != nil {
		return s, err
	}
	var err error
	if s.Mem, err = memStats(admin); err != nil {
		return s, err
	}
	m, err := httpText("http://" + admin + "/metrics")
	if err != nil {
		return s, err
	}
	s.Limit, s.GOGC = metricValue(m, "go_gc_gomemlimit_bytes"), metricValue(m, "go_gc_gogc_percent")
	return s, nil
}

// readSmaps sums the Rss and Anonymous lines of /proc/<pid>/smaps by mapping: the featcache binary's mappings,
// anonymous ones (no path, [heap], [stack]), and the rest ([vdso], [vvar], shared libraries: none for a static
// Go binary).
func readSmaps(pid int, bin string, s *memSnapshot) error {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps", pid))
	if err != nil {
		return err
	}
	real, _ := filepath.EvalSymlinks(bin)
	var path string
	for line := range strings.Lines(string(b)) {
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		if !strings.HasSuffix(fields[0], ":") { // a mapping's header: range perms offset dev inode [path]
			path = ""
			if len(fields) >= 6 {
				path = fields[5]
			}
			continue
		}
		if len(fields) < 2 || (fields[0] != "Rss:" && fields[0] != "Anonymous:") {
			continue
		}
		kb, _ := strconv.ParseInt(fields[1], 10, 64)
		n := kb << 10
		binary := path != "" && (path == bin || path == real)
		anon := path == "" || path == "[heap]" || strings.HasPrefix(path, "[stack") || path == "[anon]"
		switch {
		case binary && fields[0] == "Rss:":
			s.BinaryFile += n // corrected below: Anonymous pages of the binary's mappings are not file pages
		case binary:
			s.BinaryFile -= n
			s.BinaryAnon += n
		case anon && fields[0] == "Rss:":
			s.Anon += n
		case !anon && fields[0] == "Rss:":
			s.Other += n
		}
	}
	return nil
}

// memStats reads runtime.MemStats as the trailer of /debug/pprof/heap?debug=1 prints it ("# HeapInuse = 123").
func memStats(admin string) (map[string]int64, error) {
	text, err := httpText("http://" + admin + "/debug/pprof/heap?debug=1")
	if err != nil {
		return nil, err
	}
	m := map[string]int64{}
	for line := range strings.Lines(text) {
		rest, ok := strings.CutPrefix(line, "# ")
		if !ok {
			continue
		}
		name, val, ok := strings.Cut(strings.TrimSpace(rest), " = ")
		if !ok {
			continue
		}
		// "Stack = 1234 / 5678" is in use / obtained from the OS.
		inuse, sys, two := strings.Cut(val, " / ")
		if n, err := strconv.ParseInt(inuse, 10, 64); err == nil {
			m[name] = n
		}
		if two {
			if n, err := strconv.ParseInt(sys, 10, 64); err == nil {
				m[name+"Sys"] = n
			}
		}
	}
	if len(m) == 0 {
		return nil, fmt.Errorf("no MemStats in /debug/pprof/heap?debug=1 (admin_pprof off?)")
	}
	return m, nil
}

// saveURL writes the body of a GET of url to path.
func saveURL(url, path string) error {
	resp, err := http.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	out, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, resp.Body); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

func httpText(url string) (string, error) {
	resp, err := http.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// heapUse is the heap profile's in-use bytes (an estimate scaled from the sampled allocations) by what holds them.
type heapUse struct {
	Total int64
	By    map[string]int64
	Top   string // go tool pprof -top, for the record
}

// heapCategories attribute a heap profile's in-use bytes by the function that allocated them (its flat entry),
// first match wins.
var heapCategories = []struct{ prefix, name string }{
	{"github.com/coocood/freecache.NewRingBuf", "tier: freecache ring buffers"},
	{"github.com/coocood/freecache.newSegment", "tier: freecache index (slots)"},
	{"github.com/coocood/freecache.(*segment).expand", "tier: freecache index (slots)"},
	{"featcache/proxy.newReader", "client read buffers"},
	{"featcache/proxy.(*Reader)", "client read buffers"},
	{"featcache/proxy", "proxy (client reply buffers, per-connection state)"},
	{"featcache/upstream", "upstream connections and fetches"},
	{"github.com/redis/rueidis", "rueidis (tracking connection)"},
	{"featcache/warm", "hot-key tracker"},
	{"featcache/localcache", "tier: fill table, encode buffers"},
	{"bufio.", "bufio buffers"},
	{"runtime.", "runtime (goroutines, timers)"},
}

// heapProfile fetches featcache's heap profile and reads its in-use bytes per allocating function with
// go tool pprof.
func heapProfile(admin, bin, path string) (heapUse, error) {
	h := heapUse{By: map[string]int64{}}
	if err := saveURL("http://"+admin+"/debug/pprof/heap?gc=1", path); err != nil {
		return h, err
	}
	top, err := exec.Command("go", "tool", "pprof", "-top", "-sample_index=inuse_space", "-unit=B", "-nodecount=400", bin, path).Output()
	if err != nil {
		return h, fmt.Errorf("go tool pprof: %w", err)
	}
	var lines []string
	sc := bufio.NewScanner(bytes.NewReader(top))
	for sc.Scan() {
		line := sc.Text()
		f := strings.Fields(line)
		// "   67108864B 90.12% 90.12%   67108864B 90.12%  github.com/coocood/freecache.NewRingBuf (inline)"
		if len(f) < 6 || !strings.HasSuffix(f[0], "B") || !strings.HasSuffix(f[1], "%") {
			if len(lines) < 8 {
				lines = append(lines, line)
			}
			continue
		}
		n, err := strconv.ParseInt(strings.TrimSuffix(f[0], "B"), 10, 64)
		if err != nil {
			continue
		}
		if len(lines) < 24 {
			lines = append(lines, line)
		}
		h.Total += n
		cat := "other"
		for _, c := range heapCategories {
			if strings.HasPrefix(f[5], c.prefix) {
				cat = c.name
				break
			}
		}
		h.By[cat] += n
	}
	h.Top = strings.Join(lines, "\n")
	return h, nil
}

func memoryReport(snaps []memSnapshot, heap heapUse, maxMemory size, from string, envs targetList, conns int, w workload) string {
	var b strings.Builder
	fmt.Fprintf(&b, "featcache's memory with local.max_memory %s (%s), Zipf %g over %d feature bundles of 1-2 KiB, "+
		"%d load connections", maxMemory, mib(maxMemory.bytes), w.Zipf, w.Keys, conns)
	if len(envs) > 0 {
		fmt.Fprintf(&b, ", featcache environment %s", envs.String())
	}
	fmt.Fprintf(&b, "; featcache built from %s.\n\n", from)
	b.WriteString("| | " + strings.Join(mapSnaps(snaps, func(s memSnapshot) string { return s.Phase }), " | ") + " |\n")
	b.WriteString("|---" + strings.Repeat("|--:", len(snaps)) + "|\n")
	row := func(name string, f func(s memSnapshot) int64) {
		b.WriteString("| " + name + " | " + strings.Join(mapSnaps(snaps, func(s memSnapshot) string { return mib(f(s)) }), " | ") + " |\n")
	}
	m := func(k string) func(s memSnapshot) int64 { return func(s memSnapshot) int64 { return s.Mem[k] } }
	b.WriteString("| tier entries | " + strings.Join(mapSnaps(snaps, func(s memSnapshot) string { return strconv.FormatInt(s.Entries, 10) }), " | ") + " |\n")
	row("**RSS** (VmRSS)", func(s memSnapshot) int64 { return s.RSS })
	row("peak RSS during the phase (sampled every 10 ms)", func(s memSnapshot) int64 { return s.PhasePeak })
	row("peak RSS so far (VmHWM)", func(s memSnapshot) int64 { return s.Peak })
	row("client buffers, most during the phase (client_buffer_bytes)", func(s memSnapshot) int64 { return s.PhaseClients })
	row("Go memory limit, highest during the phase", func(s memSnapshot) int64 { return s.PhaseLimit })
	row("binary: file pages (text, rodata, pclntab)", func(s memSnapshot) int64 { return s.BinaryFile })
	row("binary: data, bss written", func(s memSnapshot) int64 { return s.BinaryAnon })
	row("anonymous memory (the Go runtime's)", func(s memSnapshot) int64 { return s.Anon })
	row("other mappings (vdso, ...)", func(s memSnapshot) int64 { return s.Other })
	row("runtime: heap in use (HeapInuse)", m("HeapInuse"))
	row("runtime: heap free, not yet returned (HeapIdle - HeapReleased)", func(s memSnapshot) int64 { return s.Mem["HeapIdle"] - s.Mem["HeapReleased"] })
	row("runtime: heap returned to the OS (HeapReleased)", m("HeapReleased"))
	row("runtime: goroutine stacks (StackSys)", m("StackSys"))
	row("runtime: GC metadata (GCSys)", m("GCSys"))
	row("runtime: span and cache structures (MSpanSys + MCacheSys)", func(s memSnapshot) int64 { return s.Mem["MSpanSys"] + s.Mem["MCacheSys"] })
	row("runtime: other (OtherSys + BuckHashSys)", func(s memSnapshot) int64 { return s.Mem["OtherSys"] + s.Mem["BuckHashSys"] })
	row("runtime: total held (Sys - HeapReleased)", func(s memSnapshot) int64 { return s.Mem["Sys"] - s.Mem["HeapReleased"] })
	row("runtime: next GC at (NextGC)", m("NextGC"))
	row("Go memory limit at the end of the phase", func(s memSnapshot) int64 { return s.Limit })
	var prev memSnapshot
	cells := func(f func(s, prev memSnapshot) string) string {
		out := make([]string, len(snaps))
		prev = memSnapshot{}
		for i, s := range snaps {
			out[i] = f(s, prev)
			prev = s
		}
		return strings.Join(out, " | ")
	}
	b.WriteString("| phase length | " + cells(func(s, _ memSnapshot) string { return s.Elapsed.Round(100 * time.Millisecond).String() }) + " |\n")
	b.WriteString("| upstream reads in the phase | " + cells(func(s, p memSnapshot) string { return strconv.FormatInt(s.Misses-p.Misses, 10) }) + " |\n")
	b.WriteString("| GC cycles in the phase | " + cells(func(s, p memSnapshot) string { return strconv.FormatInt(s.GCCycles-p.GCCycles, 10) }) + " |\n")
	b.WriteString("| featcache CPU in the phase | " + cells(func(s, p memSnapshot) string { return (s.CPU - p.CPU).Round(10 * time.Millisecond).String() }) + " |\n")
	b.WriteString("| CPU µs per command in the phase | " + cells(func(s, p memSnapshot) string {
		if s.Commands == p.Commands {
			return "–"
		}
		return fmt.Sprintf("%.1f", float64(s.CPU-p.CPU)/1e3/float64(s.Commands-p.Commands))
	}) + " |\n")
	b.WriteString("| longest GC pause so far | " + cells(func(s, _ memSnapshot) string { return s.GCPauseMax.String() }) + " |\n")
	last := snaps[len(snaps)-1]
	fmt.Fprintf(&b, "\nGOGC %d. RSS minus local.max_memory at the end: %s; the bound is local.max_memory + 64 MiB = %s.\n",
		last.GOGC, mib(last.RSS-maxMemory.bytes), mib(maxMemory.bytes+64<<20))
	fmt.Fprintf(&b, "\nHeap in use after the load by what allocated it (heap profile after a GC, %s in all; a sampled "+
		"estimate unless GODEBUG=memprofilerate=1):\n\n| held by | MiB |\n|---|--:|\n", mib(heap.Total))
	cats := make([]string, 0, len(heap.By))
	for c := range heap.By {
		cats = append(cats, c)
	}
	sort.Slice(cats, func(i, j int) bool { return heap.By[cats[i]] > heap.By[cats[j]] })
	for _, c := range cats {
		fmt.Fprintf(&b, "| %s | %s |\n", c, mib(heap.By[c]))
	}
	fmt.Fprintf(&b, "\n```\n%s\n```\n", heap.Top)
	return b.String()
}

func mapSnaps(snaps []memSnapshot, f func(memSnapshot) string) []string {
	out := make([]string, len(snaps))
	for i, s := range snaps {
		out[i] = f(s)
	}
	return out
}

// mib formats a byte count in MiB with one decimal; the memory report's sums need more than fmtMiB's whole MiB.
func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }
