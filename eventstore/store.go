// Package eventstore keeps inbox's events in the NATS JetStream stream INBOX:
// it embeds nats-server or connects to an existing one, creates the stream,
// appends typed events with deduplication and reads them back.
package eventstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
)

// StreamName is the one stream every event is appended to.
const StreamName = "INBOX"

// Defaults for zero Config fields.
const (
	DefaultReplicas        = 1
	DefaultDuplicateWindow = 2 * time.Minute
	DefaultTypingTTL       = 10 * time.Second
	DefaultAppendTimeout   = 5 * time.Second
)

// maxAppendsInFlight bounds the appends awaiting their acknowledgement.
const maxAppendsInFlight = 1 << 16

// Errors callers branch on.
var (
	// ErrExists: a conversation or job with that id was already created.
	ErrExists = errors.New("already exists")
	// ErrUnavailable: the stream did not acknowledge the append; nothing is
	// claimed as stored (a retry with the same message id is safe).
	ErrUnavailable = errors.New("event stream unavailable")
	// ErrNotFound: no event is stored at that sequence (never was, or it expired).
	ErrNotFound = errors.New("no event at that sequence")
	// ErrStale: an append with ExpectLast found another last sequence on
	// its filter; nothing was stored.
	ErrStale = errors.New("not the last event on the subject")
)

// Config says where the stream lives and how it is set up.
type Config struct {
	// Conn is an established NATS connection (embedded or external).
	Conn *nats.Conn
	// Replicas of the stream (1 for a single server, 3 on a cluster).
	Replicas int
	// DuplicateWindow for Nats-Msg-Id deduplication.
	DuplicateWindow time.Duration
	// TypingTTL is the per-message TTL of typing events.
	TypingTTL time.Duration
	// AppendTimeout bounds an append whose ctx has no deadline.
	AppendTimeout time.Duration
	Logger        *slog.Logger
}

// Store appends events to and reads events from the INBOX stream.
type Store struct {
	nc     *nats.Conn
	js     jetstream.JetStream
	stream jetstream.Stream
	cfg    Config
	log    *slog.Logger
}

// Open creates or updates the INBOX stream on cfg.Conn and returns a Store on it.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	if cfg.Conn == nil {
		return nil, errors.New("eventstore: no NATS connection")
	}
	if cfg.Replicas <= 0 {
		cfg.Replicas = DefaultReplicas
	}
	if cfg.DuplicateWindow <= 0 {
		cfg.DuplicateWindow = DefaultDuplicateWindow
	}
	if cfg.TypingTTL <= 0 {
		cfg.TypingTTL = DefaultTypingTTL
	}
	if cfg.AppendTimeout <= 0 {
		cfg.AppendTimeout = DefaultAppendTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	js, err := jetstream.New(cfg.Conn,
		// An acknowledgement that never comes (a lost connection) frees its
		// slot after AppendTimeout; the cap on appends in flight is far above
		// what the sockets' rate limits let through.
		jetstream.WithPublishAsyncTimeout(cfg.AppendTimeout),
		jetstream.WithPublishAsyncMaxPending(maxAppendsInFlight))
	if err != nil {
		return nil, fmt.Errorf("open jetstream: %w", err)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
	}
	stream, err := createStream(ctx, js, StreamConfig(cfg.Replicas, cfg.DuplicateWindow), cfg.Logger)
	if err != nil {
		return nil, fmt.Errorf("create or update stream %s: %w", StreamName, err)
	}
	return &Store{nc: cfg.Conn, js: js, stream: stream, cfg: cfg, log: cfg.Logger}, nil
}

// apiAttempt bounds one JetStream API request made by RetryAPI.
const apiAttempt = 5 * time.Second

// errCodeNoPeers is JetStream's "no suitable peers for placement" (HTTP-like
// code 400). On a cluster that is still forming a peer is not yet known to be
// online, and it passes within seconds; a stream asking for more replicas
// than the cluster has servers fails the same way for good. So RetryAPI
// retries it for noPeersWait, then gives up with it.
const (
	errCodeNoPeers jetstream.ErrorCode = 10005
	noPeersWait                        = 30 * time.Second
)

// createStream creates or updates the stream (see RetryAPI).
func createStream(ctx context.Context, js jetstream.JetStream, cfg jetstream.StreamConfig, log *slog.Logger) (stream jetstream.Stream, err error) {
	err = RetryAPI(ctx, log, "create or update stream "+cfg.Name, func(ctx context.Context) error {
		// A node starting on a stream that is already as configured leaves it
		// alone: no needless update while other nodes use it.
		if stream, err = js.Stream(ctx, cfg.Name); err == nil && sameConfig(stream.CachedInfo().Config, cfg) {
			return nil
		}
		stream, err = js.CreateOrUpdateStream(ctx, cfg)
		return err
	})
	return stream, err
}

