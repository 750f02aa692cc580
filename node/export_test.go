package node

import (
	"context"

	"inbox/admission"
	"inbox/chat"
	"inbox/eventstore"
	"inbox/httpapi"
	"inbox/metrics"
	"inbox/projections"
)

// What the tests of package node_test read inside a node.

func (n *Node) Config() Config                      { return n.cfg }
func (n *Node) Dir() *chat.Directory                { return n.dir }
func (n *Node) Store() *eventstore.Store            { return n.store }
func (n *Node) DB() *projections.DB                 { return n.db }
func (n *Node) Projector() *projections.Projector   { return n.proj }
func (n *Node) Metrics() *metrics.Metrics           { return n.metrics }
func (n *Node) Credentials() eventstore.Credentials { return n.creds }

// HaltPresence stops the node's presence heartbeat as a crash would: its
// keys stay until they expire.
func (n *Node) HaltPresence() { n.presStop() }

// Admission is the node's load shedding.
func (n *Node) Admission() *admission.Controller { return n.adm }

// Status is what GET /api/admin/status answers.
func (n *Node) Status(ctx context.Context) (httpapi.Status, error) { return n.status(ctx) }

// HaltProjector stops a projector node answering and renewing its leases
// at once, as a kill -9 would: its leases stay until they expire.
func (n *Node) HaltProjector() {
	n.leases.Halt()
	n.rms.Close()
}

// ProjectorPart is one partition a projector node keeps.
type ProjectorPart struct {
	K    int
	DB   *projections.DB
	Proj *projections.Projector
}

// ProjectorParts are the partitions a projector node keeps.
func (n *Node) ProjectorParts() []ProjectorPart {
	out := make([]ProjectorPart, len(n.parts))
	for i, p := range n.parts {
		out[i] = ProjectorPart{K: p.k, DB: p.db, Proj: p.proj}
	}
	return out
}
