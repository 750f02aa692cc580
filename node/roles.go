package node

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"slices"
	"strconv"
	"sync/atomic"
	"time"

	"inbox/chat"
	"inbox/erasure"
	"inbox/eventstore"
	"inbox/httpapi"
	"inbox/lease"
	"inbox/metrics"
	"inbox/projections"
	"inbox/readmodel"
)

// Roles a node plays (Config.Role, inboxd --role).
const (
	// RoleAll is one process doing everything, as inbox always did: its
	// own SQLite read model of the whole stream, sockets and the API.
	RoleAll = "all"
	// RoleEdge serves sockets and the API and keeps no SQLite: it asks the
	// projectors (package readmodel) for history, lists, idempotency
	// records and message state.
	RoleEdge = "edge"
	// RoleProjector keeps the read models of the partitions it is given
	// (Config.Keep), one SQLite file each, and answers the edges for those
	// whose lease it holds (package lease). It serves no sockets and no API.
	RoleProjector = "projector"
)

// Roles are the roles, the default first.
var Roles = []string{RoleAll, RoleEdge, RoleProjector}

// readModel is what the node's parts ask the read model: a local projector
// (role all) or the projectors through a readmodel.Client (role edge).
type readModel interface {
	chat.ReadModel
	httpapi.ReadModel
	erasure.ReadModel
	Snapshot(ctx context.Context) (*projections.Snapshot, error)
}

var (
	_ readModel          = (*projections.Projector)(nil)
	_ readModel          = (*readmodel.Client)(nil)
	_ httpapi.Projection = (*readmodel.Client)(nil)
)

// checkRole refuses a role the configuration cannot play.
func (c *Config) checkRole() error {
	switch c.Role {
	case RoleAll:
		if len(c.Keep) > 0 {
			return errors.New("partitions to keep go with --role projector")
		}
	case RoleEdge, RoleProjector:
		if c.NATSURL == "" {
			return fmt.Errorf("--role %s needs --nats-url: edges and projectors share the NATS they talk over", c.Role)
		}
		if c.Role == RoleEdge && len(c.Keep) > 0 {
			return errors.New("partitions to keep go with --role projector")
		}
	default:
		return fmt.Errorf("role %q: want %s, %s or %s", c.Role, RoleAll, RoleEdge, RoleProjector)
	}
	return nil
}

// projectorPart is one partition's read model on a projector.
type projectorPart struct {
	k    int
	db   *projections.DB
	proj *projections.Projector
}

