// ChatStore is the chat client's state, kept from the HTTP API and the
// socket's frames: conversations, their messages (by id, so a frame that
// arrives twice is shown once), messages waiting for their ACK, who is
// typing, who has read what, and presence. It dispatches a "change" event
// with detail {what, conv} after each change; the view renders from it.

import { Connection } from './connection.js';

export const PAGE = 50; // history page size
const TYPING_TTL = 10000; // a start without expires_at lasts this long (docs/protocol.md)
const TYPING_REPEAT = 3000; // send another start while typing, at most this often
const TYPING_IDLE = 5000; // no keystroke for this long: send a stop
const PRESENCE_LOOKUPS = 20; // contacts asked about at start (the API limits requests per user)
export const EDIT_WINDOW = 48 * 3600e3; // a sender may edit or delete this long (--edit-window's default)
export const QUICK_REACTIONS = ['👍', '❤️', '😂', '🎉', '😮', '😢'];

// A conversation as the client knows it.
function newConversation(id) {
  return {
    id,
    members: [], // user ids
    last: null, // the newest message known
    unread: 0,
    messages: new Map(), // id -> message, as the socket and history send them
    loaded: false, // the newest page of history was fetched
    hasMore: true, // older history may exist
    loading: false,
    typing: new Map(), // user id -> expiry (ms since the epoch)
    reads: new Map(), // user id -> highest message id the user has read
    readSent: 0, // highest id this user's receipts covered
    unreadMark: 0, // the store's mark when unread was last set by a frame or a receipt
  };
}

export class ChatStore extends EventTarget {
  // api: an API with the user's credentials; session: GET /api/session's
  // answer; token: the user token for the socket (null: the cookie).
  constructor(api, session, token, names = new Map()) {
    super();
    this.api = api;
    this.me = session.user_id;
    this.names = new Map(names);
    if (session.name) this.names.set(this.me, session.name);
    this.convs = new Map();
    this.pending = new Map(); // client_msg_id -> {cmid, conv, text, state, error, messageId}
    this.presence = new Map(); // user id -> {online, last_seen}
    this.open = null; // the conversation shown
    this.renew = null; // resolves to a fresh token for this user, where there is a way
    this.typingSent = null; // {conv, at}: this user's last TYPING start
    this.mark = 0; // counts unread updates, so an older answer does not overwrite a newer count
    this.conn = new Connection({
      token,
      onFrame: (f) => this.frame(f),
      onState: (s) => this.emit('connection', null, s),
      checkSession: () => this.checkSession(),
    });
  }

  emit(what, conv = null, state = null) {
    this.dispatchEvent(new CustomEvent('change', { detail: { what, conv, state } }));
  }

  // notify shows a passing message (an error without a message to attach it to).
  notify(text) {
    this.dispatchEvent(new CustomEvent('notice', { detail: text }));
  }

  name(user) {
    return this.names.get(user) || user;
  }

  conv(id) {
    let c = this.convs.get(id);
    if (!c) {
      c = newConversation(id);
      this.convs.set(id, c);
    }
    return c;
  }

  // start loads the conversation list and opens the socket from the last
  // message of each conversation in it: what came after is replayed, so
  // nothing falls between.
  async start() {
    await this.refresh();
    const since = [0];
    for (const c of this.convs.values()) if (c.last?.id) since.push(c.last.id);
    this.conn.start(since);
    this.lookUpPresence();
  }

  stop() {
    this.conn.stop();
    clearTimeout(this.typingIdle);
    clearTimeout(this.typingTimer);
  }

  // checkSession asks the server why the socket did not open; null if the
  // credentials are fine (the server is down, say).
  async checkSession() {
    try {
      await this.api.get('/api/session');
      return null;
    } catch (e) {
      return e.status === 401 ? e.message : null;
    }
  }

  // refresh merges GET /api/conversations: members, last messages and
  // unread counts. Conversations are removed only by CONVERSATION_LEFT: the
  // read model may lag behind the socket.
  async refresh() {
    const asked = ++this.mark;
    const { conversations } = await this.api.get('/api/conversations');
    for (const c of conversations) {
      const conv = this.conv(c.id);
      conv.members = c.members.map((m) => m.user_id);
      // An UNREAD frame (or a receipt) since the question is newer than the answer.
      if (conv.unreadMark < asked) conv.unread = c.unread;
      if (c.last_message) this.addMessage(c.last_message);
    }
    this.emit('conversations');
    if (this.open != null) this.markRead(this.convs.get(this.open));
  }

