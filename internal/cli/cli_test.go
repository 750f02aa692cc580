package cli

import (
	"flag"
	"io"
	"strings"
	"testing"
	"time"
)

func TestParseEnvAndFlags(t *testing.T) {
	t.Setenv("INBOX_HTTP_ADDR", "127.0.0.1:9")
	t.Setenv("INBOX_REPLICAS", "3")
	t.Setenv("INBOX_WAIT", "2s")
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	addr := fs.String("http-addr", "127.0.0.1:8000", "HTTP address")
	replicas := fs.Int("replicas", 1, "replicas")
	wait := fs.Duration("wait", time.Second, "wait")
	if err := Parse(fs, []string{"--replicas", "5"}); err != nil {
		t.Fatal(err)
	}
	if *addr != "127.0.0.1:9" || *replicas != 5 || *wait != 2*time.Second {
		t.Fatalf("addr=%s replicas=%d wait=%s: the command line must win over the environment, the environment over defaults", *addr, *replicas, *wait)
	}
}

func TestParseBadEnv(t *testing.T) {
	t.Setenv("INBOX_REPLICAS", "three")
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Int("replicas", 1, "replicas")
	err := Parse(fs, nil)
	if err == nil || !strings.Contains(err.Error(), "INBOX_REPLICAS") {
		t.Fatalf("err = %v, want one naming INBOX_REPLICAS", err)
	}
}
