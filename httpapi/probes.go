package httpapi

import (
	"context"
	"log/slog"
	"net/http"

	"inbox/internal/logsample"
	"inbox/metrics"
)

// Probes returns the handler of a node that serves no API (inboxd --role
// projector): GET /healthz, /readyz (ready) and /metrics (m) exactly as New
// serves them, and JSON errors for every other request. ready, m and log
// may be nil (always ready, a registry of its own, discard).
func Probes(ready func(ctx context.Context) error, m *metrics.Metrics, log *slog.Logger) http.Handler {
	if ready == nil {
		ready = func(context.Context) error { return nil }
	}
	if m == nil {
		m = metrics.New(metrics.Sources{})
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var cfg Config
	cfg.defaults()
	a := &api{cfg: cfg, m: m, ready: ready, log: log, mux: http.NewServeMux()}
	a.refusals = logsample.New(a.log, 0, 0)
	for _, rt := range routes {
		if rt.access == public && rt.quiet {
			a.mux.Handle(rt.pattern(), a.wrap(rt.pattern(), rt))
		}
	}
	a.mux.Handle("/", a.wrap(unmatched, route{handle: (*api).notFound}))
	return a.mux
}
