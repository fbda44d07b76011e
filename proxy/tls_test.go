package proxy

import (
	"crypto/tls"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"featcache/internal/redistest"
)

// TLS on both sides of featcache, with certificates generated in the test: the client listener (tls.*, with and
// without client certificates) and the upstream (upstream.tls.*) against a redis-server that speaks TLS only.

// tlsListenerConfig is a featcache configuration serving TLS with certs's server certificate.
func tlsListenerConfig(certs *redistest.Certs, clientCA bool) string {
	cfg := fmt.Sprintf("tls: {cert_file: %q, key_file: %q", certs.ServerCertFile, certs.ServerKeyFile)
	if clientCA {
		cfg += fmt.Sprintf(", client_ca_file: %q", certs.CAFile)
	}
	return cfg + "}\n" + defaultTestConfig
}

// tlsOutcome dials addr with cfg, sends PING and reports the reply or the error.
func tlsOutcome(addr string, cfg *tls.Config) (string, error) {
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return "", err
	}
	defer nc.Close()
	cfg = cfg.Clone()
	cfg.ServerName = "127.0.0.1"
	tc := tls.Client(nc, cfg)
	tc.SetDeadline(time.Now().Add(5 * time.Second))
	if err := tc.Handshake(); err != nil {
		return "", err
	}
	if _, err := tc.Write([]byte("PING\r\n")); err != nil {
		return "", err
	}
	b := make([]byte, 64)
	n, err := tc.Read(b)
	return string(b[:n]), err
}

func TestTLSListener(t *testing.T) {
	certs := redistest.NewCerts(t)
	p := startProxy(t, tlsListenerConfig(certs, false))
	c := redistest.DialTLS(t, p.addr, certs.ClientConfig(false))
	expectDo(t, c, "+PONG\r\n", "PING")
	expectDo(t, c, "+OK\r\n", "SET", "tls:k", "v")
	p.settle()
	expectDo(t, c, bulk("v"), "GET", "tls:k")
	expectDo(t, c, bulk("v"), "GET", "tls:k")
	if hits := p.srv.Stats().Hits.Load(); hits != 1 {
		t.Errorf("hits = %d; want the second GET over TLS answered from memory", hits)
	}
	// Pipelines and large replies travel whole.
	big := strings.Repeat("b", 300<<10)
	expectPipeline(t, c, "+OK\r\n"+bulk(big)+bulk(big), []string{"SET", "tls:big", big}, []string{"GET", "tls:big"}, []string{"GET", "tls:big"})

	// A plain-text client gets no service: its bytes are not a handshake.
	plain := p.dial()
	plain.Send("PING")
	expectClosed(t, plain, 5*time.Second)
	// Nor does a client that does not trust the server's certificate.
	if _, err := tlsOutcome(p.addr, redistest.NewCerts(t).ClientConfig(false)); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("client of another CA: got %v; want a certificate error", err)
	}
	redistest.Eventually(t, 5*time.Second, "failed handshakes counted", func() bool {
		return p.srv.Stats().TLSHandshakeErrors.Load() >= 2
	})
	expectDo(t, c, "+PONG\r\n", "PING")
}

// TestTLSHandshakeTimeout: a connection that never starts its handshake is closed after the handshake timeout.
func TestTLSHandshakeTimeout(t *testing.T) {
	certs := redistest.NewCerts(t)
	p := startProxyOn(t, redistest.Start(t), tlsListenerConfig(certs, false), func(o *Options) {
		o.TLSHandshakeTimeout = 300 * time.Millisecond
	})
	silent := p.dial()
	start := time.Now()
	expectClosed(t, silent, 5*time.Second)
	if took := time.Since(start); took < 250*time.Millisecond {
		t.Errorf("closed after %v; want after the handshake timeout", took)
	}
	redistest.Eventually(t, 5*time.Second, "the connection is gone", func() bool { return p.srv.Clients() == 0 })
}

