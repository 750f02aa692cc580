// Package retention expires old messages (--message-max-age): they leave
// the stream and the read models together, and a rebuild agrees.
//
// Stream MaxAge would also expire conversations, members and profiles, so
// it is not used. Instead, now and then, a job finds, in each partition, the
// first message stored after the cutoff, at event id S, appends a marker
// (eventstore.Expired{Before: S}, stored in S's partition) and then purges
// the partition's messages and their lifecycle events (edits, deletions,
// reactions, tombstones) below S from the stream. Every read model removes the same messages when it applies
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
	Partitions() int
	FirstSince(ctx context.Context, k int, filter string, t time.Time) (id uint64, ok bool, err error)
	Last(ctx context.Context) (eventstore.Cursor, error)
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

// Expire expires every message stored before now minus MaxAge and returns,
// for each partition that had old messages, the event id below which it did
// (none: nothing was old).
func (r *Retention) Expire(ctx context.Context) ([]uint64, error) {
	cutoff := r.cfg.Now().Add(-r.cfg.MaxAge)
	n := r.stream.Partitions()
	var last eventstore.Cursor
	var expired []uint64
	for k := range n {
		before, ok, err := r.stream.FirstSince(ctx, k, eventstore.AllMessages, cutoff)
		if err != nil {
			return expired, err
		}
		if !ok { // every message of the partition is old
			if last == nil {
				if last, err = r.stream.Last(ctx); err != nil {
					return expired, err
				}
			}
			before = eventstore.ID(n, k, last[k]+1)
		}
		old := false
		for _, f := range []string{eventstore.AllMessages, eventstore.AllLifecycles} {
			first, ok, err := r.stream.FirstSince(ctx, k, f, time.Unix(0, 0))
			if err != nil {
				return expired, err
			}
			old = old || ok && first < before
		}
		if !old {
			continue
		}
		seq, err := r.stream.Append(ctx, &eventstore.Expired{Before: before})
		if err != nil {
			return expired, fmt.Errorf("append the expiry marker: %w", err)
		}
		for _, f := range []string{eventstore.AllMessages, eventstore.AllLifecycles} {
			if err := r.stream.Purge(ctx, f, before); err != nil {
				return expired, err
			}
		}
		r.log.Info("expired old messages", "partition", k, "before_seq", before, "cutoff", cutoff.UTC().Format(time.RFC3339), "seq", seq)
		expired = append(expired, before)
	}
	return expired, nil
}
