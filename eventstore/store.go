// Package eventstore keeps inbox's events in NATS JetStream: the stream INBOX,
// or with N partitions the streams INBOX-0 … INBOX-<N-1> (partition.go). It
// embeds nats-server or connects to an existing one, creates the streams,
// appends typed events with deduplication and reads them back. Subjects are
// built here only; everything outside names an event by its id (ID).
package eventstore

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
)

// StreamName is the stream every event is appended to with one partition,
// and the prefix of the partitions' streams with more (StreamNameOf).
const StreamName = "INBOX"

// Defaults for zero Config fields.
const (
	DefaultReplicas        = 1
	DefaultPartitions      = 1
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
	// Partitions is how many streams conversations are spread over (default
	// 1, at most MaxPartitions). It must stay what the streams were created
	// with: Open refuses another with ErrPartitions.
	Partitions int
	// DuplicateWindow for Nats-Msg-Id deduplication.
	DuplicateWindow time.Duration
	// TypingTTL is the per-message TTL of typing events.
	TypingTTL time.Duration
	// AppendTimeout bounds an append whose ctx has no deadline.
	AppendTimeout time.Duration
	// Republish makes the streams republish every event they store to
	// live.inbox.> (live.go), for live feeds that subscribe per
	// conversation. Without it a stream keeps the republishing it has.
	Republish bool
	Logger    *slog.Logger
}

// Store appends events to and reads events from the partitions' streams.
type Store struct {
	nc      *nats.Conn
	js      jetstream.JetStream
	n       int                // partitions
	streams []jetstream.Stream // one per partition
	cfg     Config
	log     *slog.Logger
}

// Open creates or updates the streams of cfg.Partitions partitions on
// cfg.Conn and returns a Store on them. Streams written with another number
// of partitions make it fail with ErrPartitions, before it creates anything.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	if cfg.Conn == nil {
		return nil, errors.New("eventstore: no NATS connection")
	}
	if cfg.Replicas <= 0 {
		cfg.Replicas = DefaultReplicas
	}
	if cfg.Partitions <= 0 {
		cfg.Partitions = DefaultPartitions
	}
	if cfg.Partitions > MaxPartitions {
		return nil, fmt.Errorf("eventstore: %d partitions (at most %d: an event id names its partition in 8 bits)", cfg.Partitions, MaxPartitions)
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
	ctx, cancel := bounded(ctx, 30*time.Second)
	defer cancel()
	n := cfg.Partitions
	// Checked before creating (a mismatch creates nothing) and after (two
	// processes started at once with different counts: at least the later
	// one sees the other's streams). With one partition and the stream
	// INBOX already there, there is nothing to check: a node started with
	// more partitions refuses to run beside it.
	check := true
	if n == 1 {
		st, err := lookupStream(ctx, js, StreamName, cfg.Logger)
		if err != nil {
			return nil, err
		}
		check = st == nil
	}
	if check {
		if err := checkPartitions(ctx, js, n, cfg.Logger); err != nil {
			return nil, err
		}
	}
	s := &Store{nc: cfg.Conn, js: js, n: n, streams: make([]jetstream.Stream, n), cfg: cfg, log: cfg.Logger}
	created := false
	for k := range n {
		name := StreamNameOf(n, k)
		scfg := StreamConfig(n, k, cfg.Replicas, cfg.DuplicateWindow)
		if cfg.Republish {
			scfg.RePublish = republish()
		}
		var made bool
		if s.streams[k], made, err = createStream(ctx, js, scfg, cfg.Logger); err != nil {
			return nil, fmt.Errorf("create or update stream %s: %w", name, err)
		}
		created = created || made
	}
	if created && n > 1 && cfg.Replicas > 1 {
		s.spreadLeaders(ctx)
	}
	if check {
		if err := checkPartitions(ctx, js, n, cfg.Logger); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// Discover is the number of partitions the streams on nc were created with:
// 1 for a stream INBOX, the count INBOX-0 records, 0 when there is neither
// (nothing was ever appended).
func Discover(ctx context.Context, nc *nats.Conn) (int, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return 0, fmt.Errorf("open jetstream: %w", err)
	}
	ctx, cancel := bounded(ctx, 30*time.Second)
	defer cancel()
	_, err = js.Stream(ctx, StreamName)
	switch {
	case err == nil:
		return 1, nil
	case !errors.Is(err, jetstream.ErrStreamNotFound):
		return 0, fmt.Errorf("look up stream %s: %w", StreamName, err)
	}
	first := StreamNameOf(2, 0)
	st, err := js.Stream(ctx, first)
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound):
		return 0, nil
	case err != nil:
		return 0, fmt.Errorf("look up stream %s: %w", first, err)
	}
	n, err := strconv.Atoi(st.CachedInfo().Config.Metadata[metaPartitions])
	if err != nil || n < 2 || n > MaxPartitions {
		return 0, fmt.Errorf("stream %s does not record its partition count (metadata %s)", first, metaPartitions)
	}
	return n, nil
}

