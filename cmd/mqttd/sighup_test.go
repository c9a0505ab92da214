package main

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/mqttd/mqttd/internal/brokertest"
	"github.com/mqttd/mqttd/packet"
)

// startLogged runs mqttd -c conf (whose log goes to logFile) and waits until
// it listens on port.
func startLogged(t *testing.T, conf string, port int) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(binary, "-c", conf)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	waitListening(t, port)
	return cmd
}

// logged polls until the log file holds want, the n-th time (1 = once).
func logged(t *testing.T, logFile, want string, n int) {
	t.Helper()
	brokertest.Eventually(t, 10*time.Second, func() bool {
		b, _ := os.ReadFile(logFile)
		return bytes.Count(b, []byte(want)) >= n
	}, "log lacks %q (%d times)", want, n)
}

// canPublish reports whether alice's PUBLISH to topic reaches her own
// subscription to it: a fresh connection each time (the ACL is checked on
// SUBSCRIBE and on delivery).
func canPublish(t *testing.T, addr, topic string) bool {
	t.Helper()
	c, rc := connack(t, addr, "alice-probe", "alice", "secret")
	if rc != 0 {
		t.Fatalf("alice refused: %v", rc)
	}
	defer c.NC.Close()
	c.Subscribe(1, 1, topic)
	c.Send(&packet.Publish{Topic: topic, QoS: 1, PacketID: 2, Payload: []byte("probe")})
	for {
		p, err := c.RecvTimeout(500 * time.Millisecond)
		if err != nil {
			return false
		}
		if pub, ok := p.(*packet.Publish); ok && pub.Topic == topic {
			return true
		}
	}
}

// TestSighupReloadsACL: the real SIGHUP reloads the ACL file (new rights
// apply to new connections); a broken ACL file is refused with an error in
// the log and the rights loaded before stay.
func TestSighupReloadsACL(t *testing.T) {
	dir := searchableDir(t) // run as root, mqttd drops to mosquitto and must read the files
	pw := filepath.Join(dir, "pw")
	passwd(t, "-c", "-b", pw, "alice", "secret")
	os.Chmod(pw, 0o644)
	acl := filepath.Join(dir, "acl")
	os.WriteFile(acl, []byte("user alice\ntopic readwrite a/#\n"), 0o644)
	port := freePort(t)
	logFile := filepath.Join(dir, "mqttd.log")
	conf := filepath.Join(dir, "mosquitto.conf")
	os.WriteFile(conf, []byte(fmt.Sprintf("log_dest file %s\nlog_type all\nlistener %d 127.0.0.1\npassword_file %s\nacl_file %s\npersistence false\n",
		logFile, port, pw, acl)), 0o644)
	cmd := startLogged(t, conf, port)
	addr := "127.0.0.1:" + strconv.Itoa(port)
	if !canPublish(t, addr, "a/x") || canPublish(t, addr, "b/x") {
		t.Fatal("before the reload alice should have a/# and not b/#")
	}

	os.WriteFile(acl, []byte("user alice\ntopic readwrite b/#\n"), 0o644)
	cmd.Process.Signal(syscall.SIGHUP)
	logged(t, logFile, "Reload done.", 1)
	if !canPublish(t, addr, "b/x") || canPublish(t, addr, "a/x") {
		t.Fatal("after the reload alice should have b/# and not a/#")
	}

	os.WriteFile(acl, []byte("user alice\ntopic sideways c/#\n"), 0o644)
	cmd.Process.Signal(syscall.SIGHUP)
	logged(t, logFile, "Reload done.", 2)
	logged(t, logFile, "reload: password and ACL files kept as they were", 1)
	if !canPublish(t, addr, "b/x") || canPublish(t, addr, "c/x") {
		t.Fatal("after a broken ACL file alice should keep b/#")
	}
	stopGracefully(t, cmd)
}

