package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"featcache/internal/redistest"
	"featcache/internal/testkit"
)

// The command line as a user meets it: the built binary, its exit status, what it prints on stdout and stderr.

// runOnce runs the featcache binary bin with args until it exits (within 30s) and returns its stdout, its stderr
// and its exit status.
func runOnce(t *testing.T, bin string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exit) && ctx.Err() == nil:
		code = exit.ExitCode()
	default:
		t.Fatalf("featcache %q: %v\nstderr: %s", args, err, errb.String())
	}
	return out.String(), errb.String(), code
}

// TestCommandLine: -h and -help print the usage on stdout and exit 0; -version prints the version; -check
// validates the file, its password files and the flag overrides without listening or reaching Redis, and prints
// one OK line or the error naming the field; a stray argument or an unknown flag is a usage error (exit 2) that
// says what to do.
func TestCommandLine(t *testing.T) {
	bin := binary(t)
	dir := t.TempDir()
	write := func(name, text string) string { return testkit.WriteFile(t, dir, name, text) }
	secret := write("redis-password", "s3cret\n")
	good := write("good.yaml", fmt.Sprintf("upstream:\n  addresses: [\"redis.example:6379\"]\n  password_file: %q\n"+
		"policies:\n  - {name: p, prefix: \"p:\", hard_ttl: 1h}\n", secret))
	badTTL := write("bad-ttl.yaml", "policies:\n  - {name: p, prefix: \"p:\", hard_ttl: soon}\n")
	missingSecret := write("missing-secret.yaml", "upstream:\n  password_file: \"/nonexistent/redis-password\"\n")
	open := write("open.yaml", "listen: \"0.0.0.0:6380\"\n")
	noCert := write("no-cert.yaml", "tls: {cert_file: /nonexistent/cert.pem, key_file: /nonexistent/key.pem}\n")

	tests := []struct {
		name       string
		args       []string
		code       int
		stdout     []string // each must appear
		stderr     []string
		quietError bool // nothing on stderr
	}{
		{name: "-h", args: []string{"-h"}, stdout: []string{"Usage:", "featcache -config FILE", "-check", "-version",
			"-listen ADDR", "-upstream ADDR[,ADDR]", "-admin ADDR"}, quietError: true},
		{name: "-help", args: []string{"-help"}, stdout: []string{"Usage:"}, quietError: true},
		{name: "--help", args: []string{"--help"}, stdout: []string{"Usage:"}, quietError: true},
		{name: "-version", args: []string{"-version"}, stdout: []string{"featcache ", "go1."}, quietError: true},
		{name: "check good", args: []string{"-config", good, "-check"},
			stdout: []string{"featcache: configuration OK: " + good + " (listen 127.0.0.1:6380, admin 127.0.0.1:9121, " +
				"upstream redis.example:6379 with a password, 1 policies)"}, quietError: true},
		{name: "check with overrides", args: []string{"-config", good, "-check", "-listen", "127.0.0.1:7000", "-admin",
			"127.0.0.1:7001", "-upstream", "127.0.0.1:1"},
			stdout: []string{"configuration OK: " + good + " (listen 127.0.0.1:7000, admin 127.0.0.1:7001, upstream 127.0.0.1:1 with a password,"}},
		{name: "check defaults", args: []string{"-check"}, stdout: []string{"configuration OK: the defaults (no -config) (listen 127.0.0.1:6380, admin 127.0.0.1:9121, " +
			"upstream 127.0.0.1:6379 without a password, 0 policies)"}},
		{name: "check bad field", args: []string{"-config", badTTL, "-check"}, code: 1,
			stderr: []string{"featcache: " + badTTL + `: policy "p": hard_ttl: invalid duration "soon"`}},
		{name: "check bad override", args: []string{"-config", good, "-check", "-listen", "nope"}, code: 1,
			stderr: []string{`featcache: listen: invalid address "nope"`}},
		{name: "check missing password file", args: []string{"-config", missingSecret, "-check"}, code: 1,
			stderr: []string{"featcache: " + missingSecret + ": upstream.password_file: open /nonexistent/redis-password: no such file or directory"}},
		{name: "check protected mode", args: []string{"-config", open, "-check"}, code: 1,
			stderr: []string{`listen: "0.0.0.0:6380" is not a loopback address and clients need no credentials`}},
		{name: "check TLS files", args: []string{"-config", noCert, "-check"}, code: 1,
			stderr: []string{"/nonexistent/cert.pem"}},
		{name: "check missing file", args: []string{"-config", filepath.Join(dir, "none.yaml"), "-check"}, code: 1,
			stderr: []string{"none.yaml: no such file or directory"}},
		{name: "stray argument", args: []string{good}, code: 2,
			stderr: []string{`featcache: unexpected argument "` + good + `"`, "-config " + good, "Run 'featcache -h' for usage."}},
		{name: "argument after flags", args: []string{"-listen", "127.0.0.1:7000", "config.yaml"}, code: 2,
			stderr: []string{`unexpected argument "config.yaml"`, "-config config.yaml"}},
		{name: "unknown flag", args: []string{"-conf", good}, code: 2,
			stderr: []string{"featcache: flag provided but not defined: -conf", "Run 'featcache -h' for usage."}},
		{name: "flag without value", args: []string{"-config"}, code: 2,
			stderr: []string{"flag needs an argument: -config"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			stdout, stderr, code := runOnce(t, bin, tc.args...)
			if code != tc.code {
				t.Errorf("exit status %d; want %d\nstdout: %s\nstderr: %s", code, tc.code, stdout, stderr)
			}
			for _, want := range tc.stdout {
				if !strings.Contains(stdout, want) {
					t.Errorf("stdout %q lacks %q", stdout, want)
				}
			}
			for _, want := range tc.stderr {
				if !strings.Contains(stderr, want) {
					t.Errorf("stderr %q lacks %q", stderr, want)
				}
			}
			if tc.quietError && stderr != "" {
				t.Errorf("stderr %q; want nothing", stderr)
			}
			if code != 0 && stdout != "" {
				t.Errorf("stdout %q on failure; want nothing", stdout)
			}
			if strings.Contains(stdout+stderr, "s3cret") {
				t.Errorf("the password file's contents were printed")
			}
		})
	}
}

