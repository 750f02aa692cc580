package chat_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"inbox/chat"
	"inbox/eventstore"
)

// code is err's client-facing code, "" for nil.
func code(err error) string {
	if err == nil {
		return ""
	}
	return chat.CodeOf(err)
}

// TestLifecycleRules: who may edit, delete and react to what, and when;
// every refusal has its code and stores nothing.
func TestLifecycleRules(t *testing.T) {
	k := newKeyed(t, time.Minute, nil)
	ctx := context.Background()
	svc := k.svc
	for id, ms := range map[int64][]string{1: {"alice", "bob"}, 2: {"carol", "dave"}} {
		if _, _, err := svc.CreateConversation(ctx, id, members(ms...)); err != nil {
			t.Fatal(err)
		}
	}
	send := func(conv int64, user, text string) int64 {
		t.Helper()
		sent, err := svc.Send(ctx, chat.Sender{UserID: user}, chat.SendRequest{ConversationID: conv, Text: text})
		if err != nil {
			t.Fatal(err)
		}
		return int64(sent.ID)
	}
	m := send(1, "alice", "hello")
	other := send(2, "carol", "elsewhere")
	now := time.Now()
	svc.SetClock(func() time.Time { return now }, nil)
	alice, bob, carol := chat.Actor{UserID: "alice"}, chat.Actor{UserID: "bob"}, chat.Actor{UserID: "carol"}
	edit := func(by chat.Actor, conv, id int64, text string) error {
		_, err := svc.Edit(ctx, by, chat.EditRequest{ConversationID: conv, MessageID: id, Text: text})
		return err
	}
	del := func(by chat.Actor, conv, id int64) error {
		_, err := svc.Delete(ctx, by, chat.DeleteRequest{ConversationID: conv, MessageID: id})
		return err
	}
	react := func(user string, id int64, emoji string, on bool) error {
		_, err := svc.React(ctx, user, chat.ReactRequest{ConversationID: 1, MessageID: id, Emoji: emoji, On: on})
		return err
	}
	before := k.last()
	for _, tc := range []struct {
		name string
		err  error
		code string
	}{
		{"another member edits", edit(bob, 1, m, "bob was here"), chat.CodeForbidden},
		{"another member deletes", del(bob, 1, m), chat.CodeForbidden},
		{"a stranger edits", edit(carol, 1, m, "carol was here"), chat.CodeForbidden},
		{"a stranger reacts", func() error {
			_, err := svc.React(ctx, "carol", chat.ReactRequest{ConversationID: 1, MessageID: m, Emoji: "👍", On: true})
			return err
		}(), chat.CodeForbidden},
		{"the sender names another conversation", edit(alice, 2, m, "x"), chat.CodeForbidden},
		{"a message of another conversation", edit(alice, 1, other, "x"), chat.CodeNotFound},
		{"no such message", edit(alice, 1, 1<<40, "x"), chat.CodeNotFound},
		{"no such conversation", edit(alice, 99, m, "x"), chat.CodeNotFound},
		{"empty text", edit(alice, 1, m, ""), chat.CodeBadRequest},
		{"message id 0", edit(alice, 1, 0, "x"), chat.CodeBadRequest},
		{"not an emoji", react("bob", m, "ok", true), chat.CodeBadRequest},
		{"two emoji", react("bob", m, "👍👍", true), chat.CodeBadRequest},
	} {
		if got := code(tc.err); got != tc.code {
			t.Errorf("%s: %v (code %q), want %s", tc.name, tc.err, got, tc.code)
		}
	}
	if after := k.last(); after != before {
		t.Fatalf("refused requests stored %d events", after-before)
	}

	if err := edit(alice, 1, m, "hello, bob"); err != nil {
		t.Fatalf("the sender edits: %v", err)
	}
	for _, e := range []string{"👍", "❤️", "👩‍💻", "🇫🇷"} {
		if err := react("bob", m, e, true); err != nil {
			t.Fatalf("react %s: %v", e, err)
		}
	}
	if err := react("bob", m, "👍", false); err != nil {
		t.Fatal(err)
	}

	// The window: 48 hours after sending, the sender may no longer change
	// it; the service API still may.
	now = now.Add(chat.DefaultEditWindow + time.Minute)
	if err := edit(alice, 1, m, "too late"); code(err) != chat.CodeForbidden {
		t.Errorf("an edit after the window: %v, want forbidden", err)
	}
	if err := del(alice, 1, m); code(err) != chat.CodeForbidden {
		t.Errorf("a deletion after the window: %v, want forbidden", err)
	}
	if err := edit(chat.Admin, 1, m, "[edited by a moderator]"); err != nil {
		t.Errorf("the service API edits after the window: %v", err)
	}
	if err := react("bob", m, "🎉", true); err != nil {
		t.Errorf("a reaction after the window: %v", err)
	}

	// Deleted: nothing more, by anyone.
	if err := del(chat.Admin, 1, m); err != nil {
		t.Fatalf("the service API deletes: %v", err)
	}
	for _, tc := range []struct {
		name string
		err  error
	}{
		{"edit", edit(chat.Admin, 1, m, "x")},
		{"delete again", del(chat.Admin, 1, m)},
		{"react", react("bob", m, "👍", true)},
	} {
		if code(tc.err) != chat.CodeNotFound {
			t.Errorf("%s after the deletion: %v, want not_found", tc.name, tc.err)
		}
	}
}

