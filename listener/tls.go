package listener

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Sentinel errors for TLS.
var (
	// ErrTLSConfig reports an unusable TLS configuration or certificate file.
	ErrTLSConfig = errors.New("listener: invalid tls configuration")
	// ErrCertificateRevoked is returned to a handshake whose client
	// certificate the configured CRL revokes.
	ErrCertificateRevoked = errors.New("listener: client certificate revoked")
	// ErrCRLMissing is returned to a handshake whose client certificate's
	// issuer has no CRL in CRLFile (OpenSSL's X509_V_FLAG_CRL_CHECK, which
	// mosquitto sets, fails such certificates too).
	ErrCRLMissing = errors.New("listener: no crl for client certificate issuer")
	// ErrCRLExpired is returned to a handshake checked against a CRL whose
	// nextUpdate has passed, as OpenSSL does.
	ErrCRLExpired = errors.New("listener: crl expired")
)

// TLSConfig is a listener's TLS settings, named after mosquitto's options.
// Build loads the files once; Reload re-reads them (for SIGHUP) and every
// listener built from this TLSConfig serves the new certificates, CAs and CRL
// from its next handshake on. A TLSConfig must not be copied after first use.
type TLSConfig struct {
	CAFile   string // cafile: PEM CA certificates that verify client certificates
	CAPath   string // capath: a directory of PEM CA certificate files
	CertFile string // certfile: PEM server certificate (chain)
	KeyFile  string // keyfile: PEM server private key
	CRLFile  string // crlfile: PEM or DER certificate revocation list(s)
	// RequireCertificate demands a client certificate that verifies against
	// CAFile/CAPath (mosquitto's require_certificate true).
	RequireCertificate bool
	// RequestCertificate asks for a client certificate and verifies it if one
	// is given, but lets clients without one connect. Mosquitto has no such
	// mode: with require_certificate false it does not ask at all, which is
	// what leaving both fields false does here.
	RequestCertificate bool
	// MinVersion is the lowest protocol version accepted, in mosquitto's
	// tls_version spelling: "tlsv1.3" or "tlsv1.2" (the default). TLS 1.1 is
	// refused: CBC suites with SHA-1 MACs only.
	MinVersion string
	// Ciphers is an OpenSSL cipher list for TLS 1.2 and older (mosquitto's
	// ciphers), e.g. "ECDHE-RSA-AES128-GCM-SHA256:HIGH:!aNULL". Names Go
	// cannot honour are an error. TLS 1.3 suites are always all enabled (Go
	// does not make them configurable). Go picks among the allowed suites by
	// its own preference order.
	Ciphers string

	loadMu sync.Mutex // serialises loads
	state  atomic.Pointer[tls.Config]
}

// Build returns a *tls.Config for a server. The files are read on the first
// call (or by Reload); the returned config fetches the current state for
// every handshake, so it picks up later Reloads.
func (t *TLSConfig) Build() (*tls.Config, error) {
	if t.state.Load() == nil {
		t.loadMu.Lock()
		var err error
		if t.state.Load() == nil {
			err = t.reloadLocked()
		}
		t.loadMu.Unlock()
		if err != nil {
			return nil, err
		}
	}
	return &tls.Config{
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			return t.state.Load(), nil
		},
	}, nil
}

// Reload re-reads the certificate, key, CA and CRL files. On error the
// previous state stays in force and the error is returned.
func (t *TLSConfig) Reload() error {
	t.loadMu.Lock()
	defer t.loadMu.Unlock()
	return t.reloadLocked()
}

// reloadLocked loads the files and swaps the state in; loadMu is held.
func (t *TLSConfig) reloadLocked() error {
	conf, err := t.load()
	if err != nil {
		return err
	}
	t.state.Store(conf)
	return nil
}

