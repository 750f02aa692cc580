package node

import (
	"context"
	"errors"
	"time"

	"inbox/chat"
	"inbox/eventstore"
	"inbox/metrics"
)

// countingAppender is the event store as the domain service sees it, counting
// every append by kind and result and timing the acknowledged ones.
type countingAppender struct {
	store *eventstore.Store
	m     *metrics.Metrics
}

var _ chat.AsyncAppender = countingAppender{}

func (a countingAppender) Append(ctx context.Context, e eventstore.Event, opts ...eventstore.AppendOption) (uint64, error) {
	start := time.Now()
	seq, err := a.store.Append(ctx, e, opts...)
	a.count(e, start, err)
	return seq, err
}

func (a countingAppender) AppendAsync(e eventstore.Event, done func(uint64, error), opts ...eventstore.AppendOption) error {
	start := time.Now()
	err := a.store.AppendAsync(e, func(seq uint64, err error) {
		a.count(e, start, err)
		done(seq, err)
	}, opts...)
	if err != nil {
		a.count(e, start, err)
	}
	return err
}

// count records the end of an append of e begun at start.
func (a countingAppender) count(e eventstore.Event, start time.Time, err error) {
	result := "ok"
	switch {
	case errors.Is(err, eventstore.ErrExists):
		result = "exists"
	case err != nil:
		result = "error"
	default:
		a.m.AppendLatency.Observe(time.Since(start).Seconds())
	}
	a.m.Appends.WithLabelValues(string(e.Kind()), result).Inc()
}