// TestReactionLimit: a user's 21st distinct emoji on a message is refused;
// one they already have may be set again, and one removed makes room.
func TestReactionLimit(t *testing.T) {
	k := newKeyed(t, time.Minute, nil)
	ctx := context.Background()
	if _, _, err := k.svc.CreateConversation(ctx, 1, members("alice", "bob")); err != nil {
		t.Fatal(err)
	}
	sent, err := k.svc.Send(ctx, chat.Sender{UserID: "alice"}, chat.SendRequest{ConversationID: 1, Text: "react to me"})
	if err != nil {
		t.Fatal(err)
	}
	react := func(e string, on bool) error {
		_, err := k.svc.React(ctx, "bob", chat.ReactRequest{ConversationID: 1, MessageID: int64(sent.ID), Emoji: e, On: on})
		return err
	}
	emoji := []rune("😀😁😂🤣😃😄😅😆😉😊😋😎😍😘🥰😗😙🥲😚🙂🤗")
	for _, r := range emoji[:20] {
		if err := react(string(r), true); err != nil {
			t.Fatal(err)
		}
	}
	if err := react(string(emoji[20]), true); code(err) != chat.CodeBadRequest {
		t.Fatalf("the 21st reaction: %v, want bad_request", err)
	}
	if err := react(string(emoji[0]), true); err != nil {
		t.Fatalf("one already there, again: %v", err)
	}
	if err := react(string(emoji[0]), false); err != nil {
		t.Fatal(err)
	}
	if err := react(string(emoji[20]), true); err != nil {
		t.Fatalf("after removing one: %v", err)
	}
}