// TestVersionFromLdflags: a release sets the version with -ldflags "-X main.version=...", and -version prints it.
func TestVersionFromLdflags(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "featcache")
	out, err := exec.Command("go", "build", "-trimpath", "-ldflags", "-X main.version=v1.2.3-test", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	stdout, _, code := runOnce(t, bin, "-version")
	if code != 0 || !strings.HasPrefix(stdout, "featcache v1.2.3-test (") {
		t.Fatalf("-version: %q, exit %d; want it to start with %q", stdout, code, "featcache v1.2.3-test (")
	}
}

// TestListenerErrors: a taken port stops featcache at start with an error that names the listener, its address
// and the setting to change, and nothing keeps running.
func TestListenerErrors(t *testing.T) {
	bin := binary(t)
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	busy := taken.Addr().String()
	free := func() string { return "127.0.0.1:" + strconv.Itoa(redistest.FreePort(t)) }
	tests := []struct {
		name, listen, admin, want string
	}{
		{"admin", free(), busy, "featcache: admin listener " + busy + ": bind: address already in use (set admin in the " +
			`configuration, or -admin, to a free address, or admin: "" to run without the admin listener)`},
		{"RESP", busy, free(), "featcache: RESP listener " + busy + ": bind: address already in use (set listen in the " +
			"configuration, or -listen, to a free address)"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// The upstream refuses connections: featcache starts without it, so only the listener can fail.
			_, stderr, code := runOnce(t, bin, "-listen", tc.listen, "-admin", tc.admin, "-upstream", "127.0.0.1:1")
			if code != 1 || !strings.Contains(stderr, tc.want) {
				t.Fatalf("exit %d, stderr:\n%s\nwant exit 1 and %q", code, stderr, tc.want)
			}
			if strings.Contains(stderr, "featcache started") {
				t.Errorf("featcache logged a start before failing:\n%s", stderr)
			}
		})
	}
}

// TestPasswordFiles: with password_file and upstream.password_file, featcache authenticates to a Redis that has
// requirepass with the password read from a file, clients must AUTH with the other one, and neither password is
// logged. A reload after the file changed reports that the new password needs a restart and keeps the running one.
func TestPasswordFiles(t *testing.T) {
	const storeSecret, clientSecret = "store-pass-81c2", "client-pass-4e07"
	redis := redistest.Start(t, "--requirepass", storeSecret)
	dir := t.TempDir()
	storeFile, clientFile := filepath.Join(dir, "store"), filepath.Join(dir, "client")
	if err := os.WriteFile(storeFile, []byte(storeSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(clientFile, []byte(clientSecret+"\r\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	in := startBinary(t, redis, fmt.Sprintf(`
password_file: %q
upstream:
  password_file: %q
shutdown_delay: 0s
policies:
  - {name: p, prefix: "p:", hard_ttl: 1h}
`, clientFile, storeFile))
	c := redistest.Dial(t, in.addr)
	if got := string(c.Do("GET", "p:1")); !strings.HasPrefix(got, "-NOAUTH") {
		t.Fatalf("GET before AUTH = %q; want -NOAUTH", got)
	}
	if got := string(c.Do("AUTH", clientSecret)); got != "+OK\r\n" {
		t.Fatalf("AUTH with the client password file's contents = %q; want +OK", got)
	}
	if got := string(c.Do("SET", "p:1", "v")); got != "+OK\r\n" {
		t.Fatalf("SET through featcache = %q; want +OK (featcache authenticated to Redis)", got)
	}
	if got := string(c.Do("GET", "p:1")); got != "$1\r\nv\r\n" {
		t.Fatalf("GET = %q", got)
	}

	if err := os.WriteFile(storeFile, []byte("rotated-pass-9a1f\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	in.signal(syscall.SIGHUP)
	redistest.Eventually(t, 10*time.Second, "reload logged", func() bool {
		return strings.Contains(in.log.String(), `msg="reload: applied"`)
	})
	if log := in.log.String(); !strings.Contains(log, "restart_needed=upstream.password") {
		t.Errorf("the reload does not name upstream.password as needing a restart:\n%s", log)
	}
	if got := string(c.Do("SET", "p:2", "w")); got != "+OK\r\n" {
		t.Fatalf("SET after the reload = %q; want +OK with the running password", got)
	}
	in.signal(syscall.SIGTERM)
	in.wait(30 * time.Second)
	for _, secret := range []string{storeSecret, clientSecret, "rotated-pass-9a1f"} {
		if strings.Contains(in.log.String(), secret) {
			t.Errorf("the log holds a password:\n%s", in.log.String())
		}
	}
}
