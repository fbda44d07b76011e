package main

import (
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"featcache/internal/redistest"
	"featcache/internal/testkit"
)

// The tests of featcache as its main function wires it: flags, configuration, protected mode, TLS and logs.

// inProcess is one run of featcache in the test process.
type inProcess struct {
	logs   *redistest.LogBuffer
	stop   chan os.Signal
	done   chan error
	listen string
}

// startInProcess runs featcache with args and waits until it listens, or fails the test with what it logged.
func startInProcess(t *testing.T, args ...string) *inProcess {
	t.Helper()
	in := &inProcess{logs: &redistest.LogBuffer{}, stop: make(chan os.Signal, 1), done: make(chan error, 1)}
	go func() { in.done <- run(args, io.Discard, in.logs, in.stop) }()
	addr := regexp.MustCompile(`msg="featcache started" listen=(\S+)`)
	redistest.Eventually(t, 10*time.Second, "featcache listening", func() bool {
		select {
		case err := <-in.done:
			t.Fatalf("featcache %q stopped: %v\n%s", args, err, in.logs)
		default:
		}
		m := addr.FindStringSubmatch(in.logs.String())
		if m != nil {
			in.listen = m[1]
		}
		return m != nil
	})
	t.Cleanup(func() {
		in.shutdown(t)
		if t.Failed() {
			t.Logf("featcache %q logged:\n%s", args, in.logs)
		}
	})
	return in
}

// shutdown stops the instance as SIGINT does (no shutdown_delay) and waits for it.
func (in *inProcess) shutdown(t *testing.T) {
	select {
	case in.stop <- syscall.SIGINT:
	default:
	}
	select {
	case err := <-in.done:
		if err != nil {
			t.Errorf("featcache stopped with %v", err)
		}
		in.done <- nil // a second shutdown returns at once
	case <-time.After(15 * time.Second):
		t.Errorf("featcache did not stop within 15s")
	}
}

func writeConfig(t *testing.T, text string) string {
	t.Helper()
	return testkit.WriteFile(t, t.TempDir(), "featcache.yaml", text)
}

// TestProtectedMode: featcache refuses to start on a non-loopback address unless clients need a password or a client
// certificate, or protected_mode is off; the refusal comes before anything listens.
func TestProtectedMode(t *testing.T) {
	redis := redistest.Start(t)
	refused := []struct {
		name string
		args []string
	}{
		{"-listen on every interface", []string{"-listen", "0.0.0.0:0", "-admin", ""}},
		{"listen in the file", []string{"-config", writeConfig(t, "listen: \":0\"\nadmin: \"\"\n")}},
		{"server TLS without client certificates", []string{"-config", writeConfig(t, "listen: \"[::]:0\"\nadmin: \"\"\ntls: {cert_file: c.pem, key_file: k.pem}\n")}},
	}
	for _, tc := range refused {
		t.Run(tc.name, func(t *testing.T) {
			var logs redistest.LogBuffer
			err := run(append(tc.args, "-upstream", redis.Addr()), io.Discard, &logs, make(chan os.Signal))
			if err == nil || !strings.Contains(err.Error(), "is not a loopback address and clients need no credentials (protected mode)") {
				t.Fatalf("got %v; want the protected mode refusal", err)
			}
			if strings.Contains(logs.String(), "featcache started") {
				t.Fatalf("featcache started before refusing:\n%s", logs.String())
			}
		})
	}
	allowed := []struct {
		name string
		cfg  string
	}{
		{"with a password", "listen: \"0.0.0.0:0\"\nadmin: \"\"\npassword: pw\n"},
		{"protected mode off", "listen: \"0.0.0.0:0\"\nadmin: \"\"\nprotected_mode: false\n"},
		{"loopback", "listen: \"127.0.0.1:0\"\nadmin: \"\"\n"},
	}
	for _, tc := range allowed {
		t.Run(tc.name, func(t *testing.T) {
			in := startInProcess(t, "-config", writeConfig(t, tc.cfg), "-upstream", redis.Addr())
			in.shutdown(t)
		})
	}
}