func TestMutualTLS(t *testing.T) {
	certs := redistest.NewCerts(t)
	p := startProxy(t, tlsListenerConfig(certs, true))
	if got, err := tlsOutcome(p.addr, certs.ClientConfig(true)); err != nil || got != "+PONG\r\n" {
		t.Fatalf("client with a certificate: got %q, %v; want +PONG", got, err)
	}
	// Without a certificate, or with one of another CA, the server refuses the handshake (under TLS 1.3 the
	// client learns it at its first read).
	for name, cfg := range map[string]*tls.Config{
		"no client certificate":            certs.ClientConfig(false),
		"client certificate of another CA": withRoots(redistest.NewCerts(t).ClientConfig(true), certs),
	} {
		if got, err := tlsOutcome(p.addr, cfg); err == nil || got != "" {
			t.Errorf("%s: got %q, %v; want the handshake refused", name, got, err)
		}
	}
	redistest.Eventually(t, 5*time.Second, "both refused handshakes counted", func() bool {
		return p.srv.Stats().TLSHandshakeErrors.Load() == 2
	})
	if got, err := tlsOutcome(p.addr, certs.ClientConfig(true)); err != nil || got != "+PONG\r\n" {
		t.Fatalf("client with a certificate afterwards: got %q, %v; want +PONG", got, err)
	}
}

// withRoots returns cfg trusting the server certificates of certs (its own client certificate stays).
func withRoots(cfg *tls.Config, certs *redistest.Certs) *tls.Config {
	cfg.RootCAs = certs.ClientConfig(false).RootCAs
	return cfg
}

// TestTLSBlockingClientLeaves: featcache notices that a TLS client waiting in BLPOP left, as it does for a plain
// one, and releases the blocked upstream connection, so no element is popped for nobody.
func TestTLSBlockingClientLeaves(t *testing.T) {
	certs := redistest.NewCerts(t)
	p := startProxyOn(t, redistest.Start(t), tlsListenerConfig(certs, false))
	rc := p.redis.Dial()
	c := redistest.DialTLS(t, p.addr, certs.ClientConfig(false))
	blockInBLPOP(t, c, rc, "tls:q")
	c.Close()
	redistest.Eventually(t, 5*time.Second, "the blocked upstream connection is released", func() bool {
		return blockedOn(t, rc, "blpop") == 0
	})
	expectDo(t, rc, ":1\r\n", "RPUSH", "tls:q", "x")
	expectDo(t, rc, ":1\r\n", "LLEN", "tls:q")
}

// TestUpstreamTLS: featcache in front of a redis-server that accepts only TLS with client certificates. Forwarded
// commands, fetches, dedicated connections and tracking all go over TLS: a write made directly to Redis
// invalidates the cached value.
func TestUpstreamTLS(t *testing.T) {
	certs := redistest.NewCerts(t)
	redis := redistest.StartTLS(t, certs, true, "--requirepass", "up-secret")
	p := startProxyOn(t, redis, fmt.Sprintf(`
upstream:
  password: up-secret
  tls: {enabled: true, ca_file: %q, cert_file: %q, key_file: %q}
`, certs.CAFile, certs.ClientCertFile, certs.ClientKeyFile)+defaultTestConfig)
	rc := redis.Dial()
	expectDo(t, rc, "+OK\r\n", "AUTH", "up-secret")
	expectDo(t, rc, "+OK\r\n", "SET", "utls:k", "v1")
	p.settle()
	c := p.dial()
	expectDo(t, c, bulk("v1"), "GET", "utls:k")
	expectDo(t, c, bulk("v1"), "GET", "utls:k")
	if hits := p.srv.Stats().Hits.Load(); hits != 1 {
		t.Errorf("hits = %d; want 1", hits)
	}
	expectDo(t, rc, "+OK\r\n", "SET", "utls:k", "v2")
	redistest.Eventually(t, 5*time.Second, "the invalidation arrives over TLS", func() bool {
		return string(c.Do("GET", "utls:k")) == bulk("v2")
	})
	expectDo(t, c, "+OK\r\n", "WATCH", "utls:k")
	expectExec(t, c, "*1\r\n:1\r\n", []string{"INCR", "utls:n"})

	// A featcache that does not trust the server's certificate reaches nothing, and says so within the timeout.
	other := startProxyOn(t, redis, fmt.Sprintf(`
upstream:
  password: up-secret
  timeout: 500ms
  tracking: false
  tls: {enabled: true, ca_file: %q, cert_file: %q, key_file: %q}
`, redistest.NewCerts(t).CAFile, certs.ClientCertFile, certs.ClientKeyFile)+defaultTestConfig)
	start := time.Now()
	got := other.do("GET", "utls:k")
	if !strings.HasPrefix(got, "-ERR featcache upstream unavailable") || !strings.Contains(got, "certificate") {
		t.Errorf("GET through a featcache that does not trust Redis: got %q; want a certificate error", got)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("the error took %v; want it within the timeout", took)
	}
}
