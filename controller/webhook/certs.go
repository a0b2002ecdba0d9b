package webhook

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Names of the files in CertDir, and of the keys in the Secret the rotator
// keeps (cert-controller's names, which are also cert-manager's).
const (
	caFile   = "ca.crt"
	certFile = "tls.crt"
	keyFile  = "tls.key"
)

// servingCert hands the webhook server the key pair in a directory, reading
// it again whenever the files change. Unlike controller-runtime's certwatcher
// it tolerates the files not being there yet: the server starts at once and
// fails TLS handshakes (so readiness fails) until the cert arrives, instead
// of the whole manager exiting because the rotator has not written it yet.
type servingCert struct {
	certPath, keyPath string

	mu                sync.Mutex
	cert              *tls.Certificate
	certStat, keyStat os.FileInfo
	lastErr           error
}

func newServingCert(dir string) *servingCert {
	return &servingCert{certPath: filepath.Join(dir, certFile), keyPath: filepath.Join(dir, keyFile)}
}

// GetCertificate is a tls.Config.GetCertificate.
func (s *servingCert) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cs, errC := os.Stat(s.certPath)
	ks, errK := os.Stat(s.keyPath)
	if err := errors.Join(errC, errK); err != nil {
		s.lastErr = err
	} else if !sameFile(cs, s.certStat) || !sameFile(ks, s.keyStat) {
		pair, err := tls.LoadX509KeyPair(s.certPath, s.keyPath)
		if err == nil {
			s.cert, s.certStat, s.keyStat, s.lastErr = &pair, cs, ks, nil
		} else {
			// Possibly half way through a rotation (key written, cert not
			// yet): keep serving the previous pair and read again next time.
			s.lastErr = err
		}
	}
	if s.cert == nil {
		return nil, fmt.Errorf("no webhook serving certificate yet: %w", s.lastErr)
	}
	return s.cert, nil
}

// sameFile is true when a and b are the same unchanged file. Replacing a file
// by rename (as writeCertFiles and kubelet's Secret volumes do) changes its
// inode, so os.SameFile notices even when size and time are equal.
func sameFile(a, b os.FileInfo) bool {
	return a != nil && b != nil && os.SameFile(a, b) && a.ModTime().Equal(b.ModTime()) && a.Size() == b.Size()
}

// writeCertFiles writes the CA, the key and the cert of the Secret's data into
// dir, each by an atomic rename and only when it differs from what is there.
// It writes nothing unless tls.crt and tls.key form a valid pair, and writes
// tls.crt last: the rotator takes the existence of tls.crt to mean the
// serving cert is in place.
func writeCertFiles(dir string, data map[string][]byte) (bool, error) {
	if _, err := tls.X509KeyPair(data[certFile], data[keyFile]); err != nil {
		return false, fmt.Errorf("%s and %s of the Secret are not a key pair (yet): %w", certFile, keyFile, err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return false, err
	}
	changed := false
	for _, name := range []string{caFile, keyFile, certFile} {
		content, ok := data[name]
		if !ok {
			continue
		}
		path := filepath.Join(dir, name)
		if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, content) {
			continue
		}
		if err := writeAtomically(path, content); err != nil {
			return changed, err
		}
		changed = true
	}
	return changed, nil
}

func writeAtomically(path string, content []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name()) // no-op after the rename
	if _, err := f.Write(content); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	// CreateTemp makes the file 0600: only this process reads the key.
	return os.Rename(f.Name(), path)
}

// certFileSync copies the rotator's Secret into CertDir whenever it changes.
// The webhook server reads its cert from there and the rotator waits for it
// there. Copying it ourselves, instead of mounting the Secret as a volume,
// works when the controller is not a pod (the lab), and avoids waiting for
// kubelet's volume sync (up to a minute) on install and on rotation.
//
// It runs on every replica, like the rotator and the webhook server.
//
// It also asks for a new serving cert when the one in the Secret lacks one of
// names: the rotator checks only the first name (the Service's), so without
// this a name added to ExtraDNSNames would never get into the cert. Asking
// means removing tls.crt and tls.key from the Secret; the rotators react to
// the change and issue a new cert, with the CA kept. During a rolling update
// a replica still running with other names may win that race, so this is
// repeated on the next retry tick until the cert has every name; readiness
// fails meanwhile, naming the missing name.
type certFileSync struct {
	cache  cache.Cache   // holds only the one Secret
	reader client.Reader // the cache, or a fake in tests
	writer client.Writer
	key    types.NamespacedName
	dir    string
	names  []string
	log    logr.Logger

	lastRenewal time.Time
}

// retryEvery bounds how long a failed write (a full disk, a read-only
// CertDir) or a cert lacking a name waits before it is tried again without a
// new Secret event. Each try reads the cached Secret and three small files.
const retryEvery = 15 * time.Second

func (s *certFileSync) NeedLeaderElection() bool { return false }

func (s *certFileSync) Start(ctx context.Context) error {
	kick := make(chan struct{}, 1)
	notify := func() {
		select {
		case kick <- struct{}{}:
		default:
		}
	}
	inf, err := s.cache.GetInformer(ctx, &corev1.Secret{}, cache.BlockUntilSynced(false))
	if err != nil {
		return err
	}
	if _, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { notify() },
		UpdateFunc: func(any, any) { notify() },
	}); err != nil {
		return err
	}
	cacheErr := make(chan error, 1)
	go func() { cacheErr <- s.cache.Start(ctx) }()
	if !s.cache.WaitForCacheSync(ctx) {
		return fmt.Errorf("webhook cert Secret %s: cache did not sync", s.key)
	}
	retry := time.NewTicker(retryEvery)
	defer retry.Stop()
	for {
		s.sync(ctx)
		select {
		case <-ctx.Done():
			return nil
		case err := <-cacheErr:
			if err == nil || ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("webhook cert Secret %s: cache stopped: %w", s.key, err)
		case <-kick:
		case <-retry.C:
		}
	}
}

func (s *certFileSync) sync(ctx context.Context) {
	var secret corev1.Secret
	if err := s.reader.Get(ctx, s.key, &secret); err != nil {
		if !apierrors.IsNotFound(err) {
			s.log.Error(err, "reading the webhook cert Secret", "secret", s.key)
		}
		return
	}
	if len(secret.Data[certFile]) == 0 {
		return // the rotator has not filled it in yet
	}
	// A cert missing a name is still good for the others: write it anyway.
	changed, err := writeCertFiles(s.dir, secret.Data)
	if err != nil {
		s.log.Error(err, "writing the webhook serving cert", "secret", s.key, "dir", s.dir)
	} else if changed {
		s.log.Info("webhook serving cert written", "secret", s.key, "dir", s.dir)
	}
	if missing := missingNames(secret.Data[certFile], s.names); len(missing) > 0 && time.Since(s.lastRenewal) >= retryEvery/2 {
		s.lastRenewal = time.Now()
		renew := secret.DeepCopy()
		delete(renew.Data, certFile)
		delete(renew.Data, keyFile)
		if err := s.writer.Update(ctx, renew); err != nil {
			s.log.Error(err, "asking for a webhook serving cert with every DNS name", "secret", s.key, "missing", missing)
			return
		}
		s.log.Info("the webhook serving cert lacks DNS names; asked the rotator for a new one", "secret", s.key, "missing", missing)
	}
}
