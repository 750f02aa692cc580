package metrics

import (
	"fmt"

	dto "github.com/prometheus/client_model/go"
)

// Totals are the running counts the operator view shows; it computes rates
// from two readings.
type Totals struct {
	OpenSockets  int64  `json:"open_sockets"`
	Appends      uint64 `json:"appends"`       // events stored (inbox_appends_total, result ok)
	AppendErrors uint64 `json:"append_errors"` // appends the stream refused or did not answer
	Deliveries   uint64 `json:"deliveries"`    // event frames queued to sockets (inbox_delivery_seconds count)
	FramesIn     uint64 `json:"frames_in"`
	FramesOut    uint64 `json:"frames_out"`
	SlowCloses   uint64 `json:"slow_closes"`
	AuthFailures uint64 `json:"auth_failures"`
	HTTPRequests uint64 `json:"http_requests"`
	Skipped      uint64 `json:"skipped_events"`
	Shed         uint64 `json:"shed"` // requests refused at the door under load (inbox_shed_total)
}

// Totals reads the counters from the registry.
func (m *Metrics) Totals() (Totals, error) {
	fams, err := m.Registry.Gather()
	if err != nil {
		return Totals{}, fmt.Errorf("gather metrics: %w", err)
	}
	var t Totals
	for _, f := range fams {
		for _, s := range f.GetMetric() {
			switch f.GetName() {
			case "inbox_open_sockets":
				t.OpenSockets += int64(s.GetGauge().GetValue())
			case "inbox_appends_total":
				switch label(s, "result") {
				case "ok":
					t.Appends += count(s)
				case "error":
					t.AppendErrors += count(s)
				}
			case "inbox_delivery_seconds":
				t.Deliveries += s.GetHistogram().GetSampleCount()
			case "inbox_frames_in_total":
				t.FramesIn += count(s)
			case "inbox_frames_out_total":
				t.FramesOut += count(s)
			case "inbox_slow_consumer_closes_total":
				t.SlowCloses += count(s)
			case "inbox_auth_failures_total":
				t.AuthFailures += count(s)
			case "inbox_http_requests_total":
				t.HTTPRequests += count(s)
			case "inbox_skipped_events_total":
				t.Skipped += count(s)
			case "inbox_shed_total":
				t.Shed += count(s)
			}
		}
	}
	return t, nil
}

func count(s *dto.Metric) uint64 { return uint64(s.GetCounter().GetValue()) }

func label(s *dto.Metric, name string) string {
	for _, l := range s.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}
