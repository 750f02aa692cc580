package eventstore

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Live delivery. With Config.Republish every partition's stream republishes
// each event it stores (JetStream's RePublish) from inbox.> to live.inbox.>:
// the stored subject with "live." in front (live.inbox.conv.12.msg, with
// partitions live.inbox.p3.conv.12.msg). The stream's leader publishes the
// copy once the event is stored, in stream order, with headers naming the
// stream, the stored subject, its sequence and, in Nats-Last-Sequence, the
// sequence of the previous event still stored on that exact subject (0 for
// none; nats-server's stream.go looks it up with LoadLastMsg(subject) before
// storing). A copy is core NATS: no acknowledgement, no redelivery. A reader
// sees a lost copy as an event whose previous event on its subject it never
// got (LiveEvent.Last).
//
// A Live is a NATS connection of its own that subscribes, into one channel,
// to the firehose every node needs (conversations' creations and membership
// changes, profiles, jobs, retention markers: few events) and, per watched
// conversation, to all of its events; and to JetStream's stream-leader
// advisories, after which copies may have been lost. One server publishes
// each partition's copies, so a Live receives them in that partition's stream
// order whichever subscriptions they match. It never reconnects: when its
// connection closes, or a subscription had to drop a copy because the channel
// was full, Broken is closed, and whoever owns it opens another and reads what
// it missed from the stream.

// liveRoot prefixes the stored subject of a republished event.
const liveRoot = "live."

// republish is the streams' RePublish: every stored event, to live.<subject>.
func republish() *jetstream.RePublish {
	return &jetstream.RePublish{Source: "inbox.>", Destination: liveRoot + "inbox.>"}
}

// leaderAdvisory is JetStream's advisory that a stream elected a leader.
const leaderAdvisory = "$JS.EVENT.ADVISORY.STREAM.LEADER_ELECTED."

// Live copies' headers (nats-server stream.go).
const (
	hdrStream  = "Nats-Stream"
	hdrSubject = "Nats-Subject"
	hdrSeq     = "Nats-Sequence"
	hdrTime    = "Nats-Time-Stamp"
	hdrLastSeq = "Nats-Last-Sequence"
)

// ErrLiveClosed: the live connection closed (lost, or closed by its owner).
var ErrLiveClosed = errors.New("live connection closed")

// FirehoseFilters are the subjects, of the unpartitioned layout, whose
// events every node's live feed receives whatever its sockets: conversations'
// creations and membership changes, profiles, jobs and retention markers.
func FirehoseFilters() []string {
	return []string{AllConvs(KindCreated), AllConvs(KindMember), "inbox.user.*.*", "inbox.job.*.*", "inbox.sys.*"}
}

// ConvFilters are the subjects of every event of conversation conv, of the
// unpartitioned layout (see Read).
func ConvFilters(conv int64) []string {
	id := strconv.FormatInt(conv, 10)
	return []string{"inbox.conv." + id + ".*", "inbox.conv." + id + ".msg.*.*"}
}

// Firehose reports whether events on subject (without its partition token)
// are among FirehoseFilters.
func Firehose(subject string) bool {
	switch {
	case strings.HasPrefix(subject, "inbox.conv."):
		return strings.HasSuffix(subject, "."+string(KindCreated)) || strings.HasSuffix(subject, "."+string(KindMember))
	case strings.HasPrefix(subject, "inbox.user."), strings.HasPrefix(subject, "inbox.job."), strings.HasPrefix(subject, "inbox.sys."):
		return true
	}
	return false
}

// liveFirehose are the live subjects of FirehoseFilters in every partition.
func (s *Store) liveFirehose() []string {
	var out []string
	for k := range s.n {
		fs, _ := s.filtersIn(k, FirehoseFilters())
		for _, f := range fs {
			out = append(out, liveRoot+f)
		}
	}
	return out
}

// liveConv is the live subject of every event of conversation conv.
func (s *Store) liveConv(conv int64) string {
	return liveRoot + subjectIn(s.n, Partition(conv, s.n), "inbox.conv."+strconv.FormatInt(conv, 10)+".>")
}

// LiveEvent is one message a Live received: a republished event, or a
// partition's new stream leader.
type LiveEvent struct {
	// Stored is the event (Seq 0 for an advisory); Err set if it could not
	// be decoded.
	Stored
	// Last is the id of the previous event still stored on the same subject
	// when this one was stored (0: none). The reader lost a copy if it has
	// not passed Last in the partition.
	Last uint64
	// Partition is the event's partition, or the one that elected a leader.
	Partition int
	// Elected: the partition's stream elected a leader. Copies stored around
	// the change may never have been published; read the stream after the
	// last event received.
	Elected bool
}

// Live is a subscriber to the streams' live copies. Watch, Unwatch, Sync,
// Decode and Close are for its one owner's goroutine; Events and Broken may
// be read anywhere.
type Live struct {
	s      *Store
	nc     *nats.Conn
	ch     chan *nats.Msg
	fire   []*nats.Subscription
	convs  map[int64]*nats.Subscription
	broken chan struct{}
	once   sync.Once
	mu     sync.Mutex
	err    error
}

// DefaultLiveBuffer is the copies a Live holds before dropping (and breaking).
const DefaultLiveBuffer = 1 << 16