// sameConfig reports whether have already carries every setting of want (the
// server fills in defaults for the rest).
func sameConfig(have, want jetstream.StreamConfig) bool {
	return slices.Equal(have.Subjects, want.Subjects) && have.Replicas == want.Replicas &&
		have.Duplicates == want.Duplicates && have.Storage == want.Storage &&
		have.Retention == want.Retention && have.AllowMsgTTL == want.AllowMsgTTL &&
		have.AllowDirect == want.AllowDirect && have.Description == want.Description
}

// RetryAPI runs a JetStream API call (create or update a stream, a bucket)
// with 5 s per attempt, again while ctx lasts, when it goes unanswered or
// JetStream answers that it is not ready. On a cluster that has just formed,
// or with several inboxd nodes creating the same replicated stream at once, a
// request can be dropped: one long wait would only time out. An answer
// refusing the request (a 4xx API error) is returned at once, except "no
// suitable peers" for up to noPeersWait.
func RetryAPI(ctx context.Context, log *slog.Logger, what string, call func(ctx context.Context) error) error {
	start := time.Now()
	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, apiAttempt)
		err := call(actx)
		cancel()
		if err == nil {
			return nil
		}
		var apiErr *jetstream.APIError
		if errors.As(err, &apiErr) && apiErr.Code < 500 &&
			(apiErr.ErrorCode != errCodeNoPeers || time.Since(start) >= noPeersWait) {
			return err
		}
		if ctx.Err() != nil {
			return err
		}
		log.Warn("JetStream request failed; retrying", "request", what, "attempt", attempt, "err", err)
		select {
		case <-time.After(min(time.Duration(attempt)*100*time.Millisecond, time.Second)):
		case <-ctx.Done():
			return err
		}
	}
}

// StreamConfig is the INBOX stream's configuration.
func StreamConfig(replicas int, dupWindow time.Duration) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        StreamName,
		Description: "inbox events: conversations, messages, typing, read receipts, profiles, jobs",
		Subjects:    streamSubjects,
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		Replicas:    replicas,
		Duplicates:  dupWindow,
		AllowMsgTTL: true, // typing events expire on their own
		AllowDirect: true, // message lookups by sequence served by any replica
	}
}

// Conn is the store's NATS connection.
func (s *Store) Conn() *nats.Conn { return s.nc }

// JetStream is the store's JetStream context, for consumers.
func (s *Store) JetStream() jetstream.JetStream { return s.js }

// Stream is the INBOX stream handle.
func (s *Store) Stream() jetstream.Stream { return s.stream }

// DuplicateWindow is the stream's Nats-Msg-Id deduplication window.
func (s *Store) DuplicateWindow() time.Duration { return s.cfg.DuplicateWindow }

// TypingTTL is the per-message TTL typing events are appended with.
func (s *Store) TypingTTL() time.Duration { return s.cfg.TypingTTL }

// appendOptions are set by AppendOption.
type appendOptions struct {
	msgID      string
	expectNew  bool
	expectLast *expectLast
	duplicate  *bool
}

type expectLast struct {
	seq    uint64
	filter string
}

// AppendOption changes how an event is appended.
type AppendOption func(*appendOptions)

// WithMsgID sets the Nats-Msg-Id: an append with an id already stored within
// the duplicate window stores nothing and returns the first append's sequence.
func WithMsgID(id string) AppendOption { return func(o *appendOptions) { o.msgID = id } }

// ReportDuplicate sets *dup to whether the append stored nothing because an
// event with the same message id (WithMsgID) was already stored within the
// duplicate window; the sequence returned is then that event's.
func ReportDuplicate(dup *bool) AppendOption { return func(o *appendOptions) { o.duplicate = dup } }

// ExpectNew makes the append fail with ErrExists unless the event's subject is
// empty (JetStream's expected-last-subject-sequence 0): how a conversation or job
// id is claimed without a racy read-then-write.
func ExpectNew() AppendOption { return func(o *appendOptions) { o.expectNew = true } }

// ExpectLast makes the append fail with ErrStale unless the last event
// stored on filter (a subject, wildcards allowed) is at seq, 0 for none:
// optimistic concurrency over the events filter matches, checked by
// JetStream as it stores (Nats-Expected-Last-Subject-Sequence with
// Nats-Expected-Last-Subject-Sequence-Subject).
func ExpectLast(seq uint64, filter string) AppendOption {
	return func(o *appendOptions) { o.expectLast = &expectLast{seq, filter} }
}

