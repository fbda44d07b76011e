package main

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// pinning says where servers and the load generator run. On a machine with two or more CPUs the servers get
// ServerCPUs and this program (re-executed under taskset, so GOMAXPROCS is 1) and redis-benchmark get ClientCPUs,
// so the load generator never steals the measured server's core.
type pinning struct {
	Enabled    bool
	ServerCPUs string // taskset -c list for redis-server, featcache and nutcracker
	RelayCPUs  string // taskset -c list for the relay; the servers' by default
	ClientCPUs string // taskset -c list for the load generator and redis-benchmark
	Reason     string // why pinning is off, when it is
	Verified   string // what the pinned process found its affinity to be
}

// wrap prefixes argv with taskset when pinning is on.
func (p pinning) wrap(cpus string, argv []string) []string {
	if !p.Enabled {
		return argv
	}
	return append([]string{"taskset", "-c", cpus}, argv...)
}

func (p pinning) String() string {
	if !p.Enabled {
		return "not pinned (" + p.Reason + ")"
	}
	return fmt.Sprintf("servers (redis-server, featcache, nutcracker) on CPU %s with taskset -c %s; the relay, "+
		"when used, on CPU %s; the load generator (this program) and redis-benchmark on CPU %s with taskset -c %s (%s)",
		p.ServerCPUs, p.ServerCPUs, p.RelayCPUs, p.ClientCPUs, p.ClientCPUs, p.Verified)
}