// selfSigned writes a self-signed certificate for 127.0.0.1 with serial
// to certFile and its key to keyFile.
func selfSigned(t *testing.T, certFile, keyFile string, serial int64) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	// Written to a temporary name and renamed: the broker never reads half a file.
	write := func(name string, b []byte) {
		tmp := name + ".tmp"
		if err := os.WriteFile(tmp, b, 0o644); err != nil { // readable by the user mqttd runs as
			t.Fatal(err)
		}
		if err := os.Rename(tmp, name); err != nil {
			t.Fatal(err)
		}
	}
	write(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}))
	write(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

// servedSerial makes a TLS handshake and an MQTT CONNECT and returns the
// serial number of the certificate the server presented.
func servedSerial(t *testing.T, addr string) int64 {
	t.Helper()
	nc, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatalf("TLS handshake: %v", err)
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(5 * time.Second))
	if err := packet.Write(nc, &packet.Connect{ProtocolName: "MQTT", Version: packet.V311, ClientID: "tls-probe", CleanStart: true}, packet.V311); err != nil {
		t.Fatal(err)
	}
	if p, err := packet.Read(bufio.NewReader(nc), packet.V311, 0); err != nil || p.Type() != packet.CONNACK {
		t.Fatalf("CONNACK over TLS: %v %v", p, err)
	}
	return nc.ConnectionState().PeerCertificates[0].SerialNumber.Int64()
}

// TestSighupReloadsTLSCertificates: after the certificate files change, the
// real SIGHUP makes new handshakes present the new certificate while a
// connection made before stays up; a broken certificate file is refused
// with an error in the log and the certificate loaded before stays.
func TestSighupReloadsTLSCertificates(t *testing.T) {
	dir := searchableDir(t)
	certFile, keyFile := filepath.Join(dir, "server.pem"), filepath.Join(dir, "server.key")
	selfSigned(t, certFile, keyFile, 1001)
	port := freePort(t)
	logFile := filepath.Join(dir, "mqttd.log")
	conf := filepath.Join(dir, "mosquitto.conf")
	os.WriteFile(conf, []byte(fmt.Sprintf("log_dest file %s\nlog_type all\nlistener %d 127.0.0.1\ncertfile %s\nkeyfile %s\nallow_anonymous true\npersistence false\n",
		logFile, port, certFile, keyFile)), 0o644)
	cmd := startLogged(t, conf, port)
	addr := "127.0.0.1:" + strconv.Itoa(port)
	if s := servedSerial(t, addr); s != 1001 {
		t.Fatalf("serial %d, want 1001", s)
	}
	before, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer before.Close()
	if err := packet.Write(before, &packet.Connect{ProtocolName: "MQTT", Version: packet.V311, ClientID: "before", CleanStart: true}, packet.V311); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(before)
	if p, err := packet.Read(br, packet.V311, 0); err != nil || p.Type() != packet.CONNACK {
		t.Fatalf("CONNACK: %v %v", p, err)
	}

	selfSigned(t, certFile, keyFile, 2002)
	if s := servedSerial(t, addr); s != 1001 {
		t.Fatalf("serial %d before SIGHUP, want 1001 (no reload without the signal)", s)
	}
	cmd.Process.Signal(syscall.SIGHUP)
	logged(t, logFile, "Reload done.", 1)
	if s := servedSerial(t, addr); s != 2002 {
		t.Fatalf("serial %d after SIGHUP, want 2002", s)
	}
	// The connection made before the reload is still served.
	before.SetDeadline(time.Now().Add(5 * time.Second))
	if err := packet.Write(before, &packet.Pingreq{}, packet.V311); err != nil {
		t.Fatal(err)
	}
	if p, err := packet.Read(br, packet.V311, 0); err != nil || p.Type() != packet.PINGRESP {
		t.Fatalf("old connection after reload: %v %v", p, err)
	}

	os.WriteFile(certFile, []byte("-----BEGIN CERTIFICATE-----\nbroken\n-----END CERTIFICATE-----\n"), 0o644)
	cmd.Process.Signal(syscall.SIGHUP)
	logged(t, logFile, "Reload done.", 2)
	logged(t, logFile, "reload: TLS certificates kept as they were", 1)
	if s := servedSerial(t, addr); s != 2002 {
		t.Fatalf("serial %d after a broken certificate file, want 2002 kept", s)
	}
	stopGracefully(t, cmd)
}