  async lookUpPresence(users) {
    if (!users) {
      const all = new Set();
      for (const c of this.convs.values()) for (const u of c.members) if (u !== this.me) all.add(u);
      users = [...all].slice(0, PRESENCE_LOOKUPS);
    }
    for (const u of users) {
      try {
        const p = await this.api.get(`/api/presence?user_id=${encodeURIComponent(u)}`);
        if (!this.presence.has(u)) this.presence.set(u, p); // a PRESENCE frame is newer
      } catch {
        // Presence is a nicety; the frames keep it current from here on.
      }
    }
    this.emit('presence');
  }

  // addMessage stores m (from history or the socket) once. A socket's
  // message frame has no lifecycle fields: what history or an edit,
  // deletion or reaction frame said of it stays.
  addMessage(m) {
    const conv = this.conv(m.conversation_id);
    const had = conv.messages.get(m.id);
    const merged = had ? { ...had, ...m, is_read: had.is_read || m.is_read } : { reactions: {}, edited_at: null, deleted: false, ...m };
    if (had?.deleted) Object.assign(merged, { deleted: true, message: '', reactions: {}, edited_at: null });
    conv.messages.set(m.id, merged);
    if (!merged.deleted && (!conv.last || m.id >= conv.last.id)) conv.last = merged;
    if (m.sender_name) this.names.set(m.sender_id, m.sender_name);
    if (m.sender_id === this.me && m.client_msg_id) this.pending.delete(m.client_msg_id);
    return conv;
  }

  // frame acts on one server frame.
  frame(f) {
    const handle = handlers[f.type];
    if (handle) handle.call(this, f);
    else if ('id' in f && 'message' in f) this.onMessage(f);
  }

  onMessage(m) {
    const conv = this.addMessage(m);
    if (conv.typing.delete(m.sender_id)) this.emit('typing', conv.id);
    this.emit('messages', conv.id);
    this.emit('conversations');
    if (m.sender_id !== this.me) this.markRead(conv, true);
  }

  // openConversation shows id, loading its newest history the first time.
  openConversation(id) {
    if (this.open !== id) this.stopTyping();
    this.open = id;
    this.emit('open', id);
    const conv = this.convs.get(id);
    if (!conv) return;
    if (!conv.loaded) this.loadOlder(conv).catch((e) => this.notify(`History: ${e.message}`));
    this.markRead(conv);
  }

  closeConversation() {
    this.stopTyping();
    this.open = null;
    this.emit('open', null);
  }

  // loadOlder fetches the newest page the first time, then the page before
  // the oldest message held.
  async loadOlder(conv) {
    if (conv.loading || (conv.loaded && !conv.hasMore)) return;
    conv.loading = true;
    this.emit('messages', conv.id);
    try {
      let path = `/api/conversations/${conv.id}/messages?limit=${PAGE}`;
      if (conv.loaded && conv.messages.size > 0) path += `&before=${Math.min(...conv.messages.keys())}`;
      const { messages } = await this.api.get(path);
      for (const m of messages) this.addMessage(m);
      conv.hasMore = messages.length === PAGE;
      conv.loaded = true;
    } finally {
      conv.loading = false;
      this.emit('messages', conv.id);
      this.emit('conversations');
    }
    this.markRead(conv);
  }

  // markRead sends READ up to the newest message of the open conversation
  // when the page is seen and there is something unread (or force: a
  // message from someone else just arrived in it).
  markRead(conv, force = false) {
    if (!conv || conv.id !== this.open || document.visibilityState !== 'visible') return;
    if (!force && conv.unread === 0) return;
    const newest = conv.last?.id ?? 0;
    if (newest <= conv.readSent) return;
    if (!this.conn.send({ conversation_id: conv.id, type: 'READ', up_to: newest })) return;
    conv.readSent = newest;
    // Everything is read; the server's UNREAD 0 follows.
    conv.unread = 0;
    conv.unreadMark = ++this.mark;
    this.emit('conversations');
  }

  // seenUpTo is the highest message id another member has read.
  seenUpTo(conv) {
    let seen = 0;
    for (const [u, upTo] of conv.reads) if (u !== this.me) seen = Math.max(seen, upTo);
    for (const m of conv.messages.values()) if (m.sender_id === this.me && m.is_read) seen = Math.max(seen, m.id);
    return seen;
  }