// TestConcurrentChangesSerialized: edits and deletions of one message sent
// at once, from many goroutines: exactly one deletion is stored, every
// other is refused not_found, and no edit is stored after the deletion
// (each was checked against the state it was stored on).
func TestConcurrentChangesSerialized(t *testing.T) {
	k := newKeyed(t, time.Minute, nil)
	ctx := context.Background()
	if _, _, err := k.svc.CreateConversation(ctx, 1, members("alice", "bob")); err != nil {
		t.Fatal(err)
	}
	sent, err := k.svc.Send(ctx, chat.Sender{UserID: "alice"}, chat.SendRequest{ConversationID: 1, Text: "racy"})
	if err != nil {
		t.Fatal(err)
	}
	id := int64(sent.ID)
	alice := chat.Actor{UserID: "alice"}
	var wg sync.WaitGroup
	var mu sync.Mutex
	deletes, refused := 0, 0
	for i := range 16 {
		wg.Go(func() {
			var err error
			if i%2 == 0 {
				_, err = k.svc.Delete(ctx, alice, chat.DeleteRequest{ConversationID: 1, MessageID: id})
			} else {
				_, err = k.svc.Edit(ctx, alice, chat.EditRequest{ConversationID: 1, MessageID: id, Text: fmt.Sprint("edit ", i)})
			}
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil && i%2 == 0:
				deletes++
			case code(err) == chat.CodeNotFound:
				refused++
			case err != nil:
				t.Errorf("change %d: %v", i, err)
			}
		})
	}
	wg.Wait()
	if deletes != 1 {
		t.Fatalf("%d deletions stored, want 1", deletes)
	}
	var kinds []eventstore.Kind
	if err := k.store.Read(ctx, 0, 1, k.last(), []string{eventstore.LifecycleFilter(1, id)}, func(st eventstore.Stored) error {
		kinds = append(kinds, st.Event.Kind())
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(kinds) == 0 || kinds[len(kinds)-1] != eventstore.KindDelete {
		t.Fatalf("the lifecycle %v does not end with its one deletion", kinds)
	}
	if len(kinds)+refused != 16 {
		t.Errorf("%d events stored and %d refused of 16 changes", len(kinds), refused)
	}
}

// TestKeyedChangeStoredOnce: an edit retried with its key is stored once
// and answered with the first; the key with another text, or a key used for
// a send, is a conflict.
func TestKeyedChangeStoredOnce(t *testing.T) {
	k := newKeyed(t, time.Minute, nil)
	ctx := context.Background()
	if _, _, err := k.svc.CreateConversation(ctx, 1, members("alice", "bob")); err != nil {
		t.Fatal(err)
	}
	sent, err := k.svc.Send(ctx, chat.Sender{UserID: "alice"}, chat.SendRequest{ConversationID: 1, Text: "hi", ClientMsgID: "c-1"})
	if err != nil {
		t.Fatal(err)
	}
	alice := chat.Actor{UserID: "alice"}
	req := chat.EditRequest{ConversationID: 1, MessageID: int64(sent.ID), Text: "hi there", ClientMsgID: "e-1"}
	first, err := k.svc.Edit(ctx, alice, req)
	if err != nil || first.Replayed {
		t.Fatalf("first edit: %+v, %v", first, err)
	}
	again, err := k.svc.Edit(ctx, alice, req) // at once: the read model may not have it yet
	if err != nil || again.Seq != first.Seq || !again.Replayed {
		t.Fatalf("retry: %+v, %v; want seq %d, replayed", again, err, first.Seq)
	}
	k.applied()
	again, err = k.svc.Edit(ctx, alice, req)
	if err != nil || again.Seq != first.Seq || !again.Replayed {
		t.Fatalf("retry after it was applied: %+v, %v; want seq %d, replayed", again, err, first.Seq)
	}
	other := req
	other.Text = "something else"
	if _, err := k.svc.Edit(ctx, alice, other); code(err) != chat.CodeConflict {
		t.Errorf("the key with another text: %v, want conflict", err)
	}
	if _, err := k.svc.Delete(ctx, alice, chat.DeleteRequest{ConversationID: 1, MessageID: int64(sent.ID), ClientMsgID: "c-1"}); code(err) != chat.CodeConflict {
		t.Errorf("a send's key for a deletion: %v, want conflict", err)
	}
	var edits int
	if err := k.store.Read(ctx, 0, 1, k.last(), []string{eventstore.LifecycleFilter(1, int64(sent.ID))}, func(eventstore.Stored) error {
		edits++
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if edits != 1 {
		t.Fatalf("%d lifecycle events stored, want the one edit", edits)
	}
}

func TestValidEmoji(t *testing.T) {
	for _, tc := range []struct {
		s  string
		ok bool
	}{
		{"👍", true}, {"👍🏽", true}, {"❤️", true}, {"❤", true}, {"👩‍💻", true}, {"👨‍👩‍👧‍👦", true}, {"🇫🇷", true},
		{"🏴󠁧󠁢󠁳󠁣󠁴󠁿", true}, {"1️⃣", true}, {"#️⃣", true}, {"⭐", true}, {"©️", true}, {"🎉", true}, {"🥲", true},
		{"", false}, {"a", false}, {"1", false}, {"ok", false}, {"👍👍", false}, {"👍 ", false}, {" ", false},
		{"\u200d", false}, {"🏽", false}, {"\ufe0f", false}, {"é", false}, {"\x00", false}, {"\xff", false}, {"<script>", false},
	} {
		if got := chat.ValidEmoji(tc.s); got != tc.ok {
			t.Errorf("ValidEmoji(%q) = %v, want %v", tc.s, got, tc.ok)
		}
	}
}
