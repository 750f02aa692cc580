package auth_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// keyFiles are a generated key pair written as PEM into a test's temp dir.
type keyFiles struct {
	priv      any
	pub       any
	pubFile   string // PKIX "PUBLIC KEY"
	privFile  string // PKCS#8 "PRIVATE KEY"
	pubPEM    []byte
	pubDER    []byte
	pkcs1File string // PKCS#1 "RSA PRIVATE KEY", RSA only
	pkcs1Pub  string // PKCS#1 "RSA PUBLIC KEY", RSA only
}

func writePEM(t *testing.T, file, typ string, der []byte) []byte {
	t.Helper()
	data := pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
	if err := os.WriteFile(file, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return data
}

func writeKeys(t *testing.T, name string, priv, pub any) keyFiles {
	t.Helper()
	dir := t.TempDir()
	k := keyFiles{priv: priv, pub: pub,
		pubFile:  filepath.Join(dir, name+".pub.pem"),
		privFile: filepath.Join(dir, name+".pem"),
	}
	var err error
	if k.pubDER, err = x509.MarshalPKIXPublicKey(pub); err != nil {
		t.Fatal(err)
	}
	k.pubPEM = writePEM(t, k.pubFile, "PUBLIC KEY", k.pubDER)
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	writePEM(t, k.privFile, "PRIVATE KEY", der)
	if rk, ok := priv.(*rsa.PrivateKey); ok {
		k.pkcs1File = filepath.Join(dir, name+".pkcs1.pem")
		writePEM(t, k.pkcs1File, "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(rk))
		k.pkcs1Pub = filepath.Join(dir, name+".pkcs1.pub.pem")
		writePEM(t, k.pkcs1Pub, "RSA PUBLIC KEY", x509.MarshalPKCS1PublicKey(&rk.PublicKey))
	}
	return k
}

func rsaKeys(t *testing.T, bits int) keyFiles {
	t.Helper()
	priv, err := rsa.GenerateKey(rand.Reader, bits)
	if err != nil {
		t.Fatal(err)
	}
	return writeKeys(t, "rsa", priv, &priv.PublicKey)
}

func edKeys(t *testing.T) keyFiles {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return writeKeys(t, "ed25519", priv, pub)
}

// sign signs claims with method and key, failing the test on error.
func sign(t *testing.T, method jwt.SigningMethod, key any, claims jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(method, claims).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// claims returns valid claims for sub expiring in an hour, with extra set.
func claims(sub string, extra ...any) jwt.MapClaims {
	c := jwt.MapClaims{"sub": sub, "exp": time.Now().Add(time.Hour).Unix()}
	for i := 0; i+1 < len(extra); i += 2 {
		k := extra[i].(string)
		if extra[i+1] == nil {
			delete(c, k)
			continue
		}
		c[k] = extra[i+1]
	}
	return c
}
