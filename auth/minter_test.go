package auth_test

import (
	"strings"
	"testing"
	"time"

	"inbox/auth"
)

func TestMint(t *testing.T) {
	rsaK, edK := rsaKeys(t, 2048), edKeys(t)
	tests := []struct {
		name     string
		minter   auth.MinterConfig
		verifier auth.Config
	}{
		{name: "HS256", minter: auth.MinterConfig{Secret: testSecret}, verifier: auth.Config{Secret: testSecret}},
		{name: "RS256 PKCS#8", minter: auth.MinterConfig{PrivateKeyFile: rsaK.privFile}, verifier: auth.Config{PublicKeyFile: rsaK.pubFile}},
		{name: "RS256 PKCS#1", minter: auth.MinterConfig{PrivateKeyFile: rsaK.pkcs1File}, verifier: auth.Config{PublicKeyFile: rsaK.pubFile}},
		{name: "EdDSA", minter: auth.MinterConfig{PrivateKeyFile: edK.privFile}, verifier: auth.Config{PublicKeyFile: edK.pubFile}},
		{
			name:     "issuer and audience",
			minter:   auth.MinterConfig{Secret: testSecret, Issuer: "https://id.example", Audience: "inbox"},
			verifier: auth.Config{Secret: testSecret, Issuer: "https://id.example", Audience: "inbox"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := auth.NewMinter(tt.minter)
			if err != nil {
				t.Fatalf("NewMinter: %v", err)
			}
			v := newVerifier(t, tt.verifier)
			before := time.Now()
			token, err := m.Mint("alice", "Alice A", time.Hour)
			if err != nil {
				t.Fatalf("Mint: %v", err)
			}
			c, err := v.Verify(token)
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if c.UserID != "alice" || c.Name != "Alice A" || c.Picture != "" {
				t.Fatalf("Verify = %+v", c)
			}
			if d := c.ExpiresAt.Sub(before); d < time.Hour-time.Second || d > time.Hour+time.Second {
				t.Fatalf("ExpiresAt %v is not an hour from now", c.ExpiresAt)
			}
		})
	}
}

// TestMintScoped: a token minted for one issuer or audience is refused by a
// verifier configured for another.
func TestMintScoped(t *testing.T) {
	m, err := auth.NewMinter(auth.MinterConfig{Secret: testSecret, Issuer: "https://id.example", Audience: "inbox"})
	if err != nil {
		t.Fatal(err)
	}
	token, err := m.Mint("alice", "", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	for _, cfg := range []auth.Config{
		{Secret: testSecret, Issuer: "https://other.example"},
		{Secret: testSecret, Audience: "billing"},
	} {
		if _, err := newVerifier(t, cfg).Verify(token); err == nil {
			t.Errorf("verifier for iss %q aud %q accepted a token for https://id.example and inbox", cfg.Issuer, cfg.Audience)
		}
	}
}

func TestMintErrors(t *testing.T) {
	m, err := auth.NewMinter(auth.MinterConfig{Secret: testSecret})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		user string
		ttl  time.Duration
		says string
	}{
		{name: "bad user", user: "a b", ttl: time.Hour, says: "invalid user id"},
		{name: "empty user", user: "", ttl: time.Hour, says: "invalid user id"},
		{name: "long user", user: strings.Repeat("a", 65), ttl: time.Hour, says: "invalid user id"},
		{name: "zero ttl", user: "alice", ttl: 0, says: "ttl"},
		{name: "negative ttl", user: "alice", ttl: -time.Hour, says: "ttl"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := m.Mint(tt.user, "", tt.ttl)
			if err == nil || !strings.Contains(err.Error(), tt.says) {
				t.Fatalf("Mint error = %v, want one saying %q", err, tt.says)
			}
		})
	}
}

func TestNewMinterErrors(t *testing.T) {
	rsaK := rsaKeys(t, 2048)
	tests := []struct {
		name string
		cfg  auth.MinterConfig
		says string
	}{
		{name: "nothing", cfg: auth.MinterConfig{}, says: "no JWT secret"},
		{name: "both", cfg: auth.MinterConfig{Secret: "s", PrivateKeyFile: rsaK.privFile}, says: "not both"},
		{name: "public key given", cfg: auth.MinterConfig{PrivateKeyFile: rsaK.pubFile}, says: "unsupported PEM block"},
		{name: "missing file", cfg: auth.MinterConfig{PrivateKeyFile: rsaK.privFile + ".missing"}, says: "read JWT private key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := auth.NewMinter(tt.cfg)
			if err == nil || !strings.Contains(err.Error(), tt.says) {
				t.Fatalf("NewMinter error = %v, want one saying %q", err, tt.says)
			}
		})
	}
}