// Append stores e and returns its stream sequence. Without WithMsgID a random
// message id is used, so the internal retry after a lost acknowledgement
// never stores the event twice.
func (s *Store) Append(ctx context.Context, e Event, opts ...AppendOption) (uint64, error) {
	var o appendOptions
	for _, opt := range opts {
		opt(&o)
	}
	if o.msgID == "" {
		o.msgID = nuid.Next()
	}
	data, err := Encode(e)
	if err != nil {
		return 0, fmt.Errorf("encode %s event: %w", e.Kind(), err)
	}
	pubOpts := []jetstream.PublishOpt{jetstream.WithMsgID(o.msgID), jetstream.WithRetryAttempts(3)}
	if o.expectNew {
		pubOpts = append(pubOpts, jetstream.WithExpectLastSequencePerSubject(0))
	}
	if o.expectLast != nil {
		pubOpts = append(pubOpts, jetstream.WithExpectLastSequenceForSubject(o.expectLast.seq, o.expectLast.filter))
	}
	if e.Kind() == KindTyping {
		pubOpts = append(pubOpts, jetstream.WithMsgTTL(s.cfg.TypingTTL))
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, s.cfg.AppendTimeout)
		defer cancel()
	}
	// Published asynchronously and awaited here: the acknowledgement then
	// reaches this caller through the JetStream publisher's own reply
	// subscription, not through the connection's lock, which the connection's
	// flusher holds while it writes. Under load that lock was most of an
	// append's wait.
	paf, err := s.js.PublishMsgAsync(&nats.Msg{Subject: e.Subject(), Data: data}, pubOpts...)
	if err != nil {
		return 0, classify(e, err, o.expectLast != nil)
	}
	select {
	case ack := <-paf.Ok():
		if o.duplicate != nil {
			*o.duplicate = ack.Duplicate
		}
		return ack.Sequence, nil
	case err := <-paf.Err():
		return 0, classify(e, err, o.expectLast != nil)
	case <-ctx.Done():
		return 0, classify(e, ctx.Err(), false)
	}
}

// classify maps a publish error to ErrExists (ErrStale for an append with
// ExpectLast) or ErrUnavailable, keeping the cause.
func classify(e Event, err error, stale bool) error {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		switch apiErr.ErrorCode {
		case jetstream.JSErrCodeStreamWrongLastSequence, jetstream.JSErrCodeStreamWrongLastSequenceConstant:
			if stale {
				return fmt.Errorf("append %s: %w (%s)", e.Subject(), ErrStale, apiErr.Description)
			}
			return fmt.Errorf("append %s: %w", e.Subject(), ErrExists)
		}
		return fmt.Errorf("append %s: %w", e.Subject(), err)
	}
	return fmt.Errorf("append %s: %w: %v", e.Subject(), ErrUnavailable, err)
}

// LastSeq is the stream's last sequence.
func (s *Store) LastSeq(ctx context.Context) (uint64, error) {
	info, err := s.stream.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("stream %s info: %w", StreamName, err)
	}
	return info.State.LastSeq, nil
}

// LastStoredSeq is the sequence of the newest event still stored (0 if none).
// Unlike LastSeq it skips a tail of expired typing events, which no reader
// will ever be delivered.
func (s *Store) LastStoredSeq(ctx context.Context) (uint64, error) {
	msg, err := s.stream.GetLastMsgForSubject(ctx, "inbox.>")
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
		return 0, nil
	case err != nil:
		return 0, fmt.Errorf("stream %s last message: %w", StreamName, err)
	}
	return msg.Sequence, nil
}

// LastSeqOf is the sequence of the last event stored on filter (a subject,
// wildcards allowed), 0 if there is none.
func (s *Store) LastSeqOf(ctx context.Context, filter string) (uint64, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, s.cfg.AppendTimeout)
		defer cancel()
	}
	msg, err := s.stream.GetLastMsgForSubject(ctx, filter)
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
		return 0, nil
	case err != nil:
		return 0, fmt.Errorf("last event on %s: %w: %v", filter, ErrUnavailable, err)
	}
	return msg.Sequence, nil
}

