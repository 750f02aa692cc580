// Package retention expires old messages (--message-max-age): they leave
// the stream and the read models together, and a rebuild agrees.
//
// Stream MaxAge would also expire conversations, members and profiles, so
// it is not used. Instead, now and then, a job finds the first message
// stored after the cutoff, at sequence S, appends a marker
// (eventstore.Expired{Before: S}) and then purges the messages and their
// lifecycle events (edits, deletions, reactions, tombstones) below S from
// the stream. Every read model removes the same messages when it applies
// the marker, whether the stream still held them (a purge cut short) or
// not (a rebuild after it): marker first, purge second.
package retention

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"inbox/eventstore"
)

// Stream is what retention needs of the event stream; *eventstore.Store is one.
type Stream interface {
	FirstSince(ctx context.Context, filter string, t time.Time) (seq uint64, ok bool, err error)
	LastSeq(ctx context.Context) (uint64, error)
	Append(ctx context.Context, e eventstore.Event, opts ...eventstore.AppendOption) (uint64, error)
	Purge(ctx context.Context, filter string, before uint64) error
}

var _ Stream = (*eventstore.Store)(nil)

// Config configures a Retention. MaxAge is required.
type Config struct {
	// MaxAge is how long a message is kept.
	MaxAge time.Duration
	// Every is how often old messages are looked for (default MaxAge/10,
	// between a second and an hour).
	Every time.Duration
	// Now is the clock (default time.Now).
	Now    func() time.Time
	Logger *slog.Logger
}

// Retention expires messages older than MaxAge.
type Retention struct {
	cfg    Config
	stream Stream
	log    *slog.Logger
}

// New returns a Retention over stream.
func New(cfg Config, stream Stream) *Retention {
	if cfg.Every <= 0 {
		cfg.Every = min(max(cfg.MaxAge/10, time.Second), time.Hour)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Retention{cfg: cfg, stream: stream, log: cfg.Logger.With("component", "retention")}
}

// Run expires old messages every Every until ctx ends; a failed round is
// logged and tried again at the next.
func (r *Retention) Run(ctx context.Context) error {
	t := time.NewTicker(r.cfg.Every)
	defer t.Stop()
	for {
		if _, err := r.Expire(ctx); err != nil && ctx.Err() == nil {
			r.log.Warn("expire old messages", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Expire expires every message stored before now minus MaxAge and returns
// the sequence below which it did (0: nothing was old).
func (r *Retention) Expire(ctx context.Context) (uint64, error) {
	cutoff := r.cfg.Now().Add(-r.cfg.MaxAge)
	before, ok, err := r.stream.FirstSince(ctx, eventstore.AllMessages, cutoff)
	if err != nil {
		return 0, err
	}
	if !ok { // every message is old
		last, err := r.stream.LastSeq(ctx)
		if err != nil {
			return 0, err
		}
		before = last + 1
	}
	old := false
	for _, f := range []string{eventstore.AllMessages, eventstore.AllLifecycles} {
		first, ok, err := r.stream.FirstSince(ctx, f, time.Unix(0, 0))
		if err != nil {
			return 0, err
		}
		old = old || ok && first < before
	}
	if !old {
		return 0, nil
	}
	seq, err := r.stream.Append(ctx, &eventstore.Expired{Before: before})
	if err != nil {
		return 0, fmt.Errorf("append the expiry marker: %w", err)
	}
	for _, f := range []string{eventstore.AllMessages, eventstore.AllLifecycles} {
		if err := r.stream.Purge(ctx, f, before); err != nil {
			return 0, err
		}
	}
	r.log.Info("expired old messages", "before_seq", before, "cutoff", cutoff.UTC().Format(time.RFC3339), "seq", seq)
	return before, nil
}
