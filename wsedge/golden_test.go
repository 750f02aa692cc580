package wsedge

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"inbox/chat"
	"inbox/eventstore"
)

var update = flag.Bool("update", false, "rewrite ../testdata/frames from the encoders (a deliberate wire change)")

// TestGoldenFrames: every server frame encodes to its golden file in
// ../testdata/frames byte for byte, so any change to a frame's fields, their
// order, names, types or omission fails here. After a deliberate, additive
// protocol change (documented in docs/protocol.md), rewrite them with
//
//	go test ./wsedge -run TestGoldenFrames -update
func TestGoldenFrames(t *testing.T) {
	at := time.Date(2025, 1, 15, 10, 30, 0, 0, time.UTC)
	avatar := "https://example.com/alice.png"
	frames := []struct {
		name string
		f    frame
	}{
		{"message", encodeMessage(6, &eventstore.Message{Header: eventstore.Header{At: at}, ConversationID: 1,
			SenderID: "alice", SenderName: "Alice Doe", Text: "Hello", MsgType: eventstore.TypeText, ClientMsgID: "c-1"})},
		{"message-avatar", encodeMessage(7, &eventstore.Message{Header: eventstore.Header{At: at.Add(1500 * time.Millisecond)}, ConversationID: 1,
			SenderID: "alice", SenderName: "Alice Doe", SenderAvatar: &avatar, Text: "a photo", MsgType: eventstore.TypeImage})},
		{"ack", encodeAck("c-1", 1, 6)},
		{"error", encodeError(chat.Errorf(chat.CodeForbidden, "not a member of conversation 2"), "c-2", 2)},
		{"error-internal", encodeError(errors.New("disk I/O error: the cause stays in the log"), "", 0)},
		{"typing", encodeTyping(8, &eventstore.Typing{ConversationID: 1, UserID: "bob", IsTyping: true, ExpiresAt: at.Add(5 * time.Second)})},
		{"typing-stop", encodeTyping(9, &eventstore.Typing{ConversationID: 1, UserID: "bob", ExpiresAt: at.Add(5 * time.Second)})},
		{"read", encodeRead(10, &eventstore.Read{ConversationID: 1, UserID: "bob", UpTo: 6})},
		{"read-ids", encodeRead(11, &eventstore.Read{ConversationID: 1, UserID: "bob", UpTo: 7, MessageIDs: []int64{6, 7}})},
		{"presence-online", encodePresence("bob", true, time.Time{})},
		{"presence-offline", encodePresence("bob", false, at.Add(90*time.Second))},
		{"conversation-joined", encodeJoined(12, 3, []string{"alice", "carol"})},
		{"conversation-left", encodeLeft(13, 3)},
		{"unread", encodeUnread(1, 2)},
		{"job-status", encodeJobStatus(14, &eventstore.JobStatus{JobID: 42, Status: "running", Detail: json.RawMessage(`{"step":1,"of":3}`)})},
		{"job-status-no-detail", encodeJobStatus(15, &eventstore.JobStatus{JobID: 42, Status: "done"})},
		{"synced", encodeSynced(eventstore.Cursor{15}, false)},
		{"synced-more", encodeSynced(eventstore.Cursor{15}, true)},
		{"pong", pongFrame},
		{"refreshed", encodeRefreshed(at.Add(time.Hour))},
		{"token-expiring", encodeTokenExpiring(at, at.Add(30*time.Second))},
		{"ack-change", encodeChangeAck("e-1", 1, 6, 16)},
		{"message-edited", encodeEdited(16, &eventstore.Edit{Header: eventstore.Header{At: at.Add(time.Minute)}, ConversationID: 1, MessageID: 6,
			UserID: "alice", Text: "Hello, Bob"})},
		{"message-deleted", encodeDeleted(17, 1, 6)},
		{"reaction", encodeReaction(18, &eventstore.React{ConversationID: 1, MessageID: 7, UserID: "bob", Emoji: "👍", On: true})},
		{"reaction-off", encodeReaction(19, &eventstore.React{ConversationID: 1, MessageID: 7, UserID: "bob", Emoji: "👍"})},
	}
	dir := filepath.Join("..", "testdata", "frames")
	names := map[string]bool{}
	for _, tc := range frames {
		names[tc.name+".json"] = true
		t.Run(tc.name, func(t *testing.T) {
			fr, err := ws.ReadFrame(bytes.NewReader(tc.f.wire))
			if err != nil {
				t.Fatal(err)
			}
			if fr.Header.OpCode != ws.OpText || !fr.Header.Fin || fr.Header.Masked {
				t.Fatalf("header %+v, want a final unmasked text frame", fr.Header)
			}
			got := append(fr.Payload, '\n')
			path := filepath.Join(dir, tc.name+".json")
			if *update {
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (a new frame? write it with -update)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("the %s frame is\n%s\ntestdata/frames/%s.json has\n%s\n(a deliberate change: -update)", tc.name, bytes.TrimSpace(got), tc.name, bytes.TrimSpace(want))
			}
		})
	}
	// A golden file whose frame the test no longer encodes is stale.
	files, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if !names[f.Name()] {
			t.Errorf("testdata/frames/%s: no frame encodes it", f.Name())
		}
	}
}
