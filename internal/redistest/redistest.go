// Package redistest starts real redis-server processes on free loopback ports for tests, and offers a minimal raw
// RESP client so tests can compare reply bytes exactly.
//
// Nothing here fakes Redis: a test that needs an upstream gets a real redis-server (Debian package redis-server).
// A missing binary fails the test with the install hint; it never skips.
package redistest

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"featcache/internal/resp"
)

// InstallHint is printed when redis-server or redis-cli is missing.
const InstallHint = "install it with: apt-get update && apt-get install -y redis-server redis-tools (or run bash .ci/run)"

// Server is one redis-server process owned by a test. Its methods are safe for concurrent use.
type Server struct {
	tb   testing.TB
	port int
	dir  string
	args []string
	tls  *tls.Config // client configuration when the server speaks TLS only; nil for plain TCP
	conf string      // a sentinel's configuration file: the server runs in sentinel mode

	mu  sync.Mutex
	cmd *exec.Cmd
}

// Start starts a redis-server on a free loopback port with persistence off unless args turn it on, and stops it
// when the test ends. Extra args are passed to redis-server as "--name value" pairs, for example
// "--appendonly", "yes".
func Start(tb testing.TB, args ...string) *Server {
	tb.Helper()
	return start(tb, nil, args, "")
}

// start starts a redis-server; with conf, a sentinel reading that configuration file.
func start(tb testing.TB, tlsConf *tls.Config, args []string, conf string) *Server {
	tb.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		tb.Fatalf("redistest: redis-server not found in PATH: %s", InstallHint)
	}
	s := &Server{tb: tb, dir: tb.TempDir(), args: args, tls: tlsConf, conf: conf}
	s.launch(FreePort, "redis-server")
	return s
}

// launch starts s on a port from freePort, trying another port when the server does not start (the port may have
// been taken since it was chosen), and stops it when the test ends; what names the server in the failure.
func (s *Server) launch(freePort func(testing.TB) int, what string) {
	s.tb.Helper()
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		s.port = freePort(s.tb)
		if lastErr = s.start(); lastErr == nil {
			s.tb.Cleanup(s.Kill)
			return
		}
	}
	s.tb.Fatalf("redistest: %s did not start: %v", what, lastErr)
}

// StartTLS starts a redis-server like Start that accepts TLS connections only (its plain port is off), with the
// server certificate of certs; with clientAuth it requires client certificates signed by certs's authority
// (tls-auth-clients yes). Its Addr is the TLS port; Do, Dial and the readiness checks speak TLS.
func StartTLS(tb testing.TB, certs *Certs, clientAuth bool, args ...string) *Server {
	tb.Helper()
	auth := "no"
	if clientAuth {
		auth = "yes"
	}
	tlsArgs := []string{
		"--tls-cert-file", certs.ServerCertFile,
		"--tls-key-file", certs.ServerKeyFile,
		"--tls-ca-cert-file", certs.CAFile,
		"--tls-auth-clients", auth,
	}
	return start(tb, certs.ClientConfig(true), append(tlsArgs, args...), "")
}

// FreePort returns a loopback TCP port that was free a moment ago. It is drawn at random below 32768, outside
// the range Linux hands out to outgoing connections (32768-60999 by default), so that no test's connection can
// take it between this check and the bind of the server it is meant for (which happened with ports the kernel
// chose: they come from that same range). Cluster nodes also need port+10000 free, which stays below 42768.
func FreePort(tb testing.TB) int {
	tb.Helper()
	for i := 0; i < 200; i++ {
		port := 16384 + rand.IntN(32768-16384)
		ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err != nil {
			continue // taken
		}
		ln.Close()
		return port
	}
	tb.Fatalf("redistest: no free port between 16384 and 32767")
	return 0
}