// lookupStream returns stream name, nil if there is none.
func lookupStream(ctx context.Context, js jetstream.JetStream, name string, log *slog.Logger) (jetstream.Stream, error) {
	var st jetstream.Stream
	err := RetryAPI(ctx, log, "look up stream "+name, func(ctx context.Context) (err error) {
		st, err = js.Stream(ctx, name)
		return err
	})
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("look up stream %s: %w", name, err)
	}
	return st, nil
}

// Stream metadata naming a partition's stream's place (N > 1).
const (
	metaPartitions = "inbox_partitions"
	metaPartition  = "inbox_partition"
)

// checkPartitions refuses streams written with another number of
// partitions than n: with one, a stream INBOX-0; with more, a stream INBOX,
// or an INBOX-0 made for another count. Changing the count would put
// conversations in other partitions and give ids another meaning.
func checkPartitions(ctx context.Context, js jetstream.JetStream, n int, log *slog.Logger) error {
	find := func(name string) (jetstream.Stream, error) { return lookupStream(ctx, js, name, log) }
	first := StreamNameOf(2, 0)
	if n == 1 {
		st, err := find(first)
		if st == nil || err != nil {
			return err
		}
		return fmt.Errorf("%w: stream %s holds partition 0 of %s: the events were written with --partitions %[3]s (INBOX_PARTITIONS); start with that (changing the number of partitions of existing events is not supported)",
			ErrPartitions, first, cmp.Or(st.CachedInfo().Config.Metadata[metaPartitions], "?"))
	}
	st, err := find(StreamName)
	if err != nil {
		return err
	}
	if st != nil {
		return fmt.Errorf("%w: stream %s holds the events of one partition, not %d: start with --partitions 1 (INBOX_PARTITIONS; changing the number of partitions of existing events is not supported)",
			ErrPartitions, StreamName, n)
	}
	if st, err = find(first); st == nil || err != nil {
		return err
	}
	if had := st.CachedInfo().Config.Metadata[metaPartitions]; had != strconv.Itoa(n) {
		return fmt.Errorf("%w: stream %s holds partition 0 of %s, not of %d: start with --partitions %[3]s (INBOX_PARTITIONS; changing the number of partitions of existing events is not supported)",
			ErrPartitions, first, cmp.Or(had, "an unknown count"), n)
	}
	return nil
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

// createStream creates or updates the stream (see RetryAPI); created says
// whether it was not there before. A stream that republishes keeps doing so
// when cfg does not ask for it: another node's live feed may depend on it.
func createStream(ctx context.Context, js jetstream.JetStream, cfg jetstream.StreamConfig, log *slog.Logger) (stream jetstream.Stream, created bool, err error) {
	err = RetryAPI(ctx, log, "create or update stream "+cfg.Name, func(ctx context.Context) error {
		// A node starting on a stream that is already as configured leaves it
		// alone: no needless update while other nodes use it.
		want := cfg
		stream, err = js.Stream(ctx, cfg.Name)
		if err == nil {
			have := stream.CachedInfo().Config
			if want.RePublish == nil {
				want.RePublish = have.RePublish
			}
			if sameConfig(have, want) {
				return nil
			}
		}
		created = created || errors.Is(err, jetstream.ErrStreamNotFound)
		stream, err = js.CreateOrUpdateStream(ctx, want)
		return err
	})
	return stream, created, err
}

// sameConfig reports whether have already carries every setting of want (the
// server fills in defaults for the rest).
func sameConfig(have, want jetstream.StreamConfig) bool {
	for k, v := range want.Metadata {
		if have.Metadata[k] != v {
			return false
		}
	}
	return slices.Equal(have.Subjects, want.Subjects) && have.Replicas == want.Replicas &&
		have.Duplicates == want.Duplicates && have.Storage == want.Storage &&
		have.Retention == want.Retention && have.AllowMsgTTL == want.AllowMsgTTL &&
		have.AllowDirect == want.AllowDirect && have.Description == want.Description &&
		(want.RePublish == nil || have.RePublish != nil && *have.RePublish == *want.RePublish)
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

// StreamConfig is the configuration of partition k's stream among n: with
// one partition the INBOX stream, as it always was; with more INBOX-<k>,
// holding inbox.p<k>.… (profiles and jobs in partition 0 only), its place
// recorded in its metadata.
func StreamConfig(n, k int, replicas int, dupWindow time.Duration) jetstream.StreamConfig {
	cfg := jetstream.StreamConfig{
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
	if n <= 1 {
		return cfg
	}
	cfg.Name = StreamNameOf(n, k)
	cfg.Subjects = nil
	for _, subj := range streamSubjects {
		if k != 0 && (strings.HasPrefix(subj, "inbox.user.") || strings.HasPrefix(subj, "inbox.job.")) {
			continue // profiles and jobs: partition 0
		}
		cfg.Subjects = append(cfg.Subjects, subjectIn(n, k, subj))
	}
	cfg.Description = fmt.Sprintf("inbox events, partition %d of %d: conversations hashed here", k, n)
	if k == 0 {
		cfg.Description += ", profiles and jobs"
	}
	cfg.Metadata = map[string]string{metaPartitions: strconv.Itoa(n), metaPartition: strconv.Itoa(k)}
	return cfg
}

// Conn is the store's NATS connection.
func (s *Store) Conn() *nats.Conn { return s.nc }

// JetStream is the store's JetStream context, for consumers.
func (s *Store) JetStream() jetstream.JetStream { return s.js }

// Partitions is the number of partitions.
func (s *Store) Partitions() int { return s.n }

// Streams are the partitions' stream handles, partition 0 first.
func (s *Store) Streams() []jetstream.Stream { return s.streams }

// StreamName is partition k's stream.
func (s *Store) StreamName(k int) string { return StreamNameOf(s.n, k) }

// PartitionOf is the partition event e is appended to: its conversation's;
// 0 for a profile, a job and its statuses; a retention marker's, that of
// the event id it names.
func (s *Store) PartitionOf(e Event) int {
	k, _ := partitionOfEvent(s.n, e)
	return k
}

// partitionOfEvent is e's partition among n; ok is false for an event that
// could be in any (none today).
func partitionOfEvent(n int, e Event) (int, bool) {
	if c := ConversationOf(e); c != 0 {
		return Partition(c, n), true
	}
	switch e := e.(type) {
	case *Expired:
		k, _ := Split(n, e.Before)
		return k, true
	case *Profile, *ProfileErased, *Job, *JobStatus:
		return 0, true
	}
	return 0, false
}

// ConversationOf is the conversation e belongs to, 0 for an event of none
// (profiles, jobs, retention markers).
func ConversationOf(e Event) int64 {
	switch e := e.(type) {
	case *Created:
		return e.ConversationID
	case *MemberChanged:
		return e.ConversationID
	case *Message:
		return e.ConversationID
	case *Typing:
		return e.ConversationID
	case *Read:
		return e.ConversationID
	case *Edit:
		return e.ConversationID
	case *Delete:
		return e.ConversationID
	case *React:
		return e.ConversationID
	case *Erased:
		return e.ConversationID
	}
	return 0
}

// filtersIn maps filters of the unpartitioned layout to partition k's
// subjects, leaving out those that name another partition's conversation;
// ok is false when filters were given and none is in k (nothing to read).
func (s *Store) filtersIn(k int, filters []string) (_ []string, ok bool) {
	if filters == nil {
		return nil, true
	}
	out := make([]string, 0, len(filters))
	for _, f := range filters {
		if p, one := partitionOfSubject(s.n, f); one && p != k {
			continue
		}
		out = append(out, subjectIn(s.n, k, f))
	}
	return out, len(out) > 0
}

// onePartition is the one partition filter's events are in (see ExpectLast
// and LastSeqOf); with more than one partition a filter over every
// conversation is refused.
func (s *Store) onePartition(filter string) (int, error) {
	k, ok := partitionOfSubject(s.n, filter)
	if !ok {
		return 0, fmt.Errorf("filter %s spans the %d partitions: name a conversation, or a partition", filter, s.n)
	}
	return k, nil
}

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
	id     uint64
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
// stored on filter (a subject in the event's partition, wildcards allowed)
// is the event with id, 0 for none (LastSeqOf): optimistic concurrency over
// the events filter matches, checked by JetStream as it stores
// (Nats-Expected-Last-Subject-Sequence with
// Nats-Expected-Last-Subject-Sequence-Subject).
func ExpectLast(id uint64, filter string) AppendOption {
	return func(o *appendOptions) { o.expectLast = &expectLast{id, filter} }
}

// Append stores e in its partition and returns its event id (ID). Without
// WithMsgID a random message id is used, so the internal retry after a lost
// acknowledgement never stores the event twice.
func (s *Store) Append(ctx context.Context, e Event, opts ...AppendOption) (uint64, error) {
	p, err := s.publish(e, opts)
	if err != nil {
		return 0, err
	}
	ctx, cancel := bounded(ctx, s.cfg.AppendTimeout)
	defer cancel()
	return s.await(ctx, p)
}

// AppendAsync is Append without the wait: it hands e to the stream, in
// order with the caller's later appends on this store, and returns; done
// gets the event's id, or why it was not stored, once the stream answered
// (or after the store's append timeout), on a goroutine of its own. An
// error returned means e was not handed over and done is not called.
func (s *Store) AppendAsync(e Event, done func(uint64, error), opts ...AppendOption) error {
	p, err := s.publish(e, opts)
	if err != nil {
		return err
	}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), s.cfg.AppendTimeout)
		defer cancel()
		done(s.await(ctx, p))
	}()
	return nil
}

