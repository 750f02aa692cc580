package readmodel

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"inbox/eventstore"
	"inbox/projections"
)

// Local is what the server asks one partition's read model;
// *projections.Projector is one.
type Local interface {
	Conversations(ctx context.Context, userID string) ([]projections.Conversation, error)
	Messages(ctx context.Context, convID, before int64, limit int) ([]projections.Message, error)
	KeyRecord(ctx context.Context, k eventstore.Key) (eventstore.KeyRecord, bool, error)
	MessageConversations(ctx context.Context, ids []int64) (eventstore.Cursor, map[int64]int64, error)
	MessageState(ctx context.Context, id int64, user string) (eventstore.MessageState, bool, eventstore.Cursor, error)
	MessagesBy(ctx context.Context, sender string) ([]eventstore.MessageState, eventstore.Cursor, error)
	WaitFor(ctx context.Context, id uint64) error
	Covers(ctx context.Context, t time.Time) (bool, error)
	Horizon() time.Time
	Snapshot(ctx context.Context) (*projections.Snapshot, error)
	Applied() eventstore.Cursor
}

var _ Local = (*projections.Projector)(nil)

// Defaults for zero ServerConfig fields.
const (
	DefaultMaxWait     = 5 * time.Second
	DefaultMaxInFlight = 256
	// DefaultChunkBytes is about how large one message of a snapshot is.
	DefaultChunkBytes = 256 << 10
)

// ServerConfig configures a Server.
type ServerConfig struct {
	NodeID     string // the projector's node id, in the service's metadata
	Partitions int    // the stream's
	// MaxWait bounds how long a request waits for its Min or a wait
	// request for its sequence (default DefaultMaxWait).
	MaxWait time.Duration
	// MaxInFlight bounds the requests handled at once; past it a request
	// waits for one to finish (default DefaultMaxInFlight).
	MaxInFlight int
}

// Server answers the read-model requests of the partitions it is told it
// owns (Serve), each from that partition's Local read model.
type Server struct {
	cfg   ServerConfig
	nc    *nats.Conn
	parts map[int]Local
	log   *slog.Logger
	sem   chan struct{}
	wg    sync.WaitGroup // requests in flight
	stats map[int]*endpointStats

	mu     sync.Mutex
	svc    micro.Service
	owned  []int
	closed bool
}

// endpointStats are a partition's figures, kept across the service's
// restarts (each change of the owned partitions makes a new instance) and
// shown in nats micro stats as the endpoint's data.
type endpointStats struct {
	requests   atomic.Uint64
	errors     atomic.Uint64
	stale      atomic.Uint64
	processing atomic.Int64 // nanoseconds
	lastError  atomic.Value // string
}

// endpointData is an endpoint's data in nats micro stats: requests are
// answered on their own goroutines, so micro's own processing times are
// those of the hand-off; these are the requests'.
type endpointData struct {
	Partition         int     `json:"partition"`
	Requests          uint64  `json:"requests"`
	Errors            uint64  `json:"errors"`
	Stale             uint64  `json:"stale"`
	AverageProcessing string  `json:"average_processing_time"`
	AverageMS         float64 `json:"average_processing_ms"`
	LastError         string  `json:"last_error,omitempty"`
}

// NewServer returns a server of the read models in parts (partition →
// read model) on nc, serving none until Serve.
func NewServer(nc *nats.Conn, cfg ServerConfig, parts map[int]Local, log *slog.Logger) *Server {
	if cfg.MaxWait <= 0 {
		cfg.MaxWait = DefaultMaxWait
	}
	if cfg.MaxInFlight <= 0 {
		cfg.MaxInFlight = DefaultMaxInFlight
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{
		cfg: cfg, nc: nc, parts: parts, log: log.With("component", "readmodel"),
		sem: make(chan struct{}, cfg.MaxInFlight), stats: make(map[int]*endpointStats, len(parts)),
	}
	for k := range parts {
		s.stats[k] = &endpointStats{}
	}
	return s
}

// Serve answers for the partitions owned, and no others: it starts a new
// instance of the service with an endpoint per owned partition, then stops
// the previous one (both answer for a moment; never neither). Every
// projector is an instance even while it owns nothing, so nats micro ls
// lists the standbys too.
func (s *Server) Serve(owned []int) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("read model server closed")
	}
	owned = slices.Clone(owned)
	for _, k := range owned {
		if s.parts[k] == nil {
			return fmt.Errorf("serve partition %d: this projector keeps no read model of it", k)
		}
	}
	if s.svc != nil && slices.Equal(owned, s.owned) {
		return nil
	}
	names := make([]string, len(owned))
	for i, k := range owned {
		names[i] = strconv.Itoa(k)
	}
	svc, err := micro.AddService(s.nc, micro.Config{
		Name:        ServiceName,
		Version:     Version,
		Description: "inbox read models: history, conversation lists, unread counts, idempotency records, message state",
		Metadata:    map[string]string{"node": s.cfg.NodeID, "partitions": strings.Join(names, ",")},
		StatsHandler: func(e *micro.Endpoint) any {
			k, _ := strconv.Atoi(e.Metadata["partition"])
			return s.endpointData(k)
		},
	})
	if err != nil {
		return fmt.Errorf("start service %s: %w", ServiceName, err)
	}
	for _, k := range owned {
		err := svc.AddEndpoint("partition-"+strconv.Itoa(k), micro.HandlerFunc(func(r micro.Request) { s.dispatch(k, r) }),
			micro.WithEndpointSubject(eventstore.ReadModelEndpoint(k)),
			micro.WithEndpointMetadata(map[string]string{"partition": strconv.Itoa(k)}))
		if err != nil {
			svc.Stop()
			return fmt.Errorf("serve partition %d: %w", k, err)
		}
	}
	// The new instance's subscriptions are registered with the server
	// before the old one's go.
	if err := s.nc.Flush(); err != nil {
		s.log.Warn("flush after subscribing", "err", err)
	}
	if s.svc != nil {
		if err := s.svc.Stop(); err != nil {
			s.log.Warn("stop the previous service instance", "err", err)
		}
		// And the old ones are gone from the server before Serve returns:
		// a partition given up is not answered for after it.
		if err := s.nc.Flush(); err != nil {
			s.log.Warn("flush after unsubscribing", "err", err)
		}
	}
	s.svc, s.owned = svc, owned
	s.log.Info("serving partitions", "partitions", owned, "instance", svc.Info().ID)
	return nil
}

