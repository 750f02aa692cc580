package auth_test

import (
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"inbox/auth"
)

func TestDevSecretsCreatedOnceAndReused(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data") // not there yet: created

	first, err := auth.LoadOrCreateDevSecrets(dir)
	if err != nil {
		t.Fatalf("LoadOrCreateDevSecrets: %v", err)
	}
	if !first.Created {
		t.Fatal("first call: Created = false")
	}
	if want := filepath.Join(dir, auth.DevSecretsFile); first.Path != want {
		t.Fatalf("Path = %q, want %q", first.Path, want)
	}
	for name, s := range map[string]string{"JWTSecret": first.JWTSecret, "AdminToken": first.AdminToken} {
		if b, err := hex.DecodeString(s); err != nil || len(b) != 32 {
			t.Fatalf("%s = %q, want 32 bytes in hex", name, s)
		}
	}
	if first.JWTSecret == first.AdminToken {
		t.Fatal("JWT secret and admin token are equal")
	}
	fi, err := os.Stat(first.Path)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Fatalf("mode = %v, want 0600", perm)
	}

	again, err := auth.LoadOrCreateDevSecrets(dir)
	if err != nil {
		t.Fatalf("LoadOrCreateDevSecrets again: %v", err)
	}
	if again.Created {
		t.Fatal("second call: Created = true")
	}
	loaded, err := auth.LoadDevSecrets(dir)
	if err != nil {
		t.Fatalf("LoadDevSecrets: %v", err)
	}
	for _, s := range []auth.DevSecrets{again, loaded} {
		if s.JWTSecret != first.JWTSecret || s.AdminToken != first.AdminToken || s.Path != first.Path {
			t.Fatalf("secrets changed: %+v, want %+v", s, first)
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		t.Fatalf("data folder holds %d entries, want only %s", len(entries), auth.DevSecretsFile)
	}
}

func TestDevSecretsConcurrentFirstCalls(t *testing.T) {
	dir := t.TempDir()
	const n = 8
	var (
		wg   sync.WaitGroup
		got  [n]auth.DevSecrets
		errs [n]error
	)
	for i := range n {
		wg.Go(func() { got[i], errs[i] = auth.LoadOrCreateDevSecrets(dir) })
	}
	wg.Wait()
	created := 0
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("call %d: %v", i, errs[i])
		}
		if got[i].JWTSecret != got[0].JWTSecret || got[i].AdminToken != got[0].AdminToken {
			t.Fatalf("call %d got other secrets", i)
		}
		if got[i].Created {
			created++
		}
	}
	if created != 1 {
		t.Fatalf("%d calls created the secrets, want 1", created)
	}
}

func TestDevSecretsErrors(t *testing.T) {
	base := t.TempDir()
	file := filepath.Join(base, "file")
	if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	damaged := filepath.Join(base, "damaged")
	if err := os.Mkdir(damaged, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(damaged, auth.DevSecretsFile), []byte(`{"jwt_secret":""}`), 0o600); err != nil {
		t.Fatal(err)
	}
	readOnly := filepath.Join(base, "ro")
	if err := os.Mkdir(readOnly, 0o500); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name      string
		dir       string
		create    bool // LoadOrCreateDevSecrets, else LoadDevSecrets
		skipRoot  bool // root writes anywhere
		withError error
		says      string
	}{
		{name: "no data folder given", dir: "", create: true, says: "no data folder"},
		{name: "data folder under a file", dir: filepath.Join(file, "data"), create: true, says: "create data folder"},
		{name: "data folder is a file", dir: file, create: true, says: "create data folder"},
		{name: "unwritable data folder", dir: readOnly, create: true, skipRoot: true, says: "write development secrets"},
		{name: "damaged file", dir: damaged, create: true, says: "damaged"},
		{name: "load, missing folder", dir: filepath.Join(base, "missing"), withError: auth.ErrNoDevSecrets, says: "does not exist"},
		{name: "load, no secrets yet", dir: base, withError: auth.ErrNoDevSecrets},
		{name: "load, damaged file", dir: damaged, says: "damaged"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.skipRoot && os.Geteuid() == 0 {
				t.Skip("root ignores directory permissions")
			}
			load := auth.LoadDevSecrets
			if tt.create {
				load = auth.LoadOrCreateDevSecrets
			}
			s, err := load(tt.dir)
			if err == nil {
				t.Fatalf("got %+v, want an error", s)
			}
			if tt.withError != nil && !errors.Is(err, tt.withError) {
				t.Fatalf("error = %v, want %v", err, tt.withError)
			}
			if !strings.Contains(err.Error(), tt.says) {
				t.Fatalf("error = %q, want it to say %q", err, tt.says)
			}
		})
	}
}
