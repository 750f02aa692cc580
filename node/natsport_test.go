package node_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"inbox/eventstore"
	"inbox/internal/testnode"
	"inbox/node"
	"inbox/presence"
)

// startEmbedded starts an inboxd with embedded NATS listening on a free
// loopback port, and conversation 1 (alice, bob).
func startEmbedded(t *testing.T) *node.Node {
	t.Helper()
	cfg := testnode.Config(t)
	testnode.Secrets(&cfg)
	cfg.NATSListen = "127.0.0.1:0"
	n := testnode.Start(t, cfg)
	rtCreate(t, 1, []string{"alice", "bob"}, n)
	return n
}

// natsHostPort is the embedded server's host:port.
func natsHostPort(t *testing.T, n *node.Node) string {
	t.Helper()
	u, err := url.Parse(n.NATSURL())
	if err != nil {
		t.Fatal(err)
	}
	return u.Host
}

// inspectConn connects to n's embedded server as the inspection user and
// reports every asynchronous error (permission violations) on errs.
func inspectConn(t *testing.T, n *node.Node) (*nats.Conn, chan error) {
	t.Helper()
	nc, errs, err := dialInspect(n)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc, errs
}

func dialInspect(n *node.Node) (*nats.Conn, chan error, error) {
	key, err := nats.NkeyOptionFromSeed(n.Credentials().InspectKey())
	if err != nil {
		return nil, nil, err
	}
	errs := make(chan error, 64)
	nc, err := nats.Connect(n.NATSURL(), key, nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		errs <- err
	}))
	if err != nil {
		return nil, nil, fmt.Errorf("connect as the inspection user: %w", err)
	}
	return nc, errs, nil
}