func (t *TLSConfig) load() (*tls.Config, error) {
	if t.CertFile == "" || t.KeyFile == "" {
		return nil, fmt.Errorf("%w: certfile and keyfile are both required", ErrTLSConfig)
	}
	cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("%w: loading certfile/keyfile: %w", ErrTLSConfig, err)
	}
	minVersion, err := parseTLSVersion(t.MinVersion)
	if err != nil {
		return nil, err
	}
	suites, err := parseCiphers(t.Ciphers)
	if err != nil {
		return nil, err
	}
	conf := &tls.Config{
		Certificates: []tls.Certificate{cert},
		MinVersion:   minVersion,
		CipherSuites: suites,
	}

	cas, err := t.loadCAs()
	if err != nil {
		return nil, err
	}
	switch {
	case len(cas) == 0 && (t.RequireCertificate || t.RequestCertificate):
		return nil, fmt.Errorf("%w: client certificates need cafile or capath", ErrTLSConfig)
	case len(cas) == 0 && t.CRLFile != "":
		return nil, fmt.Errorf("%w: crlfile needs cafile or capath", ErrTLSConfig)
	case t.RequireCertificate:
		conf.ClientAuth = tls.RequireAndVerifyClientCert
	case t.RequestCertificate:
		conf.ClientAuth = tls.VerifyClientCertIfGiven
	default:
		conf.ClientAuth = tls.NoClientCert
	}
	if len(cas) > 0 {
		pool := x509.NewCertPool()
		for _, ca := range cas {
			pool.AddCert(ca)
		}
		conf.ClientCAs = pool
	}
	if t.CRLFile != "" {
		crls, err := loadCRLs(t.CRLFile, cas)
		if err != nil {
			return nil, err
		}
		conf.VerifyConnection = crls.verify
	}
	return conf, nil
}

// parseTLSVersion maps mosquitto's tls_version names to Go's constants.
func parseTLSVersion(s string) (uint16, error) {
	switch strings.ToLower(s) {
	case "", "tlsv1.2":
		return tls.VersionTLS12, nil
	case "tlsv1.3":
		return tls.VersionTLS13, nil
	}
	return 0, fmt.Errorf("%w: tls_version %q (want tlsv1.3 or tlsv1.2)", ErrTLSConfig, s)
}

// loadCAs reads CAFile and every file holding PEM certificates in CAPath.
func (t *TLSConfig) loadCAs() ([]*x509.Certificate, error) {
	var cas []*x509.Certificate
	if t.CAFile != "" {
		data, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, fmt.Errorf("%w: cafile: %w", ErrTLSConfig, err)
		}
		certs, err := parsePEMCertificates(data)
		if err != nil {
			return nil, fmt.Errorf("%w: cafile %s: %w", ErrTLSConfig, t.CAFile, err)
		}
		if len(certs) == 0 {
			return nil, fmt.Errorf("%w: cafile %s holds no PEM certificate", ErrTLSConfig, t.CAFile)
		}
		cas = append(cas, certs...)
	}
	if t.CAPath != "" {
		entries, err := os.ReadDir(t.CAPath)
		if err != nil {
			return nil, fmt.Errorf("%w: capath: %w", ErrTLSConfig, err)
		}
		found := 0
		for _, e := range entries {
			name := filepath.Join(t.CAPath, e.Name())
			fi, err := os.Stat(name) // follows the hash symlinks c_rehash makes
			if err != nil {
				return nil, fmt.Errorf("%w: capath: %w", ErrTLSConfig, err)
			}
			if !fi.Mode().IsRegular() {
				continue
			}
			data, err := os.ReadFile(name)
			if err != nil {
				return nil, fmt.Errorf("%w: capath: %w", ErrTLSConfig, err)
			}
			// Files without certificates (CRLs, READMEs) are not CAs.
			certs, err := parsePEMCertificates(data)
			if err != nil {
				return nil, fmt.Errorf("%w: capath file %s: %w", ErrTLSConfig, name, err)
			}
			found += len(certs)
			cas = append(cas, certs...)
		}
		if found == 0 {
			return nil, fmt.Errorf("%w: capath %s holds no PEM certificate", ErrTLSConfig, t.CAPath)
		}
	}
	return cas, nil
}

