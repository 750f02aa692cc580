package readmodel_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"inbox/chat"
	"inbox/eventstore"
	"inbox/internal/testnats"
	"inbox/internal/testutil"
	"inbox/projections"
	"inbox/readmodel"
)

const partitions = 3

// env is a stream of three partitions with a read model of the whole stream
// (ref, as role all keeps it) and one projector per partition, each with
// its own database, served by a readmodel.Server (as role projector).
type env struct {
	store  *eventstore.Store
	nc     *nats.Conn
	ref    *projections.Projector
	parts  map[int]*projections.Projector
	server *readmodel.Server
	client *readmodel.Client
	stop   map[int]context.CancelFunc
}

func newEnv(t *testing.T) *env {
	t.Helper()
	s := testnats.Server(t)
	store := testnats.StoreWith(t, s, eventstore.Config{Partitions: partitions})
	e := &env{store: store, nc: testnats.Conn(t, s), parts: make(map[int]*projections.Projector), stop: make(map[int]context.CancelFunc)}
	dir := t.TempDir()
	open := func(name string) *projections.DB {
		db, err := projections.Open(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		return db
	}
	e.ref = projections.NewProjector(projections.ProjectorConfig{Name: "ref"}, projections.ProjectorDeps{DB: open("ref.db"), Store: store})
	e.run(t, -1, e.ref)
	locals := make(map[int]readmodel.Local)
	for k := range partitions {
		p := projections.NewProjector(projections.ProjectorConfig{Name: "p", Partitions: []int{k}}, projections.ProjectorDeps{
			DB: open("p" + strconv.Itoa(k) + ".db"), Store: store,
			OnApplied: func(_ uint64, changes []projections.UnreadChange) {
				if err := readmodel.PublishUnread(store.Conn(), changes); err != nil {
					t.Errorf("publish unread counts: %v", err)
				}
			},
		})
		e.parts[k], locals[k] = p, p
		e.run(t, k, p)
	}
	e.server = readmodel.NewServer(testnats.Conn(t, s), readmodel.ServerConfig{NodeID: "p", Partitions: partitions}, locals, testutil.Logger())
	t.Cleanup(func() { e.server.Close() })
	if err := e.server.Serve([]int{0, 1, 2}); err != nil {
		t.Fatal(err)
	}
	e.client = readmodel.NewClient(testnats.Conn(t, s), readmodel.ClientConfig{Partitions: partitions, OwnerWait: 300 * time.Millisecond}, testutil.Logger())
	return e
}

// run runs p until the test ends (or e.stop[k]).
func (e *env) run(t *testing.T, k int, p *projections.Projector) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := p.Run(ctx); err != nil {
			t.Errorf("projector: %v", err)
		}
	})
	stop := sync.OnceFunc(func() { cancel(); wg.Wait() })
	e.stop[k] = stop
	t.Cleanup(stop)
}

func (e *env) append(t *testing.T, ev eventstore.Event) uint64 {
	t.Helper()
	id, err := e.store.Append(context.Background(), ev)
	if err != nil {
		t.Fatalf("append %s: %v", ev.Subject(), err)
	}
	return id
}