// Owned is what the server answers for.
func (s *Server) Owned() []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.owned)
}

// Close stops answering and waits for the requests in flight.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	var err error
	if s.svc != nil {
		err = s.svc.Stop()
		s.svc, s.owned = nil, nil
	}
	s.mu.Unlock()
	s.wg.Wait()
	return err
}

func (s *Server) endpointData(k int) endpointData {
	st := s.stats[k]
	d := endpointData{Partition: k}
	if st == nil {
		return d
	}
	d.Requests, d.Errors, d.Stale = st.requests.Load(), st.errors.Load(), st.stale.Load()
	if d.Requests > 0 {
		avg := time.Duration(st.processing.Load() / int64(d.Requests))
		d.AverageProcessing, d.AverageMS = avg.String(), float64(avg.Microseconds())/1000
	}
	d.LastError, _ = st.lastError.Load().(string)
	return d
}

// dispatch hands a request to its own goroutine (a slow one, a wait, must
// not hold up the endpoint's others), at most MaxInFlight at once.
func (s *Server) dispatch(k int, r micro.Request) {
	s.sem <- struct{}{}
	s.wg.Add(1)
	subject, reply, data := r.Subject(), r.Reply(), r.Data()
	go func() {
		defer func() { <-s.sem; s.wg.Done() }()
		s.handle(k, subject, reply, data)
	}()
}

// handlerError is an error answer's code and description.
type handlerError struct {
	code string
	msg  string
}

func (e *handlerError) Error() string { return e.msg }

func badRequest(format string, args ...any) error {
	return &handlerError{codeBadRequest, fmt.Sprintf(format, args...)}
}

