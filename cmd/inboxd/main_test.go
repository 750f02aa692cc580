package main

import (
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"inbox/admission"
	"inbox/chat"
	"inbox/eventstore"
	"inbox/httpapi"
	"inbox/node"
	"inbox/wsedge"
)

func TestHelp(t *testing.T) {
	for _, arg := range []string{"-h", "--help"} {
		var out strings.Builder
		if err := run([]string{arg}, &out); err != nil {
			t.Fatalf("inboxd %s: %v; help is not an error", arg, err)
		}
		for _, want := range []string{"usage: inboxd [flags]", "inboxd is the inbox server", "examples:\n  inboxd --demo", "-http-addr", "INBOX_HTTP_ADDR"} {
			if !strings.Contains(out.String(), want) {
				t.Errorf("inboxd %s prints no %q:\n%s", arg, want, out.String())
			}
		}
	}
}

func TestBadFlag(t *testing.T) {
	var out strings.Builder
	err := run([]string{"--no-such-flag"}, &out)
	if err == nil || !strings.Contains(err.Error(), "-no-such-flag") {
		t.Fatalf("err = %v, want one naming -no-such-flag", err)
	}
	if out.Len() > 0 {
		t.Errorf("a mistake printed %q on stdout", out.String())
	}
}

// TestAdmissionFlags: the bounds past which a node sheds load are flags with
// INBOX_* variables; one that would shed everything is refused.
func TestAdmissionFlags(t *testing.T) {
	var out strings.Builder
	if err := run([]string{"--max-feed-lag", "0s"}, &out); err == nil || !strings.Contains(err.Error(), "--max-feed-lag 0s: must be positive") {
		t.Errorf("--max-feed-lag 0s: err = %v", err)
	}
	t.Setenv("INBOX_MAX_APPEND_LATENCY", "2s")
	t.Setenv("INBOX_MAX_QUEUED_FRAMES", "1000")
	o, err := parse(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if a := o.cfg.Admission; a.MaxAppendLatency != 2*time.Second || a.MaxQueuedFrames != 1000 || a.MaxFeedLag != admission.DefaultMaxFeedLag {
		t.Fatalf("admission = %+v", a)
	}
	t.Setenv("INBOX_MAX_QUEUED_FRAMES", "0")
	if err := run(nil, &out); err == nil || !strings.Contains(err.Error(), "--max-queued-frames 0: must be positive") {
		t.Errorf("INBOX_MAX_QUEUED_FRAMES=0: err = %v", err)
	}
}

// TestHTTPLimitFlags: the HTTP limits are flags with INBOX_* variables, and a
// value that would switch a limit off is refused before anything starts.
func TestHTTPLimitFlags(t *testing.T) {
	var out strings.Builder
	if err := run([]string{"--http-read-timeout", "0s"}, &out); err == nil || !strings.Contains(err.Error(), "--http-read-timeout 0s: must be positive") {
		t.Errorf("--http-read-timeout 0s: err = %v", err)
	}
	t.Setenv("INBOX_HTTP_MAX_IDLE_PER_IP", "0")
	if err := run(nil, &out); err == nil || !strings.Contains(err.Error(), "--http-max-idle-per-ip 0: must be positive") {
		t.Errorf("INBOX_HTTP_MAX_IDLE_PER_IP=0: err = %v", err)
	}
}

// TestFlagDefaults: with no flag and no INBOX_* variable, inboxd configures
// what the packages default to.
func TestFlagDefaults(t *testing.T) {
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "INBOX_") {
			name, _, _ := strings.Cut(kv, "=")
			t.Setenv(name, "")
			os.Unsetenv(name)
		}
	}
	o, err := parse(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		flag      string
		got, want any
	}{
		{"data", o.cfg.DataDir, node.DefaultDataDir},
		{"http-addr", o.cfg.HTTPAddr, node.DefaultHTTPAddr},
		{"nats-listen", o.cfg.NATSListen, node.DefaultNATSListen},
		{"node", o.cfg.NodeID, node.DefaultNodeID},
		{"live-feed", o.cfg.LiveFeed, node.LiveFeedAuto},
		{"shutdown-timeout", o.grace, node.DefaultShutdownTimeout},
		{"replicas", o.cfg.Replicas, eventstore.DefaultReplicas},
		{"max-text", o.cfg.Limits.MaxText, chat.DefaultMaxText},
		{"idempotency-window", o.cfg.Limits.IdempotencyWindow, chat.DefaultIdempotencyWindow},
		{"max-sockets-per-user", o.cfg.Edge.MaxSocketsPerUser, wsedge.DefaultMaxSocketsPerUser},
		{"socket-queue", o.cfg.Edge.QueueFrames, wsedge.DefaultQueueFrames},
		{"rate", o.cfg.Edge.RatePerSecond, float64(wsedge.DefaultRatePerSecond)},
		{"ping-interval", o.cfg.Edge.PingInterval, wsedge.DefaultPingInterval},
		{"token-grace", o.cfg.Edge.TokenGrace, wsedge.DefaultTokenGrace},
		{"api-rate", o.cfg.API.UserRate, float64(httpapi.DefaultUserRate)},
		{"max-feed-lag", o.cfg.Admission.MaxFeedLag, admission.DefaultMaxFeedLag},
		{"max-append-latency", o.cfg.Admission.MaxAppendLatency, admission.DefaultMaxAppendLatency},
		{"max-queued-frames", o.cfg.Admission.MaxQueuedFrames, admission.DefaultMaxQueuedFrames},
		{"http-read-header-timeout", o.cfg.HTTP.ReadHeaderTimeout, node.DefaultHTTPReadHeaderTimeout},
		{"http-read-timeout", o.cfg.HTTP.ReadTimeout, node.DefaultHTTPReadTimeout},
		{"http-write-timeout", o.cfg.HTTP.WriteTimeout, node.DefaultHTTPWriteTimeout},
		{"http-idle-timeout", o.cfg.HTTP.IdleTimeout, node.DefaultHTTPIdleTimeout},
		{"http-max-idle-per-ip", o.cfg.HTTP.MaxIdlePerIP, node.DefaultHTTPMaxIdlePerIP},
	} {
		if c.got != c.want {
			t.Errorf("--%s defaults to %v, want the package's %v", c.flag, c.got, c.want)
		}
	}
}
