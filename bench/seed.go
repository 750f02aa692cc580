package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// ErrConversationExists: an explicit conversation id is taken (409).
var ErrConversationExists = errors.New("conversation id exists")

// admin calls the service API with the admin token.
type admin struct {
	base  string // http://host:port
	token string
	http  *http.Client
}

type memberSpec struct {
	UserID string `json:"user_id"`
	Role   string `json:"role"`
}

// apiError is a non-2xx answer of the service API.
type apiError struct {
	Status int
	Code   string
	Msg    string
}

func (e *apiError) Error() string {
	if e.Code != "" {
		return fmt.Sprintf("HTTP %d %s: %s", e.Status, e.Code, e.Msg)
	}
	return fmt.Sprintf("HTTP %d: %s", e.Status, e.Msg)
}

// do sends body (JSON) and decodes a 2xx answer into out (may be nil).
func (a *admin) do(ctx context.Context, method, path string, body, out any) error {
	data, err := json.Marshal(body)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, method, a.base+path, bytes.NewReader(data))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+a.token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := a.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		var e struct{ Error, Code string }
		_ = json.Unmarshal(raw, &e)
		if e.Error == "" {
			e.Error = string(bytes.TrimSpace(raw))
			if len(e.Error) > 200 {
				e.Error = e.Error[:200]
			}
		}
		return &apiError{Status: resp.StatusCode, Code: e.Code, Msg: e.Error}
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			return fmt.Errorf("decode %s %s answer: %w", method, path, err)
		}
	}
	return nil
}

// retry calls f up to 4 times while it fails with a transport error, 429 or 5xx.
func retry(ctx context.Context, f func() error) error {
	var err error
	for attempt := range 4 {
		if attempt > 0 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(time.Duration(100<<attempt) * time.Millisecond):
			}
		}
		err = f()
		var ae *apiError
		if err == nil || ctx.Err() != nil || (errors.As(err, &ae) && ae.Status != 429 && ae.Status < 500) {
			return err
		}
	}
	return err
}

// createConversation creates a conversation with the given members and id (0:
// let the server assign one) and returns its id.
func (a *admin) createConversation(ctx context.Context, id int64, members []memberSpec) (int64, error) {
	body := struct {
		ID      int64        `json:"id,omitempty"`
		Members []memberSpec `json:"members"`
	}{id, members}
	var out struct {
		ID           int64 `json:"id"`
		Conversation *struct {
			ID int64 `json:"id"`
		} `json:"conversation"`
	}
	var err error
	var ae *apiError
	for range 8 {
		err = retry(ctx, func() error { return a.do(ctx, http.MethodPost, "/api/admin/conversations", body, &out) })
		// A server-assigned id can race with concurrent creations: ask again.
		if id != 0 || !errors.As(err, &ae) || ae.Status != http.StatusConflict {
			break
		}
	}
	if errors.As(err, &ae) && ae.Status == http.StatusConflict {
		if id == 0 {
			return 0, fmt.Errorf("create conversation: %w: the server keeps answering 409 for assigned ids (try --seed-concurrency 1 or --id-base)", ErrConversationExists)
		}
		return 0, fmt.Errorf("create conversation %d: %w (choose another --id-base, or 0 to let the server assign ids)", id, ErrConversationExists)
	}
	if err != nil {
		return 0, fmt.Errorf("create conversation: %w", err)
	}
	got := out.ID
	if got == 0 && out.Conversation != nil {
		got = out.Conversation.ID
	}
	if got == 0 {
		got = id
	}
	if got == 0 {
		return 0, errors.New("create conversation: the answer carries no id")
	}
	return got, nil
}

// setProfile sets a user's display name.
func (a *admin) setProfile(ctx context.Context, user, name string) error {
	body := map[string]string{"name": name}
	err := retry(ctx, func() error {
		return a.do(ctx, http.MethodPut, "/api/admin/profiles/"+url.PathEscape(user), body, nil)
	})
	if err != nil {
		return fmt.Errorf("set profile of %s: %w", user, err)
	}
	return nil
}

// parallel runs f(i) for i in [0,n) on workers goroutines, stopping at the
// first error; tick is called after each success.
func parallel(ctx context.Context, n, workers int, tick func(), f func(ctx context.Context, i int) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(workers, max(n, 1)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				if err := f(ctx, i); err != nil {
					cancel(err)
					return
				}
				if tick != nil {
					tick()
				}
			}
		}()
	}
	wg.Wait()
	if err := context.Cause(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return ctx.Err()
}

// roleOf is the role of the i-th member of a seeded conversation.
func roleOf(i int) string {
	switch i {
	case 0:
		return "client"
	case 1:
		return "worker"
	}
	return "member"
}

func userID(prefix string, i int) string { return prefix + "-" + strconv.Itoa(i) }
