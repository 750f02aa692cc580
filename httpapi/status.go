package httpapi

import (
	"context"
	"net/http"
	"time"

	"inbox/chat"
	"inbox/internal/logring"
	"inbox/metrics"
)

// Status is the answer of GET /api/admin/status: what the operator view
// shows of this node. Rates (appends/s, deliveries/s) are the difference of
// two readings' Totals.
type Status struct {
	Node       string           `json:"node"`
	Time       time.Time        `json:"time"`
	StartedAt  time.Time        `json:"started_at"`
	Streams    []StreamStatus   `json:"streams"`
	Feed       FeedStatus       `json:"feed"`
	Projection ProjectionStatus `json:"projection"`
	Load       LoadStatus       `json:"load"`
	Totals     metrics.Totals   `json:"totals"`
	// Errors are the node's last warnings and errors, oldest first;
	// ErrorsTotal counts every one logged since start.
	Errors      []logring.Entry `json:"errors"`
	ErrorsTotal uint64          `json:"errors_total"`
}

// StreamStatus is one JetStream stream's state.
type StreamStatus struct {
	Name      string   `json:"name"`
	Subjects  []string `json:"subjects"`
	Replicas  int      `json:"replicas"`
	Messages  uint64   `json:"messages"`
	Bytes     uint64   `json:"bytes"`
	FirstSeq  uint64   `json:"first_seq"`
	LastSeq   uint64   `json:"last_seq"`
	Consumers int      `json:"consumers"`
}

// FeedStatus is the node's live feed: the last sequence it routed to the
// sockets, and how far that is behind the stream. With more than one
// partition Seq is the sum of the partitions' and Cursor says each (the
// cursor a client resumes from), Lag is summed over them.
type FeedStatus struct {
	Seq    uint64 `json:"seq"`
	Lag    uint64 `json:"lag"`
	Cursor string `json:"cursor,omitempty"`
}

// LoadStatus is the node's admission control (docs/overload.md): how far
// behind it runs against the bounds past which it sheds load, and what it
// has refused at the door since it started, by kind then reason.
type LoadStatus struct {
	FeedLagMS          float64                      `json:"feed_lag_ms"`
	AppendLatencyMS    float64                      `json:"append_latency_ms"`
	QueuedFrames       int64                        `json:"queued_frames"`
	MaxFeedLagMS       float64                      `json:"max_feed_lag_ms"`
	MaxAppendLatencyMS float64                      `json:"max_append_latency_ms"`
	MaxQueuedFrames    int                          `json:"max_queued_frames"`
	Shed               map[string]map[string]uint64 `json:"shed"`
}

// ProjectionStatus is the read model: the last sequence applied, and how far
// that is behind the stream; with more than one partition, as FeedStatus.
type ProjectionStatus struct {
	Applied uint64 `json:"applied"`
	Lag     uint64 `json:"lag"`
	Cursor  string `json:"cursor,omitempty"`
}

// getStatus: GET /api/admin/status.
func (a *api) getStatus(w http.ResponseWriter, r *http.Request) error {
	if a.status == nil {
		return chat.Errorf(chat.CodeUnavailable, "this node reports no status")
	}
	ctx, cancel := context.WithTimeout(r.Context(), readyTimeout)
	defer cancel()
	s, err := a.status(ctx)
	if err != nil {
		return err
	}
	if s.Streams == nil {
		s.Streams = []StreamStatus{}
	}
	if s.Errors == nil {
		s.Errors = []logring.Entry{}
	}
	if s.Load.Shed == nil {
		s.Load.Shed = map[string]map[string]uint64{}
	}
	writeJSON(w, http.StatusOK, s)
	return nil
}

// Sockets closes a user's sockets on this node; *wsedge.Hub is one.
type Sockets interface {
	Disconnect(user string) int
}

type disconnectResponse struct {
	UserID  string `json:"user_id"`
	Sockets int    `json:"sockets"`
}

// disconnect: POST /api/admin/users/{user_id}/disconnect.
func (a *api) disconnect(w http.ResponseWriter, r *http.Request) error {
	u, err := pathUser(r)
	if err != nil {
		return err
	}
	if a.sockets == nil {
		return chat.Errorf(chat.CodeUnavailable, "this node serves no sockets")
	}
	n := a.sockets.Disconnect(u)
	annotate(r, "sockets", n)
	writeJSON(w, http.StatusOK, disconnectResponse{UserID: u, Sockets: n})
	return nil
}
