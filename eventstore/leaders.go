package eventstore

import (
	"cmp"
	"context"
	"encoding/json"
	"maps"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Partition leaders. A replicated partition is a Raft group whose leader
// takes every append; the partitions scale appends only if their leaders
// are on different servers. JetStream elects a new group's leader without
// regard to the other partitions (on a three-server cluster all three often
// land on one server), so when Open has just created the partitions it asks
// JetStream to move leaders, one stepdown at a time, from a server leading
// more than one partition to a peer of that group leading fewer
// (`nats stream cluster step-down INBOX-1 --preferred n2` does the same by
// hand after servers restarted).

// leaderWait bounds how long spreadLeaders waits for one stepdown.
const leaderWait = 10 * time.Second

// spreadLeaders moves partition leaders apart; best effort: what fails is
// logged and left as it is.
func (s *Store) spreadLeaders(ctx context.Context) {
	for range s.n {
		k, to, ok := s.crowdedLeader(ctx)
		if !ok {
			return
		}
		name := s.StreamName(k)
		req, _ := json.Marshal(map[string]any{"placement": map[string]string{"preferred": to}})
		rctx, rcancel := context.WithTimeout(ctx, apiAttempt)
		msg, err := s.nc.RequestWithContext(rctx, "$JS.API.STREAM.LEADER.STEPDOWN."+name, req)
		rcancel()
		var resp struct {
			Error *jetstream.APIError `json:"error"`
		}
		if err == nil {
			err = json.Unmarshal(msg.Data, &resp)
		}
		if err == nil && resp.Error != nil {
			err = resp.Error
		}
		if err != nil {
			s.log.Warn("move a partition's leader", "stream", name, "to", to, "err", err)
			return
		}
		wait, cancel := context.WithTimeout(ctx, leaderWait)
		for wait.Err() == nil {
			if info, err := s.streams[k].Info(wait); err == nil && info.Cluster != nil && info.Cluster.Leader == to {
				break
			}
			select {
			case <-wait.Done():
			case <-time.After(50 * time.Millisecond):
			}
		}
		cancel()
		s.log.Info("moved a partition's leader", "stream", name, "to", to)
	}
}

// crowdedLeader finds a partition whose leader leads more partitions than
// one of its group's other servers does plus one, and that server.
func (s *Store) crowdedLeader(ctx context.Context) (k int, to string, ok bool) {
	type group struct {
		leader string
		peers  []string
	}
	groups := make([]group, s.n)
	led := map[string]int{}
	for k, st := range s.streams {
		info, err := st.Info(ctx)
		if err != nil || info.Cluster == nil || info.Cluster.Leader == "" {
			return 0, "", false // not clustered, or no leader yet: leave it
		}
		g := group{leader: info.Cluster.Leader}
		for _, p := range info.Cluster.Replicas {
			if p.Current && !p.Offline {
				g.peers = append(g.peers, p.Name)
			}
		}
		groups[k] = g
		led[g.leader]++
		for _, p := range g.peers {
			led[p] += 0
		}
	}
	for _, server := range slices.Sorted(maps.Keys(led)) {
		if led[server] < 2 {
			continue
		}
		for k, g := range groups {
			if g.leader != server || len(g.peers) == 0 {
				continue
			}
			to := slices.MinFunc(g.peers, func(a, b string) int { return cmp.Or(cmp.Compare(led[a], led[b]), cmp.Compare(a, b)) })
			if led[to]+1 < led[server] {
				return k, to, true
			}
		}
	}
	return 0, "", false
}
