package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"featcache/internal/redistest"
)

// scripts/run.sh, run as a user runs it: each case gets a copy of the script in a scratch checkout with its own
// config.yaml, a PATH whose "go" hands over the featcache binary the tests built, REDIS_PORT on a free port and
// TMPDIR in the test's directory, so nothing outside the test is touched.

// runScript is one run of scripts/run.sh.
type runScript struct {
	*process
	t   *testing.T
	out *redistest.LogBuffer // stdout and stderr
	tmp string               // its TMPDIR
}

// startRunScript runs scripts/run.sh with args in a scratch checkout whose config.yaml is cfg (plus files, name to
// content, beside it), with env added to the environment.
func startRunScript(t *testing.T, cfg string, files map[string]string, env []string, args ...string) *runScript {
	t.Helper()
	bin := binary(t)
	root := t.TempDir()
	script, err := os.ReadFile("scripts/run.sh")
	if err != nil {
		t.Fatal(err)
	}
	pathDir := filepath.Join(root, "path")
	tmp := filepath.Join(root, "tmp")
	for _, d := range []string{filepath.Join(root, "scripts"), pathDir, tmp} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	all := map[string]string{"config.yaml": cfg, "scripts/run.sh": string(script),
		"path/go": fmt.Sprintf("#!/bin/sh\n# go build -o OUT . : the binary the tests built\n[ \"$1 $2\" = \"build -o\" ] && exec cp %q \"$3\"\nexit 2\n", bin)}
	for name, content := range files {
		all[name] = content
	}
	for name, content := range all {
		if err := os.WriteFile(filepath.Join(root, name), []byte(content), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	rs := &runScript{t: t, out: &redistest.LogBuffer{}, tmp: tmp}
	cmd := exec.Command("bash", append([]string{filepath.Join(root, "scripts/run.sh")}, args...)...)
	cmd.Env = append(os.Environ(), "PATH="+pathDir+":"+os.Getenv("PATH"), "TMPDIR="+tmp)
	cmd.Env = append(cmd.Env, env...)
	cmd.Stdout, cmd.Stderr = rs.out, rs.out
	// Registered first, so it runs after the script is stopped.
	t.Cleanup(func() {
		// A redis-server the script started and did not stop (a failed case) is stopped by its pid file.
		pidfiles, _ := filepath.Glob(filepath.Join(tmp, "featcache-redis-*.pid"))
		for _, f := range pidfiles {
			if b, err := os.ReadFile(f); err == nil {
				if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && syscall.Kill(pid, 0) == nil {
					t.Errorf("the redis-server the script started (pid %d) still runs", pid)
					syscall.Kill(pid, syscall.SIGKILL)
				}
			}
		}
		if t.Failed() {
			t.Logf("run.sh output:\n%s", rs.out.String())
		}
	})
	rs.process = startProcess(t, cmd, syscall.SIGTERM, 30*time.Second)
	return rs
}

// wait waits for the script to exit and returns its exit status.
func (rs *runScript) wait(d time.Duration) int {
	rs.t.Helper()
	select {
	case <-rs.exited:
	case <-time.After(d):
		rs.t.Fatalf("run.sh did not exit within %v; output:\n%s", d, rs.out.String())
	}
	if rs.exitErr == nil {
		return 0
	}
	if exit, ok := rs.exitErr.(*exec.ExitError); ok {
		return exit.ExitCode()
	}
	rs.t.Fatalf("run.sh: %v", rs.exitErr)
	return -1
}

// httpStatus is the status of GET url, or 0 when nothing answers.
func httpStatus(url string) int {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// listenPair returns a free port for -listen whose admin port, 2741 above it, is free too.
func listenPair(t *testing.T) (listen, admin int) {
	t.Helper()
	for i := 0; i < 100; i++ {
		admin = redistest.FreePort(t)
		if admin <= 2741+1024 {
			continue
		}
		if ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(admin-2741)); err == nil {
			ln.Close()
			return admin - 2741, admin
		}
	}
	t.Fatal("no free pair of ports 2741 apart")
	return 0, 0
}

// startRunScriptReady runs run.sh with the args and -listen on a pair of free ports (listenPair), and waits until
// featcache is ready on the admin port next to it. A port can be taken by another process between listenPair's
// check and featcache's bind (the free ports the kernel hands out are those it also gives outgoing connections,
// which the other tests open all the time); featcache then exits with "address already in use", and the script
// is run again on new ports, three times at most. env is called for each run.
func startRunScriptReady(t *testing.T, cfg string, files map[string]string, env func() []string, args ...string) (rs *runScript, listen int) {
	t.Helper()
	for attempt := 1; ; attempt++ {
		var admin int
		listen, admin = listenPair(t)
		rs = startRunScript(t, cfg, files, env(), append(args, "-listen", "127.0.0.1:"+strconv.Itoa(listen))...)
		ready := false
		redistest.Eventually(t, 60*time.Second, "featcache ready on the moved admin port", func() bool {
			ready = httpStatus("http://127.0.0.1:"+strconv.Itoa(admin)+"/readyz") == http.StatusOK
			return ready || strings.Contains(rs.out.String(), "address already in use")
		})
		if ready {
			return rs, listen
		}
		rs.wait(30 * time.Second)
		if attempt == 3 {
			t.Fatalf("three runs found a port taken before featcache bound it; the last:\n%s", rs.out.String())
		}
		t.Logf("run %d: a port was taken before featcache bound it; again on other ports", attempt)
	}
}

const runScriptConfig = "shutdown_delay: 0s\npolicies:\n  - {name: p, prefix: \"p:\", hard_ttl: 1h}\n"

// TestRunScriptStartsAndStopsItsRedis: with nothing on the Redis port, run.sh starts a redis-server there, runs
// featcache in front of it with the admin listener moved next to -listen (and says where), and when featcache
// exits on SIGTERM it stops that redis-server and says so.
func TestRunScriptStartsAndStopsItsRedis(t *testing.T) {
	var redisPort int
	rs, listen := startRunScriptReady(t, runScriptConfig, nil, func() []string {
		redisPort = redistest.FreePort(t)
		return []string{"REDIS_PORT=" + strconv.Itoa(redisPort)}
	})
	admin := listen + 2741
	out := rs.out.String()
	for _, want := range []string{
		fmt.Sprintf("run.sh: started redis-server on 127.0.0.1:%d (pid ", redisPort),
		fmt.Sprintf("run.sh: featcache: RESP on 127.0.0.1:%d, admin HTTP on 127.0.0.1:%d (/metrics, /healthz, /readyz)", listen, admin),
	} {
		if !strings.Contains(out, want) {
			t.Errorf("the output lacks %q", want)
		}
	}
	c := redistest.Dial(t, "127.0.0.1:"+strconv.Itoa(listen))
	if got := string(c.Do("SET", "p:1", "v")); got != "+OK\r\n" {
		t.Fatalf("SET through featcache = %q", got)
	}
	direct := redistest.Dial(t, "127.0.0.1:"+strconv.Itoa(redisPort))
	if got := string(direct.Do("GET", "p:1")); got != "$1\r\nv\r\n" {
		t.Fatalf("GET on the Redis run.sh started = %q; want the write made through featcache", got)
	}
	c.Close()
	direct.Close()

	rs.cmd.Process.Signal(syscall.SIGTERM)
	if code := rs.wait(30 * time.Second); code != 0 {
		t.Fatalf("run.sh exited %d after SIGTERM; want featcache's 0", code)
	}
	if want := fmt.Sprintf("run.sh: stopped the redis-server it started on 127.0.0.1:%d", redisPort); !strings.Contains(rs.out.String(), want) {
		t.Errorf("the output lacks %q", want)
	}
	if !strings.Contains(rs.out.String(), `msg="featcache stopped"`) {
		t.Errorf("featcache did not stop gracefully")
	}
	if _, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(redisPort), time.Second); err == nil {
		t.Errorf("the redis-server run.sh started still accepts connections")
	}
}

// TestRunScriptChecksUpstream: run.sh uses a Redis that answers PONG and leaves it running; it stops before
// starting anything when the Redis needs a password the configuration does not give (naming the fields), when
// something that is not Redis answers, and when the configuration does not validate.
func TestRunScriptChecksUpstream(t *testing.T) {
	t.Run("existing Redis", func(t *testing.T) {
		redis := redistest.Start(t)
		rs, _ := startRunScriptReady(t, runScriptConfig, nil, func() []string {
			return []string{"REDIS_PORT=" + strconv.Itoa(redis.Port())}
		})
		rs.cmd.Process.Signal(syscall.SIGTERM)
		if code := rs.wait(30 * time.Second); code != 0 {
			t.Fatalf("run.sh exited %d", code)
		}
		out := rs.out.String()
		if !strings.Contains(out, "run.sh: using the Redis at "+redis.Addr()) || strings.Contains(out, "redis-server on") {
			t.Errorf("want the existing Redis used, nothing started or stopped")
		}
		if got := string(redis.Do("PING")); got != "+PONG\r\n" {
			t.Errorf("the existing Redis after run.sh: PING = %q", got)
		}
	})

	t.Run("password needed", func(t *testing.T) {
		redis := redistest.Start(t, "--requirepass", "runsh-secret")
		rs := startRunScript(t, runScriptConfig, nil, []string{"REDIS_PORT=" + strconv.Itoa(redis.Port())})
		if code := rs.wait(60 * time.Second); code != 1 {
			t.Fatalf("run.sh exited %d; want 1", code)
		}
		want := "run.sh: the Redis at " + redis.Addr() + " needs a password (NOAUTH): set upstream.password, or " +
			"upstream.password_file (a file holding it), in config.yaml"
		if out := rs.out.String(); !strings.Contains(out, want) || strings.Contains(out, "featcache started") {
			t.Errorf("want %q and featcache not started", want)
		}
	})

	t.Run("password given", func(t *testing.T) {
		redis := redistest.Start(t, "--requirepass", "runsh-secret")
		cfg := "upstream:\n  password_file: secret.txt\n" + runScriptConfig
		rs, listen := startRunScriptReady(t, runScriptConfig, map[string]string{"with-password.yaml": cfg, "secret.txt": "runsh-secret\n"},
			func() []string { return []string{"REDIS_PORT=" + strconv.Itoa(redis.Port())} }, "-config", "with-password.yaml")
		if want := "run.sh: using the Redis at " + redis.Addr() + " with the password with-password.yaml sets"; !strings.Contains(rs.out.String(), want) {
			t.Errorf("the output lacks %q", want)
		}
		c := redistest.Dial(t, "127.0.0.1:"+strconv.Itoa(listen))
		if got := string(c.Do("SET", "p:1", "v")); got != "+OK\r\n" {
			t.Fatalf("SET through featcache = %q", got)
		}
		rs.cmd.Process.Signal(syscall.SIGTERM)
		if code := rs.wait(30 * time.Second); code != 0 {
			t.Fatalf("run.sh exited %d", code)
		}
	})

	notRedis := []struct {
		name  string
		reply string // what the server writes to each connection; "" writes nothing
		want  string
	}{
		{"HTTP server", "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n", `answers, but not as Redis (PING got: Error: Protocol error, got "H" as reply type byte)`},
		{"silent server", "", "answers, but not as Redis (PING got: no reply within 3s)"},
	}
	for _, tc := range notRedis {
		t.Run(tc.name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			go func() {
				for {
					conn, err := ln.Accept()
					if err != nil {
						return
					}
					go func() {
						defer conn.Close()
						if tc.reply == "" {
							conn.SetDeadline(time.Now().Add(10 * time.Second))
							io.Copy(io.Discard, conn) // silent until the client gives up
							return
						}
						if _, err := bufio.NewReader(conn).ReadByte(); err == nil {
							conn.Write([]byte(tc.reply))
						}
					}()
				}
			}()
			port := ln.Addr().(*net.TCPAddr).Port
			rs := startRunScript(t, runScriptConfig, nil, []string{"REDIS_PORT=" + strconv.Itoa(port)})
			if code := rs.wait(60 * time.Second); code != 1 {
				t.Fatalf("run.sh exited %d; want 1", code)
			}
			out := rs.out.String()
			want := fmt.Sprintf("run.sh: 127.0.0.1:%d %s: stop what runs there, or point featcache at your Redis with "+
				"-upstream HOST:PORT (or REDIS_PORT=PORT for a local one)", port, tc.want)
			if !strings.Contains(out, want) || strings.Contains(out, "featcache started") {
				t.Errorf("want %q and featcache not started", want)
			}
		})
	}

	t.Run("invalid configuration", func(t *testing.T) {
		rs := startRunScript(t, "policies:\n  - {name: p, prefix: \"p:\", hard_ttl: soon}\n", nil,
			[]string{"REDIS_PORT=" + strconv.Itoa(redistest.FreePort(t))})
		if code := rs.wait(60 * time.Second); code != 1 {
			t.Fatalf("run.sh exited %d; want 1", code)
		}
		out := rs.out.String()
		if !strings.Contains(out, `config.yaml: policy "p": hard_ttl: invalid duration "soon"`) ||
			!strings.Contains(out, "run.sh: featcache -check failed (above): fix config.yaml or the arguments") ||
			strings.Contains(out, "redis-server on") {
			t.Errorf("want featcache's error, the script's advice, and no redis-server started")
		}
	})
}
