package config

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/mqttd/mqttd/cluster"
)

// TestClusterOptions: every cluster_* key lands in Config.Cluster, and
// the node accepts what the configuration accepts.
func TestClusterOptions(t *testing.T) {
	c := parse(t, `# a node
cluster_name    prod
cluster_node    node-a.1
cluster_listen  127.0.0.1:7501
cluster_peer    127.0.0.1:7502
cluster_peer	[::1]:7503
cluster_cafile  /etc/mqttd/ca.pem
cluster_certfile /etc/mqttd/a.pem
cluster_keyfile /etc/mqttd/a.key
cluster_adopt_after 30
`)
	cc := c.Cluster
	want := Cluster{Name: "prod", Node: "node-a.1", Listen: "127.0.0.1:7501",
		Peers: []string{"127.0.0.1:7502", "[::1]:7503"}, CAFile: "/etc/mqttd/ca.pem",
		CertFile: "/etc/mqttd/a.pem", KeyFile: "/etc/mqttd/a.key", AdoptAfter: 30 * time.Second, Line: "test.conf:2"}
	cc.lines = nil
	if !reflect.DeepEqual(cc, want) {
		t.Fatalf("Cluster = %+v\nwant      %+v", cc, want)
	}
	if !c.Cluster.Enabled() {
		t.Fatal("Enabled() false with cluster_* lines")
	}

	// The smallest cluster configuration; the node's name defaults to the
	// host name and the listen address may leave the host out.
	c = parse(t, "cluster_name p\ncluster_listen :7501\n")
	if cc := c.Cluster; cc.Name != "p" || cc.Listen != ":7501" || cc.Node != "" || len(cc.Peers) != 0 || !cc.Enabled() {
		t.Fatalf("minimal: %+v", cc)
	}
	n, err := cluster.New(cluster.Config{Name: c.Cluster.Name, Node: "x", Listen: c.Cluster.Listen,
		Peers: c.Cluster.Peers, Dir: t.TempDir()})
	if err != nil || n.Name() != "x" {
		t.Fatalf("cluster.New refuses what config accepts: %v", err)
	}

	// No cluster_* line: a single broker.
	if c := parse(t, "listener 1883\nallow_anonymous true\n"); c.Cluster.Enabled() {
		t.Fatalf("Enabled() with no cluster_* line: %+v", c.Cluster)
	}
}

// TestClusterErrors: each mistake is refused with the file and line it is
// on (or, for a missing option, of the first cluster_* line).
func TestClusterErrors(t *testing.T) {
	for _, tc := range []struct{ text, want string }{
		{"listener 1883\ncluster_node a\ncluster_listen 127.0.0.1:7501\n",
			"node.conf:2: cluster_* options need cluster_name"},
		{"cluster_peer 127.0.0.1:7502\ncluster_name p\n",
			"node.conf:1: cluster_* options need cluster_listen"},
		{"cluster_name p\ncluster_listen 127.0.0.1\n", `node.conf:2: cluster_listen: "127.0.0.1" is not host:port`},
		{"cluster_name p\ncluster_listen 127.0.0.1:70000\n", `node.conf:2: cluster_listen: "127.0.0.1:70000": port`},
		{"cluster_name p\ncluster_listen 127.0.0.1:x\n", `node.conf:2: cluster_listen: "127.0.0.1:x": port`},
		{"cluster_name p\ncluster_listen 127.0.0.1:7501\ncluster_peer :7502\n", `node.conf:3: cluster_peer: ":7502" has no host`},
		{"cluster_name p\ncluster_listen 127.0.0.1:7501\ncluster_peer 127.0.0.1:7502\ncluster_peer 127.0.0.1:7502\n",
			"node.conf:4: cluster_peer 127.0.0.1:7502 given twice"},
		{"cluster_name p\ncluster_node a\ncluster_node b\n", "node.conf:3: cluster_node given twice (first at node.conf:2)"},
		{"cluster_name p\ncluster_name q\n", "node.conf:2: cluster_name given twice (first at node.conf:1)"},
		{"cluster_name p\ncluster_listen 127.0.0.1:7501\ncluster_listen 127.0.0.1:7502\n", "node.conf:3: cluster_listen given twice"},
		{"cluster_name a/b\n", `node.conf:1: cluster_name: "a/b": only letters`},
		{"cluster_name p\ncluster_node node a\n", "node.conf:2: cluster_node takes one value"},
		{"cluster_name " + strings.Repeat("n", 129) + "\n", "node.conf:1: cluster_name: " + `"` + strings.Repeat("n", 129) + `": more than 128`},
		{"cluster_peer\n", "node.conf:1: cluster_peer takes one value"},
		{"cluster_name p\ncluster_listen 127.0.0.1:7501\n\ncluster_cafile ca.pem\n",
			"node.conf:4: cluster TLS needs cluster_cafile, cluster_certfile and cluster_keyfile together"},
		{"cluster_name p\ncluster_listen 127.0.0.1:7501\ncluster_certfile a.pem\ncluster_keyfile a.key\n",
			"node.conf:3: cluster TLS needs"},
		{"cluster_name p\ncluster_listen 127.0.0.1:7501\ncluster_keyfile a.key\n", "node.conf:3: cluster TLS needs"},
		{"cluster_name p\ncluster_listen 127.0.0.1:7501\ncluster_peers 127.0.0.1:7502\n",
			"node.conf:3: cluster_peers: unknown cluster option (known: cluster_name, cluster_node"},
		{"cluster_tls true\n", "node.conf:1: cluster_tls: unknown cluster option"},
		{"cluster_name p\ncluster_adopt_after 0\n", `node.conf:2: cluster_adopt_after: "0" is not a number of seconds`},
		{"cluster_name p\ncluster_adopt_after 5s\n", `node.conf:2: cluster_adopt_after: "5s" is not a number of seconds`},
	} {
		_, err := Parse(strings.NewReader(tc.text), "node.conf")
		if err == nil || !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: got %v, want an error containing %q", tc.text, err, tc.want)
		}
	}
}

