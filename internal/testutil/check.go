package testutil

import (
	"testing"
	"time"
)

// CheckFor calls f every interval until it returns nil, and fails t with
// f's last error if total passes first (nats-server's checkFor).
func CheckFor(t testing.TB, total, interval time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(total)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %v", total, err)
		}
		time.Sleep(interval)
	}
}
