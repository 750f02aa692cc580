package eventstore

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/nats-io/nats.go"
)

// TestListenerNeedsCredentials: the embedded server never opens a client
// port without credentials (issue 15, item 2), on loopback or any other
// address; in-process only, it needs none.
func TestListenerNeedsCredentials(t *testing.T) {
	for _, listen := range []string{"0.0.0.0:0", "[::]:0", "127.0.0.1:0"} {
		ns, err := RunEmbedded(EmbeddedConfig{Dir: filepath.Join(t.TempDir(), "nats"), Listen: listen})
		if err == nil {
			ns.Shutdown()
			t.Fatalf("RunEmbedded listening on %s without credentials succeeded", listen)
		}
		if !strings.Contains(err.Error(), listen) || !strings.Contains(err.Error(), "without credentials") {
			t.Errorf("RunEmbedded on %s: %v, want an error naming the address and the missing credentials", listen, err)
		}
	}
	ns, err := RunEmbedded(EmbeddedConfig{Dir: filepath.Join(t.TempDir(), "nats")})
	if err != nil {
		t.Fatalf("in-process only, without credentials: %v", err)
	}
	ns.Shutdown()
}

// TestEmbeddedCredentials: with credentials the embedded server admits the
// service (in-process and on its port) and the inspection user, and no
// connection without credentials; the seeds are generated once, 0600, and
// reused.
func TestEmbeddedCredentials(t *testing.T) {
	data := t.TempDir()
	creds, err := LoadOrCreateCredentials(data)
	if err != nil {
		t.Fatal(err)
	}
	ns, err := RunEmbedded(EmbeddedConfig{Dir: filepath.Join(data, "nats"), Listen: "127.0.0.1:0", Credentials: &creds})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Shutdown)

	if nc, err := nats.Connect(ns.ClientURL()); err == nil {
		nc.Close()
		t.Error("TCP connection without credentials admitted")
	}
	service, err := creds.ServiceOption()
	if err != nil {
		t.Fatal(err)
	}
	nc, err := ConnectEmbedded(ns, "service", service)
	if err != nil {
		t.Fatalf("service, in-process: %v", err)
	}
	if _, err := Open(context.Background(), Config{Conn: nc}); err != nil {
		t.Fatalf("service opens the stream: %v", err)
	}
	nc.Close()
	for what, auth := range map[string]Auth{"service": {NkeyFile: creds.ServiceKey()}, "inspection": {NkeyFile: creds.InspectKey()}} {
		nc, err := Connect(ns.ClientURL(), what, auth, nil)
		if err != nil {
			t.Errorf("%s, over TCP: %v", what, err)
			continue
		}
		nc.Close()
	}

	for _, f := range []string{ServiceKeyFile, InspectKeyFile} {
		fi, err := os.Stat(filepath.Join(data, f))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v %v, want mode 0600", f, fi.Mode(), err)
		}
	}
	again, err := LoadOrCreateCredentials(data)
	if err != nil || again != creds {
		t.Errorf("second LoadOrCreateCredentials = %+v %v, want %+v", again, err, creds)
	}
	loaded, err := LoadCredentials(data)
	if err != nil || loaded != creds {
		t.Errorf("LoadCredentials = %+v %v, want %+v", loaded, err, creds)
	}
	if _, err := LoadCredentials(t.TempDir()); !errors.Is(err, ErrNoCredentials) {
		t.Errorf("LoadCredentials of an empty folder: %v, want ErrNoCredentials", err)
	}
}

// TestCredentialsConcurrentFirstStart: processes creating the credentials
// of one data folder at once all end up with the same keys.
func TestCredentialsConcurrentFirstStart(t *testing.T) {
	data := t.TempDir()
	const n = 8
	got := make([]Credentials, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { got[i], errs[i] = LoadOrCreateCredentials(data) })
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil || got[i] != got[0] {
			t.Fatalf("call %d: %+v %v, want %+v", i, got[i], errs[i], got[0])
		}
	}
}

// TestInspectContext: the nats CLI context names the port (loopback for an
// unspecified listen address) and the absolute path of the inspection seed;
// InspectURL reads the port back, and without a context says there is none.
func TestInspectContext(t *testing.T) {
	data := t.TempDir()
	creds, err := LoadOrCreateCredentials(data)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := InspectURL(data); !errors.Is(err, ErrNoNATSPort) {
		t.Fatalf("InspectURL before any context: %v, want ErrNoNATSPort", err)
	}
	for in, want := range map[string]string{
		"nats://127.0.0.1:4222": "nats://127.0.0.1:4222",
		"nats://0.0.0.0:4222":   "nats://127.0.0.1:4222",
		"nats://[::]:4222":      "nats://[::1]:4222",
	} {
		if err := creds.WriteInspectContext(in); err != nil {
			t.Fatal(err)
		}
		if got, err := InspectURL(data); err != nil || got != want {
			t.Errorf("context for %s: url %q %v, want %q", in, got, err, want)
		}
	}
	b, err := os.ReadFile(creds.InspectContext())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"nkey": "`+creds.InspectKey()+`"`) || !filepath.IsAbs(creds.InspectKey()) {
		t.Errorf("context does not name the seed %s by its absolute path:\n%s", creds.InspectKey(), b)
	}
	if err := creds.RemoveInspectContext(); err != nil {
		t.Fatal(err)
	}
	if _, err := InspectURL(data); !errors.Is(err, ErrNoNATSPort) {
		t.Fatalf("InspectURL after removal: %v, want ErrNoNATSPort", err)
	}
}

func TestRedactURLs(t *testing.T) {
	for in, want := range map[string]string{
		"nats://a:4222":                          "nats://a:4222",
		"nats://svc:s3cret@a:4222,nats://b:4222": "nats://svc:xxxxx@a:4222,nats://b:4222",
		"nats://t0ken@a:4222":                    "nats://xxxxx@a:4222",
		"nats://u:p@a:1, nats://u:p@b:2":         "nats://u:xxxxx@a:1,nats://u:xxxxx@b:2",
	} {
		if got := RedactURLs(in); got != want {
			t.Errorf("RedactURLs(%q) = %q, want %q", in, got, want)
		}
	}
}
