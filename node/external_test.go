package node_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	natsserver "github.com/nats-io/nats-server/v2/test"

	"inbox/eventstore"
	"inbox/internal/testutil"
	"inbox/internal/wstest"
	"inbox/node"
	"inbox/presence"
	"inbox/projections"
)

// TestExternalNATSLeastPrivilege runs the nats-server configuration that
// docs/security.md gives for an external cluster (issue 15, item 2), as it
// stands in that file: two nodes connect as its inboxd user and do what
// inboxd does (create, send, type, read, presence across nodes, resume,
// history, a restart with a busy presence bucket, a rebuild of the read
// model) without one permissions violation in the server's log; its
// inspection user has exactly the embedded server's rights. With 3
// partitions, the service user's rights on INBOX are given on INBOX-0 …
// INBOX-2 instead, as the file says.
func TestExternalNATSLeastPrivilege(t *testing.T) {
	t.Run("one partition", func(t *testing.T) { testExternalNATSLeastPrivilege(t, 1) })
	t.Run("three partitions", func(t *testing.T) { testExternalNATSLeastPrivilege(t, 3) })
	// n2 an edge, through a projector: the read-model requests, the
	// unread counts, the leases bucket and the micro service's subjects.
	t.Run("edge and projector", func(t *testing.T) { testExternalNATSLeastPrivilege(t, rolesPartitions, node.RoleEdge) })
}

