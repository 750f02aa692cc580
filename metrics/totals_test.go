package metrics

import "testing"

func TestTotalsSumTheCounters(t *testing.T) {
	m := New(Sources{Skipped: func() float64 { return 4 }})
	m.OpenSockets.Add(3)
	m.Appends.WithLabelValues("msg", "ok").Add(5)
	m.Appends.WithLabelValues("read", "ok").Add(2)
	m.Appends.WithLabelValues("msg", "error").Inc()
	m.Appends.WithLabelValues("msg", "exists").Inc()
	m.DeliveryLatency.Observe(0.001)
	m.DeliveryLatency.Observe(0.002)
	m.FramesOut.WithLabelValues("MESSAGE").Add(7)
	m.FramesOut.WithLabelValues("ACK").Add(1)
	m.HTTPRequests.WithLabelValues("GET /healthz", "200").Inc()

	got, err := m.Totals()
	if err != nil {
		t.Fatal(err)
	}
	want := Totals{OpenSockets: 3, Appends: 7, AppendErrors: 1, Deliveries: 2, FramesOut: 8, HTTPRequests: 1, Skipped: 4}
	if got != want {
		t.Errorf("totals %+v, want %+v", got, want)
	}
}
