package node

import (
	"context"
	"errors"
	"time"

	"inbox/eventstore"
	"inbox/metrics"
)

// countingAppender is the event store as the domain service sees it, counting
// every append by kind and result and timing the acknowledged ones.
type countingAppender struct {
	store *eventstore.Store
	m     *metrics.Metrics
}

func (a countingAppender) Append(ctx context.Context, e eventstore.Event, opts ...eventstore.AppendOption) (uint64, error) {
	start := time.Now()
	seq, err := a.store.Append(ctx, e, opts...)
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
	return seq, err
}