// proc is a server process this program started; it is stopped by its own pid only.
type proc struct {
	name   string
	cmd    *exec.Cmd
	log    string
	exited chan struct{}
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

// fleet starts the processes of one profile in a scratch directory and stops them all at the end.
type fleet struct {
	dir   string
	pin   pinning
	procs []*proc
}

func (f *fleet) start(name string, argv ...string) (*proc, error) {
	cpus := f.pin.ServerCPUs
	if name == "relay" {
		cpus = f.pin.RelayCPUs
	}
	argv = f.pin.wrap(cpus, argv)
	logPath := filepath.Join(f.dir, name+".log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.Dir = f.dir
	// Its own process group, so a Ctrl-C at the terminal reaches this program, which stops its children in order.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath, exited: make(chan struct{})}
	go func() {
		cmd.Wait()
		logFile.Close()
		close(p.exited)
	}()
	f.procs = append(f.procs, p)
	return p, nil
}

// stopAll stops the processes in reverse start order: SIGTERM, then SIGKILL after five seconds.
func (f *fleet) stopAll() {
	for i := len(f.procs) - 1; i >= 0; i-- {
		p := f.procs[i]
		p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.exited:
		case <-time.After(5 * time.Second):
			p.cmd.Process.Kill()
			<-p.exited
		}
	}
	f.procs = nil
}

// waitReady polls addr with a GET until a reply comes back, the process exits, or ten seconds pass. GET is what
// every target here answers (twemproxy does not know PING in every version).
func waitReady(p *proc, addr string) error { return waitFor(p, addr, "GET", "bench:ready") }

// waitFor sends cmd to addr until a reply (nil included) comes back, the process exits, or ten seconds pass.
func waitFor(p *proc, addr string, cmd ...string) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case <-p.exited:
			return fmt.Errorf("%s exited during start-up:\n%s", p.name, tail(p.log))
		default:
		}
		if rc, err := dialRESP(addr, time.Second); err == nil {
			rc.nc.SetDeadline(time.Now().Add(time.Second))
			_, err = rc.do(cmd...)
			rc.Close()
			if err == nil || errors.Is(err, errNil) {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not answer on %s within 10s:\n%s", p.name, addr, tail(p.log))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func tail(path string) string {
	b, _ := os.ReadFile(path)
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}

// freeAddr returns a loopback address with a port nobody listens on right now.
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

func (f *fleet) startRedis(bin string) (string, *proc, error) {
	addr, err := freeAddr()
	if err != nil {
		return "", nil, err
	}
	_, port, _ := net.SplitHostPort(addr)
	// No persistence: a snapshot fork in the middle of a round would be measured as Redis's latency.
	p, err := f.start("redis-server", bin, "--port", port, "--bind", "127.0.0.1", "--save", "",
		"--appendonly", "no", "--dir", f.dir, "--protected-mode", "no")
	if err != nil {
		return "", nil, err
	}
	return addr, p, waitReady(p, addr)
}

// startRelay runs this program's relay mode as a separate process pinned with the servers, so the delay
// goroutines never compete with the load generator.
func (f *fleet) startRelay(upstream string, delay time.Duration) (string, *proc, error) {
	return f.startSelf("relay", "-upstream", upstream, "-delay", delay.String())
}

// startSelf runs this program's mode (floor, relay) as a separate process of the fleet, listening on a free
// address with args after -listen, and waits until it answers.
func (f *fleet) startSelf(mode string, args ...string) (string, *proc, error) {
	addr, err := freeAddr()
	if err != nil {
		return "", nil, err
	}
	self, err := os.Executable()
	if err != nil {
		return "", nil, err
	}
	p, err := f.start(mode, append([]string{self, mode, "-listen", addr}, args...)...)
	if err != nil {
		return "", nil, err
	}
	return addr, p, waitReady(p, addr)
}

// featcacheConfig is the configuration the bench runs featcache with: the workload's key families cached with
// the TTLs a feature store would use, redis-benchmark's "key:" keys cached like feature bundles, tracking on,
// admin HTTP off (statistics come from CACHE STATS over RESP).
const featcacheConfig = `listen: %q
admin: %q
admin_pprof: %t
shutdown_delay: 0s
upstream:
  addresses: [%q]
  tracking: true
local:
  max_memory: %d
policies:
  - name: feat
    prefix: "feat:"
    soft_ttl: 5m
    hard_ttl: 30m
  - name: emb
    prefix: "emb:"
    soft_ttl: 15m
    hard_ttl: 60m
  - name: redis-benchmark
    prefix: "key:"
    soft_ttl: 5m
    hard_ttl: 30m
`

// startFeatcache starts the featcache under test; with pprof, its admin listener serves /debug/pprof on the
// address it returns as admin.
func (f *fleet) startFeatcache(bin, upstream string, maxMemory int64, pprof bool) (addr string, p *proc, admin string, err error) {
	if pprof {
		if admin, err = freeAddr(); err != nil {
			return "", nil, "", err
		}
	}
	addr, p, err = f.startFeatcacheWith("featcache", bin, upstream, maxMemory, admin)
	return addr, p, admin, err
}

// startFeatcacheConfig starts a featcache named name with body (policies, a feast section) appended to the bench's
// listen, admin and upstream settings.
func (f *fleet) startFeatcacheConfig(name, bin, upstream, body string) (string, *proc, error) {
	addr, err := freeAddr()
	if err != nil {
		return "", nil, err
	}
	cfg := filepath.Join(f.dir, name+".yaml")
	text := fmt.Sprintf("listen: %q\nadmin: \"\"\nshutdown_delay: 0s\nupstream:\n  addresses: [%q]\n  tracking: true\n", addr, upstream) + body
	if err := os.WriteFile(cfg, []byte(text), 0o644); err != nil {
		return "", nil, err
	}
	p, err := f.start(name, bin, "-config", cfg)
	if err != nil {
		return "", nil, err
	}
	return addr, p, waitReady(p, addr)
}

// startFeatcacheAs starts a featcache named name (its log and configuration files are named after it), so one
// fleet can run several.
func (f *fleet) startFeatcacheAs(name, bin, upstream string, maxMemory int64) (string, *proc, error) {
	return f.startFeatcacheWith(name, bin, upstream, maxMemory, "")
}

// startFeatcacheWith is startFeatcacheAs with an admin listener (and /debug/pprof) on admin, if not empty.
func (f *fleet) startFeatcacheWith(name, bin, upstream string, maxMemory int64, admin string) (string, *proc, error) {
	addr, err := freeAddr()
	if err != nil {
		return "", nil, err
	}
	cfg := filepath.Join(f.dir, name+".yaml")
	if err := os.WriteFile(cfg, fmt.Appendf(nil, featcacheConfig, addr, admin, admin != "", upstream, maxMemory), 0o644); err != nil {
		return "", nil, err
	}
	p, err := f.start(name, bin, "-config", cfg)
	if err != nil {
		return "", nil, err
	}
	if err := waitReady(p, addr); err != nil {
		return "", nil, err
	}
	// Invalidations must be flowing before anything is measured, or early writes would leave stale entries.
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, err := cacheStats(addr)
		if err == nil && st.text != "" && strings.Contains(st.text, "tracking:up") {
			return addr, p, nil
		}
		if time.Now().After(deadline) {
			return "", nil, fmt.Errorf("featcache tracking not up within 10s (%v):\n%s", err, tail(p.log))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// twemproxyConfig is the nutcracker pool: Redis protocol, the one Redis as its only server, one preconnected
// server connection (twemproxy's usual production setting, and what multiplexes all clients onto one socket).
const twemproxyConfig = `bench:
  listen: %s
  redis: true
  hash: fnv1a_64
  distribution: ketama
  preconnect: true
  server_connections: 1
  auto_eject_hosts: false
  timeout: 5000
  servers:
    - %s:1
`

func (f *fleet) startTwemproxy(bin, upstream string) (string, *proc, error) {
	addr, err := freeAddr()
	if err != nil {
		return "", nil, err
	}
	statsAddr, err := freeAddr()
	if err != nil {
		return "", nil, err
	}
	_, statsPort, _ := net.SplitHostPort(statsAddr)
	cfg := filepath.Join(f.dir, "nutcracker.yml")
	if err := os.WriteFile(cfg, fmt.Appendf(nil, twemproxyConfig, addr, upstream), 0o644); err != nil {
		return "", nil, err
	}
	// Its stats port defaults to 22222 for every instance: give it a free one.
	p, err := f.start("nutcracker", bin, "-c", cfg, "-s", statsPort, "-a", "127.0.0.1", "-v", "4",
		"-o", filepath.Join(f.dir, "nutcracker.out"))
	if err != nil {
		return "", nil, err
	}
	return addr, p, waitReady(p, addr)
}

// findTwemproxy returns nutcracker's path for -twemproxy auto|on|off|PATH, or "" when it is not to be used.
func findTwemproxy(mode string) (string, error) {
	switch mode {
	case "off", "":
		return "", nil
	case "auto", "on":
		for _, p := range []string{"nutcracker", "/usr/sbin/nutcracker", "/usr/local/sbin/nutcracker"} {
			if path, err := exec.LookPath(p); err == nil {
				return path, nil
			}
		}
		if mode == "on" {
			return "", errors.New("nutcracker not found (Debian: apt-get install nutcracker)")
		}
		return "", nil
	}
	return mode, nil
}

// featcacheStats is one CACHE STATS reply.
type featcacheStats struct {
	text string
	m    map[string]int64
}

func cacheStats(addr string) (featcacheStats, error) {
	rc, err := dialRESP(addr, 2*time.Second)
	if err != nil {
		return featcacheStats{}, err
	}
	defer rc.Close()
	return rc.cacheStats()
}

func (rc *respConn) cacheStats() (featcacheStats, error) {
	rc.nc.SetDeadline(time.Now().Add(5 * time.Second))
	defer rc.nc.SetDeadline(time.Time{})
	v, err := rc.do("CACHE", "STATS")
	if err != nil {
		return featcacheStats{}, err
	}
	// An array of lines, one per counter; featcache built before that answered one bulk string.
	text, _ := v.(string)
	if lines, ok := v.([]any); ok {
		var b strings.Builder
		for _, l := range lines {
			s, _ := l.(string)
			b.WriteString(s + "\r\n")
		}
		text = b.String()
	}
	return featcacheStats{text: text, m: parseInfo(text)}, nil
}

// procCPU returns a process's user+system CPU time from /proc/<pid>/stat. utime and stime are fields 14 and 15,
// counted after the parenthesised command name, which may itself hold spaces; the unit is USER_HZ, which Linux
// fixes at 100 for user space.
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.New("malformed /proc stat")
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, errors.New("short /proc stat")
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * (time.Second / 100), nil
}

// procStatus returns a "Name: N kB" field of /proc/<pid>/status in bytes (VmHWM is the peak resident set).
func procStatus(pid int, field string) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			f := strings.Fields(rest)
			if len(f) > 0 {
				n, _ := strconv.ParseInt(f[0], 10, 64)
				return n << 10
			}
		}
	}
	return 0
}