  // send queues a message: pending until its ACK; sent again after a
  // reconnect with the same client_msg_id, which the server stores once.
  send(text) {
    const conv = this.open;
    if (conv == null || !text.trim()) return;
    const p = { cmid: newID(), conv, text, state: 'sending', error: null, messageId: 0 };
    this.pending.set(p.cmid, p);
    this.typingSent = null; // the message ends the indicator on the other side
    clearTimeout(this.typingIdle);
    this.transmit(p);
  }

  transmit(p) {
    p.state = 'sending';
    p.error = null;
    const sent = this.conn.send({ conversation_id: p.conv, message: p.text, type: 'TEXT', client_msg_id: p.cmid });
    if (!sent) p.state = 'queued';
    this.emit('messages', p.conv);
  }

  // edit, remove and react change a message (docs/protocol.md): the
  // server answers with MESSAGE_EDITED, MESSAGE_DELETED or REACTION to
  // every member, or an ERROR (shown as a notice).
  edit(conv, id, text) {
    if (!text.trim()) return;
    this.conn.send({ type: 'EDIT', conversation_id: conv, message_id: id, message: text, client_msg_id: newID() });
  }

  remove(conv, id) {
    this.conn.send({ type: 'DELETE', conversation_id: conv, message_id: id, client_msg_id: newID() });
  }

  react(conv, id, emoji, on) {
    this.conn.send({ type: 'REACT', conversation_id: conv, message_id: id, emoji, on, client_msg_id: newID() });
  }

  // mayChange: the user's own message, not deleted, within the edit window.
  mayChange(m) {
    return m.sender_id === this.me && !m.deleted && Date.now() - Date.parse(m.created_at) < EDIT_WINDOW;
  }

  // changed updates a message the store holds and tells the view.
  changed(f, update) {
    const conv = this.convs.get(f.conversation_id);
    const m = conv?.messages.get(f.message_id);
    if (!m) return; // not loaded: history will show it as it is
    update(m);
    if (m.deleted && conv.last?.id === m.id) {
      conv.last = [...conv.messages.values()].filter((x) => !x.deleted).sort((a, b) => b.id - a.id)[0] ?? null;
    }
    this.emit('messages', conv.id);
    this.emit('conversations');
  }

  retry(cmid) {
    const p = this.pending.get(cmid);
    if (p) this.transmit(p);
  }

  discard(cmid) {
    const p = this.pending.get(cmid);
    if (!p) return;
    this.pending.delete(cmid);
    this.emit('messages', p.conv);
  }

  // typed is called on every change of the composer's text.
  typed(text) {
    const conv = this.open;
    if (conv == null) return;
    if (!text.trim()) {
      this.stopTyping();
      return;
    }
    const now = Date.now();
    if (this.typingSent?.conv !== conv || now - this.typingSent.at > TYPING_REPEAT) {
      if (this.conn.send({ conversation_id: conv, type: 'TYPING', is_typing: true })) this.typingSent = { conv, at: now };
    }
    clearTimeout(this.typingIdle);
    this.typingIdle = setTimeout(() => this.stopTyping(), TYPING_IDLE);
  }

  stopTyping() {
    clearTimeout(this.typingIdle);
    if (!this.typingSent) return;
    this.conn.send({ conversation_id: this.typingSent.conv, type: 'TYPING', is_typing: false });
    this.typingSent = null;
  }

  // typers lists who is typing in conv now.
  typers(conv) {
    const now = Date.now();
    return [...conv.typing].filter(([, until]) => until > now).map(([u]) => u);
  }

  // expireTyping drops indicators whose time is up and sets a timer for the next.
  expireTyping() {
    clearTimeout(this.typingTimer);
    const now = Date.now();
    let next = Infinity;
    for (const conv of this.convs.values()) {
      for (const [u, until] of conv.typing) {
        if (until <= now) {
          conv.typing.delete(u);
          this.emit('typing', conv.id);
        } else {
          next = Math.min(next, until);
        }
      }
    }
    if (next < Infinity) this.typingTimer = setTimeout(() => this.expireTyping(), next - now + 20);
  }
}