// published is an append handed to the stream, its acknowledgement to come.
type published struct {
	e   Event
	k   int // partition
	o   appendOptions
	paf jetstream.PubAckFuture
}

// publish hands e to its partition's stream.
func (s *Store) publish(e Event, opts []AppendOption) (published, error) {
	var o appendOptions
	for _, opt := range opts {
		opt(&o)
	}
	if o.msgID == "" {
		o.msgID = nuid.Next()
	}
	data, err := Encode(e)
	if err != nil {
		return published{}, fmt.Errorf("encode %s event: %w", e.Kind(), err)
	}
	pubOpts := []jetstream.PublishOpt{jetstream.WithMsgID(o.msgID), jetstream.WithRetryAttempts(3)}
	if o.expectNew {
		pubOpts = append(pubOpts, jetstream.WithExpectLastSequencePerSubject(0))
	}
	k := s.PartitionOf(e)
	if o.expectLast != nil {
		p, seq := Split(s.n, o.expectLast.id)
		if seq != 0 && p != k {
			return published{}, fmt.Errorf("append %s: expected last event %d is in partition %d, the event in %d", e.Subject(), o.expectLast.id, p, k)
		}
		pubOpts = append(pubOpts, jetstream.WithExpectLastSequenceForSubject(seq, subjectIn(s.n, k, o.expectLast.filter)))
	}
	if e.Kind() == KindTyping {
		pubOpts = append(pubOpts, jetstream.WithMsgTTL(s.cfg.TypingTTL))
	}
	// Published asynchronously and awaited (await): the acknowledgement then
	// reaches the caller through the JetStream publisher's own reply
	// subscription, not through the connection's lock, which the connection's
	// flusher holds while it writes. Under load that lock was most of an
	// append's wait.
	paf, err := s.js.PublishMsgAsync(&nats.Msg{Subject: subjectIn(s.n, k, e.Subject()), Data: data}, pubOpts...)
	if err != nil {
		return published{}, classify(e, err, o.expectLast != nil)
	}
	return published{e: e, k: k, o: o, paf: paf}, nil
}