// TestForgedEventRefused is the finding of issue 15, item 2: a raw PUB of
// inbox.conv.1.member adding mallory, sent to the embedded NATS port by any
// local process, was stored, and mallory could then read the conversation.
// Now the port admits no connection without credentials, and the read-only
// inspection user cannot publish; nothing is stored and mallory is no member.
func TestForgedEventRefused(t *testing.T) {
	n := startEmbedded(t)
	ctx := context.Background()
	forged, err := json.Marshal(map[string]any{
		"v": 1, "type": "member", "at": time.Now().UTC().Format(time.RFC3339Nano),
		"conversation_id": 1, "op": "add", "user_id": "mallory", "role": "member",
	})
	if err != nil {
		t.Fatal(err)
	}
	const subject = "inbox.conv.1.member"

	// Without credentials, as the finding did it: raw protocol on the port.
	conn, err := net.DialTimeout("tcp", natsHostPort(t, n), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(conn)
	if info, err := r.ReadString('\n'); err != nil || !strings.HasPrefix(info, "INFO ") {
		t.Fatalf("read INFO: %q %v", info, err)
	}
	fmt.Fprintf(conn, "CONNECT {\"verbose\":false,\"pedantic\":false}\r\nPUB %s %d\r\n%s\r\nPING\r\n", subject, len(forged), forged)
	reply, err := r.ReadString('\n')
	if err != nil || !strings.Contains(reply, "Authorization Violation") {
		t.Errorf("raw CONNECT and PUB without credentials: server answered %q (%v), want -ERR 'Authorization Violation'", reply, err)
	}

	// With nats.go and no credentials.
	if nc, err := nats.Connect(n.NATSURL()); err == nil {
		nc.Close()
		t.Errorf("connected to the embedded NATS port without credentials")
	}

	// As the inspection user: connected, but the publish is refused.
	if nc, errs, err := dialInspect(n); err != nil {
		t.Error(err)
	} else {
		defer nc.Close()
		if err := nc.Publish(subject, forged); err != nil {
			t.Fatal(err)
		}
		if err := nc.Flush(); err != nil {
			t.Fatal(err)
		}
		waitRefused(t, errs, subject, false)
	}

	// Nothing stored: the service's next append directly follows the
	// conversation's creation, no event is on the forged subject, and mallory
	// is not a member, on this node or in a rebuild of its read model.
	last, err := n.Store().Last(ctx)
	if err != nil {
		t.Fatal(err)
	}
	seq, err := n.Service().PostSystem(ctx, 1, "after the forgeries")
	if err != nil {
		t.Fatal(err)
	}
	if seq != last[0]+1 {
		t.Errorf("the next append got seq %d after last seq %d: something else was stored", seq, last[0])
	}
	if _, err := n.Store().Streams()[0].GetLastMsgForSubject(ctx, subject); !errors.Is(err, jetstream.ErrMsgNotFound) {
		t.Errorf("last message on %s: %v, want none", subject, err)
	}
	if err := n.Dir().WaitFor(ctx, seq); err != nil {
		t.Fatal(err)
	}
	if n.Dir().IsMember(1, "mallory") {
		t.Error("mallory is a member of conversation 1")
	}
}

// waitRefused waits for the server's permission violation on subject: a
// publish, or a subscription with sub.
func waitRefused(t *testing.T, errs <-chan error, subject string, sub bool) {
	t.Helper()
	what := "a publish to " + subject
	if sub {
		what = "a subscription to " + subject
	}
	timeout := time.After(10 * time.Second)
	for {
		select {
		case err := <-errs:
			if errors.Is(err, nats.ErrPermissionViolation) && strings.Contains(err.Error(), `"`+subject+`"`) &&
				(!sub || strings.Contains(err.Error(), "Subscription")) {
				return
			}
		case <-timeout:
			t.Fatalf("no permissions violation for %s within 10s", what)
		}
	}
}

// TestInspectionUserReadOnly: the inspection user of the embedded server
// (issue 15, item 2) reads streams, consumers and the presence bucket, and
// follows live events, but every write is refused: publishing to inbox.> or
// $KV.>, creating, updating, deleting or purging a stream, deleting a
// message, and creating, updating or deleting a consumer (a create naming
// the projector's consumer would update it).
func TestInspectionUserReadOnly(t *testing.T) {
	n := startEmbedded(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	nc, errs := inspectConn(t, n)

	// Reads, through the jetstream API as the nats CLI does them.
	live, err := nc.SubscribeSync("inbox.>")
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.AccountInfo(ctx); err != nil {
		t.Errorf("account info: %v", err)
	}
	var names []string
	for name := range js.StreamNames(ctx).Name() {
		names = append(names, name)
	}
	if !strings.Contains(strings.Join(names, ","), eventstore.StreamName) {
		t.Errorf("stream names = %v, want %s among them", names, eventstore.StreamName)
	}
	for range js.ListStreams(ctx).Info() {
	}
	stream, err := js.Stream(ctx, eventstore.StreamName)
	if err != nil {
		t.Fatalf("stream info: %v", err)
	}
	if _, err := stream.Info(ctx, jetstream.WithSubjectFilter("inbox.conv.>")); err != nil {
		t.Errorf("stream info with subjects: %v", err)
	}
	if msg, err := stream.GetMsg(ctx, 1); err != nil || msg.Subject != "inbox.conv.1.created" {
		t.Errorf("get message 1: %v %v", msg, err)
	}
	if msg, err := stream.GetMsg(ctx, 1, jetstream.WithGetMsgSubject("inbox.conv.1.created")); err != nil || msg.Sequence != 1 {
		t.Errorf("direct get of the next message on a subject: %v %v", msg, err)
	}
	if _, err := stream.GetLastMsgForSubject(ctx, "inbox.conv.1.created"); err != nil {
		t.Errorf("direct get of the last message on a subject: %v", err)
	}
	durable := "inbox-proj-" + n.Config().NodeID
	for name := range stream.ConsumerNames(ctx).Name() {
		if _, err := stream.Consumer(ctx, name); err != nil {
			t.Errorf("consumer info %s: %v", name, err)
		}
	}
	for range stream.ListConsumers(ctx).Info() {
	}
	if _, err := stream.Consumer(ctx, durable); err != nil {
		t.Errorf("consumer info %s: %v", durable, err)
	}
	kv, err := js.KeyValue(ctx, presence.Bucket)
	if err != nil {
		t.Fatalf("open bucket %s: %v", presence.Bucket, err)
	}
	if _, err := kv.Get(ctx, "node."+n.Config().NodeID); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Errorf("kv get: %v", err)
	}
	seq, err := n.Service().PostSystem(ctx, 1, "seen live")
	if err != nil {
		t.Fatal(err)
	}
	if msg, err := live.NextMsg(10 * time.Second); err != nil || msg.Subject != "inbox.conv.1.msg" {
		t.Errorf("live event: %v %v", msg, err)
	}
	select {
	case err := <-errs:
		t.Fatalf("a read was refused: %v", err)
	default:
	}

	// Writes: each is refused by the server (a permission violation on its
	// subject), and none changes the stream or the projector's consumer.
	before, err := stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	req := func(subject string, body any) {
		t.Helper()
		data, _ := json.Marshal(body)
		if err := nc.PublishRequest(subject, nc.NewRespInbox(), data); err != nil {
			t.Fatal(err)
		}
		waitRefused(t, errs, subject, false)
	}
	pub := func(subject, data string) {
		t.Helper()
		if err := nc.Publish(subject, []byte(data)); err != nil {
			t.Fatal(err)
		}
		waitRefused(t, errs, subject, false)
	}
	pub("inbox.conv.1.msg", `{"v":1,"type":"msg","conversation_id":1,"sender_id":"system","message":"forged"}`)
	pub("inbox.user.mallory.profile", `{}`)
	pub("$KV."+presence.Bucket+".user.mallory", `{}`)
	pub("$JS.ACK.INBOX."+durable+".1.1.1.0.0", "")
	cfg := eventstore.StreamConfig(1, 0, 1, time.Minute)
	req("$JS.API.STREAM.CREATE.EVIL", map[string]any{"name": "EVIL", "subjects": []string{"evil.>"}})
	req("$JS.API.STREAM.UPDATE.INBOX", cfg)
	req("$JS.API.STREAM.DELETE.INBOX", nil)
	req("$JS.API.STREAM.PURGE.INBOX", nil)
	req("$JS.API.STREAM.MSG.DELETE.INBOX", map[string]any{"seq": 1})
	req("$JS.API.STREAM.DELETE.KV_"+presence.Bucket, nil)
	narrowed := map[string]any{"stream_name": "INBOX", "config": map[string]any{
		"durable_name": durable, "deliver_policy": "all", "ack_policy": "all", "filter_subject": "inbox.job.>",
	}}
	req("$JS.API.CONSUMER.CREATE.INBOX."+durable+".inbox.job.>", narrowed)
	req("$JS.API.CONSUMER.CREATE.INBOX."+durable, narrowed)
	req("$JS.API.CONSUMER.CREATE.INBOX", map[string]any{"stream_name": "INBOX", "config": map[string]any{"name": durable, "filter_subject": "inbox.job.>"}})
	req("$JS.API.CONSUMER.DURABLE.CREATE.INBOX."+durable, narrowed)
	req("$JS.API.CONSUMER.DELETE.INBOX."+durable, nil)
	req("$JS.API.CONSUMER.MSG.NEXT.INBOX."+durable, map[string]any{"batch": 1})
	if _, err := nc.SubscribeSync("_INBOX_other.>"); err != nil {
		t.Fatal(err)
	}
	if _, err := nc.SubscribeSync("$JS.API.>"); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	waitRefused(t, errs, "_INBOX_other.>", true)
	waitRefused(t, errs, "$JS.API.>", true)

	after, err := n.Store().Streams()[0].Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if after.State.Msgs != before.State.Msgs || after.State.LastSeq != seq || after.State.FirstSeq != 1 {
		t.Errorf("stream state changed by refused writes: %+v, was %+v", after.State, before.State)
	}
	proj, err := n.Store().Streams()[0].Consumer(ctx, durable)
	if err != nil {
		t.Fatalf("the projector's consumer: %v", err)
	}
	if f := proj.CachedInfo().Config.FilterSubject; f != "" {
		t.Errorf("projector's filter subject changed to %q", f)
	}
	if _, err := js.Stream(ctx, "EVIL"); err == nil {
		t.Error("stream EVIL exists")
	}
}
