package eventstore_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/nats-io/nats-server/v2/server"

	"inbox/eventstore"
	"inbox/internal/testnats"
)

// TestPartitionIsNATSPartition: a conversation's partition is what NATS's
// own partition() subject transform computes over its id token, for every
// count; and it never changes (golden values).
func TestPartitionIsNATSPartition(t *testing.T) {
	for _, n := range []int{2, 3, 7, 16, 256} {
		tr, err := server.NewSubjectTransform("inbox.conv.*.msg", fmt.Sprintf("p.{{partition(%d,1)}}", n))
		if err != nil {
			t.Fatal(err)
		}
		ids := []int64{eventstore.MaxID, eventstore.MaxID - 1, 1 << 40}
		for id := int64(1); id <= 3000; id++ {
			ids = append(ids, id)
		}
		for _, id := range ids {
			got, err := tr.Match(eventstore.ConvSubject(id, eventstore.KindMessage))
			if err != nil {
				t.Fatal(err)
			}
			if want := "p." + strconv.Itoa(eventstore.Partition(id, n)); got != want {
				t.Fatalf("conversation %d of %d partitions: inbox says %s, NATS %s", id, n, want, got)
			}
		}
	}
	golden := []struct {
		conv int64
		n    int
		k    int
	}{
		{1, 1, 0}, {1, 3, 1}, {2, 3, 1}, {3, 3, 2}, {42, 3, 2}, {1000, 16, 4}, {123456789, 16, 12}, {eventstore.MaxID, 256, 171},
	}
	for _, g := range golden {
		if k := eventstore.Partition(g.conv, g.n); k != g.k {
			t.Errorf("Partition(%d, %d) = %d, want %d: the hash changed, and with it where every stored conversation is", g.conv, g.n, k, g.k)
		}
	}
}

func TestIDRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		n   int
		k   int
		seq uint64
		id  uint64
	}{
		{1, 0, 794, 794},
		{1, 0, eventstore.MaxID, eventstore.MaxID},
		{3, 0, 12, 12 << 8},
		{3, 2, 3, 3<<8 | 2},
		{3, 1, 0, 1},
		{256, 255, eventstore.MaxPartitionSeq, eventstore.MaxID},
	} {
		if id := eventstore.ID(tc.n, tc.k, tc.seq); id != tc.id {
			t.Errorf("ID(%d, %d, %d) = %d, want %d", tc.n, tc.k, tc.seq, id, tc.id)
		}
		if k, seq := eventstore.Split(tc.n, tc.id); k != tc.k || seq != tc.seq {
			t.Errorf("Split(%d, %d) = %d, %d; want %d, %d", tc.n, tc.id, k, seq, tc.k, tc.seq)
		}
	}
}

func TestParseCursor(t *testing.T) {
	for _, tc := range []struct {
		s    string
		n    int
		want eventstore.Cursor
		err  string
	}{
		{s: "794", n: 1, want: eventstore.Cursor{794}},
		{s: "0", n: 1, want: eventstore.Cursor{0}},
		{s: "0", n: 3, want: eventstore.Cursor{0, 0, 0}},
		{s: "3072,1537,770", n: 3, want: eventstore.Cursor{12, 6, 3}},
		{s: "770, 3072", n: 3, want: eventstore.Cursor{12, 0, 3}}, // any order, a partition left out starts at 0
		{s: "3072,2048", n: 3, want: eventstore.Cursor{12, 0, 0}}, // twice: the later position
		{s: "3", n: 3, err: "names partition 3; the stream has 3"},
		{s: "", n: 3, err: "empty cursor"},
		{s: "3072,x", n: 3, err: `"x" is not an event id`},
		{s: "-1", n: 1, err: "is not an event id"},
		{s: "9007199254740992", n: 1, err: "is not an event id"}, // 2^53
		{s: strings.Repeat("1,", 3000) + "1", n: 3, err: "bytes"},
	} {
		c, err := eventstore.ParseCursor(tc.s, tc.n)
		switch {
		case tc.err != "":
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("ParseCursor(%.20q, %d) = %v, %v; want an error saying %q", tc.s, tc.n, c, err, tc.err)
			}
		case err != nil || !slices.Equal(c, tc.want):
			t.Errorf("ParseCursor(%q, %d) = %v, %v; want %v", tc.s, tc.n, c, err, tc.want)
		}
	}
	for _, c := range []eventstore.Cursor{{794}, {0}, {12, 6, 3}, {0, 0, 0, 0, 9}} {
		back, err := eventstore.ParseCursor(c.String(), len(c))
		if err != nil || !slices.Equal(back, c) {
			t.Errorf("ParseCursor(%q) = %v, %v; want %v", c.String(), back, err, c)
		}
	}
	if s := (eventstore.Cursor{794}).String(); s != "794" {
		t.Errorf("a one-partition cursor is %q, want the plain sequence 794", s)
	}
}