// await waits for p's acknowledgement and returns the event's id.
func (s *Store) await(ctx context.Context, p published) (uint64, error) {
	select {
	case ack := <-p.paf.Ok():
		if p.o.duplicate != nil {
			*p.o.duplicate = ack.Duplicate
		}
		return ID(s.n, p.k, ack.Sequence), nil
	case err := <-p.paf.Err():
		return 0, classify(p.e, err, p.o.expectLast != nil)
	case <-ctx.Done():
		return 0, classify(p.e, ctx.Err(), false)
	}
}

// bounded is ctx, bounded by d if it has no deadline of its own.
func bounded(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, d)
}

// IsWrongLastSeq reports a publish refused for its expected last sequence
// (10071, or 10164 on replicated streams): a compare-and-set that lost.
func IsWrongLastSeq(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) &&
		(apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
			apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}

// classify maps a publish error to ErrExists (ErrStale for an append with
// ExpectLast) or ErrUnavailable, keeping the cause.
func classify(e Event, err error, stale bool) error {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		if IsWrongLastSeq(err) {
			if stale {
				return fmt.Errorf("append %s: %w (%s)", e.Subject(), ErrStale, apiErr.Description)
			}
			return fmt.Errorf("append %s: %w", e.Subject(), ErrExists)
		}
		return fmt.Errorf("append %s: %w", e.Subject(), err)
	}
	return fmt.Errorf("append %s: %w: %v", e.Subject(), ErrUnavailable, err)
}

