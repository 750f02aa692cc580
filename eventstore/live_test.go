package eventstore_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"inbox/eventstore"
	"inbox/internal/testnats"
)

// liveConn is a connection that does not reconnect, as a Live wants.
func liveConn(t *testing.T, s *server.Server) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(s.ClientURL(), nats.NoReconnect())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// next is the next copy l received, decoded.
func next(t *testing.T, l *eventstore.Live) eventstore.LiveEvent {
	t.Helper()
	select {
	case m := <-l.Events():
		return l.Decode(m)
	case <-time.After(5 * time.Second):
		t.Fatal("no live copy within 5s")
	}
	return eventstore.LiveEvent{}
}

// quiet fails if l receives anything within a short while.
func quiet(t *testing.T, l *eventstore.Live) {
	t.Helper()
	select {
	case m := <-l.Events():
		t.Fatalf("unexpected live copy %s: %+v", m.Subject, l.Decode(m))
	case <-time.After(100 * time.Millisecond):
	}
}

// TestLive: a Live receives the firehose of every partition and every event
// of the conversations it watches, each decoded as the stream stored it, in
// stream order, with the previous event on the same subject (JetStream's
// Nats-Last-Sequence is per subject, not per stream); nothing of a
// conversation it does not watch, nor of one it stopped watching.
func TestLive(t *testing.T) {
	for _, n := range []int{1, 3} {
		t.Run(fmt.Sprintf("partitions=%d", n), func(t *testing.T) {
			s := testnats.Server(t)
			st := testnats.StoreWith(t, s, eventstore.Config{Partitions: n, Republish: true})
			ctx := context.Background()
			l, err := st.OpenLive(liveConn(t, s), 0)
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			const watched, other = 5, 6
			if err := l.Watch(watched); err != nil {
				t.Fatal(err)
			}
			if err := l.Sync(ctx); err != nil {
				t.Fatal(err)
			}
			app := func(e eventstore.Event) uint64 {
				t.Helper()
				id, err := st.Append(ctx, e)
				if err != nil {
					t.Fatal(err)
				}
				return id
			}
			got := func(want uint64, last uint64) {
				t.Helper()
				ev := next(t, l)
				stored, err := st.Get(ctx, want)
				if err != nil {
					t.Fatal(err)
				}
				if ev.Err != nil || ev.Seq != want || ev.Subject != stored.Subject || ev.Last != last ||
					!ev.Time.Equal(stored.Time) || fmt.Sprint(ev.Event) != fmt.Sprint(stored.Event) {
					t.Fatalf("got %+v (last %d), want %+v (last %d)", ev.Stored, ev.Last, stored, last)
				}
				if k, _ := eventstore.Split(n, want); ev.Partition != k {
					t.Fatalf("partition %d, want %d", ev.Partition, k)
				}
			}
			m1 := app(&eventstore.Message{ConversationID: watched, SenderID: "a", Text: "one", MsgType: eventstore.TypeText})
			got(m1, 0)
			app(&eventstore.Message{ConversationID: other, SenderID: "a", Text: "not watched", MsgType: eventstore.TypeText})
			ty := app(&eventstore.Typing{ConversationID: watched, UserID: "a", IsTyping: true})
			got(ty, 0) // the first event on its subject, though not in the stream
			m2 := app(&eventstore.Message{ConversationID: watched, SenderID: "b", Text: "two", MsgType: eventstore.TypeText})
			got(m2, m1) // the previous message, not the typing event before it
			ed := app(&eventstore.Edit{ConversationID: watched, MessageID: int64(m2), UserID: "b", Text: "deux"})
			got(ed, 0)
			// The firehose: membership of any conversation, profiles, jobs.
			mo := app(&eventstore.MemberChanged{ConversationID: other, Op: eventstore.OpAdd, UserID: "c", Role: eventstore.RoleMember})
			got(mo, 0)
			mw := app(&eventstore.MemberChanged{ConversationID: watched, Op: eventstore.OpAdd, UserID: "c", Role: eventstore.RoleMember})
			got(mw, 0) // once per subscription it matches: the firehose's
			got(mw, 0) // and the watch's
			p := app(&eventstore.Profile{UserID: "c", Name: "C"})
			got(p, 0)
			j := app(&eventstore.Job{JobID: 9, Members: []string{"c"}})
			got(j, 0)
			quiet(t, l)

			l.Unwatch(watched)
			if err := l.Sync(ctx); err != nil {
				t.Fatal(err)
			}
			app(&eventstore.Message{ConversationID: watched, SenderID: "a", Text: "unwatched", MsgType: eventstore.TypeText})
			quiet(t, l)
			if l.Watched() != 0 {
				t.Fatalf("%d watched", l.Watched())
			}
			select {
			case <-l.Broken():
				t.Fatalf("broken: %v", l.Err())
			default:
			}
			l.Close()
			<-l.Broken()
			if !errors.Is(l.Err(), eventstore.ErrLiveClosed) {
				t.Fatalf("err %v", l.Err())
			}
		})
	}
}