func (s *Server) start() error {
	argv := []string{"--port", strconv.Itoa(s.port)}
	if s.tls != nil {
		argv = []string{"--port", "0", "--tls-port", strconv.Itoa(s.port)}
	}
	argv = append(argv,
		"--bind", "127.0.0.1",
		"--save", "",
		"--appendonly", "no",
		"--dir", s.dir,
		"--daemonize", "no",
		"--logfile", filepath.Join(s.dir, "redis.log"),
		"--protected-mode", "no",
	)
	argv = append(argv, s.args...)
	if s.conf != "" {
		// The configuration file comes first; --sentinel makes redis-server a sentinel.
		argv = append([]string{s.conf, "--sentinel"}, argv...)
	}
	cmd := exec.Command("redis-server", argv...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	s.mu.Lock()
	s.cmd = cmd
	s.mu.Unlock()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-exited:
			log, _ := os.ReadFile(filepath.Join(s.dir, "redis.log"))
			return fmt.Errorf("redis-server exited (%v): %s", err, lastLines(string(log), 5))
		default:
		}
		if c, err := s.dial(200 * time.Millisecond); err == nil {
			reply, err := roundTrip(c, "PING")
			c.Close()
			// A server with requirepass answers -NOAUTH: it is up all the same.
			if err == nil && (string(reply) == "+PONG\r\n" || strings.HasPrefix(string(reply), "-NOAUTH")) {
				go func() { <-exited }()
				return nil
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	cmd.Process.Kill()
	return errors.New("redis-server did not answer PING within 10s")
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}

// Addr is the server's "127.0.0.1:port".
func (s *Server) Addr() string { return "127.0.0.1:" + strconv.Itoa(s.port) }

// Port is the server's TCP port.
func (s *Server) Port() int { return s.port }

// Dir is the server's working directory (RDB and AOF files live there).
func (s *Server) Dir() string { return s.dir }

// Kill ends the server with SIGKILL (no shutdown save) and waits until its port is closed. Killing a stopped or
// dead server is a no-op.
func (s *Server) Kill() {
	s.mu.Lock()
	cmd := s.cmd
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil || cmd.Process == nil {
		return
	}
	syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	cmd.Process.Kill()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		c, err := net.DialTimeout("tcp", s.Addr(), 50*time.Millisecond)
		if err != nil {
			return
		}
		c.Close()
		time.Sleep(10 * time.Millisecond)
	}
}

// Restart kills the server and starts it again on the same port and directory, with the same arguments; data
// survives only if persistence was configured.
func (s *Server) Restart() {
	s.tb.Helper()
	s.Kill()
	var err error
	for attempt := 0; attempt < 50; attempt++ {
		if err = s.start(); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	s.tb.Fatalf("redistest: restart on port %d: %v", s.port, err)
}

// Pause stops the server with SIGSTOP: connections stay open but nothing is answered, as with a hung server.
func (s *Server) Pause() { s.signal(syscall.SIGSTOP) }

// Resume continues a paused server with SIGCONT.
func (s *Server) Resume() { s.signal(syscall.SIGCONT) }

func (s *Server) signal(sig syscall.Signal) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil && s.cmd.Process != nil {
		s.cmd.Process.Signal(sig)
	}
}

// dial connects to the server, with TLS when it speaks TLS, completing the handshake within d.
func (s *Server) dial(d time.Duration) (net.Conn, error) {
	c, err := net.DialTimeout("tcp", s.Addr(), d)
	if err != nil || s.tls == nil {
		return c, err
	}
	tc := tls.Client(c, withServerName(s.tls, s.Addr()))
	tc.SetDeadline(time.Now().Add(d))
	if err := tc.Handshake(); err != nil {
		c.Close()
		return nil, err
	}
	tc.SetDeadline(time.Time{})
	return tc, nil
}

// Dial connects to the server (with TLS when it speaks TLS); the connection is closed when the test ends.
func (s *Server) Dial() *Conn {
	s.tb.Helper()
	if s.tls == nil {
		return Dial(s.tb, s.Addr())
	}
	return DialTLS(s.tb, s.Addr(), s.tls)
}

// Do sends one command on a new connection and returns the raw reply frame; the test fails on a network error.
func (s *Server) Do(args ...string) []byte {
	s.tb.Helper()
	c := s.Dial()
	defer c.Close()
	return c.Do(args...)
}

// Calls returns how many times the server has executed cmd (lower case, "config|get" for a subcommand), from
// INFO commandstats; 0 if it never has.
func (s *Server) Calls(cmd string) int {
	s.tb.Helper()
	return CommandCalls(string(s.Do("INFO", "commandstats")), cmd)
}

// CommandCalls reads how many times cmd was executed from info, a reply to INFO commandstats; 0 if it never was.
func CommandCalls(info, cmd string) int {
	prefix := "cmdstat_" + cmd + ":calls="
	for _, line := range strings.Split(info, "\n") {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(line), prefix); ok {
			n, _ := strconv.Atoi(rest[:strings.IndexByte(rest, ',')])
			return n
		}
	}
	return 0
}

// Conn is a minimal RESP2 client for tests: it writes commands as multi-bulk arrays and reads whole reply frames,
// returning their raw bytes so tests can compare them with what Redis sends.
type Conn struct {
	tb testing.TB
	c  net.Conn
	r  *bufio.Reader
}

// Dial connects to addr; the connection is closed when the test ends.
func Dial(tb testing.TB, addr string) *Conn {
	tb.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		tb.Fatalf("redistest: dial %s: %v", addr, err)
	}
	conn := &Conn{tb: tb, c: c, r: bufio.NewReaderSize(c, 64<<10)}
	tb.Cleanup(func() { c.Close() })
	return conn
}

// TryDial connects to addr like Dial but returns the error instead of failing the test, for tests that dial
// servers they are restarting.
func TryDial(tb testing.TB, addr string) (*Conn, error) {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return nil, err
	}
	conn := &Conn{tb: tb, c: c, r: bufio.NewReaderSize(c, 64<<10)}
	tb.Cleanup(func() { c.Close() })
	return conn, nil
}

