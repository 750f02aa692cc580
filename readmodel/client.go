package readmodel

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"inbox/chat"
	"inbox/eventstore"
	"inbox/projections"
)

// Defaults for zero ClientConfig fields.
const (
	DefaultTimeout = 5 * time.Second
	// DefaultOwnerWait covers a takeover: a dead owner's lease expires
	// (lease.DefaultTTL) and another projector takes the partition.
	DefaultOwnerWait = 10 * time.Second
)

// ClientConfig configures a Client.
type ClientConfig struct {
	Partitions int // the stream's
	// Timeout bounds a request whose context has no deadline (default
	// DefaultTimeout).
	Timeout time.Duration
	// OwnerWait is how long a request to a partition nobody answers for is
	// tried again (default DefaultOwnerWait), within its context.
	OwnerWait time.Duration
}

// Client asks the projectors: the read model of an edge. Its methods are
// those of a local *projections.Projector that chat, httpapi and erasure
// call.
type Client struct {
	cfg ClientConfig
	nc  *nats.Conn
	log *slog.Logger
	// floor is, per partition, the highest sequence a WaitFor saw applied:
	// every later request asks for it (Min), so reads never go back.
	floor []atomic.Uint64
	// horizon is, per partition, the last Covers horizon (unix nanos): a
	// Covers of an earlier time needs no request.
	horizon []atomic.Int64
}

// NewClient returns a client of the read-model service on nc.
func NewClient(nc *nats.Conn, cfg ClientConfig, log *slog.Logger) *Client {
	cfg.Partitions = max(cfg.Partitions, 1)
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.OwnerWait <= 0 {
		cfg.OwnerWait = DefaultOwnerWait
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Client{
		cfg: cfg, nc: nc, log: log.With("component", "readmodel-client"),
		floor: make([]atomic.Uint64, cfg.Partitions), horizon: make([]atomic.Int64, cfg.Partitions),
	}
}

// unavailable is the error of a partition nobody answers for.
func unavailable(k int, err error) error {
	return &chat.Error{Code: chat.CodeUnavailable, Msg: fmt.Sprintf("no projector answers for partition %d of the read model; retry shortly", k), Err: err}
}

// call asks partition k's owner op with req and decodes its answer. A
// partition without an owner (no responders, or one that let go) is asked
// again, backing off, for up to OwnerWait.
func (c *Client) call(ctx context.Context, k int, op string, req request) (response, error) {
	var resp response
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.cfg.Timeout)
		defer cancel()
	}
	req.Min = max(req.Min, c.floor[k].Load())
	if req.Min > 0 && req.WaitMS == 0 {
		req.WaitMS = waitMS(ctx)
	}
	body, err := json.Marshal(&req)
	if err != nil {
		return resp, fmt.Errorf("encode %s request: %w", op, err)
	}
	subject := eventstore.ReadModelSubject(k, op)
	giveUp := time.Now().Add(c.cfg.OwnerWait)
	backoff := 20 * time.Millisecond
	for {
		msg, err := c.nc.RequestMsgWithContext(ctx, &nats.Msg{Subject: subject, Data: body})
		code := ""
		if err == nil {
			code = msg.Header.Get(micro.ErrorCodeHeader)
		}
		switch {
		case err == nil && code == "":
			if err := json.Unmarshal(msg.Data, &resp); err != nil {
				return resp, fmt.Errorf("decode %s answer of partition %d: %w", op, k, err)
			}
			if msg.Header.Get(StaleHeader) != "" {
				c.log.Warn("read model answered without the position asked", "partition", k, "op", op, "min", req.Min, "applied", resp.Applied)
			}
			return resp, nil
		case err == nil && code == codeTimeout:
			return resp, fmt.Errorf("partition %d %s: %s: %w", k, op, msg.Header.Get(micro.ErrorHeader), context.DeadlineExceeded)
		case err == nil && code != codeUnavailable:
			return resp, fmt.Errorf("partition %d %s: the projector answered %s %s", k, op, code, msg.Header.Get(micro.ErrorHeader))
		case err != nil && !errors.Is(err, nats.ErrNoResponders):
			if ctx.Err() != nil {
				return resp, unavailable(k, fmt.Errorf("%s: %w", op, err))
			}
			return resp, fmt.Errorf("partition %d %s: %w", k, op, err)
		}
		// Nobody answers for k (yet): a takeover, or no projector keeps it.
		if time.Now().After(giveUp) {
			return resp, unavailable(k, fmt.Errorf("%s: %w", op, nats.ErrNoResponders))
		}
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return resp, unavailable(k, fmt.Errorf("%s: %w", op, nats.ErrNoResponders))
		}
		backoff = min(2*backoff, 500*time.Millisecond)
	}
}