// TestLiveBreaks: a Live breaks when its connection is lost and when it
// had to drop a copy, having kept what it received before.
func TestLiveBreaks(t *testing.T) {
	s := testnats.Server(t)
	st := testnats.StoreWith(t, s, eventstore.Config{Republish: true})
	ctx := context.Background()

	l, err := st.OpenLive(liveConn(t, s), 2)
	if err != nil {
		t.Fatal(err)
	}
	// The subscriptions reach the server before the first append, or its
	// copy is never sent and the first kept is the second.
	if err := l.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		if _, err := st.Append(ctx, &eventstore.Profile{UserID: fmt.Sprintf("u%d", i), Name: "U"}); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-l.Broken():
	case <-time.After(5 * time.Second):
		t.Fatal("not broken after dropping copies")
	}
	if !errors.Is(l.Err(), nats.ErrSlowConsumer) {
		t.Fatalf("err %v", l.Err())
	}
	if ev := next(t, l); ev.Seq != 1 {
		t.Fatalf("first copy kept is %d, want 1", ev.Seq)
	}
	l.Close()

	nc := liveConn(t, s)
	l, err = st.OpenLive(nc, 0)
	if err != nil {
		t.Fatal(err)
	}
	s.Shutdown()
	select {
	case <-l.Broken():
	case <-time.After(10 * time.Second):
		t.Fatal("not broken after the server went away")
	}
	if !errors.Is(l.Err(), eventstore.ErrLiveClosed) {
		t.Fatalf("err %v", l.Err())
	}
}

// TestLiveAdvisory: a stream leader's election is decoded as its partition's.
func TestLiveAdvisory(t *testing.T) {
	s := testnats.Server(t)
	st := testnats.StoreWith(t, s, eventstore.Config{Partitions: 3, Republish: true})
	l, err := st.OpenLive(liveConn(t, s), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ev := l.Decode(&nats.Msg{Subject: "$JS.EVENT.ADVISORY.STREAM.LEADER_ELECTED.INBOX-2"})
	if !ev.Elected || ev.Partition != 2 || ev.Err != nil {
		t.Fatalf("%+v", ev)
	}
	if ev := l.Decode(&nats.Msg{Subject: "$JS.EVENT.ADVISORY.STREAM.LEADER_ELECTED.INBOX-7"}); ev.Err == nil {
		t.Fatalf("a stream that is no partition: %+v", ev)
	}
	if ev := l.Decode(&nats.Msg{Subject: "live.inbox.p0.conv.1.msg"}); !errors.Is(ev.Err, eventstore.ErrBadEvent) {
		t.Fatalf("a copy without headers: %+v", ev)
	}
}

// TestRepublishKept: a store opened without Republish on streams that
// republish leaves them republishing (another node's live feed needs it).
func TestRepublishKept(t *testing.T) {
	s := testnats.Server(t)
	testnats.StoreWith(t, s, eventstore.Config{Republish: true})
	st := testnats.StoreWith(t, s, eventstore.Config{DuplicateWindow: time.Minute}) // a change: the stream is updated
	info, err := st.Streams()[0].Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if info.Config.RePublish == nil || info.Config.RePublish.Destination != "live.inbox.>" || info.Config.Duplicates != time.Minute {
		t.Fatalf("config %+v, republish %+v", info.Config, info.Config.RePublish)
	}
}