// DialTLS connects to addr over TLS with cfg and completes the handshake; the connection is closed when the test
// ends. The test fails if the handshake does.
func DialTLS(tb testing.TB, addr string, cfg *tls.Config) *Conn {
	tb.Helper()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		tb.Fatalf("redistest: dial %s: %v", addr, err)
	}
	tc := tls.Client(nc, withServerName(cfg, addr))
	tc.SetDeadline(time.Now().Add(5 * time.Second))
	if err := tc.Handshake(); err != nil {
		nc.Close()
		tb.Fatalf("redistest: TLS handshake with %s: %v", addr, err)
	}
	tc.SetDeadline(time.Time{})
	conn := &Conn{tb: tb, c: tc, r: bufio.NewReaderSize(tc, 64<<10)}
	tb.Cleanup(func() { tc.Close() })
	return conn
}

// withServerName returns cfg with ServerName set to addr's host when it has none, as tls.Dial would.
func withServerName(cfg *tls.Config, addr string) *tls.Config {
	if cfg.ServerName != "" {
		return cfg
	}
	host, _, _ := net.SplitHostPort(addr)
	cfg = cfg.Clone()
	cfg.ServerName = host
	return cfg
}

// Close closes the connection.
func (c *Conn) Close() error { return c.c.Close() }

// NetConn is the underlying connection, for tests that write raw bytes.
func (c *Conn) NetConn() net.Conn { return c.c }

// Do sends a command and returns its raw reply frame. It waits at most 10 seconds.
func (c *Conn) Do(args ...string) []byte {
	c.tb.Helper()
	if err := c.Send(args...); err != nil {
		c.tb.Fatalf("redistest: send %q: %v", args, err)
	}
	reply, err := c.Read()
	if err != nil {
		c.tb.Fatalf("redistest: reply to %q: %v", args, err)
	}
	return reply
}

// Pipeline sends cmds in one write and returns their reply frames one after the other, as one byte string; a
// failure fails the test.
func (c *Conn) Pipeline(cmds [][]string) []byte {
	c.tb.Helper()
	var batch []byte
	for _, cmd := range cmds {
		batch = append(batch, Encode(cmd...)...)
	}
	if _, err := c.c.Write(batch); err != nil {
		c.tb.Fatalf("redistest: send a pipeline of %d commands: %v", len(cmds), err)
	}
	var out []byte
	for i := range cmds {
		frame, err := c.Read()
		if err != nil {
			c.tb.Fatalf("redistest: reply to %q (command %d of the pipeline) after %q: %v", cmds[i], i+1, out, err)
		}
		out = append(out, frame...)
	}
	return out
}

// Send writes one command without reading its reply.
func (c *Conn) Send(args ...string) error {
	_, err := c.c.Write(Encode(args...))
	return err
}

// Read reads one whole reply frame, waiting at most 10 seconds.
func (c *Conn) Read() ([]byte, error) {
	return c.ReadTimeout(10 * time.Second)
}

// ReadTimeout reads one whole reply frame (RESP2 or RESP3, nested aggregates included), waiting at most d. On an
// error it returns the part of the frame read before it.
func (c *Conn) ReadTimeout(d time.Duration) ([]byte, error) {
	c.c.SetReadDeadline(time.Now().Add(d))
	defer c.c.SetReadDeadline(time.Time{})
	return resp.ReadFrame(c.r, nil)
}

// Flood makes c a client that pipelines without ever pausing: one goroutine writes batch again and again until a
// write fails, another reads the replies, each within d, and hands them to check in order. The channel receives
// what ended the reading: check's error, or the read error; a read that ends inside a reply is an error of its own
// (not the read error wrapped), since a client must never be left with part of a reply.
func (c *Conn) Flood(batch []byte, d time.Duration, check func(frame []byte) error) <-chan error {
	go func() {
		for {
			if _, err := c.c.Write(batch); err != nil {
				return
			}
		}
	}()
	done := make(chan error, 1)
	go func() {
		for {
			frame, err := c.ReadTimeout(d)
			if err != nil {
				if len(frame) > 0 {
					err = fmt.Errorf("a partial reply %.60q, then %v", frame, err)
				}
				done <- err
				return
			}
			if err := check(frame); err != nil {
				done <- err
				return
			}
		}
	}()
	return done
}

// Encode returns args as a RESP multi-bulk command.
func Encode(args ...string) []byte { return resp.AppendCommand(nil, args...) }

func roundTrip(c net.Conn, args ...string) ([]byte, error) {
	c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write(Encode(args...)); err != nil {
		return nil, err
	}
	return resp.ReadFrame(bufio.NewReader(c), nil)
}

// Eventually polls cond every 5ms until it returns true or d passes, then fails the test with msg.
func Eventually(tb testing.TB, d time.Duration, msg string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(d)
	for {
		if cond() {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("condition not met within %v: %s", d, msg)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// LogBuffer is a log destination (for slog handlers or a process's output) that tests read while the code under
// test writes to it. It is safe for concurrent use; the zero value is ready.
type LogBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *LogBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// String returns everything written so far.
func (l *LogBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
