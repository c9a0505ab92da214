//go:build unix

package main

import (
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/mqttd/mqttd/auth"
)

// TestSighupReloadsAdminCredentials: SIGHUP reads admin_password_file,
// admin_token_file and the admin certificate again, as it does the
// listeners' password file and certificates: the old password is refused
// and the new one accepted, new handshakes present the new certificate; a
// broken password file leaves the credentials as they were.
func TestSighupReloadsAdminCredentials(t *testing.T) {
	dir := searchableDir(t)
	pw := filepath.Join(dir, "admin.passwd")
	setPassword := func(pass string) {
		t.Helper()
		os.Remove(pw)
		if rc := auth.Passwd([]string{"-c", "-b", pw, "admin", pass}, nil, io.Discard, io.Discard); rc != 0 {
			t.Fatalf("passwd: %d", rc)
		}
		os.Chmod(pw, 0o644) // read again after mqttd dropped root
	}
	setPassword("first")
	tok := filepath.Join(dir, "admin.token")
	os.WriteFile(tok, []byte("token-one\n"), 0o644)
	certFile, keyFile := filepath.Join(dir, "admin.pem"), filepath.Join(dir, "admin.key")
	selfSigned(t, certFile, keyFile, 1001)
	port, aport := freePort(t), freePort(t)
	logFile := filepath.Join(dir, "mqttd.log")
	conf := filepath.Join(dir, "mosquitto.conf")
	os.WriteFile(conf, []byte(fmt.Sprintf("log_dest file %s\nlog_type all\nlistener %d 127.0.0.1\nallow_anonymous true\n"+
		"persistence false\nadmin_listener %d 127.0.0.1\nadmin_password_file %s\nadmin_token_file %s\n"+
		"admin_certfile %s\nadmin_keyfile %s\n", logFile, port, aport, pw, tok, certFile, keyFile)), 0o644)
	cmd := startLogged(t, conf, port)
	waitListening(t, aport)

	url := "https://127.0.0.1:" + strconv.Itoa(aport) + "/api/v1/broker"
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, DisableKeepAlives: true}}
	type cred struct{ user, pass, token string }
	get := func(c cred) (status int, serial int64) {
		t.Helper()
		req, _ := http.NewRequest("GET", url, nil)
		if c.token != "" {
			req.Header.Set("Authorization", "Bearer "+c.token)
		} else {
			req.SetBasicAuth(c.user, c.pass)
		}
		res, err := hc.Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", url, err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		return res.StatusCode, res.TLS.PeerCertificates[0].SerialNumber.Int64()
	}
	expect := func(when string, c cred, status int, serial int64) {
		t.Helper()
		if st, sn := get(c); st != status || sn != serial {
			t.Fatalf("%s, %+v: status %d with certificate %d, want %d with %d", when, c, st, sn, status, serial)
		}
	}
	first, second := cred{"admin", "first", ""}, cred{"admin", "second", ""}
	tokOne, tokTwo := cred{token: "token-one"}, cred{token: "token-two"}
	expect("before", first, 200, 1001)
	expect("before", tokOne, 200, 1001)
	expect("before", second, 401, 1001)

	setPassword("second")
	os.WriteFile(tok, []byte("token-two\n"), 0o644)
	selfSigned(t, certFile, keyFile, 2002)
	expect("changed files, no SIGHUP yet", first, 200, 1001)
	cmd.Process.Signal(syscall.SIGHUP)
	logged(t, logFile, "Reload done.", 1)
	expect("after SIGHUP", second, 200, 2002)
	expect("after SIGHUP", tokTwo, 200, 2002)
	expect("after SIGHUP", first, 401, 2002)
	expect("after SIGHUP", tokOne, 401, 2002)

	os.WriteFile(pw, []byte("admin:not-a-hash\n"), 0o644)
	cmd.Process.Signal(syscall.SIGHUP)
	logged(t, logFile, "Reload done.", 2)
	logged(t, logFile, "reload: admin credentials kept as they were", 1)
	expect("after a broken password file", second, 200, 2002)
	stopGracefully(t, cmd)
}

// TestSighupReloadsMetricsCredentials: SIGHUP reads metrics_token_file
// again: a scrape with the old token is refused and one with the new token
// served; an empty token file keeps the token as it was.
func TestSighupReloadsMetricsCredentials(t *testing.T) {
	dir := searchableDir(t)
	tok := filepath.Join(dir, "metrics.token")
	os.WriteFile(tok, []byte("scrape-one\n"), 0o644)
	port, mport := freePort(t), freePort(t)
	logFile := filepath.Join(dir, "mqttd.log")
	conf := filepath.Join(dir, "mosquitto.conf")
	os.WriteFile(conf, []byte(fmt.Sprintf("log_dest file %s\nlog_type all\nlistener %d 127.0.0.1\nallow_anonymous true\n"+
		"persistence false\nmetrics_listener %d 127.0.0.1\nmetrics_token_file %s\n", logFile, port, mport, tok)), 0o644)
	cmd := startLogged(t, conf, port)
	waitListening(t, mport)
	scrape := func(token string) int {
		t.Helper()
		req, _ := http.NewRequest("GET", "http://127.0.0.1:"+strconv.Itoa(mport)+"/metrics", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		return res.StatusCode
	}
	if a, b := scrape("scrape-one"), scrape("scrape-two"); a != 200 || b != 401 {
		t.Fatalf("before: old token %d, new token %d; want 200, 401", a, b)
	}
	os.WriteFile(tok, []byte("scrape-two\n"), 0o644)
	cmd.Process.Signal(syscall.SIGHUP)
	logged(t, logFile, "Reload done.", 1)
	if a, b := scrape("scrape-one"), scrape("scrape-two"); a != 401 || b != 200 {
		t.Fatalf("after SIGHUP: old token %d, new token %d; want 401, 200", a, b)
	}
	os.WriteFile(tok, []byte("\n"), 0o644)
	cmd.Process.Signal(syscall.SIGHUP)
	logged(t, logFile, "Reload done.", 2)
	logged(t, logFile, "reload: metrics credentials kept as they were", 1)
	if b := scrape("scrape-two"); b != 200 {
		t.Fatalf("after an empty token file: %d, want 200 (kept)", b)
	}
	stopGracefully(t, cmd)
}