// SecureDelete removes the event at seq from the stream and overwrites its
// stored bytes (JetStream's secure delete, done by every replica); it
// reports false when no event is stored there (never was, or already
// removed).
func (s *Store) SecureDelete(ctx context.Context, seq uint64) (bool, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, s.cfg.AppendTimeout)
		defer cancel()
	}
	// The request by hand: nats.go's SecureDeleteMsg flattens JetStream's
	// error to text, and "not found" must be told from a failure.
	req, _ := json.Marshal(struct {
		Seq uint64 `json:"seq"`
	}{seq})
	msg, err := s.nc.RequestWithContext(ctx, "$JS.API.STREAM.MSG.DELETE."+StreamName, req)
	if err != nil {
		return false, fmt.Errorf("secure delete seq %d: %w: %v", seq, ErrUnavailable, err)
	}
	var resp struct {
		Success bool                `json:"success"`
		Error   *jetstream.APIError `json:"error"`
	}
	if err := json.Unmarshal(msg.Data, &resp); err != nil {
		return false, fmt.Errorf("secure delete seq %d: answer %q: %w", seq, msg.Data, err)
	}
	switch {
	case resp.Success:
		return true, nil
	case resp.Error != nil && (resp.Error.ErrorCode == errCodeSequenceNotFound || resp.Error.ErrorCode == jetstream.JSErrCodeMessageNotFound):
		return false, nil
	case resp.Error != nil:
		return false, fmt.Errorf("secure delete seq %d: %w", seq, resp.Error)
	}
	return false, fmt.Errorf("secure delete seq %d: refused without a reason", seq)
}

// errCodeSequenceNotFound is JetStream's answer to deleting a sequence it
// does not hold ("sequence 2 not found").
const errCodeSequenceNotFound jetstream.ErrorCode = 10043

// Purge removes every event on filter stored below sequence before.
func (s *Store) Purge(ctx context.Context, filter string, before uint64) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, s.cfg.AppendTimeout)
		defer cancel()
	}
	if err := s.stream.Purge(ctx, jetstream.WithPurgeSubject(filter), jetstream.WithPurgeSequence(before)); err != nil {
		return fmt.Errorf("purge %s below seq %d: %w: %v", filter, before, ErrUnavailable, err)
	}
	return nil
}

// FirstSince is the sequence of the first event on filter stored at or
// after t; ok is false when there is none.
func (s *Store) FirstSince(ctx context.Context, filter string, t time.Time) (seq uint64, ok bool, err error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, s.cfg.AppendTimeout)
		defer cancel()
	}
	cons, err := s.js.OrderedConsumer(ctx, StreamName, jetstream.OrderedConsumerConfig{
		DeliverPolicy:  jetstream.DeliverByStartTimePolicy,
		OptStartTime:   &t,
		FilterSubjects: []string{filter},
	})
	if err != nil {
		return 0, false, fmt.Errorf("first event on %s since %s: %w", filter, t.Format(time.RFC3339), err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return 0, false, fmt.Errorf("first event on %s since %s: %w", filter, t.Format(time.RFC3339), err)
	}
	if info.NumPending == 0 {
		return 0, false, nil
	}
	msg, err := cons.Next(jetstream.FetchContext(ctx))
	if err != nil {
		return 0, false, fmt.Errorf("first event on %s since %s: %w", filter, t.Format(time.RFC3339), err)
	}
	meta, err := msg.Metadata()
	if err != nil {
		return 0, false, fmt.Errorf("first event on %s since %s: %w", filter, t.Format(time.RFC3339), err)
	}
	return meta.Sequence.Stream, true, nil
}

// SubjectOf returns the subject the event at seq was stored under.
func (s *Store) SubjectOf(ctx context.Context, seq uint64) (string, error) {
	msg, err := s.getMsg(ctx, seq)
	if err != nil {
		return "", err
	}
	return msg.Subject, nil
}

// Get returns the event stored at seq (a direct get, served by any replica).
// An event that cannot be decoded is returned with Err set.
func (s *Store) Get(ctx context.Context, seq uint64) (Stored, error) {
	msg, err := s.getMsg(ctx, seq)
	if err != nil {
		return Stored{}, err
	}
	ev, derr := Decode(msg.Subject, msg.Data)
	return Stored{Seq: msg.Sequence, Subject: msg.Subject, Time: msg.Time, Event: ev, Err: derr}, nil
}

func (s *Store) getMsg(ctx context.Context, seq uint64) (*jetstream.RawStreamMsg, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, s.cfg.AppendTimeout)
		defer cancel()
	}
	msg, err := s.stream.GetMsg(ctx, seq)
	if err != nil {
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return nil, fmt.Errorf("seq %d: %w", seq, ErrNotFound)
		}
		return nil, fmt.Errorf("get seq %d: %w: %v", seq, ErrUnavailable, err)
	}
	return msg, nil
}

