package cli

import (
	"errors"
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

func TestHelp(t *testing.T) {
	for _, arg := range []string{"-h", "--help", "-help"} {
		t.Run(arg, func(t *testing.T) {
			var out strings.Builder
			fs := flag.NewFlagSet("x", flag.ContinueOnError)
			fs.SetOutput(&out)
			fs.String("http-addr", "127.0.0.1:8000", "HTTP address")
			Describe(fs, "x [flags]", "X does one thing well.", "x --http-addr 127.0.0.1:8001")
			err := Parse(fs, []string{arg})
			if !errors.Is(err, flag.ErrHelp) {
				t.Fatalf("err = %v, want flag.ErrHelp", err)
			}
			for _, want := range []string{"usage: x [flags]\n\nX does one thing well.\n", "examples:\n  x --http-addr 127.0.0.1:8001\n", "-http-addr", "INBOX_HTTP_ADDR"} {
				if !strings.Contains(out.String(), want) {
					t.Errorf("help lacks %q:\n%s", want, out.String())
				}
			}
		})
	}
}

func TestParseMistakePrintsNothing(t *testing.T) {
	var out strings.Builder
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	fs.SetOutput(&out)
	fs.Int("replicas", 1, "replicas")
	err := Parse(fs, []string{"--replicas", "three"})
	if err == nil || errors.Is(err, flag.ErrHelp) || !strings.Contains(err.Error(), "-replicas") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("err = %v, want one line naming -replicas", err)
	}
	if out.Len() > 0 {
		t.Errorf("a mistake printed %q; the command prints the error once", out.String())
	}
}
