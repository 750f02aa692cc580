package auth

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"strings"
)

// minRSABits is the smallest RSA modulus accepted for signing or verifying.
const minRSABits = 2048

// readPEM reads the first PEM block of file. what names the key in errors.
func readPEM(file, what string) (*pem.Block, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", what, err)
	}
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, fmt.Errorf("read %s %q: no PEM block found", what, file)
	}
	return block, nil
}

// loadPublicKey reads a PEM public key (PKIX "PUBLIC KEY", PKCS#1 "RSA PUBLIC
// KEY" or a "CERTIFICATE") and returns an *rsa.PublicKey or ed25519.PublicKey.
func loadPublicKey(file string) (crypto.PublicKey, error) {
	const what = "JWT public key"
	block, err := readPEM(file, what)
	if err != nil {
		return nil, err
	}
	var key any
	switch block.Type {
	case "PUBLIC KEY":
		key, err = x509.ParsePKIXPublicKey(block.Bytes)
	case "RSA PUBLIC KEY":
		key, err = x509.ParsePKCS1PublicKey(block.Bytes)
	case "CERTIFICATE":
		var cert *x509.Certificate
		if cert, err = x509.ParseCertificate(block.Bytes); err == nil {
			key = cert.PublicKey
		}
	default:
		if strings.Contains(block.Type, "PRIVATE KEY") {
			return nil, fmt.Errorf("read %s %q: file holds a private key; give the public key", what, file)
		}
		return nil, fmt.Errorf("read %s %q: unsupported PEM block %q", what, file, block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("parse %s %q: %w", what, file, err)
	}
	return checkKey(key, what, file)
}

// loadPrivateKey reads a PEM private key (PKCS#8 "PRIVATE KEY" or PKCS#1
// "RSA PRIVATE KEY") and returns an *rsa.PrivateKey or ed25519.PrivateKey.
func loadPrivateKey(file string) (crypto.PrivateKey, error) {
	const what = "JWT private key"
	block, err := readPEM(file, what)
	if err != nil {
		return nil, err
	}
	var key any
	switch block.Type {
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	case "ENCRYPTED PRIVATE KEY":
		return nil, fmt.Errorf("read %s %q: encrypted keys are not supported", what, file)
	default:
		return nil, fmt.Errorf("read %s %q: unsupported PEM block %q", what, file, block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("parse %s %q: %w", what, file, err)
	}
	return checkKey(key, what, file)
}

// checkKey accepts RSA keys of at least minRSABits and Ed25519 keys.
func checkKey(key any, what, file string) (any, error) {
	var bits int
	switch k := key.(type) {
	case *rsa.PublicKey:
		bits = k.N.BitLen()
	case *rsa.PrivateKey:
		bits = k.N.BitLen()
	case ed25519.PublicKey, ed25519.PrivateKey:
		return key, nil
	default:
		return nil, fmt.Errorf("parse %s %q: unsupported key type %T (want RSA or Ed25519)", what, file, key)
	}
	if bits < minRSABits {
		return nil, fmt.Errorf("parse %s %q: RSA key has %d bits, want at least %d", what, file, bits, minRSABits)
	}
	return key, nil
}