// settle waits until every projector has applied the whole stream.
func (e *env) settle(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	last, err := e.store.Last(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range append([]*projections.Projector{e.ref}, e.parts[0], e.parts[1], e.parts[2]) {
		if err := p.WaitForAll(ctx, last); err != nil {
			t.Fatal(err)
		}
	}
}

// convsIn returns conversation ids, one or more in each partition.
func convsIn(n int) []int64 {
	var ids []int64
	seen := make(map[int]int)
	for id := int64(1); len(ids) < n || len(seen) < partitions; id++ {
		k := eventstore.Partition(id, partitions)
		if seen[k] >= (n+partitions-1)/partitions {
			continue
		}
		seen[k]++
		ids = append(ids, id)
	}
	return ids
}

// fill writes profiles, a job, conversations in every partition with
// messages (some keyed), a receipt, an edit and a reaction. It returns the
// conversations and the message ids.
func (e *env) fill(t *testing.T) (convs []int64, msgs []int64) {
	t.Helper()
	for _, u := range []string{"alice", "bob", "carol"} {
		e.append(t, &eventstore.Profile{UserID: u, Name: "Name " + u})
	}
	e.append(t, &eventstore.Job{JobID: 7, Members: []string{"alice", "carol"}})
	convs = convsIn(6)
	for i, c := range convs {
		other := []string{"bob", "carol"}[i%2]
		e.append(t, &eventstore.Created{ConversationID: c, Members: []eventstore.Member{
			{UserID: "alice", Role: eventstore.RoleClient}, {UserID: other, Role: eventstore.RoleWorker}}})
	}
	for round := range 3 {
		for i, c := range convs {
			if round == 2 && i%3 == 0 {
				continue // some conversations' activity stays older
			}
			sender := []string{"alice", "bob", "carol"}[(round+i)%3]
			if sender != "alice" && sender != []string{"bob", "carol"}[i%2] {
				sender = "alice"
			}
			m := &eventstore.Message{ConversationID: c, SenderID: sender, SenderName: "Name " + sender,
				Text: fmt.Sprintf("m%d in %d", round, c), MsgType: eventstore.TypeText, ClientMsgID: fmt.Sprintf("k%d-%d", round, c)}
			msgs = append(msgs, int64(e.append(t, m)))
		}
	}
	e.append(t, &eventstore.Read{ConversationID: convs[1], UserID: "alice", UpTo: msgs[len(msgs)-1]})
	e.append(t, &eventstore.Edit{ConversationID: convs[0], MessageID: msgs[0], UserID: "alice", Text: "edited"})
	e.append(t, &eventstore.React{ConversationID: convs[0], MessageID: msgs[0], UserID: "bob", Emoji: "👍", On: true})
	e.settle(t)
	return convs, msgs
}

// The client answers as the read model of the whole stream does: a list
// gathered from three partitions and merged, history, keys, message state,
// a sender's messages, the membership snapshot.
func TestClientAnswersAsOneReadModel(t *testing.T) {
	e := newEnv(t)
	convs, msgs := e.fill(t)
	ctx := context.Background()

	for _, u := range []string{"alice", "bob", "carol", "nobody"} {
		got, err := e.client.Conversations(ctx, u)
		if err != nil {
			t.Fatal(err)
		}
		want, err := e.ref.Conversations(ctx, u)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) && !(len(got) == 0 && len(want) == 0) {
			t.Errorf("conversations of %s:\n got %+v\nwant %+v", u, ids(got), ids(want))
		}
		if u == "alice" {
			spans := make(map[int]bool)
			for _, c := range got {
				spans[eventstore.Partition(c.ID, partitions)] = true
			}
			if len(spans) != partitions || len(got) != len(convs) {
				t.Errorf("alice's list %v spans partitions %v; want all %d conversations from all %d", ids(got), spans, len(convs), partitions)
			}
		}
	}
	for _, c := range convs {
		for _, before := range []int64{0, msgs[len(msgs)-1]} {
			got, err := e.client.Messages(ctx, c, before, 2)
			if err != nil {
				t.Fatal(err)
			}
			want, _ := e.ref.Messages(ctx, c, before, 2)
			if !reflect.DeepEqual(got, want) {
				t.Errorf("messages of %d before %d:\n got %+v\nwant %+v", c, before, got, want)
			}
		}
		k := eventstore.Key{UserID: "alice", ConversationID: c, ClientKey: "k0-" + strconv.FormatInt(c, 10)}
		gotRec, gotFound, err := e.client.KeyRecord(ctx, k)
		if err != nil {
			t.Fatal(err)
		}
		wantRec, wantFound, _ := e.ref.KeyRecord(ctx, k)
		if gotFound != wantFound || !gotRec.At.Equal(wantRec.At) || gotRec.Keyed != wantRec.Keyed || gotRec.Seq != wantRec.Seq {
			t.Errorf("key %+v: got %+v %v, want %+v %v", k, gotRec, gotFound, wantRec, wantFound)
		}
	}
	applied, got, err := e.client.MessageConversations(ctx, append(slices.Clone(msgs), 999_999))
	if err != nil {
		t.Fatal(err)
	}
	_, want, _ := e.ref.MessageConversations(ctx, msgs)
	if !reflect.DeepEqual(got, want) {
		t.Errorf("message conversations: got %v, want %v", got, want)
	}
	for _, id := range msgs {
		if !applied.Covers(uint64(id)) {
			t.Errorf("the cursor %s does not cover message %d", applied, id)
		}
	}
	for _, id := range msgs[:4] {
		gotSt, gotFound, applied, err := e.client.MessageState(ctx, id, "bob")
		if err != nil {
			t.Fatal(err)
		}
		wantSt, wantFound, _, _ := e.ref.MessageState(ctx, id, "bob")
		if gotFound != wantFound || !reflect.DeepEqual(gotSt, wantSt) || !applied.Covers(uint64(id)) {
			t.Errorf("state of %d: got %+v %v (applied %s), want %+v %v", id, gotSt, gotFound, applied, wantSt, wantFound)
		}
	}
	gotBy, _, err := e.client.MessagesBy(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	wantBy, _, _ := e.ref.MessagesBy(ctx, "alice")
	if !reflect.DeepEqual(gotBy, wantBy) {
		t.Errorf("messages by alice:\n got %+v\nwant %+v", gotBy, wantBy)
	}
	gotSnap, err := e.client.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	wantSnap, _ := e.ref.Snapshot(ctx)
	if !reflect.DeepEqual(gotSnap, wantSnap) {
		t.Errorf("snapshot:\n got %+v\nwant %+v", gotSnap, wantSnap)
	}
	if ok, err := e.client.Covers(ctx, time.Now().Add(-time.Minute)); err != nil || !ok {
		t.Errorf("Covers a minute ago = %v, %v; want true", ok, err)
	}
	if c, err := e.client.Applied(ctx); err != nil || c.String() != e.ref.Applied().String() {
		t.Errorf("Applied = %v, %v; want %s", c, err, e.ref.Applied())
	}
}

func ids(cs []projections.Conversation) []string {
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = fmt.Sprintf("%d@%d", c.ID, c.Activity)
	}
	return out
}

