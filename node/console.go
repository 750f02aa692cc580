package node

import (
	"context"
	"fmt"
	"time"

	"inbox/auth"
	"inbox/eventstore"
	"inbox/httpapi"
)

// Operator view and development sign-in: what the node gives the web
// console beyond the public API.

// maxLogEntries is how many recent warnings and errors the node keeps for
// GET /api/admin/status.
const maxLogEntries = 50

// status answers GET /api/admin/status.
func (n *Node) status(ctx context.Context) (httpapi.Status, error) {
	streams := make([]httpapi.StreamStatus, 0, n.store.Partitions())
	last := eventstore.NewCursor(n.store.Partitions())
	for k, st := range n.store.Streams() {
		info, err := st.Info(ctx)
		if err != nil {
			return httpapi.Status{}, fmt.Errorf("stream %s info: %w: %w", n.store.StreamName(k), eventstore.ErrUnavailable, err)
		}
		last[k] = info.State.LastSeq
		streams = append(streams, httpapi.StreamStatus{
			Name: info.Config.Name, Subjects: info.Config.Subjects, Replicas: info.Config.Replicas,
			Messages: info.State.Msgs, Bytes: info.State.Bytes, FirstSeq: info.State.FirstSeq, LastSeq: last[k],
			Consumers: info.State.Consumers,
		})
	}
	totals, err := n.metrics.Totals()
	if err != nil {
		return httpapi.Status{}, err
	}
	feed, applied := n.hub.FeedSeq(), n.applied(ctx)
	status := httpapi.Status{
		Node:        n.cfg.NodeID,
		Time:        time.Now().UTC(),
		StartedAt:   n.started.UTC(),
		Streams:     streams,
		Feed:        httpapi.FeedStatus{Seq: sum(feed), Lag: feed.Behind(last)},
		Projection:  httpapi.ProjectionStatus{Applied: sum(applied), Lag: applied.Behind(last)},
		Load:        n.loadStatus(),
		Totals:      totals,
		Errors:      n.ring.Entries(),
		ErrorsTotal: n.ring.Total(),
	}
	if len(last) > 1 {
		status.Feed.Cursor, status.Projection.Cursor = feed.String(), applied.String()
	}
	return status, nil
}

// sum is the sum of c's sequences: with one partition, its sequence.
func sum(c eventstore.Cursor) uint64 {
	var s uint64
	for _, seq := range c {
		s += seq
	}
	return s
}

// loadStatus is the admission control's view for the status.
func (n *Node) loadStatus() httpapi.LoadStatus {
	st, cfg := n.adm.Status(), n.adm.Config()
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	return httpapi.LoadStatus{
		FeedLagMS: ms(st.FeedLag), AppendLatencyMS: ms(st.AppendLatency), QueuedFrames: st.QueuedFrames,
		MaxFeedLagMS: ms(cfg.MaxFeedLag), MaxAppendLatencyMS: ms(cfg.MaxAppendLatency), MaxQueuedFrames: cfg.MaxQueuedFrames,
		Shed: st.Shed,
	}
}

// DevSignIn reports whether the console offers one-click sign-in: the node
// verifies tokens with its generated development secret.
func (n *Node) DevSignIn() bool { return n.devJWT }

// devTokens mints tokens for the console's one-click sign-in. Only a node on
// development secrets has one (see devTokens).
type devTokens struct {
	n      *Node
	minter *auth.Minter
}

// devTokens returns the development sign-in, or nil (the routes answer 404)
// when the node verifies tokens with a configured secret or key.
func (n *Node) devTokens() (httpapi.DevTokens, error) {
	if !n.devJWT {
		return nil, nil
	}
	m, err := auth.NewMinter(auth.MinterConfig{Secret: n.secrets.JWTSecret, Issuer: n.cfg.JWTIssuer, Audience: n.cfg.JWTAudience})
	if err != nil {
		return nil, fmt.Errorf("development sign-in: %w", err)
	}
	return devTokens{n: n, minter: m}, nil
}

func (d devTokens) Users(limit int) []httpapi.DevUser {
	ids := d.n.dir.Users()
	out := make([]httpapi.DevUser, 0, min(limit, len(ids)))
	for _, id := range ids[:min(limit, len(ids))] {
		p, _ := d.n.dir.Profile(id)
		out = append(out, httpapi.DevUser{UserID: id, Name: p.Name})
	}
	return out
}

func (d devTokens) Mint(user string) (string, time.Time, error) {
	name := ""
	if p, ok := d.n.dir.Profile(user); ok {
		name = p.Name
	}
	exp := time.Now().Add(auth.DefaultTokenTTL)
	tok, err := d.minter.Mint(user, name, auth.DefaultTokenTTL)
	return tok, exp, err
}
