package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"featcache/internal/redistest"
	"featcache/internal/resp"
)

// These tests run the real featcache binary, built once per test run, as a subprocess in front of a real Redis,
// and drive it with signals.

var build struct {
	once sync.Once
	path string
	err  error
	out  []byte
}

// binary builds featcache (with the race detector when the tests run with it) and returns its path.
func binary(t *testing.T) string {
	t.Helper()
	build.once.Do(func() {
		dir, err := os.MkdirTemp("", "featcache-bin-")
		if err != nil {
			build.err = err
			return
		}
		build.path = filepath.Join(dir, "featcache")
		args := []string{"build", "-o", build.path}
		if raceEnabled {
			args = append(args, "-race")
		}
		cmd := exec.Command("go", append(args, ".")...)
		build.out, build.err = cmd.CombinedOutput()
	})
	if build.err != nil {
		t.Fatalf("go build: %v\n%s", build.err, build.out)
	}
	return build.path
}

func TestMain(m *testing.M) {
	code := m.Run()
	if build.path != "" {
		os.RemoveAll(filepath.Dir(build.path))
	}
	os.Exit(code)
}

// process is a child process a test started.
type process struct {
	cmd     *exec.Cmd
	exited  chan struct{} // closed when the process has exited
	exitErr error         // set before exited is closed
}

// startProcess starts cmd. When the test ends, a process still running is sent stop and, if it has not exited
// within grace, killed; with a nil stop it is killed at once.
func startProcess(t *testing.T, cmd *exec.Cmd, stop os.Signal, grace time.Duration) *process {
	t.Helper()
	pr := &process{cmd: cmd, exited: make(chan struct{})}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { pr.exitErr = cmd.Wait(); close(pr.exited) }()
	t.Cleanup(func() {
		select {
		case <-pr.exited:
			return
		default:
		}
		if stop != nil {
			cmd.Process.Signal(stop)
			select {
			case <-pr.exited:
				return
			case <-time.After(grace):
			}
		}
		cmd.Process.Kill()
		<-pr.exited
	})
	return pr
}

// instance is one featcache process.
type instance struct {
	*process
	t     *testing.T
	log   *redistest.LogBuffer
	addr  string // RESP
	admin string // http://host:port
}

// startBinary runs featcache with the configuration yamlCfg (listen and admin on free ports) in front of redis and
// waits until it is ready.
func startBinary(t *testing.T, redis *redistest.Server, yamlCfg string) *instance {
	t.Helper()
	return startBinaryArgs(t, yamlCfg, "-upstream", redis.Addr())
}

// startBinaryArgs runs featcache like startBinary, with args instead of -upstream.
func startBinaryArgs(t *testing.T, yamlCfg string, args ...string) *instance {
	t.Helper()
	listen := "127.0.0.1:" + strconv.Itoa(redistest.FreePort(t))
	admin := "127.0.0.1:" + strconv.Itoa(redistest.FreePort(t))
	cfgPath := writeConfig(t, yamlCfg)
	in := &instance{t: t, log: &redistest.LogBuffer{}, addr: listen, admin: "http://" + admin}
	cmd := exec.Command(binary(t), append([]string{"-config", cfgPath, "-listen", listen, "-admin", admin}, args...)...)
	cmd.Stderr = in.log
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("featcache log:\n%s", in.log.String())
		}
	})
	in.process = startProcess(t, cmd, nil, 0)
	redistest.Eventually(t, 30*time.Second, "featcache ready", func() bool { return in.status("/readyz") == http.StatusOK })
	return in
}

// configPath is the configuration file the instance was started with.
func (in *instance) configPath() string { return in.cmd.Args[2] }

// status is the HTTP status of an admin path, or 0 when the admin listener does not answer.
func (in *instance) status(path string) int { return httpStatus(in.admin + path) }

func (in *instance) signal(sig os.Signal) {
	in.t.Helper()
	if err := in.cmd.Process.Signal(sig); err != nil {
		in.t.Fatal(err)
	}
}

// wait waits for the process to exit and fails the test unless it exits with status 0.
func (in *instance) wait(d time.Duration) {
	in.t.Helper()
	select {
	case <-in.exited:
		if in.exitErr != nil {
			in.t.Fatalf("featcache exited with %v", in.exitErr)
		}
	case <-time.After(d):
		in.t.Fatalf("featcache did not exit within %v", d)
	}
}

