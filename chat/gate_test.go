package chat_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"inbox/admission"
	"inbox/chat"
	"inbox/internal/testnats"
)

// TestShedAtTheDoor: while the gate sheds, a send (keyed or not) and a read
// receipt are refused with unavailable and a retry hint and store nothing,
// and typing is dropped silently; typing goes first, at half the bound.
func TestShedAtTheDoor(t *testing.T) {
	st := testnats.Store(t, testnats.Server(t))
	dir := chat.NewDirectory()
	runFeed(t, st, dir)
	gate := admission.New(admission.Config{MaxQueuedFrames: 100})
	svc := chat.New(chat.Limits{}, chat.Deps{Store: st, Locator: st, Directory: dir, Gate: gate})
	ctx := context.Background()
	if _, _, err := svc.CreateConversation(ctx, 1, members("a", "b")); err != nil {
		t.Fatal(err)
	}
	first, err := svc.Send(ctx, chat.Sender{UserID: "a"}, chat.SendRequest{ConversationID: 1, Text: "before"})
	if err != nil {
		t.Fatal(err)
	}
	last := func() uint64 {
		t.Helper()
		c, err := st.Last(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return c[0]
	}

	// Over half the bound: typing is shed, messages still go.
	gate.Queued(60)
	if ev, err := svc.AdmitTyping("a", 1, true); ev != nil || err != nil {
		t.Fatalf("typing while busy: %v, %v; want dropped", ev, err)
	}
	if _, err := svc.Send(ctx, chat.Sender{UserID: "a"}, chat.SendRequest{ConversationID: 1, Text: "still"}); err != nil {
		t.Fatalf("send at 60%% of the bound: %v", err)
	}

	// Over the bound: messages and receipts are refused, nothing is stored.
	gate.Queued(60)
	before := last()
	for name, call := range map[string]func() error{
		"send": func() error {
			_, err := svc.Send(ctx, chat.Sender{UserID: "a"}, chat.SendRequest{ConversationID: 1, Text: "hi"})
			return err
		},
		"keyed send": func() error {
			_, err := svc.Send(ctx, chat.Sender{UserID: "a"}, chat.SendRequest{ConversationID: 1, Text: "hi", ClientMsgID: "k-1"})
			return err
		},
		"read": func() error {
			_, err := svc.Read(ctx, "b", 1, int64(first.ID), nil)
			return err
		},
	} {
		err := call()
		var ce *chat.Error
		if !errors.As(err, &ce) || ce.Code != chat.CodeUnavailable || ce.RetryAfter <= 0 || !chat.IsShed(err) {
			t.Fatalf("%s while shedding: %v, want unavailable with a retry hint", name, err)
		}
	}
	if got := last(); got != before {
		t.Fatalf("the stream moved from %d to %d while shedding", before, got)
	}
	// A bad request is still told what is wrong, not that the node is busy.
	if _, err := svc.Send(ctx, chat.Sender{UserID: "a"}, chat.SendRequest{ConversationID: 1}); chat.CodeOf(err) != chat.CodeBadRequest {
		t.Fatalf("empty send while shedding: %v, want bad_request", err)
	}

	// Load gone: everything goes again, typing included.
	gate.Queued(-120)
	if _, err := svc.Send(ctx, chat.Sender{UserID: "a"}, chat.SendRequest{ConversationID: 1, Text: "hi", ClientMsgID: "k-1"}); err != nil {
		t.Fatalf("send after the load: %v", err)
	}
	if ev, err := svc.AdmitTyping("b", 1, true); ev == nil || err != nil {
		t.Fatalf("typing after the load: %v, %v", ev, err)
	}
	got := gate.Status().Shed
	if got["typing"]["socket_queue"] != 1 || got["message"]["socket_queue"] != 3 {
		t.Fatalf("shed counts = %v", got)
	}
}

// TestShedWhatWaited: a send that waited in the node (chat.Received) past the
// append latency bound is refused before it is appended; one that arrived
// just now goes through.
func TestShedWhatWaited(t *testing.T) {
	st := testnats.Store(t, testnats.Server(t))
	dir := chat.NewDirectory()
	runFeed(t, st, dir)
	gate := admission.New(admission.Config{MaxAppendLatency: 500 * time.Millisecond})
	svc := chat.New(chat.Limits{}, chat.Deps{Store: st, Locator: st, Directory: dir, Gate: gate})
	ctx := context.Background()
	if _, _, err := svc.CreateConversation(ctx, 1, members("a", "b")); err != nil {
		t.Fatal(err)
	}
	late := chat.Received(ctx, time.Now().Add(-time.Second))
	_, err := svc.Send(late, chat.Sender{UserID: "a"}, chat.SendRequest{ConversationID: 1, Text: "late", ClientMsgID: "w-1"})
	if chat.CodeOf(err) != chat.CodeUnavailable || !chat.IsShed(err) {
		t.Fatalf("a send that waited 1 s: %v, want unavailable", err)
	}
	c, err := st.Last(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if stored := c[0]; stored != 1 { // the conversation's creation only
		t.Fatalf("the stream holds %d events, want 1: the late send was stored", stored)
	}
}
