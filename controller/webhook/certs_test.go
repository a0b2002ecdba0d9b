package webhook

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/open-policy-agent/cert-controller/pkg/rotator"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	crwebhook "sigs.k8s.io/controller-runtime/pkg/webhook"
)

// newCA makes a CA and a way to issue serving certs under it, with the
// rotator's own code, so the tests use certs of the shape it writes.
func newCA(t testing.TB) (caPEM []byte, issue func(names ...string) map[string][]byte) {
	t.Helper()
	now := time.Now()
	ca, err := (&rotator.CertRotator{CAName: "herald-webhook-ca", CAOrganization: "herald"}).CreateCACert(now.Add(-time.Hour), now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	return ca.CertPEM, func(names ...string) map[string][]byte {
		t.Helper()
		r := &rotator.CertRotator{DNSName: names[0], ExtraDNSNames: names[1:], ExtKeyUsages: &[]x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
		cert, key, err := r.CreateCertPEM(ca, now.Add(-time.Hour), now.Add(time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		return map[string][]byte{caFile: ca.CertPEM, certFile: cert, keyFile: key}
	}
}

func TestCertFilesAreWrittenOnlyFromACompleteSecret(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "certs")
	_, issue := newCA(t)

	// What the rotator leaves before its first run: an empty Secret, or a CA
	// without a serving cert.
	for _, data := range []map[string][]byte{nil, {caFile: issue("a.b.svc")[caFile]}} {
		if changed, err := writeCertFiles(dir, data); err == nil || changed {
			t.Errorf("incomplete Secret %v: changed %v, err %v; want an error and nothing written", data, changed, err)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, certFile)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("%s exists after incomplete Secrets: %v", certFile, err)
	}

	data := issue("herald-webhook.herald-system.svc")
	if changed, err := writeCertFiles(dir, data); err != nil || !changed {
		t.Fatalf("first write: changed %v, err %v", changed, err)
	}
	for _, name := range []string{caFile, certFile, keyFile} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil || !bytes.Equal(b, data[name]) {
			t.Errorf("%s: %v, content matches %v", name, err, bytes.Equal(b, data[name]))
		}
		if fi, err := os.Stat(filepath.Join(dir, name)); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v, err %v; want 0600 (it holds a private key)", name, fi.Mode(), err)
		}
	}
	if changed, err := writeCertFiles(dir, data); err != nil || changed {
		t.Errorf("rewriting the same Secret: changed %v, err %v; want nothing to do", changed, err)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, ".*")); len(left) > 0 {
		t.Errorf("temporary files left behind: %v", left)
	}
}

func TestServingCertKeepsThePreviousPairWhileARotationIsHalfWritten(t *testing.T) {
	dir := t.TempDir()
	s := newServingCert(dir)
	if _, err := s.GetCertificate(nil); err == nil || !strings.Contains(err.Error(), "no webhook serving certificate yet") {
		t.Fatalf("before any cert: %v", err)
	}
	_, issue := newCA(t)
	first, second := issue("first.herald-system.svc"), issue("second.herald-system.svc")
	serving := func() string {
		t.Helper()
		c, err := s.GetCertificate(nil)
		if err != nil {
			t.Fatal(err)
		}
		return c.Leaf.DNSNames[0]
	}

	if _, err := writeCertFiles(dir, first); err != nil {
		t.Fatal(err)
	}
	if got := serving(); got != "first.herald-system.svc" {
		t.Fatalf("serving %s", got)
	}
	// The new key is in place, its cert not yet.
	if err := writeAtomically(filepath.Join(dir, keyFile), second[keyFile]); err != nil {
		t.Fatal(err)
	}
	if got := serving(); got != "first.herald-system.svc" {
		t.Fatalf("half way through a rotation, serving %s", got)
	}
	if err := writeAtomically(filepath.Join(dir, certFile), second[certFile]); err != nil {
		t.Fatal(err)
	}
	if got := serving(); got != "second.herald-system.svc" {
		t.Fatalf("after the rotation, serving %s", got)
	}
}