// A snapshot larger than one chunk comes whole.
func TestSnapshotInChunks(t *testing.T) {
	e := newEnv(t)
	const n = 3000
	for c := int64(1); c <= n; c++ {
		e.append(t, &eventstore.Created{ConversationID: c, Members: []eventstore.Member{
			{UserID: "user-" + strconv.FormatInt(c, 10), Role: eventstore.RoleClient}, {UserID: "agent-with-a-long-name", Role: eventstore.RoleWorker}}})
	}
	e.settle(t)
	got, err := e.client.Snapshot(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want, _ := e.ref.Snapshot(context.Background())
	if len(got.Conversations) != n || !reflect.DeepEqual(got, want) {
		t.Fatalf("snapshot of %d conversations has %d, equal to the whole stream's: %v", n, len(got.Conversations), reflect.DeepEqual(got, want))
	}
}

// Read-your-writes: WaitFor waits for the owner to apply the event, a read
// after it sees it, and one the owner cannot reach in time is an
// unavailable error, not a stale answer.
func TestWaitForAndStale(t *testing.T) {
	e := newEnv(t)
	convs, _ := e.fill(t)
	ctx := context.Background()
	id := e.append(t, &eventstore.Message{ConversationID: convs[0], SenderID: "alice", SenderName: "A", Text: "new", MsgType: eventstore.TypeText})
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := e.client.WaitFor(wctx, id); err != nil {
		t.Fatal(err)
	}
	msgs, err := e.client.Messages(ctx, convs[0], 0, 1)
	if err != nil || len(msgs) != 1 || msgs[0].ID != int64(id) {
		t.Fatalf("history after WaitFor(%d): %+v, %v", id, msgs, err)
	}

	k := eventstore.Partition(convs[0], partitions)
	e.stop[k]() // its projector stops applying
	id = e.append(t, &eventstore.Message{ConversationID: convs[0], SenderID: "alice", SenderName: "A", Text: "unseen", MsgType: eventstore.TypeText})
	wctx, cancel = context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	err = e.client.WaitFor(wctx, id)
	if err == nil || chat.CodeOf(err) != chat.CodeUnavailable {
		t.Fatalf("WaitFor of an event the owner does not apply = %v (code %s), want unavailable", err, chat.CodeOf(err))
	}
}

// A partition nobody serves is an unavailable error after OwnerWait; once
// served again it answers.
func TestNoOwner(t *testing.T) {
	e := newEnv(t)
	convs, _ := e.fill(t)
	var conv int64
	for _, c := range convs {
		if eventstore.Partition(c, partitions) == 2 {
			conv = c
		}
	}
	if err := e.server.Serve([]int{0, 1}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err := e.client.Messages(context.Background(), conv, 0, 10)
	if chat.CodeOf(err) != chat.CodeUnavailable {
		t.Fatalf("history of a conversation in an unserved partition: %v (code %s), want unavailable", err, chat.CodeOf(err))
	}
	if took := time.Since(start); took < 300*time.Millisecond {
		t.Errorf("gave up after %v, before the owner wait", took)
	}
	var ce *chat.Error
	if !errors.As(err, &ce) || !errors.Is(err, nats.ErrNoResponders) {
		t.Errorf("error %v does not say no projector answers", err)
	}
	// Served again while a request waits for an owner: it is answered.
	done := make(chan error, 1)
	go func() {
		_, err := readmodel.NewClient(e.nc, readmodel.ClientConfig{Partitions: partitions}, nil).Messages(context.Background(), conv, 0, 10)
		done <- err
	}()
	time.Sleep(100 * time.Millisecond)
	if err := e.server.Serve([]int{0, 1, 2}); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("a request waiting for an owner: %v", err)
	}
}

// The owners' unread counts reach a follower: one per member whose count
// a batch changed, with the event that changed it.
func TestUnreadCounts(t *testing.T) {
	e := newEnv(t)
	convs, _ := e.fill(t)
	got := make(chan projections.UnreadChange, 100)
	sub, err := readmodel.FollowUnread(e.nc, testutil.Logger(), func(c projections.UnreadChange) { got <- c })
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := e.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	id := e.append(t, &eventstore.Message{ConversationID: convs[2], SenderID: "alice", SenderName: "A", Text: "x", MsgType: eventstore.TypeText})
	e.settle(t)
	want, err := e.ref.Conversations(context.Background(), "bob")
	if err != nil {
		t.Fatal(err)
	}
	var unread int64 = -1
	for _, c := range want {
		if c.ID == convs[2] {
			unread = c.Unread
		}
	}
	timeout := time.After(5 * time.Second)
	for {
		select {
		case c := <-got:
			if c.ConversationID != convs[2] || c.Seq < id {
				continue // of the batches before (published once applied)
			}
			if c.UserID != "bob" || c.Unread != unread || c.Seq != id {
				t.Fatalf("unread change %+v, want bob's %d in %d at %d", c, unread, convs[2], id)
			}
			return
		case <-timeout:
			t.Fatal("no unread count published")
		}
	}
}

// The service is a micro service: an instance per server, an endpoint per
// owned partition on inbox.rm.<k>.*, its own figures in the stats.
func TestMicroService(t *testing.T) {
	e := newEnv(t)
	e.fill(t)
	if _, err := e.client.Messages(context.Background(), 1, 0, 5); err != nil {
		t.Fatal(err)
	}
	msg, err := e.nc.Request("$SRV.INFO."+readmodel.ServiceName, nil, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var info micro.Info
	if err := json.Unmarshal(msg.Data, &info); err != nil {
		t.Fatal(err)
	}
	var subjects []string
	for _, ep := range info.Endpoints {
		subjects = append(subjects, ep.Subject)
	}
	if want := []string{"inbox.rm.0.*", "inbox.rm.1.*", "inbox.rm.2.*"}; !slices.Equal(subjects, want) || info.Metadata["node"] != "p" {
		t.Fatalf("service info: endpoints %v, metadata %v; want %v, node p", subjects, info.Metadata, want)
	}
	msg, err = e.nc.Request("$SRV.STATS."+readmodel.ServiceName, nil, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var stats micro.Stats
	if err := json.Unmarshal(msg.Data, &stats); err != nil {
		t.Fatal(err)
	}
	k := eventstore.Partition(1, partitions)
	var data struct {
		Partition int    `json:"partition"`
		Requests  uint64 `json:"requests"`
	}
	if err := json.Unmarshal(stats.Endpoints[k].Data, &data); err != nil || data.Partition != k || data.Requests == 0 {
		t.Fatalf("stats of partition %d: %s (%v)", k, stats.Endpoints[k].Data, err)
	}
}

// A list spanning partitions is merged by the activity's time, as one read
// model of them all orders it: a conversation in a busy partition (high
// sequences) with old messages comes after one in a quiet partition with a
// newer message.
func TestListMergedByTime(t *testing.T) {
	e := newEnv(t)
	busy, quiet := int64(1), int64(1)
	for eventstore.Partition(quiet, partitions) == eventstore.Partition(busy, partitions) {
		quiet++
	}
	old := time.Date(2025, 1, 15, 10, 0, 0, 0, time.UTC)
	message := func(conv int64, text string, at time.Time) *eventstore.Message {
		m := &eventstore.Message{ConversationID: conv, SenderID: "bob", SenderName: "B", Text: text, MsgType: eventstore.TypeText}
		m.At = at
		return m
	}
	for _, id := range []int64{busy, quiet} {
		c := &eventstore.Created{ConversationID: id, Members: []eventstore.Member{
			{UserID: "alice", Role: eventstore.RoleClient}, {UserID: "bob", Role: eventstore.RoleWorker}}}
		c.At = old
		e.append(t, c)
	}
	for i := range 40 {
		e.append(t, message(busy, fmt.Sprint("old ", i), old.Add(time.Duration(i)*time.Second)))
	}
	e.append(t, message(quiet, "newer", old.Add(time.Hour)))
	e.settle(t)
	got, err := e.client.Conversations(context.Background(), "alice")
	if err != nil {
		t.Fatal(err)
	}
	want, _ := e.ref.Conversations(context.Background(), "alice")
	if len(got) != 2 || got[0].ID != quiet || !reflect.DeepEqual(got, want) {
		t.Fatalf("alice's merged list %v, want %v: %d (newer message) first", ids(got), ids(want), quiet)
	}
}
