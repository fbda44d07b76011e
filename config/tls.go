package config

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
)

// ServerConfig loads the listener's certificate, key and client CAs and returns the TLS configuration the RESP
// listener serves with, or nil when TLS is off. Its errors name the field and the file.
func (t *TLS) ServerConfig() (*tls.Config, error) {
	if !t.Enabled() {
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("tls.cert_file, tls.key_file: %w", err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if t.ClientCAFile != "" {
		if cfg.ClientCAs, err = loadCAs("tls.client_ca_file", t.ClientCAFile); err != nil {
			return nil, err
		}
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return cfg, nil
}

// ClientConfig loads the upstream CA and client certificate and returns the TLS configuration featcache dials the
// upstream with, or nil when upstream TLS is off. ServerName is left empty unless configured: the dialers then
// verify each upstream address's own host. Its errors name the field and the file.
func (u *UpstreamTLS) ClientConfig() (*tls.Config, error) {
	if !u.Enabled {
		return nil, nil
	}
	cfg := &tls.Config{ServerName: u.ServerName, InsecureSkipVerify: u.InsecureSkipVerify, MinVersion: tls.VersionTLS12}
	if u.CAFile != "" {
		var err error
		if cfg.RootCAs, err = loadCAs("upstream.tls.ca_file", u.CAFile); err != nil {
			return nil, err
		}
	}
	if u.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(u.CertFile, u.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("upstream.tls.cert_file, upstream.tls.key_file: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// loadCAs reads a PEM file of CA certificates.
func loadCAs(field, path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", field, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s: no PEM certificate found in %s", field, path)
	}
	return pool, nil
}
