package config

import (
	"crypto/tls"
	"net"
	"path/filepath"
	"strings"
	"testing"

	"featcache/internal/redistest"
	"featcache/internal/testkit"
)

func TestTLSConfigs(t *testing.T) {
	certs := redistest.NewCerts(t)
	notPEM := testkit.WriteFile(t, t.TempDir(), "not.pem", "not a certificate\n")
	missing := filepath.Join(t.TempDir(), "missing.pem")

	if cfg, err := (&TLS{}).ServerConfig(); cfg != nil || err != nil {
		t.Errorf("TLS off: got %v, %v; want nil, nil", cfg, err)
	}
	if cfg, err := (&UpstreamTLS{}).ClientConfig(); cfg != nil || err != nil {
		t.Errorf("upstream TLS off: got %v, %v; want nil, nil", cfg, err)
	}

	server := &TLS{CertFile: certs.ServerCertFile, KeyFile: certs.ServerKeyFile, ClientCAFile: certs.CAFile}
	client := &UpstreamTLS{Enabled: true, CAFile: certs.CAFile, CertFile: certs.ClientCertFile, KeyFile: certs.ClientKeyFile,
		ServerName: "localhost"}
	scfg, err := server.ServerConfig()
	if err != nil {
		t.Fatal(err)
	}
	if scfg.ClientAuth != tls.RequireAndVerifyClientCert || len(scfg.Certificates) != 1 {
		t.Fatalf("server config: %+v", scfg)
	}
	ccfg, err := client.ClientConfig()
	if err != nil {
		t.Fatal(err)
	}
	// The two configurations, built from the files, complete a mutual handshake.
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	errc := make(chan error, 1)
	go func() { errc <- tls.Server(a, scfg).Handshake() }()
	if err := tls.Client(b, ccfg).Handshake(); err != nil {
		t.Fatalf("client handshake: %v", err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("server handshake: %v", err)
	}

	failures := []struct {
		name string
		load func() error
		want string
	}{
		{"missing cert", func() error {
			_, err := (&TLS{CertFile: missing, KeyFile: certs.ServerKeyFile}).ServerConfig()
			return err
		},
			"tls.cert_file, tls.key_file: open " + missing},
		{"key of another certificate", func() error {
			_, err := (&TLS{CertFile: certs.ServerCertFile, KeyFile: certs.ClientKeyFile}).ServerConfig()
			return err
		}, "tls.cert_file, tls.key_file: tls: private key does not match public key"},
		{"client CA not PEM", func() error {
			_, err := (&TLS{CertFile: certs.ServerCertFile, KeyFile: certs.ServerKeyFile, ClientCAFile: notPEM}).ServerConfig()
			return err
		}, "tls.client_ca_file: no PEM certificate found in " + notPEM},
		{"upstream CA missing", func() error { _, err := (&UpstreamTLS{Enabled: true, CAFile: missing}).ClientConfig(); return err },
			"upstream.tls.ca_file: open " + missing},
		{"upstream client cert not PEM", func() error {
			_, err := (&UpstreamTLS{Enabled: true, CertFile: notPEM, KeyFile: certs.ClientKeyFile}).ClientConfig()
			return err
		}, "upstream.tls.cert_file, upstream.tls.key_file: tls: failed to find any PEM data in certificate input"},
	}
	for _, tc := range failures {
		if err := tc.load(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v; want an error containing %q", tc.name, err, tc.want)
		}
	}
}