func TestMissingNamesListsTheNamesACertIsNotFor(t *testing.T) {
	_, issue := newCA(t)
	cert := issue("herald-webhook.herald-system.svc", "localhost")[certFile]
	if got := missingNames(cert, []string{"herald-webhook.herald-system.svc", "localhost", "other.example"}); len(got) != 1 || got[0] != "other.example" {
		t.Errorf("missing %v, want [other.example]", got)
	}
	if got := missingNames([]byte("garbage"), []string{"a", "b"}); len(got) != 2 {
		t.Errorf("garbage: missing %v, want both names", got)
	}
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// The readiness check passes only when the webhook server, as ServerOptions
// configures it, answers TLS with a cert the CA verifies for every name the
// API server may call it by; the server starts before any cert exists and
// picks up certs written later without a restart.
func TestReadyOnlyWhenTheServerServesACertTheInjectedCAVerifies(t *testing.T) {
	dir := t.TempDir()
	opts := Options{CertDir: dir, Host: "127.0.0.1", Port: freePort(t), ExtraDNSNames: []string{"localhost"}}
	o := opts.withDefaults()
	srv := crwebhook.NewServer(ServerOptions(opts))
	srv.Register("/validate-herald-dev-v1alpha1-ipaddresspool", http.NotFoundHandler())
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan error, 1)
	go func() { stopped <- srv.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-stopped; err != nil {
			t.Errorf("webhook server: %v", err)
		}
	})

	rotated := make(chan struct{})
	r := &readiness{
		rotated:     rotated,
		cacheSynced: func(context.Context) bool { return true },
		addr:        dialAddr(o),
		names:       o.dnsNames(),
		caPath:      filepath.Join(dir, caFile),
		needCA:      true,
	}
	check := func() error { return r.check(httptest.NewRequest(http.MethodGet, "/readyz", nil)) }
	wantNotReady := func(step, why string) {
		t.Helper()
		if err := check(); err == nil || !strings.Contains(err.Error(), why) {
			t.Fatalf("%s: readiness %v, want not ready because %q", step, err, why)
		}
	}

	wantNotReady("before the rotator is done", "not injected")
	close(rotated)

	// Wait for the server to listen; without a cert it must fail handshakes.
	deadline := time.Now().Add(10 * time.Second)
	for err := check(); err != nil && strings.Contains(err.Error(), "connection refused"); err = check() {
		if time.Now().After(deadline) {
			t.Fatal("the webhook server did not start listening")
		}
		time.Sleep(20 * time.Millisecond)
	}
	wantNotReady("before any cert", "does not serve TLS")

	caPEM, issue := newCA(t)
	noLocalhost := issue(o.serviceDNSName())
	if _, err := writeCertFiles(dir, noLocalhost); err != nil {
		t.Fatal(err)
	}
	wantNotReady("a cert without the lab's name", "not valid for localhost")

	if _, err := writeCertFiles(dir, issue(o.serviceDNSName(), "localhost")); err != nil {
		t.Fatal(err)
	}
	if err := check(); err != nil {
		t.Fatalf("with a good cert in place: %v", err)
	}

	// A new CA written before the server's cert is renewed under it.
	otherCA, issueOther := newCA(t)
	if bytes.Equal(caPEM, otherCA) {
		t.Fatal("two CAs are equal")
	}
	renewed := issueOther(o.serviceDNSName(), "localhost")
	if err := writeAtomically(filepath.Join(dir, caFile), renewed[caFile]); err != nil {
		t.Fatal(err)
	}
	wantNotReady("a cert the CA does not verify", "not valid for")
	if _, err := writeCertFiles(dir, renewed); err != nil {
		t.Fatal(err)
	}
	if err := check(); err != nil {
		t.Fatalf("after rotation to the new CA: %v", err)
	}

	// The server really serves HTTP/1.1 only with that cert.
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(renewed[caFile])
	conn, err := tls.Dial("tcp", dialAddr(o), &tls.Config{RootCAs: roots, ServerName: "localhost", NextProtos: []string{"h2", "http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if p := conn.ConnectionState().NegotiatedProtocol; p != "http/1.1" {
		t.Errorf("negotiated %q, want http/1.1 (HTTP/2 is off)", p)
	}

	r.cacheSynced = func(context.Context) bool { return false }
	wantNotReady("before the cache synced", "cache")
}

func TestWithoutRotationACertWithoutItsCAIsEnoughToBeReady(t *testing.T) {
	dir := t.TempDir()
	opts := Options{CertDir: dir, Host: "127.0.0.1", Port: freePort(t)}
	o := opts.withDefaults()
	srv := crwebhook.NewServer(ServerOptions(opts))
	srv.Register("/x", http.NotFoundHandler())
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan error, 1)
	go func() { stopped <- srv.Start(ctx) }()
	t.Cleanup(func() { cancel(); <-stopped })

	_, issue := newCA(t)
	data := issue(o.serviceDNSName())
	delete(data, caFile)
	if _, err := writeCertFiles(dir, data); err != nil {
		t.Fatal(err)
	}
	r := &readiness{cacheSynced: func(context.Context) bool { return true }, addr: dialAddr(o), names: o.dnsNames(), caPath: filepath.Join(dir, caFile)}
	deadline := time.Now().Add(10 * time.Second)
	for err := r.check(httptest.NewRequest(http.MethodGet, "/readyz", nil)); err != nil; err = r.check(httptest.NewRequest(http.MethodGet, "/readyz", nil)) {
		if time.Now().After(deadline) {
			t.Fatalf("not ready: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A serving cert lacking one of the names (ExtraDNSNames grew) is written all
// the same, and removed from the Secret so the rotator issues a new one; not
// again on the Secret events that follow, so replicas with different names
// cannot spin.
func TestASecretCertLackingANameIsWrittenAndSentBackForRenewal(t *testing.T) {
	caPEM, issue := newCA(t)
	data := issue("herald-webhook.herald-system.svc")
	key := types.NamespacedName{Namespace: "herald-system", Name: "herald-webhook-cert"}
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	c := fake.NewClientBuilder().WithScheme(s).WithObjects(&corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name},
		Data:       map[string][]byte{"ca.key": []byte("kept"), caFile: caPEM, certFile: data[certFile], keyFile: data[keyFile]},
	}).Build()
	dir := t.TempDir()
	sync := &certFileSync{reader: c, writer: c, key: key, dir: dir, names: []string{"herald-webhook.herald-system.svc", "localhost"}, log: logr.Discard()}

	sync.sync(context.Background())
	if b, err := os.ReadFile(filepath.Join(dir, certFile)); err != nil || !bytes.Equal(b, data[certFile]) {
		t.Errorf("the cert was not written: %v", err)
	}
	var got corev1.Secret
	if err := c.Get(context.Background(), key, &got); err != nil {
		t.Fatal(err)
	}
	if _, ok := got.Data[certFile]; ok {
		t.Error("the cert lacking localhost is still in the Secret")
	}
	if _, ok := got.Data[keyFile]; ok {
		t.Error("the key of the cert lacking localhost is still in the Secret")
	}
	if string(got.Data["ca.key"]) != "kept" || !bytes.Equal(got.Data[caFile], caPEM) {
		t.Error("the CA must be kept: the API server trusts it")
	}

	// Another replica, still on the old names, puts such a cert back at once.
	got.Data[certFile], got.Data[keyFile] = data[certFile], data[keyFile]
	if err := c.Update(context.Background(), &got); err != nil {
		t.Fatal(err)
	}
	sync.sync(context.Background())
	if err := c.Get(context.Background(), key, &got); err != nil {
		t.Fatal(err)
	}
	if _, ok := got.Data[certFile]; !ok {
		t.Error("asked for renewal again on the next Secret event")
	}
}