func (s *Server) handle(k int, subject, reply string, data []byte) {
	if reply == "" {
		return // nobody to answer
	}
	start := time.Now()
	st := s.stats[k]
	defer func() { st.processing.Add(int64(time.Since(start))) }()
	st.requests.Add(1)
	op := subject[strings.LastIndexByte(subject, '.')+1:]
	var req request
	if err := json.Unmarshal(data, &req); err != nil {
		s.respondError(k, reply, badRequest("request to %s: %v", subject, err))
		return
	}
	local := s.parts[k]
	wait := s.cfg.MaxWait
	if req.WaitMS > 0 {
		wait = min(wait, time.Duration(req.WaitMS)*time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if op == opSnapshot {
		s.snapshot(ctx, k, reply, req)
		return
	}
	stale := false
	if req.Min > 0 && op != opWait {
		if err := local.WaitFor(ctx, eventstore.ID(s.cfg.Partitions, k, req.Min)); err != nil {
			stale = true
			st.stale.Add(1)
		}
	}
	// The wait's time was the request's: what answers gets its own.
	qctx, qcancel := context.WithTimeout(context.Background(), s.cfg.MaxWait)
	defer qcancel()
	var resp response
	var err error
	switch op {
	case opWait:
		err = s.wait(ctx, k, local, req)
	default:
		err = s.query(qctx, k, op, local, req, &resp)
	}
	if err != nil {
		s.respondError(k, reply, err)
		return
	}
	resp.Applied = local.Applied()[k]
	body, err := json.Marshal(&resp)
	if err != nil {
		s.respondError(k, reply, fmt.Errorf("encode answer to %s: %w", subject, err))
		return
	}
	msg := &nats.Msg{Subject: reply, Data: body}
	if stale {
		msg.Header = nats.Header{StaleHeader: []string{"true"}}
	}
	if err := s.nc.PublishMsg(msg); err != nil {
		s.log.Warn("answer", "subject", subject, "err", err)
	}
}

// wait answers when the partition has applied req.Seq, or 504 when the
// wait runs out.
func (s *Server) wait(ctx context.Context, k int, local Local, req request) error {
	if err := local.WaitFor(ctx, eventstore.ID(s.cfg.Partitions, k, req.Seq)); err != nil {
		return &handlerError{codeTimeout, fmt.Sprintf("partition %d applied to %d, not %d: %v", k, local.Applied()[k], req.Seq, err)}
	}
	return nil
}

func (s *Server) query(ctx context.Context, k int, op string, local Local, req request, resp *response) error {
	var err error
	switch op {
	case opConversations:
		var convs []projections.Conversation
		if convs, err = local.Conversations(ctx, req.UserID); err == nil {
			resp.Conversations = make([]conversation, len(convs))
			for i, c := range convs {
				resp.Conversations[i] = conversation{Conversation: c, Activity: c.Activity, ActivityAt: c.ActivityAt}
			}
		}
	case opMessages:
		resp.Messages, err = local.Messages(ctx, req.ConversationID, req.Before, req.Limit)
	case opKey:
		if req.Key == nil {
			return badRequest("key: no key")
		}
		var rec eventstore.KeyRecord
		if rec, resp.Found, err = local.KeyRecord(ctx, *req.Key); err == nil && resp.Found {
			resp.Record = &rec
		}
	case opMsgConvs:
		_, resp.Convs, err = local.MessageConversations(ctx, req.IDs)
	case opMsgState:
		var state eventstore.MessageState
		if state, resp.Found, _, err = local.MessageState(ctx, req.ID, req.UserID); err == nil && resp.Found {
			resp.State = &state
		}
	case opMsgsBy:
		resp.States, _, err = local.MessagesBy(ctx, req.UserID)
	case opCovers:
		if resp.Covered, err = local.Covers(ctx, req.Time); err == nil {
			resp.Horizon = local.Horizon()
		}
	case opApplied:
	default:
		return badRequest("no operation %q", op)
	}
	if err != nil {
		return fmt.Errorf("partition %d %s: %w", k, op, err)
	}
	return nil
}

// snapshot answers with the partition's membership snapshot, read in one
// transaction, in chunks of about req.Snapshot.ChunkBytes published to the
// reply subject; the last chunk has Done.
func (s *Server) snapshot(ctx context.Context, k int, reply string, req request) {
	size := DefaultChunkBytes
	if req.Snapshot != nil && req.Snapshot.ChunkBytes > 0 {
		size = req.Snapshot.ChunkBytes
	}
	snap, err := s.parts[k].Snapshot(ctx)
	if err != nil {
		s.respondError(k, reply, fmt.Errorf("partition %d snapshot: %w", k, err))
		return
	}
	chunk := snapshotChunk{Applied: snap.Applied[k]}
	bytes := 0
	send := func(done bool) bool {
		chunk.Done = done
		body, err := json.Marshal(&chunk)
		if err == nil {
			err = s.nc.Publish(reply, body)
		}
		if err != nil {
			s.respondError(k, reply, fmt.Errorf("partition %d snapshot: %w", k, err))
			return false
		}
		chunk, bytes = snapshotChunk{Applied: snap.Applied[k]}, 0
		return true
	}
	for id, ms := range snap.Conversations {
		if chunk.Conversations == nil {
			chunk.Conversations = make(map[int64][]projections.Member)
		}
		chunk.Conversations[id] = ms
		bytes += 24
		for _, m := range ms {
			bytes += len(m.UserID) + len(m.Role) + 30
		}
		if bytes >= size && !send(false) {
			return
		}
	}
	for _, p := range snap.Profiles {
		chunk.Profiles = append(chunk.Profiles, p)
		bytes += len(p.UserID) + len(p.Name) + 40
		if p.Avatar != nil {
			bytes += len(*p.Avatar)
		}
		if bytes >= size && !send(false) {
			return
		}
	}
	for id, ms := range snap.Jobs {
		if chunk.Jobs == nil {
			chunk.Jobs = make(map[int64][]string)
		}
		chunk.Jobs[id] = ms
		bytes += 24
		for _, m := range ms {
			bytes += len(m) + 3
		}
		if bytes >= size && !send(false) {
			return
		}
	}
	send(true)
}

// respondError answers with err's code (500 unless it is a handlerError)
// and counts it.
func (s *Server) respondError(k int, reply string, err error) {
	code, msg := codeInternal, err.Error()
	var he *handlerError
	if errors.As(err, &he) {
		code = he.code
	}
	st := s.stats[k]
	st.errors.Add(1)
	st.lastError.Store(msg)
	if code == codeInternal {
		s.log.Error("read model request failed", "partition", k, "err", err)
	}
	m := &nats.Msg{Subject: reply, Header: nats.Header{micro.ErrorHeader: []string{msg}, micro.ErrorCodeHeader: []string{code}}}
	if err := s.nc.PublishMsg(m); err != nil {
		s.log.Warn("answer", "err", err)
	}
}
