package eventstore_test

import (
	"context"
	"errors"
	"log/slog"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"inbox/eventstore"
)

// TestRetryAPI: "no suitable peers" (a cluster still forming) is retried
// like an unanswered request; any other refusal is returned at once.
func TestRetryAPI(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	noPeers := &jetstream.APIError{Code: 400, ErrorCode: 10005, Description: "no suitable peers for placement, peer offline"}
	calls := 0
	err := eventstore.RetryAPI(context.Background(), log, "test", func(context.Context) error {
		if calls++; calls < 3 {
			return noPeers
		}
		return nil
	})
	if err != nil || calls != 3 {
		t.Fatalf("no peers twice, then success: %v after %d calls, want nil after 3", err, calls)
	}

	badRequest := &jetstream.APIError{Code: 400, ErrorCode: jetstream.JSErrCodeBadRequest, Description: "bad request"}
	calls = 0
	err = eventstore.RetryAPI(context.Background(), log, "test", func(context.Context) error {
		calls++
		return badRequest
	})
	if !errors.Is(err, badRequest) || calls != 1 {
		t.Fatalf("bad request: %v after %d calls, want it after 1", err, calls)
	}
}