// TestSIGTERMMidPipelineLosesNoReply: SIGTERM arrives while one client pipelines INCRs without ever pausing and
// another has just sent a pipeline of 10,000 commands. /readyz turns 503 at once while featcache keeps serving
// (new connections too) for shutdown_delay; then the large pipeline gets every reply, in order, before its
// connection closes; the endless pipeliner is served until shutdown_timeout and then stopped between two batches,
// and Redis's counter equals the INCR replies it received: no command featcache executed lost its reply. The
// process writes its hot keys and exits 0, and a new instance warms from that hot-key file.
func TestSIGTERMMidPipelineLosesNoReply(t *testing.T) {
	redis := redistest.Start(t)
	hotFile := filepath.Join(t.TempDir(), "hotkeys.txt")
	for i := 0; i < 100; i++ {
		redis.Do("SET", "k:"+strconv.Itoa(i), "v"+strconv.Itoa(i))
	}
	cfg := fmt.Sprintf(`
shutdown_delay: 1s
shutdown_timeout: 6s
log:
  format: json
warm:
  ready_after: 10
  hotkeys_file: %q
  hotkeys_size: 100
policies:
  - {name: k, prefix: "k:", hard_ttl: 1h}
`, hotFile)
	in := startBinary(t, redis, cfg)

	// The endless pipeliner: batches of 200 commands (100 INCRs, 100 GETs of hot keys), written back to back by one
	// goroutine while another reads the replies, until the connection closes.
	rc := redistest.Dial(t, in.addr)
	var batch []byte
	for i := 0; i < 100; i++ {
		batch = resp.AppendCommand(batch, "INCR", "cnt")
		batch = resp.AppendCommand(batch, "GET", "k:"+strconv.Itoa(i%20))
	}
	var incrReplies, replies atomic.Int64
	readErr := rc.Flood(batch, 30*time.Second, func(frame []byte) error {
		if replies.Add(1)%2 == 1 {
			if want := ":" + strconv.FormatInt(incrReplies.Add(1), 10) + "\r\n"; string(frame) != want {
				return fmt.Errorf("INCR reply %q; want %q", frame, want)
			}
		} else if !bytes.HasPrefix(frame, []byte("$")) {
			return fmt.Errorf("GET reply %q", frame)
		}
		return nil
	})
	redistest.Eventually(t, 10*time.Second, "the pipeliner running", func() bool { return replies.Load() > 5000 })

	// The large pipeline, sent just before SIGTERM.
	big := redistest.Dial(t, in.addr)
	var payload []byte
	const bigN = 10000
	for i := 0; i < bigN; i++ {
		payload = resp.AppendCommand(payload, "INCR", "big")
	}
	go big.NetConn().Write(payload)

	in.signal(syscall.SIGTERM)
	redistest.Eventually(t, 2*time.Second, "/readyz 503 after SIGTERM", func() bool { return in.status("/readyz") == http.StatusServiceUnavailable })
	late := redistest.Dial(t, in.addr) // accepted during shutdown_delay
	if got := string(late.Do("GET", "k:1")); got != "$2\r\nv1\r\n" {
		t.Fatalf("a new connection during shutdown_delay: GET = %q", got)
	}

	for i := 1; i <= bigN; i++ {
		frame, err := big.ReadTimeout(30 * time.Second)
		if err != nil || string(frame) != ":"+strconv.Itoa(i)+"\r\n" {
			t.Fatalf("large pipeline reply %d: %q, %v", i, frame, err)
		}
	}
	in.wait(30 * time.Second)
	if err := <-readErr; !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("pipeliner: %v; want the connection closed between replies", err)
	}
	if got := bulkInt(t, redis.Do("GET", "cnt")); got != incrReplies.Load() {
		t.Fatalf("Redis executed %d INCRs of the pipeliner; it received %d replies: %d lost", got, incrReplies.Load(), got-incrReplies.Load())
	}
	t.Logf("pipeliner: %d replies before the close", replies.Load())
	logs := in.log.String()
	for _, want := range []string{`"msg":"shutdown: draining, /readyz answers 503"`, `"msg":"shutdown: listener closed, finishing client pipelines"`,
		`"msg":"shutdown: hot keys written"`, `"msg":"featcache stopped"`} {
		if !strings.Contains(logs, want) {
			t.Errorf("the log lacks %s", want)
		}
	}

	hot, err := os.ReadFile(hotFile)
	if err != nil {
		t.Fatalf("hot keys not written at shutdown: %v", err)
	}
	if lines := strings.Split(strings.TrimSpace(string(hot)), "\n"); len(lines) != 20 || !strings.HasPrefix(lines[0], "k:") {
		t.Fatalf("hot-key file holds %q; want the 20 keys read", lines)
	}
	gets := redis.Calls("get")
	next := startBinary(t, redis, cfg)
	// Ready once ready_after (10) keys are loaded; the warm-up reads its first round trip of 16 keys and then the
	// rest, so the count is waited for, and must then stay at 20.
	redistest.Eventually(t, 5*time.Second, "the next instance's warm-up reads the 20 hot keys", func() bool {
		return redis.Calls("get")-gets >= 20
	})
	if got := redis.Calls("get") - gets; got != 20 {
		t.Fatalf("the next instance's warm-up made %d upstream GETs; want the 20 hot keys", got)
	}
	c := redistest.Dial(t, next.addr)
	for i := 0; i < 20; i++ {
		c.Do("GET", "k:"+strconv.Itoa(i))
	}
	if got := redis.Calls("get") - gets; got != 20 {
		t.Fatalf("reading the warmed hot keys made %d more upstream GETs; want 0", got-20)
	}
	next.signal(syscall.SIGINT) // skips shutdown_delay
	next.wait(10 * time.Second)
}