// Stored is an event read back from the stream. Err is set (and Event nil)
// when the payload could not be decoded: readers log, count and skip it.
type Stored struct {
	Seq     uint64
	Subject string
	Time    time.Time
	Event   Event
	Err     error
}

// decodeMsg turns a consumed message into a Stored.
func decodeMsg(msg jetstream.Msg) (Stored, error) {
	meta, err := msg.Metadata()
	if err != nil {
		return Stored{}, fmt.Errorf("message metadata: %w", err)
	}
	ev, derr := Decode(msg.Subject(), msg.Data())
	return Stored{Seq: meta.Sequence.Stream, Subject: msg.Subject(), Time: meta.Timestamp, Event: ev, Err: derr}, nil
}

// Tail delivers every event from sequence from (1 = the beginning) on, in
// stream order, until ctx ends: one ordered consumer, recreated by nats.go
// after a disconnect from the last delivered sequence, so nothing is skipped.
// filters narrow the subjects (nil = all). fn runs on one goroutine.
func (s *Store) Tail(ctx context.Context, from uint64, filters []string, fn func(Stored)) error {
	cons, err := s.orderedFrom(ctx, from, filters)
	if err != nil {
		return err
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(4096))
	if err != nil {
		return fmt.Errorf("tail %s from %d: %w", StreamName, from, err)
	}
	stop := context.AfterFunc(ctx, it.Stop)
	defer stop()
	for {
		msg, err := it.Next()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				return ctx.Err()
			}
			return fmt.Errorf("tail %s: %w", StreamName, err)
		}
		st, err := decodeMsg(msg)
		if err != nil {
			s.log.Warn("skip message without metadata", "subject", msg.Subject(), "err", err)
			continue
		}
		fn(st)
	}
}

// readBatch is how many events Read pulls at a time by default.
const readBatch = 4096

// ReadOption changes how Read reads.
type ReadOption func(*readOptions)

type readOptions struct {
	batch int
}

// ReadBatch makes Read pull at most n events at a time (default 4096): for
// a caller that stops after about n, so the stream does not send thousands
// it will drop.
func ReadBatch(n int) ReadOption { return func(o *readOptions) { o.batch = n } }

// Read delivers the events with from <= seq <= to in stream order and returns
// when it has passed to, the stream has nothing more, or fn returned an error
// (returned as is): a bounded read (for resume and replay) with no
// long-lived consumer behind it.
func (s *Store) Read(ctx context.Context, from, to uint64, filters []string, fn func(Stored) error, opts ...ReadOption) error {
	if to < from {
		return nil
	}
	o := readOptions{batch: readBatch}
	for _, opt := range opts {
		opt(&o)
	}
	if span := to - from + 1; span < uint64(o.batch) {
		o.batch = int(span) // never more than the range holds
	}
	o.batch = max(o.batch, 1)
	cons, err := s.orderedFrom(ctx, from, filters)
	if err != nil {
		return err
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return fmt.Errorf("read %s from %d: %w", StreamName, from, err)
	}
	if info.NumPending == 0 {
		return nil
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(o.batch))
	if err != nil {
		return fmt.Errorf("read %s from %d: %w", StreamName, from, err)
	}
	defer it.Stop()
	stop := context.AfterFunc(ctx, it.Stop)
	defer stop()
	for {
		msg, err := it.Next()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("read %s: %w", StreamName, err)
		}
		meta, err := msg.Metadata()
		if err != nil {
			return fmt.Errorf("read %s: message metadata: %w", StreamName, err)
		}
		if meta.Sequence.Stream > to {
			return nil
		}
		ev, derr := Decode(msg.Subject(), msg.Data())
		if err := fn(Stored{Seq: meta.Sequence.Stream, Subject: msg.Subject(), Time: meta.Timestamp, Event: ev, Err: derr}); err != nil {
			return err
		}
		if meta.Sequence.Stream >= to || meta.NumPending == 0 {
			return nil
		}
	}
}

func (s *Store) orderedFrom(ctx context.Context, from uint64, filters []string) (jetstream.Consumer, error) {
	if from == 0 {
		from = 1
	}
	cfg := jetstream.OrderedConsumerConfig{
		DeliverPolicy:  jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:    from,
		FilterSubjects: filters,
	}
	cons, err := s.js.OrderedConsumer(ctx, StreamName, cfg)
	if err != nil {
		return nil, fmt.Errorf("ordered consumer on %s from %d: %w", StreamName, from, err)
	}
	return cons, nil
}