// handlers act on the control frames (docs/protocol.md); a frame without
// one that has id and message is a message.
const handlers = {
  ACK(f) {
    const p = this.pending.get(f.client_msg_id);
    if (!p) return;
    if (this.convs.get(p.conv)?.messages.has(f.message_id)) this.pending.delete(p.cmid);
    else Object.assign(p, { state: 'sent', messageId: f.message_id });
    this.emit('messages', p.conv);
  },

  ERROR(f) {
    const p = f.client_msg_id && this.pending.get(f.client_msg_id);
    if (p) {
      Object.assign(p, { state: 'failed', error: f.error });
      // No message ends the typing indicator the text started: a stop does,
      // unless the user is typing again.
      if (this.typingSent?.conv !== p.conv) this.conn.send({ conversation_id: p.conv, type: 'TYPING', is_typing: false });
      this.emit('messages', p.conv);
    } else {
      this.notify(f.error);
    }
  },

  TYPING(f) {
    const conv = this.convs.get(f.conversation_id);
    if (!conv || f.user_id === this.me) return;
    const now = Date.now();
    // expires_at is the server's clock; arrival + TTL bounds a skewed one.
    const until = Math.min(Date.parse(f.expires_at) || Infinity, now + TYPING_TTL);
    if (f.is_typing && until > now) conv.typing.set(f.user_id, until);
    else conv.typing.delete(f.user_id);
    this.expireTyping();
    this.emit('typing', conv.id);
  },

  READ(f) {
    const conv = this.convs.get(f.conversation_id);
    if (!conv) return;
    const upTo = Math.max(f.up_to ?? 0, ...(f.message_ids ?? []));
    if (f.user_id === this.me) {
      conv.readSent = Math.max(conv.readSent, upTo); // read on another device
    } else {
      conv.reads.set(f.user_id, Math.max(conv.reads.get(f.user_id) ?? 0, upTo));
      this.emit('messages', conv.id);
    }
  },

  MESSAGE_EDITED(f) {
    this.changed(f, (m) => Object.assign(m, { message: f.message, edited_at: f.edited_at }));
  },

  MESSAGE_DELETED(f) {
    this.changed(f, (m) => Object.assign(m, { message: '', deleted: true, edited_at: null, reactions: {} }));
  },

  REACTION(f) {
    this.changed(f, (m) => {
      const users = (m.reactions[f.emoji] ?? []).filter((u) => u !== f.user_id);
      if (f.on) users.push(f.user_id);
      m.reactions = { ...m.reactions, [f.emoji]: users };
      if (users.length === 0) delete m.reactions[f.emoji];
    });
  },

  UNREAD(f) {
    const conv = this.convs.get(f.conversation_id);
    if (!conv) return;
    conv.unread = f.unread;
    conv.unreadMark = ++this.mark;
    this.emit('conversations');
    this.markRead(conv);
  },

  PRESENCE(f) {
    this.presence.set(f.user_id, { online: f.online, last_seen: f.last_seen });
    this.emit('presence');
  },

  CONVERSATION_JOINED(f) {
    const conv = this.conv(f.conversation_id);
    conv.members = f.members;
    this.emit('conversations');
    this.lookUpPresence(f.members.filter((u) => u !== this.me && !this.presence.has(u)));
  },

  CONVERSATION_LEFT(f) {
    this.convs.delete(f.conversation_id);
    if (this.open === f.conversation_id) {
      this.closeConversation();
      this.notify(`You are no longer a member of conversation ${f.conversation_id}.`);
    }
    this.emit('conversations');
  },

  // The token runs out soon: the socket closes one grace period after its
  // exp unless a REFRESH brings a new one (docs/protocol.md).
  TOKEN_EXPIRING(f) {
    const until = new Date(f.close_at).toLocaleTimeString();
    if (!this.renew) {
      this.notify(`Your sign-in ends at ${until}: sign in again then.`);
      return;
    }
    this.renew().then((token) => {
      this.api.token = token;
      this.conn.token = token;
      this.conn.send({ type: 'REFRESH', token });
      this.dispatchEvent(new CustomEvent('token', { detail: token }));
    }).catch((e) => this.notify(`Your sign-in ends at ${until} and could not be renewed: ${e.message}`));
  },

  SYNCED(f) {
    if (f.more) return;
    // Caught up: what changed while away (unread counts) comes from the
    // read model, and messages that never got their ACK go out again.
    this.refresh().catch((e) => this.notify(`Conversations: ${e.message}`));
    for (const p of this.pending.values()) if (p.state === 'queued' || p.state === 'sending') this.transmit(p);
  },
};

// newID is a client_msg_id: random, also where crypto.randomUUID is not
// offered (pages not served over https or from localhost).
function newID() {
  const b = crypto.getRandomValues(new Uint8Array(12));
  return 'c-' + Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
}