// TestClusterErrorInIncludedFile: an error names the included file.
func TestClusterErrorInIncludedFile(t *testing.T) {
	dir := t.TempDir()
	inc := filepath.Join(dir, "conf.d")
	os.Mkdir(inc, 0o755)
	os.WriteFile(filepath.Join(inc, "cluster.conf"), []byte("cluster_name p\ncluster_node a\n"), 0o644)
	main := filepath.Join(dir, "mqttd.conf")
	os.WriteFile(main, []byte("include_dir "+inc+"\n"), 0o644)
	_, err := Load(main)
	want := filepath.Join(inc, "cluster.conf") + ":1: cluster_* options need cluster_listen"
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("got %v, want %q", err, want)
	}
}

// TestClusterCheckFiles: --test-config loads the cluster's TLS files
// (Cluster.CheckFiles): missing or unreadable files are reported with the
// line that names them.
func TestClusterCheckFiles(t *testing.T) {
	dir := t.TempDir()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "ca"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	ca := write("ca.pem", certPEM)
	crt := write("node.pem", certPEM)
	k := write("node.key", pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}))
	notPEM := write("junk.pem", []byte("not a certificate\n"))
	conf := func(caFile, certFile, keyFile string) *Config {
		return parse(t, "cluster_name p\ncluster_listen 127.0.0.1:7501\ncluster_cafile "+caFile+
			"\ncluster_certfile "+certFile+"\ncluster_keyfile "+keyFile+"\n")
	}
	if err := conf(ca, crt, k).Cluster.CheckFiles(); err != nil {
		t.Fatalf("good files: %v", err)
	}
	if err := parse(t, "cluster_name p\ncluster_listen 127.0.0.1:7501\n").Cluster.CheckFiles(); err != nil {
		t.Fatalf("no TLS: %v", err)
	}
	for _, tc := range []struct {
		c    *Config
		want string
	}{
		{conf(ca, filepath.Join(dir, "missing.pem"), k), "test.conf:4: cluster_certfile/cluster_keyfile"},
		{conf(ca, crt, notPEM), "test.conf:4: cluster_certfile/cluster_keyfile"},
		{conf(filepath.Join(dir, "missing.pem"), crt, k), "test.conf:3: cluster_cafile"},
		{conf(notPEM, crt, k), "test.conf:3: cluster_cafile " + notPEM + ": no PEM certificate"},
	} {
		if err := tc.c.Cluster.CheckFiles(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("got %v, want %q", err, tc.want)
		}
	}
}