// startProjector runs the projector role: a database and projector per
// kept partition, the read-model service for the partitions whose lease it
// holds, and the unread counts of those.
func (n *Node) startProjector(runCtx context.Context) error {
	total := n.store.Partitions()
	keep := n.cfg.Keep
	if len(keep) == 0 {
		keep = make([]int, total)
		for k := range total {
			keep[k] = k
		}
	}
	for _, k := range keep {
		if k < 0 || k >= total {
			return fmt.Errorf("partition %d to keep: the stream has %d (0 to %d)", k, total, total-1)
		}
	}
	keep = slices.Compact(slices.Sorted(slices.Values(keep)))
	n.owns = make([]atomic.Bool, total)
	window := n.cfg.Limits.WithDefaults().IdempotencyWindow
	locals := make(map[int]readmodel.Local, len(keep))
	for _, k := range keep {
		db, err := projections.Open(filepath.Join(n.cfg.DataDir, "inbox-p"+strconv.Itoa(k)+".db"))
		if err != nil {
			return err
		}
		part := &projectorPart{k: k, db: db}
		n.parts = append(n.parts, part) // closed by stop
		if err := db.Bind(total); err != nil {
			return err
		}
		part.proj = projections.NewProjector(projections.ProjectorConfig{Name: n.cfg.NodeID, KeyWindow: window, Partitions: []int{k}},
			projections.ProjectorDeps{
				DB: db, Store: n.store, Logger: n.log,
				OnApplied: func(_ uint64, changes []projections.UnreadChange) {
					if n.owns[k].Load() { // the owner tells the edges
						if err := readmodel.PublishUnread(n.nc, changes); err != nil {
							n.log.Warn("publish unread counts", "partition", k, "err", err)
						}
					}
				},
			})
		locals[k] = part.proj
	}
	n.metrics = metrics.New(metrics.Sources{
		Skipped: func() float64 {
			var s uint64
			for _, p := range n.parts {
				s += p.proj.Skipped()
			}
			return float64(s)
		},
		Lag: func() float64 { return float64(n.lag(context.Background())) },
	})
	n.rms = readmodel.NewServer(n.nc, readmodel.ServerConfig{NodeID: n.cfg.NodeID, Partitions: total}, locals, n.log)
	if err := n.rms.Serve(nil); err != nil { // listed by nats micro ls while it owns nothing
		return err
	}
	for _, p := range n.parts {
		n.goRun("projector of partition "+strconv.Itoa(p.k), func() error { return p.proj.Run(runCtx) })
	}
	var err error
	n.leases, err = lease.Start(runCtx, lease.Config{
		NodeID: n.cfg.NodeID, Partitions: total, Keep: keep, TTL: n.cfg.LeaseTTL, Replicas: n.cfg.Replicas,
	}, lease.Deps{
		JetStream: n.store.JetStream(), Logger: n.log,
		Ready: n.caughtUp,
		OnChange: func(owned []int) {
			for k := range n.owns {
				n.owns[k].Store(slices.Contains(owned, k))
			}
			if err := n.rms.Serve(owned); err != nil {
				n.log.Error("serve the owned partitions", "partitions", owned, "err", err)
			}
		},
	})
	if err != nil {
		return fmt.Errorf("start leases: %w", err)
	}
	return nil
}

// caughtUp returns the kept partitions whose read model is within
// ReadyMaxLag of the stream.
func (n *Node) caughtUp(ctx context.Context) []int {
	last, err := n.store.Last(ctx)
	if err != nil {
		n.log.Warn("read the streams' last sequences", "err", err)
		return nil
	}
	var ready []int
	for _, p := range n.parts {
		if last[p.k]-min(last[p.k], p.db.Applied()[p.k]) <= n.cfg.ReadyMaxLag {
			ready = append(ready, p.k)
		}
	}
	return ready
}

// applied is what the node's read model has applied from each partition:
// its own projector's, the kept partitions' (role projector), or the
// projectors' (role edge; zero where one did not answer).
func (n *Node) applied(ctx context.Context) eventstore.Cursor {
	switch {
	case n.proj != nil:
		return n.proj.Applied()
	case n.remote != nil:
		ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		c, err := n.remote.Applied(ctx)
		if err != nil {
			return eventstore.NewCursor(n.store.Partitions())
		}
		return c
	}
	c := eventstore.NewCursor(n.store.Partitions())
	for _, p := range n.parts {
		c[p.k] = p.db.Applied()[p.k]
	}
	return c
}

// kept is the partitions the node's read model is judged on: every one,
// or those a projector keeps.
func (n *Node) kept() []int {
	if n.parts == nil {
		ks := make([]int, n.store.Partitions())
		for k := range ks {
			ks[k] = k
		}
		return ks
	}
	ks := make([]int, len(n.parts))
	for i, p := range n.parts {
		ks[i] = p.k
	}
	return ks
}

// serveProbes serves a projector's HTTP: health, readiness and metrics.
func (n *Node) serveProbes() {
	n.http = newHTTPServer(n.cfg.HTTP, httpapi.Probes(n.ready, n.metrics, n.log.With("component", "http")), n.log.With("component", "http"))
	n.goRun("http server", func() error {
		if err := n.http.Serve(n.ln); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})
}

// ServedPartitions is what a projector answers for now (nil on other roles).
func (n *Node) ServedPartitions() []int {
	if n.rms == nil {
		return nil
	}
	return n.rms.Owned()
}

// Role is the role the node plays.
func (n *Node) Role() string { return n.cfg.Role }