// OpenLive subscribes nc to the firehose of every partition and to the
// streams' leader advisories; nc becomes the Live's, closed by Close. nc
// should not reconnect by itself (nats.NoReconnect): copies published while
// it was away are lost, and only a new Live after Broken says from where.
// buffer (default DefaultLiveBuffer) is how many copies wait in Events.
func (s *Store) OpenLive(nc *nats.Conn, buffer int) (*Live, error) {
	if buffer <= 0 {
		buffer = DefaultLiveBuffer
	}
	l := &Live{s: s, nc: nc, ch: make(chan *nats.Msg, buffer), convs: make(map[int64]*nats.Subscription), broken: make(chan struct{})}
	nc.SetClosedHandler(func(*nats.Conn) { l.breakWith(ErrLiveClosed) })
	nc.SetErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
		switch {
		case errors.Is(err, nats.ErrSlowConsumer):
			l.breakWith(fmt.Errorf("live copies dropped: %w", err))
			return
		case errors.Is(err, nats.ErrPermissionViolation):
			l.breakWith(fmt.Errorf("live copies: %w (the NATS user needs to subscribe to %sinbox.> and %s<stream>)", err, liveRoot, leaderAdvisory))
			return
		}
		s.log.Warn("live connection error", "err", err)
	})
	if nc.IsClosed() {
		l.breakWith(ErrLiveClosed)
	}
	subjects := s.liveFirehose()
	for k := range s.n {
		subjects = append(subjects, leaderAdvisory+s.StreamName(k))
	}
	for _, subj := range subjects {
		sub, err := nc.ChanSubscribe(subj, l.ch)
		if err != nil {
			l.Close()
			return nil, fmt.Errorf("subscribe to %s: %w", subj, err)
		}
		l.fire = append(l.fire, sub)
	}
	return l, nil
}

func (l *Live) breakWith(err error) {
	l.once.Do(func() {
		l.mu.Lock()
		l.err = err
		l.mu.Unlock()
		close(l.broken)
	})
}

// Events are the copies received, each partition's in stream order.
func (l *Live) Events() <-chan *nats.Msg { return l.ch }

// Broken is closed once the Live may have lost a copy: its connection
// closed, or a copy was dropped. What is still in Events came before.
func (l *Live) Broken() <-chan struct{} { return l.broken }

// Err says why Broken was closed (nil while it is not).
func (l *Live) Err() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err
}

// Watch subscribes to every event of conversation conv (a no-op if it is
// watched already). It is active once Sync returns.
func (l *Live) Watch(conv int64) error {
	if _, ok := l.convs[conv]; ok {
		return nil
	}
	sub, err := l.nc.ChanSubscribe(l.s.liveConv(conv), l.ch)
	if err != nil {
		return fmt.Errorf("watch conversation %d: %w", conv, err)
	}
	l.convs[conv] = sub
	return nil
}

// Unwatch ends Watch; copies already received stay in Events.
func (l *Live) Unwatch(conv int64) {
	if sub, ok := l.convs[conv]; ok {
		sub.Unsubscribe()
		delete(l.convs, conv)
	}
}

// Watched is how many conversations are watched.
func (l *Live) Watched() int { return len(l.convs) }

// Sync returns once the server has every subscription made so far: the
// copies of events stored after that are received. (The server tells the
// other servers of a cluster at once, on the connections a stream leader's
// copies come through; a read of the stream made after Sync, going the same
// way, sees every event stored before the copies started.)
func (l *Live) Sync(ctx context.Context) error {
	ctx, cancel := bounded(ctx, l.s.cfg.AppendTimeout)
	defer cancel()
	if err := l.nc.FlushWithContext(ctx); err != nil {
		return fmt.Errorf("sync live subscriptions: %w", err)
	}
	// A refused subscription is answered before the flush: the connection
	// records it then (the error handler hears of it later).
	if err := l.nc.LastError(); errors.Is(err, nats.ErrPermissionViolation) {
		return fmt.Errorf("subscribe to live copies: %w (the NATS user needs to subscribe to %sinbox.> and %s<stream>)", err, liveRoot, leaderAdvisory)
	}
	return nil
}

// Close closes the connection; Broken is closed.
func (l *Live) Close() {
	l.nc.Close()
	l.breakWith(ErrLiveClosed)
}

// Decode reads a received copy.
func (l *Live) Decode(msg *nats.Msg) LiveEvent {
	s := l.s
	if name, ok := strings.CutPrefix(msg.Subject, leaderAdvisory); ok {
		k, ok := s.partitionOfStream(name)
		if !ok {
			return LiveEvent{Stored: Stored{Subject: msg.Subject, Err: fmt.Errorf("%w: advisory of stream %q", ErrBadEvent, name)}}
		}
		return LiveEvent{Partition: k, Elected: true}
	}
	h := msg.Header
	k, ok := s.partitionOfStream(h.Get(hdrStream))
	seq, err := strconv.ParseUint(h.Get(hdrSeq), 10, 64)
	if !ok || err != nil || seq == 0 {
		return LiveEvent{Stored: Stored{Subject: msg.Subject, Err: fmt.Errorf("%w: live copy on %s without its stream and sequence", ErrBadEvent, msg.Subject)}}
	}
	last, _ := strconv.ParseUint(h.Get(hdrLastSeq), 10, 64)
	at, _ := time.Parse(time.RFC3339Nano, h.Get(hdrTime))
	ev := LiveEvent{Stored: s.decode(k, h.Get(hdrSubject), msg.Data, seq, at), Partition: k}
	if last != 0 {
		ev.Last = ID(s.n, k, last)
	}
	return ev
}

// partitionOfStream is the partition whose stream is name.
func (s *Store) partitionOfStream(name string) (int, bool) {
	if s.n == 1 {
		return 0, name == StreamName
	}
	tok, ok := strings.CutPrefix(name, StreamName+"-")
	if !ok {
		return 0, false
	}
	k, err := strconv.Atoi(tok)
	if err != nil || k < 0 || k >= s.n || strconv.Itoa(k) != tok {
		return 0, false
	}
	return k, true
}