// TestSIGHUPReload: SIGHUP with an invalid file is rejected and logged while featcache keeps serving; SIGHUP with
// a valid one is applied.
func TestSIGHUPReload(t *testing.T) {
	redis := redistest.Start(t)
	redis.Do("SET", "p:1", "v")
	in := startBinary(t, redis, "shutdown_delay: 0s\npolicies:\n  - {name: p, prefix: \"p:\", hard_ttl: 1h, jitter: 0}\n")
	c := redistest.Dial(t, in.addr)
	c.Do("GET", "p:1")
	if err := os.WriteFile(in.configPath(), []byte("policies:\n  - {name: p, prefix: \"p:\", hard_ttl: soon}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	in.signal(syscall.SIGHUP)
	redistest.Eventually(t, 10*time.Second, "rejected reload logged", func() bool {
		return strings.Contains(in.log.String(), `msg="reload: rejected, the running configuration stays"`)
	})
	if !strings.Contains(in.log.String(), `hard_ttl: invalid duration`) {
		t.Fatal("the log does not say why the reload was rejected")
	}
	if got := string(c.Do("CACHE", "EXPLAIN", "p:1")); !strings.Contains(got, "state:fresh") || !strings.Contains(got, "hard_left_ms:3") {
		t.Fatalf("after a rejected reload: %q; want the 1h entry still fresh", got)
	}
	if err := os.WriteFile(in.configPath(), []byte("policies:\n  - {name: p, prefix: \"p:\", hard_ttl: 1m, jitter: 0}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	in.signal(syscall.SIGHUP)
	redistest.Eventually(t, 10*time.Second, "applied reload", func() bool {
		return strings.Contains(in.log.String(), `msg="reload: applied"`)
	})
	explain, _, _ := resp.Decode(c.Do("CACHE", "EXPLAIN", "p:1"))
	left := ""
	for _, line := range explain.Elems {
		if v, ok := strings.CutPrefix(line.Str, "hard_left_ms:"); ok {
			left = v
		}
	}
	if ms, err := strconv.Atoi(left); err != nil || ms > 60000 {
		t.Fatalf("after the reload: %+v; want at most a minute left", explain.Elems)
	}
	in.signal(syscall.SIGTERM)
	in.wait(30 * time.Second)
}

// bulkInt decodes a bulk string reply holding an integer; a nil is 0.
func bulkInt(t *testing.T, frame []byte) int64 {
	t.Helper()
	body, isNil, ok := resp.BulkPayload(frame)
	if isNil {
		return 0
	}
	n, err := strconv.ParseInt(string(body), 10, 64)
	if !ok || err != nil {
		t.Fatalf("not an integer bulk: %q", frame)
	}
	return n
}
