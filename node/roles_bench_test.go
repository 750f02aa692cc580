package node_test

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"inbox/eventstore"
	"inbox/httpapi"
	"inbox/node"
)

// BenchmarkReadsThroughEdge: history and conversation-list latency through
// an edge (asking a projector over NATS) against a node of role all (its
// own SQLite), on one stream of 3 partitions holding the same data: 300
// users in 10 two-member conversations each (1,500 conversations), 20
// messages in each. 16 HTTP clients each make 250 requests, alternating a
// list of a random user and a page of 50 messages of one of that user's
// conversations; the two roles alternate, three rounds each. Reported:
// p50 and p99 of each kind per role (medians of the rounds), and the edge's
// start-up (the directory seeded from the projector's snapshot) against
// role all's (its own file). Run:
//
//	go test -run '^$' -bench ReadsThroughEdge -benchtime 1x ./node
func BenchmarkReadsThroughEdge(b *testing.B) {
	const (
		users, convsPerUser, msgsPerConv = 300, 10, 20
		clients, perClient, rounds       = 16, 250, 3
	)
	s := rtNATS(b)
	fast := func(c *node.Config) {
		c.API.UserRate = 1e6
		c.Admission.MaxAppendLatency, c.Admission.MaxFeedLag = time.Minute, time.Minute
	}
	all := rtStart(b, s, "a1", func(c *node.Config) { fast(c); c.Partitions = rolesPartitions })
	p1 := rtProjector(b, s, "p1")
	rtServing(b, 30*time.Second, p1)

	// Conversation i joins users i%users and (i+1..)%users.
	ctx := context.Background()
	convsOf := make(map[string][]int64)
	nconv := users * convsPerUser / 2
	for i := range nconv {
		id := int64(i + 1)
		a, bb := fmt.Sprintf("u%d", i%users), fmt.Sprintf("u%d", (i/users+1+i)%users)
		if a == bb {
			bb = fmt.Sprintf("u%d", (i+7)%users)
		}
		if _, _, err := all.Service().CreateConversation(ctx, id, []eventstore.Member{{UserID: a, Role: eventstore.RoleMember}, {UserID: bb, Role: eventstore.RoleMember}}); err != nil {
			b.Fatal(err)
		}
		convsOf[a] = append(convsOf[a], id)
		convsOf[bb] = append(convsOf[bb], id)
	}
	var wg sync.WaitGroup
	work := make(chan int64)
	for range 32 {
		wg.Go(func() {
			for conv := range work {
				for m := range msgsPerConv {
					_, err := all.Store().Append(ctx, &eventstore.Message{ConversationID: conv, SenderID: "u0", SenderName: "U", Text: fmt.Sprint("message ", m), MsgType: eventstore.TypeText})
					if err != nil {
						b.Error(err)
						return
					}
				}
			}
		})
	}
	for i := range nconv {
		work <- int64(i + 1)
	}
	close(work)
	wg.Wait()
	lastAll, err := all.Store().Last(ctx)
	if err != nil {
		b.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 120*time.Second)
	defer cancel()
	if err := all.Projector().WaitForAll(wctx, lastAll); err != nil {
		b.Fatal(err)
	}
	for _, p := range p1.ProjectorParts() {
		if err := p.Proj.WaitForAll(wctx, lastAll); err != nil {
			b.Fatal(err)
		}
	}

	start := time.Now()
	edge := rtStart(b, s, "e1", func(c *node.Config) { fast(c); c.Role, c.Partitions = node.RoleEdge, rolesPartitions })
	edgeStart := time.Since(start)
	start = time.Now()
	if err := all.Shutdown(ctx); err != nil {
		b.Fatal(err)
	}
	// all again on its caught-up file: the start-up of a node that has its read model.
	dir := all.Config().DataDir
	all = rtStart(b, s, "a1", func(c *node.Config) { fast(c); c.Partitions = rolesPartitions; c.DataDir = dir })
	allRestart := time.Since(start)

	tokens := make(map[string]string, users)
	var names []string
	for u := range convsOf {
		tokens[u] = rtToken(b, u)
		names = append(names, u)
	}
	slices.Sort(names)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: clients}}
	get := func(n *node.Node, user, path string) (time.Duration, error) {
		req, _ := http.NewRequest("GET", "http://"+n.HTTPAddr()+path, nil)
		req.Header.Set("Authorization", "Bearer "+tokens[user])
		t0 := time.Now()
		resp, err := client.Do(req)
		if err != nil {
			return 0, err
		}
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		took := time.Since(t0)
		if resp.StatusCode != http.StatusOK || resp.Header.Get(httpapi.StaleHeader) != "" {
			return 0, fmt.Errorf("GET %s: %s (stale %q)", path, resp.Status, resp.Header.Get(httpapi.StaleHeader))
		}
		return took, err
	}
	run := func(n *node.Node, seed uint64) (lists, pages []time.Duration) {
		var mu sync.Mutex
		var wg sync.WaitGroup
		for c := range clients {
			wg.Go(func() {
				r := rand.New(rand.NewPCG(seed, uint64(c)))
				var l, p []time.Duration
				for i := range perClient {
					u := names[r.IntN(len(names))]
					if i%2 == 0 {
						d, err := get(n, u, "/api/conversations")
						if err != nil {
							b.Error(err)
							return
						}
						l = append(l, d)
					} else {
						conv := convsOf[u][r.IntN(len(convsOf[u]))]
						d, err := get(n, u, fmt.Sprintf("/api/conversations/%d/messages?limit=50", conv))
						if err != nil {
							b.Error(err)
							return
						}
						p = append(p, d)
					}
				}
				mu.Lock()
				lists, pages = append(lists, l...), append(pages, p...)
				mu.Unlock()
			})
		}
		wg.Wait()
		return lists, pages
	}
	pct := func(ds []time.Duration, q float64) time.Duration {
		slices.Sort(ds)
		return ds[min(len(ds)-1, int(q*float64(len(ds))))]
	}
	type figures struct{ listP50, listP99, pageP50, pageP99 []time.Duration }
	res := map[string]*figures{"all": {}, "edge": {}}
	b.ResetTimer()
	for round := range rounds {
		for _, role := range []string{"all", "edge"} {
			n := all
			if role == "edge" {
				n = edge
			}
			run(n, 99) // warm: connections, statement caches
			l, p := run(n, uint64(round))
			f := res[role]
			f.listP50, f.listP99 = append(f.listP50, pct(l, 0.5)), append(f.listP99, pct(l, 0.99))
			f.pageP50, f.pageP99 = append(f.pageP50, pct(p, 0.5)), append(f.pageP99, pct(p, 0.99))
			b.Logf("round %d %-4s: list p50 %v p99 %v; history p50 %v p99 %v", round+1, role,
				pct(l, 0.5).Round(10*time.Microsecond), pct(l, 0.99).Round(10*time.Microsecond),
				pct(p, 0.5).Round(10*time.Microsecond), pct(p, 0.99).Round(10*time.Microsecond))
		}
	}
	b.StopTimer()
	med := func(ds []time.Duration) time.Duration { return pct(slices.Clone(ds), 0.5) }
	for _, role := range []string{"all", "edge"} {
		f := res[role]
		b.Logf("MEDIAN %-4s: list p50 %v p99 %v; history p50 %v p99 %v", role, med(f.listP50), med(f.listP99), med(f.pageP50), med(f.pageP99))
		b.ReportMetric(float64(med(f.listP99).Microseconds()), role+"-list-p99-µs")
		b.ReportMetric(float64(med(f.pageP99).Microseconds()), role+"-history-p99-µs")
	}
	b.Logf("START-UP with %d conversations: edge (directory from the projector's snapshot) %v; role all again on its own caught-up file %v",
		nconv, edgeStart.Round(time.Millisecond), allRestart.Round(time.Millisecond))
}
