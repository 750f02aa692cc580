package node

import (
	"context"
	"errors"

	"inbox/auth"
	"inbox/eventstore"
)

// Demo is what SeedDemo created: users with ready tokens and their conversations.
type Demo struct {
	Users         []DemoUser
	Conversations []DemoConversation
}

// DemoUser is a demo user and a token for it.
type DemoUser struct{ ID, Name, Token string }

// DemoConversation is a demo conversation and its members.
type DemoConversation struct {
	ID      int64
	Members []string
}

// SeedDemo creates (once; later runs reuse them) the users alice, bob and carol
// with profiles, conversation 1 (alice as client, bob as worker) and 2 (alice
// and carol), and mints a 24-hour token for each user.
func (n *Node) SeedDemo(ctx context.Context) (Demo, error) {
	secret := n.cfg.JWTSecret
	if secret == "" {
		secret = n.secrets.JWTSecret
	}
	if secret == "" {
		return Demo{}, errors.New("--demo mints tokens and needs an HS256 secret; unset --jwt-public-key or set --jwt-secret")
	}
	minter, err := auth.NewMinter(auth.MinterConfig{Secret: secret, Issuer: n.cfg.JWTIssuer, Audience: n.cfg.JWTAudience})
	if err != nil {
		return Demo{}, err
	}
	var d Demo
	for _, u := range []DemoUser{{ID: "alice", Name: "Alice Doe"}, {ID: "bob", Name: "Bob Worker"}, {ID: "carol", Name: "Carol Client"}} {
		if _, ok := n.dir.Profile(u.ID); !ok {
			if _, err := n.svc.SetProfile(ctx, u.ID, u.Name, nil); err != nil {
				return Demo{}, err
			}
		}
		if u.Token, err = minter.Mint(u.ID, u.Name, auth.DefaultTokenTTL); err != nil {
			return Demo{}, err
		}
		d.Users = append(d.Users, u)
	}
	convs := []struct {
		id      int64
		members []eventstore.Member
	}{
		{1, []eventstore.Member{{UserID: "alice", Role: eventstore.RoleClient}, {UserID: "bob", Role: eventstore.RoleWorker}}},
		{2, []eventstore.Member{{UserID: "alice", Role: eventstore.RoleClient}, {UserID: "carol", Role: eventstore.RoleWorker}}},
	}
	for _, c := range convs {
		if !n.dir.Exists(c.id) {
			if _, _, err := n.svc.CreateConversation(ctx, c.id, c.members); err != nil && !errors.Is(err, eventstore.ErrExists) {
				return Demo{}, err
			}
		}
		d.Conversations = append(d.Conversations, DemoConversation{ID: c.id, Members: n.dir.Members(c.id)})
	}
	return d, nil
}
