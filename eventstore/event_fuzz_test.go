package eventstore_test

import (
	"errors"
	"testing"

	"inbox/eventstore"
)

// FuzzDecode: no input panics the decoder, every failure is an ErrBadEvent, and
// whatever decodes encodes back to something that decodes to the same bytes.
// Its seeds are the golden events of ../testdata/events and a few bad ones.
func FuzzDecode(f *testing.F) {
	for _, kind := range kinds {
		for _, g := range readGolden(f, kind) {
			f.Add(g.Subject, []byte(g.Payload))
		}
	}
	for _, s := range []struct{ subject, data string }{
		{"inbox.conv.1.msg", `{"v":2}`},
		{"inbox.conv.x.msg", `{}`},
		{"inbox.conv.1.msg", `{"v":1,"type":"msg","conversation_id":"1"}`},
	} {
		f.Add(s.subject, []byte(s.data))
	}
	f.Fuzz(func(t *testing.T, subject string, data []byte) {
		e, err := eventstore.Decode(subject, data)
		if err != nil {
			if !errors.Is(err, eventstore.ErrBadEvent) {
				t.Fatalf("error %v is not an ErrBadEvent", err)
			}
			return
		}
		enc, err := eventstore.Encode(e)
		if err != nil {
			t.Fatalf("decoded event does not encode: %v", err)
		}
		back, err := eventstore.Decode(e.Subject(), enc)
		if err != nil {
			t.Fatalf("re-encoded event does not decode: %v\n%s", err, enc)
		}
		enc2, _ := eventstore.Encode(back)
		if string(enc2) != string(enc) {
			t.Fatalf("round trip differs:\n%s\n%s", enc, enc2)
		}
	})
}
