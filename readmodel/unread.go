package readmodel

import (
	"encoding/json"
	"fmt"
	"log/slog"

	"github.com/nats-io/nats.go"

	"inbox/eventstore"
	"inbox/projections"
)

// PublishUnread publishes the unread counts a batch changed, one message
// per conversation on inbox.unread.<conversation> (core NATS: an edge that
// misses one shows the count of the next change, and lists are exact). The
// owner of the partition does it, in the batch's order.
func PublishUnread(nc *nats.Conn, changes []projections.UnreadChange) error {
	if len(changes) == 0 {
		return nil
	}
	byConv := make(map[int64]*unreadBatch)
	var order []int64
	for _, c := range changes {
		b := byConv[c.ConversationID]
		if b == nil {
			b = &unreadBatch{ConversationID: c.ConversationID}
			byConv[c.ConversationID] = b
			order = append(order, c.ConversationID)
		}
		b.Changes = append(b.Changes, unreadCount{UserID: c.UserID, Unread: c.Unread, Seq: c.Seq})
	}
	for _, conv := range order {
		body, err := json.Marshal(byConv[conv])
		if err != nil {
			return fmt.Errorf("encode unread counts of conversation %d: %w", conv, err)
		}
		if err := nc.Publish(eventstore.UnreadSubject(conv), body); err != nil {
			return fmt.Errorf("publish unread counts of conversation %d: %w", conv, err)
		}
	}
	return nil
}

// FollowUnread calls fn with every unread count the projectors publish, on
// the subscription's goroutine, one at a time, until the returned
// subscription is unsubscribed. fn must not block.
func FollowUnread(nc *nats.Conn, log *slog.Logger, fn func(projections.UnreadChange)) (*nats.Subscription, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	sub, err := nc.Subscribe(eventstore.AllUnread, func(m *nats.Msg) {
		var b unreadBatch
		if err := json.Unmarshal(m.Data, &b); err != nil {
			log.Warn("ignored malformed unread counts", "subject", m.Subject, "err", err)
			return
		}
		for _, c := range b.Changes {
			fn(projections.UnreadChange{ConversationID: b.ConversationID, UserID: c.UserID, Unread: c.Unread, Seq: c.Seq})
		}
	})
	if err != nil {
		return nil, fmt.Errorf("subscribe to %s: %w", eventstore.AllUnread, err)
	}
	// Pending limits as for the live feed: a burst of batches must not be
	// dropped as a slow consumer.
	if err := sub.SetPendingLimits(1<<20, 256<<20); err != nil {
		sub.Unsubscribe()
		return nil, fmt.Errorf("subscribe to %s: %w", eventstore.AllUnread, err)
	}
	return sub, nil
}