// parsePEMCertificates returns every CERTIFICATE block in data.
func parsePEMCertificates(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			return certs, nil
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, err
		}
		certs = append(certs, c)
	}
}

// crlSet holds the revocation lists of a CRLFile, each with the CA that
// signed it.
type crlSet struct {
	lists []issuedCRL
}

type issuedCRL struct {
	issuer     *x509.Certificate
	nextUpdate time.Time
	revoked    map[string]struct{} // serial numbers, big.Int.String()
}

// loadCRLs reads PEM "X509 CRL" blocks (or one DER CRL) from path; each must
// be signed by one of cas.
func loadCRLs(path string, cas []*x509.Certificate) (*crlSet, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: crlfile: %w", ErrTLSConfig, err)
	}
	var ders [][]byte
	if bytes.Contains(data, []byte("-----BEGIN")) {
		for {
			var block *pem.Block
			block, data = pem.Decode(data)
			if block == nil {
				break
			}
			if block.Type == "X509 CRL" {
				ders = append(ders, block.Bytes)
			}
		}
	} else {
		ders = append(ders, data)
	}
	if len(ders) == 0 {
		return nil, fmt.Errorf("%w: crlfile %s holds no CRL", ErrTLSConfig, path)
	}
	set := &crlSet{}
	for _, der := range ders {
		rl, err := x509.ParseRevocationList(der)
		if err != nil {
			return nil, fmt.Errorf("%w: crlfile %s: %w", ErrTLSConfig, path, err)
		}
		var issuer *x509.Certificate
		for _, ca := range cas {
			if bytes.Equal(ca.RawSubject, rl.RawIssuer) && rl.CheckSignatureFrom(ca) == nil {
				issuer = ca
				break
			}
		}
		if issuer == nil {
			return nil, fmt.Errorf("%w: crlfile %s: CRL issued by %q is not signed by a configured CA",
				ErrTLSConfig, path, rl.Issuer.String())
		}
		entry := issuedCRL{issuer: issuer, nextUpdate: rl.NextUpdate, revoked: map[string]struct{}{}}
		for _, r := range rl.RevokedCertificateEntries {
			entry.revoked[r.SerialNumber.String()] = struct{}{}
		}
		set.lists = append(set.lists, entry)
	}
	return set, nil
}

// verify is a tls.Config.VerifyConnection hook: it runs after the chain has
// been verified and fails certificates a CRL revokes. As with OpenSSL's
// X509_V_FLAG_CRL_CHECK (what mosquitto sets), the leaf's issuer must have a
// CRL; intermediates are checked when their issuer has one.
func (s *crlSet) verify(cs tls.ConnectionState) error {
	now := time.Now()
	for _, chain := range cs.VerifiedChains {
		for i := 0; i+1 < len(chain); i++ {
			cert, issuer := chain[i], chain[i+1]
			covered := false
			for j := range s.lists {
				l := &s.lists[j]
				if !l.issuer.Equal(issuer) {
					continue
				}
				covered = true
				if !l.nextUpdate.IsZero() && now.After(l.nextUpdate) {
					return fmt.Errorf("%w: issuer %q, next update was %s", ErrCRLExpired,
						issuer.Subject.String(), l.nextUpdate.Format(time.RFC3339))
				}
				if _, ok := l.revoked[cert.SerialNumber.String()]; ok {
					return fmt.Errorf("%w: serial %s, subject %q", ErrCertificateRevoked,
						cert.SerialNumber, cert.Subject.String())
				}
			}
			if i == 0 && !covered {
				return fmt.Errorf("%w: %q", ErrCRLMissing, issuer.Subject.String())
			}
		}
	}
	return nil
}