// FuzzParseCursor: any input parses or is refused without a panic, and a
// parsed cursor prints to a string that parses back to it.
func FuzzParseCursor(f *testing.F) {
	for _, s := range []string{"794", "3072,1537,770", "0", "1,2,3,4", ",", "18446744073709551615"} {
		f.Add(s, 3)
	}
	f.Fuzz(func(t *testing.T, s string, n int) {
		n = 1 + (n%eventstore.MaxPartitions+eventstore.MaxPartitions)%eventstore.MaxPartitions
		c, err := eventstore.ParseCursor(s, n)
		if err != nil {
			return
		}
		back, err := eventstore.ParseCursor(c.String(), n)
		if err != nil || !slices.Equal(back, c) {
			t.Fatalf("%q parsed to %v, printed %q, parsed back to %v, %v", s, c, c.String(), back, err)
		}
	})
}

// TestPartitionedStore: with 3 partitions each conversation's events go to
// its partition's stream, in order, under ids that name it; profiles and jobs
// go to partition 0; reads, tails, gets and claims work per partition.
func TestPartitionedStore(t *testing.T) {
	s := testnats.Server(t)
	st := testnats.StoreWith(t, s, eventstore.Config{Partitions: 3})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for k, stream := range st.Streams() {
		cfg := stream.CachedInfo().Config
		want := fmt.Sprintf("INBOX-%d", k)
		if cfg.Name != want || cfg.Metadata["inbox_partitions"] != "3" || cfg.Metadata["inbox_partition"] != strconv.Itoa(k) {
			t.Fatalf("partition %d's stream: %s %v", k, cfg.Name, cfg.Metadata)
		}
		prefix := fmt.Sprintf("inbox.p%d.", k)
		for _, subj := range cfg.Subjects {
			if !strings.HasPrefix(subj, prefix) {
				t.Errorf("%s captures %s", cfg.Name, subj)
			}
			if k > 0 && (strings.Contains(subj, ".user.") || strings.Contains(subj, ".job.")) {
				t.Errorf("%s captures profiles or jobs: %s", cfg.Name, subj)
			}
		}
	}

	byConv := map[int64][]uint64{}
	for i := range 60 {
		conv := int64(i%12 + 1)
		id, err := st.Append(ctx, msg(conv, fmt.Sprint(i)))
		if err != nil {
			t.Fatal(err)
		}
		if k, _ := eventstore.Split(3, id); k != eventstore.Partition(conv, 3) {
			t.Fatalf("conversation %d's message got id %d in partition %d, want %d", conv, id, k, eventstore.Partition(conv, 3))
		}
		if id > eventstore.MaxID {
			t.Fatalf("id %d above 2^53-1", id)
		}
		if prev := byConv[conv]; len(prev) > 0 && id <= prev[len(prev)-1] {
			t.Fatalf("conversation %d: id %d after %d", conv, id, prev[len(prev)-1])
		}
		byConv[conv] = append(byConv[conv], id)
		got, err := st.Get(ctx, id)
		if err != nil || got.Seq != id || got.Subject != eventstore.ConvSubject(conv, eventstore.KindMessage) || got.Event.(*eventstore.Message).Text != fmt.Sprint(i) {
			t.Fatalf("Get(%d) = %+v, %v", id, got, err)
		}
	}
	prof, err := st.Append(ctx, &eventstore.Profile{UserID: "alice", Name: "Alice"})
	if err != nil {
		t.Fatal(err)
	}
	job, err := st.Append(ctx, &eventstore.Job{JobID: 5, Members: []string{"alice"}}, eventstore.ExpectNew())
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []uint64{prof, job} {
		if k, _ := eventstore.Split(3, id); k != 0 {
			t.Fatalf("a profile or job event in partition %d", k)
		}
	}
	if _, err := st.Append(ctx, &eventstore.Job{JobID: 5, Members: []string{"bob"}}, eventstore.ExpectNew()); !errors.Is(err, eventstore.ErrExists) {
		t.Fatalf("second job 5: %v, want ErrExists", err)
	}
	if _, err := st.Get(ctx, eventstore.ID(3, 1, 1000)); !errors.Is(err, eventstore.ErrNotFound) {
		t.Fatalf("Get of an id past the stream: %v", err)
	}
	if _, err := st.Get(ctx, 1<<8|7); !errors.Is(err, eventstore.ErrNotFound) {
		t.Fatalf("Get of an id naming partition 7 of 3: %v", err)
	}

	// A lifecycle: its filter and expected last id are the conversation's partition's.
	first := byConv[5][0]
	filter := eventstore.LifecycleFilter(5, int64(first))
	if last, err := st.LastSeqOf(ctx, filter); err != nil || last != 0 {
		t.Fatalf("LastSeqOf(%s) = %d, %v", filter, last, err)
	}
	edit := &eventstore.Edit{ConversationID: 5, MessageID: int64(first), UserID: "alice", Text: "edited"}
	eid, err := st.Append(ctx, edit, eventstore.ExpectLast(0, filter))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Append(ctx, edit, eventstore.ExpectLast(0, filter)); !errors.Is(err, eventstore.ErrStale) {
		t.Fatalf("a second edit expecting none: %v, want ErrStale", err)
	}
	if last, err := st.LastSeqOf(ctx, filter); err != nil || last != eid {
		t.Fatalf("LastSeqOf(%s) = %d, %v; want %d", filter, last, err, eid)
	}
	if _, err := st.LastSeqOf(ctx, eventstore.AllMessages); err == nil {
		t.Fatal("LastSeqOf over every conversation of 3 partitions answered")
	}
	if ok, err := st.SecureDelete(ctx, eid); err != nil || !ok {
		t.Fatalf("SecureDelete(%d) = %v, %v", eid, ok, err)
	}
	if _, err := st.Get(ctx, eid); !errors.Is(err, eventstore.ErrNotFound) {
		t.Fatalf("Get of a deleted event: %v", err)
	}

	// Read one partition: only its events, filters of other partitions left out.
	k5 := eventstore.Partition(5, 3)
	var read []uint64
	err = st.Read(ctx, k5, 1, 1000, []string{eventstore.ConvSubject(5, eventstore.KindMessage), eventstore.ConvSubject(otherPartition(t, 5), eventstore.KindMessage)}, func(s eventstore.Stored) error {
		read = append(read, s.Seq)
		return s.Err
	})
	if err != nil || !slices.Equal(read, byConv[5]) {
		t.Fatalf("read conversation 5 in partition %d = %v, %v; want %v", k5, read, err, byConv[5])
	}
	if err := st.Read(ctx, (k5+1)%3, 1, 1000, []string{eventstore.ConvSubject(5, eventstore.KindMessage)}, func(s eventstore.Stored) error {
		return fmt.Errorf("read %d from a partition without conversation 5", s.Seq)
	}); err != nil {
		t.Fatal(err)
	}

	// Tail every partition: everything, each conversation in order, then live.
	seen := make(chan eventstore.Stored, 200)
	done := make(chan error, 1)
	go func() { done <- st.Tail(ctx, eventstore.NewCursor(3), nil, func(s eventstore.Stored) { seen <- s }) }()
	live, err := st.Append(ctx, msg(7, "live"))
	if err != nil {
		t.Fatal(err)
	}
	want := 60 + 2 + 1 + 1 // messages, profile and job, the edit (deleted: not delivered), live
	want--
	got := map[int64][]uint64{}
	for range want {
		s := <-seen
		if s.Err != nil {
			t.Fatalf("tail delivered %d with %v", s.Seq, s.Err)
		}
		if m, ok := s.Event.(*eventstore.Message); ok {
			got[m.ConversationID] = append(got[m.ConversationID], s.Seq)
		}
	}
	byConv[7] = append(byConv[7], live)
	for conv, ids := range byConv {
		if !slices.Equal(got[conv], ids) {
			t.Errorf("tail of conversation %d = %v, want %v", conv, got[conv], ids)
		}
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("tail ended with %v", err)
	}
}