// waitMS is how long ctx leaves, in milliseconds (at least 1).
func waitMS(ctx context.Context) int64 {
	if d, ok := ctx.Deadline(); ok {
		return max(1, time.Until(d).Milliseconds())
	}
	return DefaultTimeout.Milliseconds()
}

// all calls op on every partition at once and gives each answer to fn, in
// partition order.
func (c *Client) all(ctx context.Context, op string, req request, fn func(k int, resp response)) error {
	resps := make([]response, c.cfg.Partitions)
	errs := make([]error, c.cfg.Partitions)
	var wg sync.WaitGroup
	for k := range c.cfg.Partitions {
		wg.Go(func() { resps[k], errs[k] = c.call(ctx, k, op, req) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	for k := range resps {
		fn(k, resps[k])
	}
	return nil
}

// partitionOf is the partition of event id; ok is false for a partition
// the stream does not have.
func (c *Client) partitionOf(id uint64) (k int, seq uint64, ok bool) {
	k, seq = eventstore.Split(c.cfg.Partitions, id)
	return k, seq, k < c.cfg.Partitions
}

// Conversations gathers userID's conversations from every partition,
// merged newest activity first, as one read model lists them.
func (c *Client) Conversations(ctx context.Context, userID string) ([]projections.Conversation, error) {
	lists := make([][]projections.Conversation, 0, c.cfg.Partitions)
	err := c.all(ctx, opConversations, request{UserID: userID}, func(_ int, resp response) {
		l := make([]projections.Conversation, len(resp.Conversations))
		for i, wc := range resp.Conversations {
			l[i] = wc.Conversation
			l[i].Activity, l[i].ActivityAt = wc.Activity, wc.ActivityAt
		}
		lists = append(lists, l)
	})
	if err != nil {
		return nil, fmt.Errorf("conversations of %s: %w", userID, err)
	}
	if len(lists) == 1 {
		return lists[0], nil // one read model's order (by id with one partition)
	}
	return projections.MergeConversations(lists...), nil
}

// Messages asks the partition of convID for its history.
func (c *Client) Messages(ctx context.Context, convID, before int64, limit int) ([]projections.Message, error) {
	k := eventstore.Partition(convID, c.cfg.Partitions)
	resp, err := c.call(ctx, k, opMessages, request{ConversationID: convID, Before: before, Limit: limit})
	if err != nil {
		return nil, fmt.Errorf("messages of conversation %d: %w", convID, err)
	}
	if resp.Messages == nil {
		resp.Messages = []projections.Message{}
	}
	for i := range resp.Messages {
		if resp.Messages[i].Reactions == nil {
			resp.Messages[i].Reactions = map[string][]string{}
		}
	}
	return resp.Messages, nil
}

// KeyRecord asks the partition of k's conversation.
func (c *Client) KeyRecord(ctx context.Context, k eventstore.Key) (eventstore.KeyRecord, bool, error) {
	p := eventstore.Partition(k.ConversationID, c.cfg.Partitions)
	resp, err := c.call(ctx, p, opKey, request{Key: &k})
	if err != nil || !resp.Found || resp.Record == nil {
		return eventstore.KeyRecord{}, false, err
	}
	return *resp.Record, true, nil
}

// MessageConversations asks each partition of ids for the conversations of
// its messages; the cursor holds what each partition asked had applied (0
// in the others: none of ids is there).
func (c *Client) MessageConversations(ctx context.Context, ids []int64) (eventstore.Cursor, map[int64]int64, error) {
	applied := eventstore.NewCursor(c.cfg.Partitions)
	convs := make(map[int64]int64, len(ids))
	byPart := make(map[int][]int64)
	for _, id := range ids {
		if k, _, ok := c.partitionOf(uint64(id)); ok {
			byPart[k] = append(byPart[k], id)
		}
	}
	for k, part := range byPart {
		resp, err := c.call(ctx, k, opMsgConvs, request{IDs: part})
		if err != nil {
			return nil, nil, fmt.Errorf("look up messages: %w", err)
		}
		applied[k] = resp.Applied
		for id, conv := range resp.Convs {
			convs[id] = conv
		}
	}
	return applied, convs, nil
}

// MessageState asks the partition of id.
func (c *Client) MessageState(ctx context.Context, id int64, user string) (eventstore.MessageState, bool, eventstore.Cursor, error) {
	applied := eventstore.NewCursor(c.cfg.Partitions)
	k, _, ok := c.partitionOf(uint64(id))
	if !ok {
		return eventstore.MessageState{}, false, applied, nil
	}
	resp, err := c.call(ctx, k, opMsgState, request{ID: id, UserID: user})
	if err != nil {
		return eventstore.MessageState{}, false, nil, fmt.Errorf("message %d: %w", id, err)
	}
	applied[k] = resp.Applied
	if !resp.Found || resp.State == nil {
		return eventstore.MessageState{}, false, applied, nil
	}
	return *resp.State, true, applied, nil
}

// MessagesBy gathers sender's messages from every partition, in id order.
func (c *Client) MessagesBy(ctx context.Context, sender string) ([]eventstore.MessageState, eventstore.Cursor, error) {
	applied := eventstore.NewCursor(c.cfg.Partitions)
	var out []eventstore.MessageState
	err := c.all(ctx, opMsgsBy, request{UserID: sender}, func(k int, resp response) {
		applied[k] = resp.Applied
		out = append(out, resp.States...)
	})
	if err != nil {
		return nil, nil, fmt.Errorf("messages of %s: %w", sender, err)
	}
	slices.SortFunc(out, func(a, b eventstore.MessageState) int { return cmp.Compare(a.ID, b.ID) })
	return out, applied, nil
}

// WaitFor waits until the owner of id's partition has applied it, or ctx
// ends; every later request to the partition asks for at least it.
func (c *Client) WaitFor(ctx context.Context, id uint64) error {
	k, seq, ok := c.partitionOf(id)
	if !ok {
		return fmt.Errorf("wait for event %d: no partition %d", id, k)
	}
	if c.floor[k].Load() >= seq {
		return nil
	}
	resp, err := c.call(ctx, k, opWait, request{Seq: seq, WaitMS: waitMS(ctx)})
	if err != nil {
		return fmt.Errorf("wait for event %d: %w", id, err)
	}
	c.raise(k, max(seq, resp.Applied))
	return nil
}

// raise moves partition k's floor up to seq.
func (c *Client) raise(k int, seq uint64) {
	for {
		old := c.floor[k].Load()
		if old >= seq || c.floor[k].CompareAndSwap(old, seq) {
			return
		}
	}
}

// Covers reports whether every partition's read model holds every event
// stored before t: a partition whose last answer's horizon is past t is not
// asked again.
func (c *Client) Covers(ctx context.Context, t time.Time) (bool, error) {
	var ask []int
	for k := range c.cfg.Partitions {
		if c.horizon[k].Load() < t.UnixNano() {
			ask = append(ask, k)
		}
	}
	covered := make([]bool, len(ask))
	errs := make([]error, len(ask))
	var wg sync.WaitGroup
	for i, k := range ask {
		wg.Go(func() {
			resp, err := c.call(ctx, k, opCovers, request{Time: t})
			if err != nil {
				errs[i] = err
				return
			}
			covered[i] = resp.Covered
			if h := resp.Horizon.UnixNano(); resp.Covered && h > c.horizon[k].Load() {
				c.horizon[k].Store(h) // a stale store only costs a request
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return false, err
	}
	return !slices.Contains(covered, false), nil
}

// Applied is what each partition's owner has applied.
func (c *Client) Applied(ctx context.Context) (eventstore.Cursor, error) {
	applied := eventstore.NewCursor(c.cfg.Partitions)
	err := c.all(ctx, opApplied, request{}, func(k int, resp response) { applied[k] = resp.Applied })
	if err != nil {
		return nil, fmt.Errorf("applied sequences: %w", err)
	}
	return applied, nil
}

// Snapshot gathers the membership snapshot of every partition: an edge
// seeds its directory with it. Each partition's is read in one transaction
// by its owner and comes in chunks; Applied holds each one's position.
func (c *Client) Snapshot(ctx context.Context) (*projections.Snapshot, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.cfg.OwnerWait+c.cfg.Timeout)
		defer cancel()
	}
	snap := &projections.Snapshot{
		Applied:       eventstore.NewCursor(c.cfg.Partitions),
		Conversations: make(map[int64][]projections.Member),
		Profiles:      make(map[string]projections.Profile),
		Jobs:          make(map[int64][]string),
	}
	for k := range c.cfg.Partitions {
		if err := c.snapshotOf(ctx, k, snap); err != nil {
			return nil, fmt.Errorf("snapshot: %w", err)
		}
	}
	return snap, nil
}

// snapshotOf reads partition k's snapshot into snap, asking again while
// nobody answers for k (up to OwnerWait).
func (c *Client) snapshotOf(ctx context.Context, k int, snap *projections.Snapshot) error {
	body, err := json.Marshal(&request{Snapshot: &snapshotRequest{ChunkBytes: DefaultChunkBytes}})
	if err != nil {
		return err
	}
	giveUp := time.Now().Add(c.cfg.OwnerWait)
	for {
		err := c.readSnapshot(ctx, k, body, snap)
		if !errors.Is(err, nats.ErrNoResponders) {
			return err
		}
		if time.Now().After(giveUp) {
			return unavailable(k, fmt.Errorf("snapshot: %w", err))
		}
		select {
		case <-time.After(200 * time.Millisecond):
		case <-ctx.Done():
			return unavailable(k, fmt.Errorf("snapshot: %w", err))
		}
	}
}

func (c *Client) readSnapshot(ctx context.Context, k int, body []byte, snap *projections.Snapshot) error {
	inbox := c.nc.NewRespInbox()
	sub, err := c.nc.SubscribeSync(inbox)
	if err != nil {
		return fmt.Errorf("partition %d: subscribe: %w", k, err)
	}
	defer sub.Unsubscribe()
	if err := c.nc.PublishMsg(&nats.Msg{Subject: eventstore.ReadModelSubject(k, opSnapshot), Reply: inbox, Data: body}); err != nil {
		return fmt.Errorf("partition %d: %w", k, err)
	}
	for {
		msg, err := sub.NextMsgWithContext(ctx)
		if err != nil {
			return unavailable(k, fmt.Errorf("snapshot: %w", err))
		}
		if len(msg.Data) == 0 && msg.Header.Get("Status") == "503" {
			return nats.ErrNoResponders
		}
		if code := msg.Header.Get(micro.ErrorCodeHeader); code != "" {
			if code == codeUnavailable {
				return nats.ErrNoResponders
			}
			return fmt.Errorf("partition %d: the projector answered %s %s", k, code, msg.Header.Get(micro.ErrorHeader))
		}
		var chunk snapshotChunk
		if err := json.Unmarshal(msg.Data, &chunk); err != nil {
			return fmt.Errorf("partition %d: decode: %w", k, err)
		}
		snap.Applied[k] = chunk.Applied
		for id, ms := range chunk.Conversations {
			snap.Conversations[id] = ms
		}
		for _, p := range chunk.Profiles {
			snap.Profiles[p.UserID] = p
		}
		for id, ms := range chunk.Jobs {
			snap.Jobs[id] = ms
		}
		if chunk.Done {
			return nil
		}
	}
}