// testExternalNATSLeastPrivilege runs n1 (role all) and n2 (role all, or
// roles[0] with a projector) as the inboxd user of docs/security.md.
func testExternalNATSLeastPrivilege(t *testing.T, partitions int, roles ...string) {
	conf := securityDocConf(t)
	const svcPassword, inspectPassword = "inboxd-password-0123456789", "inspect-password-0123456789"
	t.Setenv("INBOXD_PASSWORD", svcPassword)
	t.Setenv("INSPECT_PASSWORD", inspectPassword)
	dir := t.TempDir()
	file := filepath.Join(dir, "nats.conf")
	full := fmt.Sprintf("listen: \"127.0.0.1:-1\"\njetstream { store_dir: %q }\n%s", filepath.Join(dir, "js"), conf)
	if err := os.WriteFile(file, []byte(full), 0o600); err != nil {
		t.Fatal(err)
	}
	opts, err := server.ProcessConfigFile(file)
	if err != nil {
		t.Fatalf("docs/security.md's configuration: %v", err)
	}
	opts.NoSigs, opts.NoLog = true, false
	if partitions > 1 {
		partitionRights(t, opts, partitions)
	}
	s := natsserver.RunServer(opts)
	t.Cleanup(s.Shutdown)
	log := &violationLog{}
	s.SetLoggerV2(log, false, false, false)
	hostPort := strings.TrimPrefix(s.ClientURL(), "nats://")
	svcURL := fmt.Sprintf("nats://inboxd:%s@%s", svcPassword, hostPort)

	checkInspectPermissions(t, opts)

	data1 := t.TempDir()
	asInboxd := func(data string) func(*node.Config) {
		return func(c *node.Config) {
			c.NATSURL, c.Partitions = svcURL, partitions
			if data != "" {
				c.DataDir = data
			}
		}
	}
	n1 := rtStart(t, s, "n1", asInboxd(data1))
	var n2 *node.Node
	if len(roles) > 0 && roles[0] == node.RoleEdge {
		p := rtStart(t, s, "p1", func(c *node.Config) {
			asInboxd("")(c)
			c.Role, c.LeaseTTL = node.RoleProjector, rolesTTL
		})
		rtServing(t, 30*time.Second, p)
		n2 = rtStart(t, s, "n2", func(c *node.Config) { asInboxd("")(c); c.Role = node.RoleEdge })
	} else {
		n2 = rtStart(t, s, "n2", asInboxd(""))
	}
	if strings.Contains(n1.NATSURL(), svcPassword) {
		t.Errorf("NATSURL() shows the password: %s", n1.NATSURL())
	}
	rtCreate(t, 1, []string{"alice", "bob"}, n1, n2)
	a := rtDial(t, n1, "alice")
	b := rtDial(t, n2, "bob")
	a.Until("bob online", func(f wstest.Frame) bool { return rtType(f) == "PRESENCE" && f["user_id"] == "bob" })
	id := rtSendMessage(t, a, 1, "hello over a locked-down cluster")
	b.Until("the message", func(f wstest.Frame) bool {
		return rtType(f) == "MESSAGE" && f["message"] == "hello over a locked-down cluster"
	})
	a.Send(map[string]any{"conversation_id": 1, "type": "TYPING", "is_typing": true})
	b.UntilType("TYPING")
	b.Send(map[string]any{"conversation_id": 1, "type": "READ", "up_to": id})
	a.UntilType("READ")
	b.Send(map[string]any{"type": "RESUME", "since": 0})
	b.UntilType("SYNCED")
	testutil.CheckFor(t, rtFrameWait, 10*time.Millisecond, func() error {
		if code := rtGet(t, n2, "bob", "/api/conversations/1/messages", nil); code != http.StatusOK {
			return fmt.Errorf("history: %d", code)
		}
		return nil
	})
	if _, err := n1.Service().PostSystem(context.Background(), 1, "from the service API"); err != nil {
		t.Fatal(err)
	}
	b.Until("the system message", func(f wstest.Frame) bool { return f["message"] == "from the service API" })
	b.Close()
	a.Until("bob offline", func(f wstest.Frame) bool {
		return rtType(f) == "PRESENCE" && f["user_id"] == "bob" && f["online"] == false
	})

	// A restart on the same data folder finds its durable consumer.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// A busy cluster's bucket: the restarted node's presence watch loads
	// 5,000 keys, enough for the server to ask for flow control.
	fill, err := eventstore.Connect(svcURL, "fill", eventstore.Auth{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5000 {
		if err := fill.Publish(fmt.Sprintf("$KV.%s.user.u%d.n2", presence.Bucket, i), []byte(strings.Repeat("x", 200))); err != nil {
			t.Fatal(err)
		}
	}
	if err := fill.Flush(); err != nil {
		t.Fatal(err)
	}
	fill.Close()
	if err := n1.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	n1 = rtStart(t, s, "n1", asInboxd(data1))
	rtSendMessage(t, rtDial(t, n1, "alice"), 1, "after the restart")

	// inbox replay and verify: a rebuild from sequence 1.
	nc, err := eventstore.Connect(svcURL, "rebuild", eventstore.Auth{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	store, err := eventstore.Open(ctx, eventstore.Config{Conn: nc, Partitions: partitions})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := projections.Rebuild(ctx, store, filepath.Join(t.TempDir(), "rebuilt.db"), nil); err != nil {
		t.Fatalf("rebuild: %v", err)
	}

	if v := log.violations(); len(v) > 0 {
		t.Errorf("the server refused the inboxd user %d times:\n%s", len(v), strings.Join(v, "\n"))
	}
}

// partitionRights gives the inboxd user of opts its rights on INBOX on the
// streams of n partitions instead (docs/security.md): every subject with an
// INBOX token is replaced by one per partition ($JS.API.STREAM.INFO.INBOX
// is kept too).
func partitionRights(t *testing.T, opts *server.Options, n int) {
	t.Helper()
	for _, u := range opts.Users {
		if u.Username != "inboxd" {
			continue
		}
		for _, list := range []*[]string{&u.Permissions.Publish.Allow, &u.Permissions.Subscribe.Allow} {
			var allow []string
			for _, subj := range *list {
				toks := strings.Split(subj, ".")
				i := slices.Index(toks, eventstore.StreamName)
				if i < 0 || subj == "$JS.API.STREAM.INFO.INBOX" {
					allow = append(allow, subj)
				}
				if i < 0 {
					continue
				}
				for k := range n {
					toks[i] = eventstore.StreamNameOf(n, k)
					allow = append(allow, strings.Join(toks, "."))
				}
			}
			*list = allow
		}
		return
	}
	t.Fatal("docs/security.md's configuration has no inboxd user")
}

// securityDocConf is the one ```conf block of docs/security.md.
func securityDocConf(t *testing.T) string {
	t.Helper()
	doc, err := os.ReadFile(filepath.Join("..", "docs", "security.md"))
	if err != nil {
		t.Fatal(err)
	}
	blocks := regexp.MustCompile("(?ms)^```conf\n(.*?)^```").FindAllStringSubmatch(string(doc), -1)
	if len(blocks) != 1 {
		t.Fatalf("docs/security.md has %d conf blocks, want one", len(blocks))
	}
	return blocks[0][1]
}

// checkInspectPermissions: the configuration's inspect user has the
// embedded server's inspection rights, no more, no less.
func checkInspectPermissions(t *testing.T, opts *server.Options) {
	t.Helper()
	want := eventstore.InspectPermissions()
	for _, u := range opts.Users {
		if u.Username != "inspect" {
			continue
		}
		p := u.Permissions
		if p == nil || p.Publish == nil || p.Subscribe == nil ||
			!sameSet(p.Publish.Allow, want.Publish.Allow) || !sameSet(p.Subscribe.Allow, want.Subscribe.Allow) ||
			len(p.Publish.Deny)+len(p.Subscribe.Deny) > 0 {
			t.Errorf("docs/security.md's inspect user has %+v %+v, want eventstore.InspectPermissions: %+v %+v", p.Publish, p.Subscribe, want.Publish, want.Subscribe)
		}
		return
	}
	t.Error("docs/security.md's configuration has no inspect user")
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

// violationLog is a nats-server logger keeping the permission violations.
type violationLog struct {
	mu    sync.Mutex
	lines []string
}

func (l *violationLog) keep(format string, v ...any) {
	if line := fmt.Sprintf(format, v...); strings.Contains(line, "Violation") {
		l.mu.Lock()
		l.lines = append(l.lines, line)
		l.mu.Unlock()
	}
}

func (l *violationLog) violations() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.lines)
}

func (l *violationLog) Noticef(format string, v ...any) { l.keep(format, v...) }
func (l *violationLog) Warnf(format string, v ...any)   { l.keep(format, v...) }
func (l *violationLog) Fatalf(format string, v ...any)  { l.keep(format, v...) }
func (l *violationLog) Errorf(format string, v ...any)  { l.keep(format, v...) }
func (l *violationLog) Debugf(format string, v ...any)  { l.keep(format, v...) }
func (l *violationLog) Tracef(format string, v ...any)  { l.keep(format, v...) }