// otherPartition is a conversation id in another partition (of 3) than conv.
func otherPartition(t *testing.T, conv int64) int64 {
	t.Helper()
	for id := conv + 1; ; id++ {
		if eventstore.Partition(id, 3) != eventstore.Partition(conv, 3) {
			return id
		}
	}
}

// TestMisplacedEventSkipped: an event published by hand into a partition
// that is not its conversation's is read back as undecodable, so readers
// skip it instead of breaking the conversation's order.
func TestMisplacedEventSkipped(t *testing.T) {
	s := testnats.Server(t)
	st := testnats.StoreWith(t, s, eventstore.Config{Partitions: 3})
	ctx := context.Background()
	id, err := st.Append(ctx, msg(1, "placed"))
	if err != nil {
		t.Fatal(err)
	}
	k, _ := eventstore.Split(3, id)
	wrong := (k + 1) % 3
	payload := `{"v":1,"type":"msg","at":"2025-01-15T10:30:00Z","conversation_id":1,"sender_id":"alice","sender_name":"A","sender_avatar":null,"message":"misplaced","msg_type":"TEXT"}`
	if _, err := st.JetStream().Publish(ctx, fmt.Sprintf("inbox.p%d.conv.1.msg", wrong), []byte(payload)); err != nil {
		t.Fatal(err)
	}
	var got []eventstore.Stored
	if err := st.Read(ctx, wrong, 1, 10, nil, func(s eventstore.Stored) error { got = append(got, s); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || !errors.Is(got[0].Err, eventstore.ErrBadEvent) || !strings.Contains(got[0].Err.Error(), "belongs to partition") {
		t.Fatalf("read back %+v; want one event refused as misplaced", got)
	}
	if got[0].Subject != "inbox.conv.1.msg" {
		t.Errorf("subject %q, want it without the partition token", got[0].Subject)
	}
}

// TestChangedPartitionsRefused: streams written with one count are never
// opened with another, either way, with one line naming both; Discover
// tells the count.
func TestChangedPartitionsRefused(t *testing.T) {
	for _, tc := range []struct {
		name       string
		have, want int
		says       string
	}{
		{"one to three", 1, 3, "stream INBOX holds the events of one partition, not 3: start with --partitions 1"},
		{"three to one", 3, 1, "stream INBOX-0 holds partition 0 of 3: the events were written with --partitions 3"},
		{"three to two", 3, 2, "stream INBOX-0 holds partition 0 of 3, not of 2: start with --partitions 3"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := testnats.Server(t)
			st := testnats.StoreWith(t, s, eventstore.Config{Partitions: tc.have})
			if _, err := st.Append(context.Background(), msg(1, "kept")); err != nil {
				t.Fatal(err)
			}
			_, err := eventstore.Open(context.Background(), eventstore.Config{Conn: testnats.Conn(t, s), Partitions: tc.want})
			if !errors.Is(err, eventstore.ErrPartitions) || !strings.Contains(err.Error(), tc.says) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("open with %d partitions: %v; want ErrPartitions saying %q", tc.want, err, tc.says)
			}
			names := map[string]bool{}
			lister := st.JetStream().StreamNames(context.Background())
			for name := range lister.Name() {
				names[name] = true
			}
			if (tc.want == 1 && names["INBOX"]) || (tc.want > 1 && names["INBOX-0"] && tc.have == 1) {
				t.Errorf("the refused open created streams: %v", names)
			}
			n, err := eventstore.Discover(context.Background(), testnats.Conn(t, s))
			if err != nil || n != tc.have {
				t.Errorf("Discover = %d, %v; want %d", n, err, tc.have)
			}
		})
	}
	n, err := eventstore.Discover(context.Background(), testnats.Conn(t, testnats.Server(t)))
	if err != nil || n != 0 {
		t.Errorf("Discover on a server without streams = %d, %v; want 0", n, err)
	}
}

// TestOnePartitionUnchanged: one partition is the stream inbox always had,
// configured the same, with ids that are its sequences.
func TestOnePartitionUnchanged(t *testing.T) {
	st := testnats.Store(t, testnats.Server(t))
	if len(st.Streams()) != 1 {
		t.Fatalf("%d streams", len(st.Streams()))
	}
	cfg := st.Streams()[0].CachedInfo().Config
	want := []string{"inbox.conv.*.*", "inbox.conv.*.msg.*.*", "inbox.user.*.*", "inbox.job.*.*", "inbox.sys.*"}
	if cfg.Name != "INBOX" || !slices.Equal(cfg.Subjects, want) || cfg.Metadata["inbox_partitions"] != "" {
		t.Fatalf("stream %s %v %v", cfg.Name, cfg.Subjects, cfg.Metadata)
	}
	for i := range 3 {
		id, err := st.Append(context.Background(), msg(int64(i+1), "x"))
		if err != nil || id != uint64(i+1) {
			t.Fatalf("append %d: id %d, %v", i, id, err)
		}
	}
}
