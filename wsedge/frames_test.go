package wsedge

import (
	"strings"
	"testing"

	"inbox/chat"
)

// TestFrameFieldNamesMatchExactly is the finding "field names match
// case-insensitively": encoding/json took "MESSAGE" for message. Names now
// match exactly (an upper-case one is an unknown field, ignored), a name given
// twice and invalid UTF-8 are refused, and an ERROR still names the frame's
// conversation_id and client_msg_id when another field is wrong.
func TestFrameFieldNamesMatchExactly(t *testing.T) {
	for _, tc := range []struct {
		name, frame string
		says        string // "": decodes
		conv        int64
		clientMsgID string
	}{
		{name: "exact names", frame: `{"conversation_id": 1, "message": "x", "client_msg_id": "c-1", "extra": [1]}`, conv: 1, clientMsgID: "c-1"},
		{name: "upper-case message", frame: `{"conversation_id": 1, "MESSAGE": "x"}`, says: "needs message", conv: 1},
		{name: "capitalised type", frame: `{"conversation_id": 1, "Type": "TYPING", "is_typing": true, "message": "x"}`, conv: 1},
		{name: "upper-case since", frame: `{"type": "RESUME", "SINCE": 5}`, says: "needs since"},
		{name: "name given twice", frame: `{"conversation_id": 1, "message": "a", "message": "b", "client_msg_id": "c-2"}`, says: `field "message" appears twice`, conv: 1, clientMsgID: "c-2"},
		{name: "invalid UTF-8", frame: "{\"conversation_id\": 1, \"message\": \"\xff\"}", says: "not valid UTF-8", conv: 1},
		{name: "wrong type names the frame", frame: `{"conversation_id": 3, "message": 42, "client_msg_id": "c-3"}`, says: `field "message" must be a string, not a JSON number`, conv: 3, clientMsgID: "c-3"},
		{name: "wrong id type", frame: `{"conversation_id": "3", "message": "x", "client_msg_id": "c-4"}`, says: `field "conversation_id" must be an integer, not a JSON string`, clientMsgID: "c-4"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, err := decodeFrame([]byte(tc.frame))
			switch {
			case tc.says == "" && err != nil:
				t.Fatalf("error %v", err)
			case tc.says != "" && (err == nil || !strings.Contains(err.Error(), tc.says) || chat.CodeOf(err) != chat.CodeBadRequest):
				t.Fatalf("error %v, want bad_request saying %q", err, tc.says)
			}
			if req.ConversationID != tc.conv || req.ClientMsgID != tc.clientMsgID {
				t.Errorf("conversation_id %d, client_msg_id %q; want %d, %q", req.ConversationID, req.ClientMsgID, tc.conv, tc.clientMsgID)
			}
		})
	}
}

// BenchmarkDecodeFrame measures the client frame decoder, which every frame
// a socket sends goes through.
//
//	go test -run x -bench DecodeFrame -benchmem ./wsedge
func BenchmarkDecodeFrame(b *testing.B) {
	for _, bc := range []struct{ name, frame string }{
		{"message", `{"conversation_id": 123, "message": "Hello, how are you doing today?", "type": "TEXT", "client_msg_id": "c-4f1e2a"}`},
		{"typing", `{"conversation_id": 123, "type": "TYPING", "is_typing": true}`},
		{"read", `{"conversation_id": 123, "type": "READ", "message_ids": [7891, 7892, 7893, 7894, 7895, 7896, 7897, 7898, 7899, 7900]}`},
		{"ping", `{"type": "PING"}`},
	} {
		data := []byte(bc.frame)
		b.Run(bc.name, func(b *testing.B) {
			b.SetBytes(int64(len(data)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := decodeFrame(data); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
