// Package logsample keeps the lines a client can provoke at will (refused
// tokens, protocol violations, connections cut for a limit) from flooding
// the log: at most Burst lines per reason per Interval are written, the rest
// are counted, and the next line written for that reason carries
// "suppressed", how many were left out since the previous one. Metrics keep
// the exact counts (inbox_auth_failures_total and the like).
package logsample

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// Defaults for New's zero arguments.
const (
	DefaultBurst    = 10
	DefaultInterval = time.Minute
)

// maxReasons bounds the reasons tracked; past it, new ones share "other".
// Callers pass reasons from a fixed set; this guards against one that is not.
const maxReasons = 1024

// Sampler writes sampled lines to a logger. It is safe for concurrent use.
type Sampler struct {
	log      *slog.Logger
	burst    int
	interval time.Duration
	now      func() time.Time

	mu      sync.Mutex
	reasons map[string]*window
}

// window is one reason's current interval.
type window struct {
	start      time.Time
	written    int
	suppressed int // since the last line written
}

// New returns a Sampler writing at most burst lines per reason per interval
// to log (zero: DefaultBurst, DefaultInterval).
func New(log *slog.Logger, burst int, interval time.Duration) *Sampler {
	if burst <= 0 {
		burst = DefaultBurst
	}
	if interval <= 0 {
		interval = DefaultInterval
	}
	return &Sampler{log: log, burst: burst, interval: interval, now: time.Now, reasons: make(map[string]*window)}
}

// Log writes msg with args and "reason" at level, unless reason has had its
// burst of lines in the current interval; then it only counts it.
func (s *Sampler) Log(ctx context.Context, level slog.Level, reason, msg string, args ...any) {
	if !s.log.Enabled(ctx, level) {
		return
	}
	suppressed, ok := s.admit(reason)
	if !ok {
		return
	}
	args = append(args, "reason", reason)
	if suppressed > 0 {
		args = append(args, "suppressed", suppressed)
	}
	s.log.Log(ctx, level, msg, args...)
}

// Info is Log at slog.LevelInfo.
func (s *Sampler) Info(reason, msg string, args ...any) {
	s.Log(context.Background(), slog.LevelInfo, reason, msg, args...)
}

// admit reports whether a line for reason may be written now, and how many
// were suppressed before it.
func (s *Sampler) admit(reason string) (suppressed int, ok bool) {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	w := s.reasons[reason]
	if w == nil && len(s.reasons) >= maxReasons {
		reason = "other"
		w = s.reasons[reason]
	}
	if w == nil {
		w = &window{start: now}
		s.reasons[reason] = w
	}
	if now.Sub(w.start) >= s.interval {
		w.start, w.written = now, 0
	}
	if w.written >= s.burst {
		w.suppressed++
		return 0, false
	}
	w.written++
	suppressed, w.suppressed = w.suppressed, 0
	return suppressed, true
}
