package auth

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"inbox/internal/private"
)

// DevSecretsFile is the file, in the data folder, holding the development
// secrets.
const DevSecretsFile = "dev-secrets.json"

// ErrNoDevSecrets: the data folder holds no development secrets (inboxd has
// not run there).
var ErrNoDevSecrets = errors.New("no development secrets")

// DevSecrets are the JWT secret and admin token inboxd generates when
// INBOX_JWT_SECRET and INBOX_ADMIN_TOKEN are unset, so that a fresh checkout
// runs with no set-up and `inbox token` mints tokens it accepts.
type DevSecrets struct {
	JWTSecret  string `json:"jwt_secret"`
	AdminToken string `json:"admin_token"`
	// Path is the file the secrets were read from or written to.
	Path string `json:"-"`
	// Created is true if this call generated the secrets.
	Created bool `json:"-"`
}

// LoadOrCreateDevSecrets returns the development secrets stored in
// <dataDir>/dev-secrets.json, generating them (32 random bytes each, hex)
// into a new file with mode 0600 the first time (an existing file readable
// by others is tightened to 0600). It creates dataDir (0700) if missing.
// Concurrent first calls agree on one set of secrets.
func LoadOrCreateDevSecrets(dataDir string) (DevSecrets, error) {
	if dataDir == "" {
		return DevSecrets{}, errors.New("development secrets: no data folder given")
	}
	if _, err := private.Dir(dataDir); err != nil {
		return DevSecrets{}, fmt.Errorf("create data folder: %w", err)
	}
	s, err := LoadDevSecrets(dataDir)
	if !errors.Is(err, ErrNoDevSecrets) {
		if err == nil {
			_, err = private.File(s.Path) // a copy made readable by others
		}
		return s, err
	}

	s = DevSecrets{Path: filepath.Join(dataDir, DevSecretsFile), Created: true}
	if s.JWTSecret, err = randomHex(32); err != nil {
		return DevSecrets{}, err
	}
	if s.AdminToken, err = randomHex(32); err != nil {
		return DevSecrets{}, err
	}
	data, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return DevSecrets{}, fmt.Errorf("encode development secrets: %w", err)
	}
	switch err := private.WriteNew(s.Path, append(data, '\n')); {
	case errors.Is(err, fs.ErrExist):
		// Another process got there first: use its secrets.
		return LoadDevSecrets(dataDir)
	case err != nil:
		return DevSecrets{}, fmt.Errorf("write development secrets: %w", err)
	}
	return s, nil
}

// LoadDevSecrets reads the development secrets in <dataDir>/dev-secrets.json.
// If there are none the error wraps ErrNoDevSecrets.
func LoadDevSecrets(dataDir string) (DevSecrets, error) {
	path := filepath.Join(dataDir, DevSecretsFile)
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return DevSecrets{}, fmt.Errorf("%w: %s does not exist", ErrNoDevSecrets, path)
	}
	if err != nil {
		return DevSecrets{}, fmt.Errorf("read development secrets: %w", err)
	}
	var s DevSecrets
	if err := json.Unmarshal(data, &s); err != nil || s.JWTSecret == "" || s.AdminToken == "" {
		return DevSecrets{}, fmt.Errorf("read development secrets: %s is damaged; delete it to generate new ones", path)
	}
	s.Path = path
	return s, nil
}

// randomHex returns n random bytes, hex encoded.
func randomHex(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("generate secret: %w", err)
	}
	return hex.EncodeToString(b), nil
}
