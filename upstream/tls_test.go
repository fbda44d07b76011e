package upstream

import (
	"context"
	"crypto/tls"
	"strings"
	"testing"
	"time"

	"featcache/internal/redistest"
	"featcache/internal/resp"
)

// The upstream side of TLS, against a redis-server that accepts TLS connections only: the pool's shared and
// dedicated connections and the tracking connection all speak TLS, verify the server's certificate, and present a
// client certificate when Redis asks for one.

func TestPoolTLS(t *testing.T) {
	certs := redistest.NewCerts(t)
	srv := redistest.StartTLS(t, certs, true)
	call := NewCall()

	p := NewPool(PoolOptions{Addr: srv.Addr(), Timeout: 2 * time.Second, TLS: certs.ClientConfig(true)})
	t.Cleanup(p.Close)
	if err := p.Do(call, resp.AppendCommand(nil, "SET", "k", "over tls"), 1); err != nil || string(call.Frame(0)) != "+OK\r\n" {
		t.Fatalf("SET over TLS: got %q, %v; want +OK", call.Frame(0), err)
	}
	got, err := p.Fetch(call, [][]byte{[]byte("k")}, nil)
	if err != nil || len(got) != 1 || string(got[0].Value) != "over tls" {
		t.Fatalf("Fetch over TLS: got %+v, %v", got, err)
	}
	c, err := p.Dedicated()
	if err != nil {
		t.Fatalf("dedicated connection over TLS: %v", err)
	}
	if err := c.Do(call, resp.AppendCommand(nil, "PING"), 1, time.Now().Add(2*time.Second)); err != nil || string(call.Frame(0)) != "+PONG\r\n" {
		t.Fatalf("dedicated PING: got %q, %v", call.Frame(0), err)
	}
	c.Release()

	failures := []struct {
		name string
		opt  PoolOptions
		want string
	}{
		{"plain TCP to a TLS port", PoolOptions{}, ""},
		{"no client certificate", PoolOptions{TLS: certs.ClientConfig(false)}, ""},
		{"server certificate of another CA", PoolOptions{TLS: redistest.NewCerts(t).ClientConfig(true)}, "certificate"},
		{"wrong server name", PoolOptions{TLS: withServerName(certs, "redis.elsewhere")}, "redis.elsewhere"},
	}
	for _, tc := range failures {
		t.Run(tc.name, func(t *testing.T) {
			tc.opt.Addr, tc.opt.Timeout = srv.Addr(), time.Second
			bad := NewPool(tc.opt)
			t.Cleanup(bad.Close)
			start := time.Now()
			err := bad.Do(call, resp.AppendCommand(nil, "PING"), 1)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v; want an error containing %q", err, tc.want)
			}
			if took := time.Since(start); took > 3*time.Second {
				t.Fatalf("failed after %v; want within the timeout", took)
			}
		})
	}
}

func withServerName(certs *redistest.Certs, name string) *tls.Config {
	cfg := certs.ClientConfig(true)
	cfg.ServerName = name
	return cfg
}

func TestTrackerTLS(t *testing.T) {
	certs := redistest.NewCerts(t)
	srv := redistest.StartTLS(t, certs, true)
	var ev trackEvents
	opt := ev.options(srv.Addr(), "k:")
	opt.TLS = certs.ClientConfig(true)
	tr := StartTracker(opt)
	t.Cleanup(tr.Close)
	redistest.Eventually(t, 5*time.Second, "tracking established over TLS", tr.Up)
	srv.Do("SET", "k:1", "v")
	redistest.Eventually(t, 5*time.Second, "invalidation over TLS", func() bool {
		keys, _, _, _ := ev.snapshot()
		return len(keys) == 1 && keys[0] == "k:1"
	})
	if err := tr.Barrier(context.Background()); err != nil {
		t.Fatalf("barrier over TLS: %v", err)
	}
}
