package auth_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"inbox/auth"
)

const testSecret = "0123456789abcdef0123456789abcdef"

func newVerifier(t *testing.T, cfg auth.Config) *auth.Verifier {
	t.Helper()
	v, err := auth.NewVerifier(cfg)
	if err != nil {
		t.Fatalf("NewVerifier: %v", err)
	}
	return v
}

func TestVerify(t *testing.T) {
	rsaK, rsaOther := rsaKeys(t, 2048), rsaKeys(t, 2048)
	edK, edOther := edKeys(t), edKeys(t)

	hs := newVerifier(t, auth.Config{Secret: testSecret})
	rs := newVerifier(t, auth.Config{PublicKeyFile: rsaK.pubFile})
	rs1 := newVerifier(t, auth.Config{PublicKeyFile: rsaK.pkcs1Pub})
	ed := newVerifier(t, auth.Config{PublicKeyFile: edK.pubFile})
	scoped := newVerifier(t, auth.Config{Secret: testSecret, Issuer: "https://id.example", Audience: "inbox"})
	secret := []byte(testSecret)
	none := jwt.UnsafeAllowNoneSignatureType
	hour := time.Now().Add(time.Hour).Unix()

	tests := []struct {
		name      string
		verifier  *auth.Verifier
		token     string
		withError error
		reason    string // substring of the error
		want      auth.Claims
	}{
		{
			name:     "valid HS256 with profile",
			verifier: hs,
			token:    sign(t, jwt.SigningMethodHS256, secret, claims("alice", "name", "Alice A", "picture", "https://x/a.png", "exp", hour)),
			want:     auth.Claims{UserID: "alice", Name: "Alice A", Picture: "https://x/a.png", ExpiresAt: time.Unix(hour, 0)},
		},
		{
			name:     "valid HS512, same family",
			verifier: hs,
			token:    sign(t, jwt.SigningMethodHS512, secret, claims("u_1-X", "exp", hour)),
			want:     auth.Claims{UserID: "u_1-X", ExpiresAt: time.Unix(hour, 0)},
		},
		{
			name:     "valid RS256",
			verifier: rs,
			token:    sign(t, jwt.SigningMethodRS256, rsaK.priv, claims("bob", "exp", hour)),
			want:     auth.Claims{UserID: "bob", ExpiresAt: time.Unix(hour, 0)},
		},
		{
			name:     "valid RS256, PKCS#1 public key",
			verifier: rs1,
			token:    sign(t, jwt.SigningMethodRS256, rsaK.priv, claims("bob", "exp", hour)),
			want:     auth.Claims{UserID: "bob", ExpiresAt: time.Unix(hour, 0)},
		},
		{
			name:     "valid PS256 with RSA key",
			verifier: rs,
			token:    sign(t, jwt.SigningMethodPS256, rsaK.priv, claims("bob", "exp", hour)),
			want:     auth.Claims{UserID: "bob", ExpiresAt: time.Unix(hour, 0)},
		},
		{
			name:     "valid EdDSA",
			verifier: ed,
			token:    sign(t, jwt.SigningMethodEdDSA, edK.priv, claims("carol", "exp", hour)),
			want:     auth.Claims{UserID: "carol", ExpiresAt: time.Unix(hour, 0)},
		},
		{
			name:     "expired within leeway",
			verifier: hs,
			token:    sign(t, jwt.SigningMethodHS256, secret, claims("alice", "exp", time.Now().Add(-10*time.Second).Unix())),
			want:     auth.Claims{UserID: "alice"},
		},

		// Algorithm.
		{name: "alg none against secret", verifier: hs, token: sign(t, jwt.SigningMethodNone, none, claims("alice")), withError: auth.ErrUnauthorized, reason: "algorithm"},
		{name: "alg none against RSA key", verifier: rs, token: sign(t, jwt.SigningMethodNone, none, claims("alice")), withError: auth.ErrUnauthorized, reason: "algorithm"},
		{name: "alg none against Ed25519 key", verifier: ed, token: sign(t, jwt.SigningMethodNone, none, claims("alice")), withError: auth.ErrUnauthorized, reason: "algorithm"},
		{name: "alg missing", verifier: hs, token: rawToken(`{"typ":"JWT"}`, `{"sub":"alice","exp":9999999999}`, "sig"), withError: auth.ErrUnauthorized, reason: "algorithm"},
		{name: "alg unknown", verifier: hs, token: rawToken(`{"alg":"HS999"}`, `{"sub":"alice","exp":9999999999}`, "sig"), withError: auth.ErrUnauthorized, reason: "algorithm"},
		{name: "alg confusion: HS256 keyed with the RSA public key PEM", verifier: rs, token: sign(t, jwt.SigningMethodHS256, rsaK.pubPEM, claims("alice")), withError: auth.ErrUnauthorized, reason: "algorithm"},
		{name: "alg confusion: HS256 keyed with the RSA public key DER", verifier: rs, token: sign(t, jwt.SigningMethodHS256, rsaK.pubDER, claims("alice")), withError: auth.ErrUnauthorized, reason: "algorithm"},
		{name: "alg confusion: HS256 keyed with the Ed25519 public key PEM", verifier: ed, token: sign(t, jwt.SigningMethodHS256, edK.pubPEM, claims("alice")), withError: auth.ErrUnauthorized, reason: "algorithm"},
		{name: "RS256 token against secret", verifier: hs, token: sign(t, jwt.SigningMethodRS256, rsaK.priv, claims("alice")), withError: auth.ErrUnauthorized, reason: "algorithm"},
		{name: "EdDSA token against RSA key", verifier: rs, token: sign(t, jwt.SigningMethodEdDSA, edK.priv, claims("alice")), withError: auth.ErrUnauthorized, reason: "algorithm"},
		{name: "RS256 token against Ed25519 key", verifier: ed, token: sign(t, jwt.SigningMethodRS256, rsaK.priv, claims("alice")), withError: auth.ErrUnauthorized, reason: "algorithm"},

		// Key.
		{name: "wrong secret", verifier: hs, token: sign(t, jwt.SigningMethodHS256, []byte("another secret"), claims("alice")), withError: auth.ErrUnauthorized, reason: "signature"},
		{name: "wrong RSA key", verifier: rs, token: sign(t, jwt.SigningMethodRS256, rsaOther.priv, claims("alice")), withError: auth.ErrUnauthorized, reason: "signature"},
		{name: "wrong Ed25519 key", verifier: ed, token: sign(t, jwt.SigningMethodEdDSA, edOther.priv, claims("alice")), withError: auth.ErrUnauthorized, reason: "signature"},
		{name: "tampered payload", verifier: hs, token: tamper(t, sign(t, jwt.SigningMethodHS256, secret, claims("alice")), `{"sub":"admin","exp":9999999999}`), withError: auth.ErrUnauthorized, reason: "signature"},

		// Time.
		{name: "expired", verifier: hs, token: sign(t, jwt.SigningMethodHS256, secret, claims("alice", "exp", time.Now().Add(-time.Hour).Unix())), withError: auth.ErrTokenExpired},
		{name: "expired is unauthorized", verifier: hs, token: sign(t, jwt.SigningMethodHS256, secret, claims("alice", "exp", time.Now().Add(-time.Hour).Unix())), withError: auth.ErrUnauthorized, reason: "expired"},
		{name: "no exp", verifier: hs, token: sign(t, jwt.SigningMethodHS256, secret, claims("alice", "exp", nil)), withError: auth.ErrUnauthorized, reason: "no exp"},
		{name: "exp not a number", verifier: hs, token: sign(t, jwt.SigningMethodHS256, secret, claims("alice", "exp", "tomorrow")), withError: auth.ErrUnauthorized},
		{name: "not valid yet", verifier: hs, token: sign(t, jwt.SigningMethodHS256, secret, claims("alice", "nbf", time.Now().Add(time.Hour).Unix())), withError: auth.ErrUnauthorized, reason: "not valid yet"},

		// Subject.
		{name: "sub with space", verifier: hs, token: sign(t, jwt.SigningMethodHS256, secret, claims("a b")), withError: auth.ErrUnauthorized, reason: "sub"},
		{name: "sub empty", verifier: hs, token: sign(t, jwt.SigningMethodHS256, secret, claims("")), withError: auth.ErrUnauthorized, reason: "sub"},
		{name: "sub missing", verifier: hs, token: sign(t, jwt.SigningMethodHS256, secret, claims("alice", "sub", nil)), withError: auth.ErrUnauthorized, reason: "sub"},
		{name: "sub 65 chars", verifier: hs, token: sign(t, jwt.SigningMethodHS256, secret, claims(strings.Repeat("a", 65))), withError: auth.ErrUnauthorized, reason: "sub"},
		{name: "sub 64 chars", verifier: hs, token: sign(t, jwt.SigningMethodHS256, secret, claims(strings.Repeat("a", 64), "exp", hour)), want: auth.Claims{UserID: strings.Repeat("a", 64), ExpiresAt: time.Unix(hour, 0)}},
		{name: "sub path traversal", verifier: hs, token: sign(t, jwt.SigningMethodHS256, secret, claims("../x")), withError: auth.ErrUnauthorized, reason: "sub"},
		{name: "sub subject wildcard", verifier: hs, token: sign(t, jwt.SigningMethodHS256, secret, claims("a.>")), withError: auth.ErrUnauthorized, reason: "sub"},
		{name: "sub not a string", verifier: hs, token: sign(t, jwt.SigningMethodHS256, secret, claims("alice", "sub", 123)), withError: auth.ErrUnauthorized},

		// Issuer and audience, when configured.
		{name: "iss and aud ignored unless configured", verifier: hs, token: sign(t, jwt.SigningMethodHS256, secret, claims("alice", "iss", "elsewhere", "aud", "other", "exp", hour)), want: auth.Claims{UserID: "alice", ExpiresAt: time.Unix(hour, 0)}},
		{name: "iss and aud as configured", verifier: scoped, token: sign(t, jwt.SigningMethodHS256, secret, claims("alice", "iss", "https://id.example", "aud", "inbox", "exp", hour)), want: auth.Claims{UserID: "alice", ExpiresAt: time.Unix(hour, 0)}},
		{name: "aud list naming the audience", verifier: scoped, token: sign(t, jwt.SigningMethodHS256, secret, claims("alice", "iss", "https://id.example", "aud", []string{"billing", "inbox"}, "exp", hour)), want: auth.Claims{UserID: "alice", ExpiresAt: time.Unix(hour, 0)}},
		{name: "iss missing", verifier: scoped, token: sign(t, jwt.SigningMethodHS256, secret, claims("alice", "aud", "inbox")), withError: auth.ErrUnauthorized, reason: "iss"},
		{name: "iss of another issuer", verifier: scoped, token: sign(t, jwt.SigningMethodHS256, secret, claims("alice", "iss", "https://evil.example", "aud", "inbox")), withError: auth.ErrUnauthorized, reason: "iss"},
		{name: "aud missing", verifier: scoped, token: sign(t, jwt.SigningMethodHS256, secret, claims("alice", "iss", "https://id.example")), withError: auth.ErrUnauthorized, reason: "aud"},
		{name: "aud of another service", verifier: scoped, token: sign(t, jwt.SigningMethodHS256, secret, claims("alice", "iss", "https://id.example", "aud", []string{"billing"})), withError: auth.ErrUnauthorized, reason: "aud"},

		// Shape.
		{name: "empty", verifier: hs, token: "", withError: auth.ErrUnauthorized, reason: "malformed"},
		{name: "garbage", verifier: hs, token: "not-a-jwt", withError: auth.ErrUnauthorized, reason: "malformed"},
		{name: "name not a string", verifier: hs, token: sign(t, jwt.SigningMethodHS256, secret, claims("alice", "name", 7)), withError: auth.ErrUnauthorized, reason: "malformed"},
		{name: "too large", verifier: hs, token: sign(t, jwt.SigningMethodHS256, secret, claims("alice", "name", strings.Repeat("n", auth.MaxTokenSize))), withError: auth.ErrUnauthorized, reason: "too large"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.verifier.Verify(tt.token)
			if tt.withError != nil {
				if !errors.Is(err, tt.withError) {
					t.Fatalf("Verify error = %v, want %v", err, tt.withError)
				}
				if !strings.Contains(err.Error(), tt.reason) {
					t.Fatalf("Verify error = %q, want it to say %q", err, tt.reason)
				}
				if strings.Contains(err.Error(), testSecret) {
					t.Fatalf("Verify error %q leaks the secret", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if tt.want.ExpiresAt.IsZero() {
				tt.want.ExpiresAt = got.ExpiresAt
			}
			if !got.ExpiresAt.Equal(tt.want.ExpiresAt) {
				t.Fatalf("ExpiresAt = %v, want %v", got.ExpiresAt, tt.want.ExpiresAt)
			}
			got.ExpiresAt, tt.want.ExpiresAt = time.Time{}, time.Time{}
			if got != tt.want {
				t.Fatalf("Verify = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestVerifyLeeway(t *testing.T) {
	secret := []byte(testSecret)
	expired := sign(t, jwt.SigningMethodHS256, secret, claims("alice", "exp", time.Now().Add(-10*time.Second).Unix()))
	tests := []struct {
		name      string
		leeway    time.Duration
		withError error
	}{
		{name: "default leeway accepts 10s skew", leeway: 0},
		{name: "no leeway", leeway: -1, withError: auth.ErrTokenExpired},
		{name: "small leeway", leeway: time.Second, withError: auth.ErrTokenExpired},
		{name: "large leeway", leeway: time.Minute},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := newVerifier(t, auth.Config{Secret: testSecret, Leeway: tt.leeway})
			if _, err := v.Verify(expired); !errors.Is(err, tt.withError) {
				t.Fatalf("Verify error = %v, want %v", err, tt.withError)
			}
		})
	}
}

func TestNewVerifierErrors(t *testing.T) {
	rsaK, smallRSA, edK := rsaKeys(t, 2048), rsaKeys(t, 1024), edKeys(t)
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "not.pem")
	if err := os.WriteFile(notPEM, []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}
	ecPriv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ecDER, err := x509.MarshalPKIXPublicKey(&ecPriv.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	ecFile := filepath.Join(dir, "ec.pub.pem")
	writePEM(t, ecFile, "PUBLIC KEY", ecDER)
	badDER := filepath.Join(dir, "bad.pem")
	writePEM(t, badDER, "PUBLIC KEY", []byte("junk"))

	tests := []struct {
		name      string
		cfg       auth.Config
		withError error  // checked by errors.Is when set
		says      string // substring of the error
	}{
		{name: "nothing configured", cfg: auth.Config{}, says: "no JWT secret"},
		{name: "secret and key", cfg: auth.Config{Secret: "s", PublicKeyFile: rsaK.pubFile}, says: "not both"},
		{name: "missing key file", cfg: auth.Config{PublicKeyFile: filepath.Join(dir, "nope.pem")}, withError: fs.ErrNotExist, says: "nope.pem"},
		{name: "not PEM", cfg: auth.Config{PublicKeyFile: notPEM}, says: "no PEM block"},
		{name: "bad DER", cfg: auth.Config{PublicKeyFile: badDER}, says: "parse JWT public key"},
		{name: "private key given", cfg: auth.Config{PublicKeyFile: rsaK.privFile}, says: "private key"},
		{name: "private Ed25519 key given", cfg: auth.Config{PublicKeyFile: edK.privFile}, says: "private key"},
		{name: "ECDSA key", cfg: auth.Config{PublicKeyFile: ecFile}, says: "unsupported key type"},
		{name: "small RSA key", cfg: auth.Config{PublicKeyFile: smallRSA.pubFile}, says: "1024 bits"},
		{name: "wildcard origin", cfg: auth.Config{Secret: testSecret, AllowedOrigins: []string{"*"}}, says: "allowed origin"},
		{name: "null origin", cfg: auth.Config{Secret: testSecret, AllowedOrigins: []string{"null"}}, says: "allowed origin"},
		{name: "origin with path", cfg: auth.Config{Secret: testSecret, AllowedOrigins: []string{"https://a.example/app"}}, says: "allowed origin"},
		{name: "origin without scheme", cfg: auth.Config{Secret: testSecret, AllowedOrigins: []string{"a.example"}}, says: "allowed origin"},
		{name: "wildcard subdomain", cfg: auth.Config{Secret: testSecret, AllowedOrigins: []string{"https://*.a.example"}}, says: "allowed origin"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, err := auth.NewVerifier(tt.cfg)
			if err == nil {
				t.Fatalf("NewVerifier = %v, want an error", v)
			}
			if tt.withError != nil && !errors.Is(err, tt.withError) {
				t.Fatalf("NewVerifier error = %v, want %v", err, tt.withError)
			}
			if !strings.Contains(err.Error(), tt.says) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("NewVerifier error = %q, want one line saying %q", err, tt.says)
			}
		})
	}
}

// TestShortSecretRefused: an HS256 secret shorter than 32 bytes (issue 15,
// item 9) is refused by the verifier and the minter alike, with one line
// naming the variable and the minimum and never the secret; 32 bytes are
// enough.
func TestShortSecretRefused(t *testing.T) {
	for _, secret := range []string{"xyzzy", "short-secret-" + strings.Repeat("x", auth.MinSecretBytes-14)} {
		_, verr := auth.NewVerifier(auth.Config{Secret: secret})
		_, merr := auth.NewMinter(auth.MinterConfig{Secret: secret})
		for what, err := range map[string]error{"NewVerifier": verr, "NewMinter": merr} {
			if err == nil {
				t.Fatalf("%s with a %d-byte secret succeeded, want an error", what, len(secret))
			}
			if msg := err.Error(); !strings.Contains(msg, "INBOX_JWT_SECRET") || !strings.Contains(msg, "at least 32") ||
				strings.Contains(msg, "\n") || strings.Contains(msg, secret) {
				t.Fatalf("%s error = %q, want one line naming INBOX_JWT_SECRET and the minimum, not the secret", what, msg)
			}
		}
	}
	secret := strings.Repeat("k", auth.MinSecretBytes)
	if _, err := auth.NewVerifier(auth.Config{Secret: secret}); err != nil {
		t.Fatalf("NewVerifier with a 32-byte secret: %v", err)
	}
	if _, err := auth.NewMinter(auth.MinterConfig{Secret: secret}); err != nil {
		t.Fatalf("NewMinter with a 32-byte secret: %v", err)
	}
}

func FuzzVerify(f *testing.F) {
	valid, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims("alice")).SignedString([]byte(testSecret))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(valid)
	f.Add("eyJhbGciOiJub25lIn0.eyJzdWIiOiJhIn0.")
	f.Add("a.b.c")
	v, err := auth.NewVerifier(auth.Config{Secret: testSecret})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, token string) {
		c, err := v.Verify(token)
		if err == nil && c.UserID == "" {
			t.Fatal("accepted a token without a user")
		}
		if err != nil && !errors.Is(err, auth.ErrUnauthorized) {
			t.Fatalf("error %v does not wrap ErrUnauthorized", err)
		}
	})
}

// rawToken assembles a token from raw header and claims JSON and a signature.
func rawToken(header, payload, sig string) string {
	return b64(header) + "." + b64(payload) + "." + b64(sig)
}

// b64 is a token segment's encoding.
func b64(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

// tamper replaces the claims of a signed token, keeping its signature.
func tamper(t *testing.T, token, payload string) string {
	t.Helper()
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		t.Fatalf("token has %d parts", len(parts))
	}
	return parts[0] + "." + b64(payload) + "." + parts[2]
}