// Last is every partition's last stream sequence.
func (s *Store) Last(ctx context.Context) (Cursor, error) {
	c := NewCursor(s.n)
	for k, st := range s.streams {
		info, err := st.Info(ctx)
		if err != nil {
			return nil, fmt.Errorf("stream %s info: %w", s.StreamName(k), err)
		}
		c[k] = info.State.LastSeq
	}
	return c, nil
}

// PartitionLast is partition k's last stream sequence, as its stream's
// leader says.
func (s *Store) PartitionLast(ctx context.Context, k int) (uint64, error) {
	if k < 0 || k >= s.n {
		return 0, fmt.Errorf("no partition %d of %d", k, s.n)
	}
	info, err := s.streams[k].Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("stream %s info: %w", s.StreamName(k), err)
	}
	return info.State.LastSeq, nil
}

// LastStored is, in every partition, the sequence of the newest event still
// stored (0 if none). Unlike Last it skips a tail of expired typing events,
// which no reader will ever be delivered.
func (s *Store) LastStored(ctx context.Context) (Cursor, error) {
	c := NewCursor(s.n)
	for k, st := range s.streams {
		msg, err := st.GetLastMsgForSubject(ctx, subjectIn(s.n, k, "inbox.>"))
		switch {
		case errors.Is(err, jetstream.ErrMsgNotFound):
		case err != nil:
			return nil, fmt.Errorf("stream %s last message: %w", s.StreamName(k), err)
		default:
			c[k] = msg.Sequence
		}
	}
	return c, nil
}

