// Package metrics holds inbox's Prometheus metrics. Every name starts with inbox_.
// The collectors live on one Registry per process (or per test node), so that two
// nodes in one test process do not collide.
package metrics

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics are the collectors the edge, the API and the projector update.
type Metrics struct {
	Registry *prometheus.Registry

	OpenSockets     prometheus.Gauge
	FramesIn        *prometheus.CounterVec // by frame type
	FramesOut       *prometheus.CounterVec // by frame type
	Appends         *prometheus.CounterVec // by event kind and result
	AppendLatency   prometheus.Histogram
	DeliveryLatency prometheus.Histogram // event stored -> frame queued to a socket
	SlowCloses      prometheus.Counter
	AuthFailures    *prometheus.CounterVec // by reason
	SkippedEvents   prometheus.CounterFunc
	ProjectionLag   prometheus.GaugeFunc
	HTTPRequests    *prometheus.CounterVec // by route and status
	SocketWrites    prometheus.Counter     // write(2)/writev(2) calls to sockets: frames out over this is frames per write
	Shed            *prometheus.CounterVec // requests refused at the door, by kind and reason
	FeedLag         prometheus.GaugeFunc
}

// Sources are read when Prometheus scrapes.
type Sources struct {
	Skipped func() float64 // undecodable events skipped by the projector
	Lag     func() float64 // stream last sequence minus applied
	FeedLag func() float64 // seconds the live feed is behind the stream
}

// New registers every collector on a fresh registry.
func New(src Sources) *Metrics {
	if src.Skipped == nil {
		src.Skipped = func() float64 { return 0 }
	}
	if src.Lag == nil {
		src.Lag = func() float64 { return 0 }
	}
	if src.FeedLag == nil {
		src.FeedLag = func() float64 { return 0 }
	}
	r := prometheus.NewRegistry()
	f := promauto.With(r)
	latency := []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5}
	m := &Metrics{
		Registry:    r,
		OpenSockets: f.NewGauge(prometheus.GaugeOpts{Name: "inbox_open_sockets", Help: "WebSocket connections open on this node."}),
		FramesIn:    f.NewCounterVec(prometheus.CounterOpts{Name: "inbox_frames_in_total", Help: "Frames received from clients, by type."}, []string{"type"}),
		FramesOut:   f.NewCounterVec(prometheus.CounterOpts{Name: "inbox_frames_out_total", Help: "Frames sent to clients, by type."}, []string{"type"}),
		Appends:     f.NewCounterVec(prometheus.CounterOpts{Name: "inbox_appends_total", Help: "Events appended to the stream, by kind and result."}, []string{"kind", "result"}),
		AppendLatency: f.NewHistogram(prometheus.HistogramOpts{
			Name: "inbox_append_seconds", Help: "Time from append to stream acknowledgement.", Buckets: latency,
		}),
		DeliveryLatency: f.NewHistogram(prometheus.HistogramOpts{
			Name: "inbox_delivery_seconds", Help: "Time from an event's stream timestamp to its frame being queued for a socket.", Buckets: latency,
		}),
		SlowCloses:   f.NewCounter(prometheus.CounterOpts{Name: "inbox_slow_consumer_closes_total", Help: "Sockets closed with 4013 because they did not read their queue."}),
		AuthFailures: f.NewCounterVec(prometheus.CounterOpts{Name: "inbox_auth_failures_total", Help: "Refused authentications, by reason."}, []string{"reason"}),
		HTTPRequests: f.NewCounterVec(prometheus.CounterOpts{Name: "inbox_http_requests_total", Help: "HTTP API requests, by route and status code."}, []string{"route", "code"}),
		SocketWrites: f.NewCounter(prometheus.CounterOpts{Name: "inbox_socket_writes_total", Help: "System calls writing frames to sockets; inbox_frames_out_total over this is the frames each carried."}),
		Shed: f.NewCounterVec(prometheus.CounterOpts{
			Name: "inbox_shed_total", Help: "Requests refused at the door because the node could not keep up, by kind (message, typing, presence) and reason (feed_lag, append_latency, socket_queue).",
		}, []string{"kind", "reason"}),
	}
	m.FeedLag = f.NewGaugeFunc(prometheus.GaugeOpts{Name: "inbox_feed_lag_seconds", Help: "How far behind the stream the live feed dispatches, in seconds."}, src.FeedLag)
	m.SkippedEvents = f.NewCounterFunc(prometheus.CounterOpts{Name: "inbox_skipped_events_total", Help: "Undecodable events the projector logged and skipped."}, src.Skipped)
	m.ProjectionLag = f.NewGaugeFunc(prometheus.GaugeOpts{Name: "inbox_projection_lag_events", Help: "Stream last sequence minus the read model's applied sequence."}, src.Lag)
	r.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Handler serves the registry in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{Registry: m.Registry})
}