// TestSecretsNeverLogged runs featcache with a client password, an upstream password and TLS, drives it through
// the events it logs (start, tracking lost and back, a Redis restart, clients closed by limits, another instance
// with a wrong upstream password, shutdown) and requires that no password appears in any log line or reply.
func TestSecretsNeverLogged(t *testing.T) {
	const storeSecret, clientSecret, wrongSecret = "store-Secret-51de", "client-Secret-0c3a", "wrong-Secret-e7f2"
	certs := redistest.NewCerts(t)
	redis := redistest.Start(t, "--requirepass", storeSecret)
	cfg := fmt.Sprintf(`listen: "127.0.0.1:0"
admin: "127.0.0.1:0"
password: %q
tls: {cert_file: %q, key_file: %q}
upstream: {password: %q, timeout: 500ms}
limits: {max_output_bytes: 16KB}
policies: [{name: all, prefix: "", hard_ttl: 1h, on_upstream_error: serve_stale, max_stale: 1h}]
`, clientSecret, certs.ServerCertFile, certs.ServerKeyFile, storeSecret)
	in := startInProcess(t, "-config", writeConfig(t, cfg), "-upstream", redis.Addr())
	c := redistest.DialTLS(t, in.listen, certs.ClientConfig(false))
	if got := string(c.Do("AUTH", wrongSecret)); !strings.HasPrefix(got, "-WRONGPASS") {
		t.Fatalf("AUTH with a wrong password: %q", got)
	}
	if got := string(c.Do("AUTH", clientSecret)); got != "+OK\r\n" {
		t.Fatalf("AUTH: %q", got)
	}
	c.Do("SET", "k", "v")
	c.Do("GET", "k")
	for _, args := range [][]string{{"CACHE", "STATS"}, {"CACHE", "EXPLAIN", "k"}, {"CLIENT", "INFO"}, {"HELLO", "2"},
		{"CONFIG", "GET", "requirepass"}, {"CONFIG", "GET", "*"}, {"CLIENT", "LIST"}} {
		if got := string(c.Do(args...)); strings.Contains(got, storeSecret) || strings.Contains(got, clientSecret) {
			t.Errorf("%q shows a password: %q", args, got)
		}
	}
	// A reply over limits.max_output_bytes closes the client, with a log line.
	c.Do("SET", "big", strings.Repeat("b", 64<<10))
	c.Do("GET", "big")

	// Featcache's upstream connections are killed, then Redis restarts: tracking is lost and comes back.
	established := func(n int) func() bool {
		return func() bool { return strings.Count(in.logs.String(), "tracking: established") >= n }
	}
	redistest.Eventually(t, 10*time.Second, "tracking established before CLIENT KILL", established(1))
	rc := redis.Dial()
	rc.Do("AUTH", storeSecret)
	rc.Do("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
	redistest.Eventually(t, 10*time.Second, "tracking back after CLIENT KILL", established(2))
	redis.Restart()
	redistest.Eventually(t, 10*time.Second, "tracking back after the restart", established(3))
	c2 := redistest.DialTLS(t, in.listen, certs.ClientConfig(false))
	c2.Do("AUTH", clientSecret)
	c2.Do("GET", "k")

	// Another featcache with the wrong upstream password logs why it cannot reach Redis.
	wrong := startInProcess(t, "-config", writeConfig(t, strings.Replace(cfg, storeSecret, wrongSecret, 1)), "-upstream", redis.Addr())
	redistest.Eventually(t, 10*time.Second, "the wrong password's failure logged", func() bool {
		return strings.Contains(wrong.logs.String(), "WRONGPASS")
	})
	wc := redistest.DialTLS(t, wrong.listen, certs.ClientConfig(false))
	wc.Do("AUTH", clientSecret)
	if got := string(wc.Do("GET", "k")); !strings.Contains(got, "WRONGPASS") || strings.Contains(got, wrongSecret) {
		t.Errorf("GET through the instance with a wrong upstream password: %q", got)
	}
	wrong.shutdown(t)
	in.shutdown(t)

	logs := in.logs.String() + wrong.logs.String()
	for _, want := range []string{"featcache started", "tracking lost", "client disconnected", "limits.max_output_bytes",
		"WRONGPASS", "featcache stopped"} {
		if !strings.Contains(logs, want) {
			t.Errorf("the logs lack %q: the test did not exercise what it means to\n%s", want, logs)
		}
	}
	for _, secret := range []string{storeSecret, clientSecret, wrongSecret} {
		if strings.Contains(logs, secret) {
			t.Errorf("a password is in the logs:\n%s", logs)
		}
	}
}

// TestUpstreamACLUser runs featcache as a Redis ACL user (upstream.username and upstream.password) on a Redis whose
// default user has another password: reads, writes, caching and tracking work with every upstream connection
// authenticated as that user; an instance with a wrong username logs WRONGPASS, answers with it, and no password
// appears in any log.
func TestUpstreamACLUser(t *testing.T) {
	const adminSecret, userSecret = "admin-Secret-3b9d", "feat-Secret-a41e"
	redis := redistest.Start(t, "--requirepass", adminSecret)
	rc := redis.Dial()
	if got := string(rc.Do("AUTH", adminSecret)); got != "+OK\r\n" {
		t.Fatalf("AUTH as default: %q", got)
	}
	if got := string(rc.Do("ACL", "SETUSER", "feat", "on", ">"+userSecret, "~*", "&*", "+@all")); got != "+OK\r\n" {
		t.Fatalf("ACL SETUSER: %q", got)
	}
	cfg := func(user string) string {
		return fmt.Sprintf(`listen: "127.0.0.1:0"
admin: ""
upstream: {username: %s, password: %q}
policies: [{name: all, prefix: "", hard_ttl: 1h}]
`, user, userSecret)
	}
	in := startInProcess(t, "-config", writeConfig(t, cfg("feat")), "-upstream", redis.Addr())
	redistest.Eventually(t, 10*time.Second, "tracking established", func() bool {
		return strings.Contains(in.logs.String(), "tracking: established")
	})
	c := redistest.Dial(t, in.listen)
	getCalls := func() int { return redistest.CommandCalls(string(rc.Do("INFO", "commandstats")), "get") }
	if got := string(c.Do("SET", "k", "v1")); got != "+OK\r\n" {
		t.Fatalf("SET k v1: got %q", got)
	}
	// The write's own invalidation comes back from Redis on the tracking connection: once applied (the key
	// invalidated twice, by featcache at the write and by Redis's push), a read fills for good. A read that fills
	// before it would be dropped by it and read again (docs/commands.md).
	redistest.Eventually(t, 5*time.Second, "Redis's invalidation of k applied", func() bool {
		return cacheStat(t, c, "invalidated_keys") >= 2
	})
	for _, step := range []struct{ args, want string }{
		{"GET k", "$2\r\nv1\r\n"}, {"GET k", "$2\r\nv1\r\n"}, {"MGET k k", "*2\r\n$2\r\nv1\r\n$2\r\nv1\r\n"},
	} {
		if got := string(c.Do(strings.Fields(step.args)...)); got != step.want {
			t.Fatalf("%s: got %q; want %q", step.args, got, step.want)
		}
	}
	if n := getCalls(); n != 1 {
		t.Fatalf("three reads of k after its write made %d upstream GETs; want 1 (the rest cached)", n)
	}
	// A write straight to Redis reaches featcache through tracking, on a connection of user feat.
	rc.Do("SET", "k", "v2")
	redistest.Eventually(t, 5*time.Second, "the direct write invalidated k", func() bool {
		return string(c.Do("GET", "k")) == "$2\r\nv2\r\n"
	})
	clients := string(rc.Do("CLIENT", "LIST"))
	names := 0
	for _, line := range strings.Split(clients, "\n") {
		if !strings.Contains(line, " name=featcache") {
			continue
		}
		names++
		if !strings.Contains(line, " user=feat ") {
			t.Errorf("a featcache connection is not authenticated as feat: %s", line)
		}
	}
	if names < 2 || !strings.Contains(clients, "name=featcache-tracking") {
		t.Fatalf("want featcache's shared and tracking connections in CLIENT LIST:\n%s", clients)
	}

	wrong := startInProcess(t, "-config", writeConfig(t, cfg("nobody")), "-upstream", redis.Addr())
	redistest.Eventually(t, 10*time.Second, "the wrong user's failure logged", func() bool {
		return strings.Contains(wrong.logs.String(), "WRONGPASS invalid username-password pair or user is disabled")
	})
	// The start-up line names the user (not a secret), so the failure above can be told from a wrong password. It is
	// logged once featcache has started, which may come after the failure: wait for it.
	redistest.Eventually(t, 10*time.Second, "the start-up log names the upstream user", func() bool {
		return strings.Contains(wrong.logs.String(), "upstream_auth=true upstream_user=nobody")
	})
	wc := redistest.Dial(t, wrong.listen)
	if got := string(wc.Do("GET", "k")); !strings.Contains(got, "WRONGPASS") {
		t.Errorf("GET through the instance with a wrong upstream username: %q; want WRONGPASS", got)
	}
	wrong.shutdown(t)
	in.shutdown(t)
	for _, logs := range []string{in.logs.String(), wrong.logs.String()} {
		if strings.Contains(logs, userSecret) || strings.Contains(logs, adminSecret) {
			t.Errorf("a password is in the logs:\n%s", logs)
		}
	}
}