// LastSeqOf is the id of the last event stored on filter (a subject,
// wildcards allowed, within one partition: a conversation's, a user's or a
// job's), 0 if there is none.
func (s *Store) LastSeqOf(ctx context.Context, filter string) (uint64, error) {
	k, err := s.onePartition(filter)
	if err != nil {
		return 0, err
	}
	ctx, cancel := bounded(ctx, s.cfg.AppendTimeout)
	defer cancel()
	msg, err := s.streams[k].GetLastMsgForSubject(ctx, subjectIn(s.n, k, filter))
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
		return 0, nil
	case err != nil:
		return 0, fmt.Errorf("last event on %s: %w: %v", filter, ErrUnavailable, err)
	}
	return ID(s.n, k, msg.Sequence), nil
}

// SecureDelete removes the event with id from its stream and overwrites its
// stored bytes (JetStream's secure delete, done by every replica); it
// reports false when no event is stored there (never was, or already
// removed).
func (s *Store) SecureDelete(ctx context.Context, id uint64) (bool, error) {
	k, seq := Split(s.n, id)
	if k >= s.n {
		return false, nil
	}
	ctx, cancel := bounded(ctx, s.cfg.AppendTimeout)
	defer cancel()
	// The request by hand: nats.go's SecureDeleteMsg flattens JetStream's
	// error to text, and "not found" must be told from a failure.
	req, _ := json.Marshal(struct {
		Seq uint64 `json:"seq"`
	}{seq})
	msg, err := s.nc.RequestWithContext(ctx, "$JS.API.STREAM.MSG.DELETE."+s.StreamName(k), req)
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

// Purge removes every event on filter stored below the event id before, in
// its partition (filter is mapped there).
func (s *Store) Purge(ctx context.Context, filter string, before uint64) error {
	k, seq := Split(s.n, before)
	if k >= s.n {
		return fmt.Errorf("purge %s below %d: no partition %d", filter, before, k)
	}
	ctx, cancel := bounded(ctx, s.cfg.AppendTimeout)
	defer cancel()
	if err := s.streams[k].Purge(ctx, jetstream.WithPurgeSubject(subjectIn(s.n, k, filter)), jetstream.WithPurgeSequence(seq)); err != nil {
		return fmt.Errorf("purge %s below seq %d: %w: %v", filter, before, ErrUnavailable, err)
	}
	return nil
}

// FirstSince is the id of the first event on filter stored in partition k
// at or after t; ok is false when there is none.
func (s *Store) FirstSince(ctx context.Context, k int, filter string, t time.Time) (id uint64, ok bool, err error) {
	ctx, cancel := bounded(ctx, s.cfg.AppendTimeout)
	defer cancel()
	cons, err := s.js.OrderedConsumer(ctx, s.StreamName(k), jetstream.OrderedConsumerConfig{
		DeliverPolicy:  jetstream.DeliverByStartTimePolicy,
		OptStartTime:   &t,
		FilterSubjects: []string{subjectIn(s.n, k, filter)},
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
	return ID(s.n, k, meta.Sequence.Stream), true, nil
}

// SubjectOf returns the subject the event with id was stored under, without
// its partition token (inbox.conv.<id>.msg).
func (s *Store) SubjectOf(ctx context.Context, id uint64) (string, error) {
	msg, err := s.getMsg(ctx, id)
	if err != nil {
		return "", err
	}
	_, subject := unpartitioned(msg.Subject)
	return subject, nil
}

// Get returns the event with id (a direct get, served by any replica). An
// event that cannot be decoded is returned with Err set.
func (s *Store) Get(ctx context.Context, id uint64) (Stored, error) {
	msg, err := s.getMsg(ctx, id)
	if err != nil {
		return Stored{}, err
	}
	k, _ := Split(s.n, id)
	return s.decode(k, msg.Subject, msg.Data, msg.Sequence, msg.Time), nil
}

func (s *Store) getMsg(ctx context.Context, id uint64) (*jetstream.RawStreamMsg, error) {
	k, seq := Split(s.n, id)
	if k >= s.n || seq == 0 {
		return nil, fmt.Errorf("seq %d: %w", id, ErrNotFound)
	}
	ctx, cancel := bounded(ctx, s.cfg.AppendTimeout)
	defer cancel()
	msg, err := s.streams[k].GetMsg(ctx, seq)
	if err != nil {
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return nil, fmt.Errorf("seq %d: %w", id, ErrNotFound)
		}
		return nil, fmt.Errorf("get seq %d: %w: %v", id, ErrUnavailable, err)
	}
	return msg, nil
}

// Stored is an event read back from the stream. Err is set (and Event nil)
// when the payload could not be decoded: readers log, count and skip it.
type Stored struct {
	// Seq is the event's id (ID): its stream sequence with one partition,
	// seq<<8 | partition with more. A message's id is its event's.
	Seq uint64
	// Subject is the subject it was stored under, without the partition
	// token: inbox.conv.<id>.msg whatever the partition.
	Subject string
	Time    time.Time
	Event   Event
	Err     error
}

// decode turns what partition k's stream stored at seq into a Stored. An
// event that is not where its conversation (or profile, or job) belongs,
// published there by hand, is refused like an undecodable one: applying it
// would break its conversation's order.
func (s *Store) decode(k int, subject string, data []byte, seq uint64, t time.Time) Stored {
	_, subject = unpartitioned(subject)
	ev, err := Decode(subject, data)
	if err == nil {
		if p, ok := partitionOfEvent(s.n, ev); ok && p != k {
			ev, err = nil, fmt.Errorf("%w: %s belongs to partition %d, stored in %d", ErrBadEvent, subject, p, k)
		}
	}
	return Stored{Seq: ID(s.n, k, seq), Subject: subject, Time: t, Event: ev, Err: err}
}

// DecodeMsg turns a message consumed from partition k's stream into a
// Stored; a message without JetStream metadata (a programming error
// upstream) is returned with Err set.
func (s *Store) DecodeMsg(k int, msg jetstream.Msg) Stored {
	meta, err := msg.Metadata()
	if err != nil {
		return Stored{Subject: msg.Subject(), Err: fmt.Errorf("message metadata: %w", err)}
	}
	return s.decode(k, msg.Subject(), msg.Data(), meta.Sequence.Stream, meta.Timestamp)
}

// Tail delivers every event after the cursor after (NewCursor: from the
// beginning), partition by partition in stream order, until ctx ends or a
// partition cannot be read: one ordered consumer per partition, recreated by
// nats.go after a disconnect from the last delivered sequence, so nothing
// is skipped. filters narrow the subjects (nil = all; see Read). fn is
// never called concurrently: events of one partition reach it in order,
// those of different partitions interleaved.
func (s *Store) Tail(ctx context.Context, after Cursor, filters []string, fn func(Stored)) error {
	if len(after) != s.n {
		return fmt.Errorf("tail from a cursor of %d partitions; the stream has %d", len(after), s.n)
	}
	if s.n == 1 {
		return s.tail(ctx, 0, after[0]+1, filters, fn)
	}
	tctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for k := range s.n {
		fs, ok := s.filtersIn(k, filters)
		if !ok {
			continue
		}
		wg.Go(func() {
			err := s.tail(tctx, k, after[k]+1, fs, func(st Stored) {
				mu.Lock()
				defer mu.Unlock()
				fn(st)
			})
			if err != nil && tctx.Err() == nil {
				cancel(err)
			}
		})
	}
	wg.Wait()
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return context.Cause(tctx)
}

// tail is Tail of partition k, from sequence from; filters are k's subjects.
func (s *Store) tail(ctx context.Context, k int, from uint64, filters []string, fn func(Stored)) error {
	cons, err := s.orderedFrom(ctx, k, from, filters)
	if err != nil {
		return err
	}
	name := s.StreamName(k)
	it, err := cons.Messages(jetstream.PullMaxMessages(4096))
	if err != nil {
		return fmt.Errorf("tail %s from %d: %w", name, from, err)
	}
	stop := context.AfterFunc(ctx, it.Stop)
	defer stop()
	for {
		msg, err := it.Next()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				return ctx.Err()
			}
			return fmt.Errorf("tail %s: %w", name, err)
		}
		st := s.DecodeMsg(k, msg)
		if st.Seq == 0 {
			s.log.Warn("skip message without metadata", "subject", msg.Subject(), "err", st.Err)
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

// Read delivers the events of partition k with stream sequences from <= seq
// <= to in stream order and returns when it has passed to, the stream has
// nothing more, or fn returned an error (returned as is): a bounded read
// (for resume and replay) with no long-lived consumer behind it. filters
// are subjects of the unpartitioned layout (inbox.conv.<id>.msg), mapped to
// partition k; those naming another partition's conversation are left out,
// and when none is left there is nothing to read.
func (s *Store) Read(ctx context.Context, k int, from, to uint64, filters []string, fn func(Stored) error, opts ...ReadOption) error {
	if to < from || k < 0 || k >= s.n {
		return nil
	}
	filters, ok := s.filtersIn(k, filters)
	if !ok {
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
	cons, err := s.orderedFrom(ctx, k, from, filters)
	if err != nil {
		return err
	}
	name := s.StreamName(k)
	info, err := cons.Info(ctx)
	if err != nil {
		return fmt.Errorf("read %s from %d: %w", name, from, err)
	}
	if info.NumPending == 0 {
		return nil
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(o.batch))
	if err != nil {
		return fmt.Errorf("read %s from %d: %w", name, from, err)
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
			return fmt.Errorf("read %s: %w", name, err)
		}
		meta, err := msg.Metadata()
		if err != nil {
			return fmt.Errorf("read %s: message metadata: %w", name, err)
		}
		if meta.Sequence.Stream > to {
			return nil
		}
		if err := fn(s.decode(k, msg.Subject(), msg.Data(), meta.Sequence.Stream, meta.Timestamp)); err != nil {
			return err
		}
		if meta.Sequence.Stream >= to || meta.NumPending == 0 {
			return nil
		}
	}
}

// ReadAll reads every partition from its start up to its last sequence
// now, partition after partition (see Read).
func (s *Store) ReadAll(ctx context.Context, filters []string, fn func(Stored) error) error {
	last, err := s.Last(ctx)
	if err != nil {
		return err
	}
	for k := range last {
		if err := s.Read(ctx, k, 1, last[k], filters, fn); err != nil {
			return err
		}
	}
	return nil
}

func (s *Store) orderedFrom(ctx context.Context, k int, from uint64, filters []string) (jetstream.Consumer, error) {
	if from == 0 {
		from = 1
	}
	cfg := jetstream.OrderedConsumerConfig{
		DeliverPolicy:  jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:    from,
		FilterSubjects: filters,
	}
	cons, err := s.js.OrderedConsumer(ctx, s.StreamName(k), cfg)
	if err != nil {
		return nil, fmt.Errorf("ordered consumer on %s from %d: %w", s.StreamName(k), from, err)
	}
	return cons, nil
}
