// The chat view: conversation list, history with paging back on scroll,
// live messages, typing, "Seen", sending with pending/failed states, and the
// connection's state. Entry point of / (chat.html).

import { h, reconcile, shortTime, clockTime, fullTime, initials } from './dom.js';
import { ChatStore, QUICK_REACTIONS } from './store.js';
import { resume, signIn, forgetToken, rememberToken, renewer } from './signin.js';

const root = document.getElementById('app');

async function main(reason) {
  let signed = null;
  if (!reason) {
    try {
      signed = await resume();
    } catch (e) {
      reason = e.message;
    }
    if (signed?.reason) {
      reason = signed.reason;
      signed = null;
    }
  }
  if (!signed) signed = await signIn(root, reason);
  const store = new ChatStore(signed.api, signed.session, signed.token, signed.names);
  if (signed.token) {
    store.renew = renewer(signed.session.user_id);
    store.addEventListener('token', (ev) => rememberToken(ev.detail));
  }
  const view = new ChatView(store, (why) => {
    store.stop();
    forgetToken();
    main(why);
  });
  root.replaceChildren(view.el);
  try {
    await store.start();
  } catch (e) {
    if (e.status === 401) {
      view.signOut(e.message);
      return;
    }
    view.notice(`Could not load the conversations: ${e.message}`);
  }
}

const NEAR_BOTTOM = 48; // px: a list scrolled this close to the end follows new messages
const NEAR_TOP = 120; // px: scrolling this close to the top loads older messages

const connectionText = {
  connecting: 'Connecting…',
  syncing: 'Catching up…',
  live: 'Connected',
  retrying: 'Reconnecting…',
  stopped: 'Disconnected',
};

class ChatView {
  constructor(store, signOut) {
    this.store = store;
    this.signOut = (why) => signOut(why);
    this.messageEls = new Map(); // key -> {sig, el}
    this.editing = null; // the id of the message being edited here
    this.confirming = null; // the id of the message whose deletion waits for a yes
    this.picking = null; // the id of the message whose emoji choice is open
    this.build();
    store.addEventListener('change', (ev) => this.changed(ev.detail));
    store.addEventListener('notice', (ev) => this.notice(ev.detail));
    document.addEventListener('visibilitychange', () => {
      const conv = store.convs.get(store.open);
      if (conv) store.markRead(conv);
    });
    this.renderConnection({ name: 'connecting' });
    this.renderList();
    this.renderThread();
  }

  build() {
    const s = this.store;
    this.conn = h('span', { id: 'conn', class: 'conn', role: 'status', dataset: { state: 'connecting' } });
    this.list = h('ul', { id: 'conv-list', class: 'conv-list' });
    this.title = h('h2', { id: 'thread-title', class: 'thread-title' });
    this.members = h('p', { class: 'thread-members' });
    this.older = h('button', { class: 'older', type: 'button', onclick: () => this.loadOlder() }, 'Load earlier messages');
    this.msgList = h('ol', { class: 'msg-list' });
    this.scroller = h('div', {
      id: 'messages', class: 'messages', role: 'log', 'aria-label': 'Messages', tabindex: '0',
      onscroll: () => {
        if (this.scroller.scrollTop < NEAR_TOP) this.loadOlder();
      },
    }, this.older, this.msgList);
    this.typing = h('p', { id: 'typing', class: 'typing', 'aria-live': 'polite' });
    this.input = h('textarea', {
      id: 'composer', name: 'message', rows: '1', placeholder: 'Write a message…', autocomplete: 'off',
      oninput: () => {
        this.fitInput();
        s.typed(this.input.value);
      },
      onkeydown: (ev) => {
        if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) {
          ev.preventDefault();
          this.swallowBreak = true;
          this.form.requestSubmit();
        }
      },
      // Enter sends; the line break some input methods still insert after
      // the key press is dropped (Shift+Enter keeps its line break).
      onbeforeinput: (ev) => {
        if (this.swallowBreak && ev.inputType === 'insertLineBreak') ev.preventDefault();
      },
      onkeyup: () => {
        this.swallowBreak = false;
      },
    });
    this.form = h('form', {
      class: 'composer',
      onsubmit: (ev) => {
        ev.preventDefault();
        const text = this.input.value.trim();
        if (!text) return;
        s.send(text);
        this.input.value = '';
        this.fitInput();
        this.follow = true;
      },
    },
    h('label', { for: 'composer', class: 'visually-hidden' }, 'Message'),
    this.input,
    h('button', { type: 'submit', class: 'primary' }, 'Send'));
    this.empty = h('div', { class: 'thread-empty' }, h('p', {}, 'Choose a conversation.'));
    this.thread = h('section', { class: 'thread', 'aria-labelledby': 'thread-title' },
      h('header', { class: 'thread-head' },
        h('button', { type: 'button', class: 'back', onclick: () => s.closeConversation() },
          h('span', { 'aria-hidden': 'true' }, '\u2190 '), 'Conversations'),
        h('div', {}, this.title, this.members)),
      this.scroller, this.typing, this.form);
    this.noticeEl = h('div', { class: 'notice', role: 'alert', hidden: true });
    const me = s.name(s.me);
    this.el = h('div', { class: 'chat-app' },
      h('header', { class: 'bar' },
        h('span', { class: 'brand' }, 'inbox'),
        this.conn,
        h('span', { class: 'spacer' }),
        h('span', { class: 'me', title: s.me }, me === s.me ? me : `${me} (${s.me})`),
        h('button', { type: 'button', class: 'quiet', onclick: () => this.signOut() }, 'Sign out')),
      h('div', { class: 'chat' },
        h('nav', { class: 'convs', 'aria-label': 'Conversations' }, this.list),
        this.thread, this.empty),
      this.noticeEl);
    this.layout = this.el.querySelector('.chat');
  }

  changed({ what, conv, state }) {
    const open = this.store.open;
    switch (what) {
      case 'connection':
        this.renderConnection(state);
        break;
      case 'conversations':
      case 'presence':
        this.renderList();
        if (open != null) this.renderHead();
        break;
      case 'open':
        this.follow = true;
        this.renderList();
        this.renderThread();
        if (conv != null) this.input.focus();
        break;
      case 'messages':
        if (conv === open) this.renderMessages();
        break;
      case 'typing':
        if (conv === open) this.renderTyping();
        break;
    }
  }

  renderConnection(state) {
    this.conn.dataset.state = state.name;
    this.conn.textContent = connectionText[state.name] ?? state.name;
    this.conn.title = state.name === 'retrying' && state.code ? `closed with ${state.code}${state.reason ? `: ${state.reason}` : ''}` : '';
    if (state.name === 'stopped' && state.reason) this.signOut(`the server refused the connection: ${state.reason}`);
  }

  convTitle(conv) {
    const others = conv.members.filter((u) => u !== this.store.me);
    return others.length ? others.map((u) => this.store.name(u)).join(', ') : `Conversation ${conv.id}`;
  }

  dots(conv) {
    const s = this.store;
    return h('span', { class: 'dots' }, conv.members.filter((u) => u !== s.me).map((u) => {
      const p = s.presence.get(u);
      const state = p == null ? 'unknown' : p.online ? 'online' : 'offline';
      const label = `${s.name(u)}: ${state === 'unknown' ? 'presence unknown' : state}`;
      return h('span', { class: `dot ${state}`, title: label, role: 'img', 'aria-label': label, dataset: { user: u } });
    }));
  }

  renderList() {
    const s = this.store;
    const convs = [...s.convs.values()].sort((a, b) => (b.last?.id ?? 0) - (a.last?.id ?? 0) || a.id - b.id);
    if (convs.length === 0) {
      this.list.replaceChildren(h('li', { class: 'conv-none' }, 'No conversations yet.'));
      return;
    }
    this.list.replaceChildren(...convs.map((c) => {
      const name = this.convTitle(c);
      const last = c.last;
      const preview = last ? `${last.sender_id === s.me ? 'You: ' : ''}${last.message}` : 'No messages yet';
      const active = c.id === s.open;
      return h('li', {}, h('button', {
        type: 'button', class: `conv${active ? ' active' : ''}${c.unread ? ' has-unread' : ''}`,
        dataset: { conv: c.id }, 'aria-current': active ? 'true' : null,
        onclick: () => s.openConversation(c.id),
      },
      h('span', { class: 'avatar', 'aria-hidden': 'true' }, initials(name)),
      h('span', { class: 'conv-main' },
        h('span', { class: 'conv-title' }, name, this.dots(c)),
        h('span', { class: 'conv-last' }, preview)),
      h('span', { class: 'conv-side' },
        last ? h('time', { datetime: last.created_at }, shortTime(last.created_at)) : null,
        c.unread ? h('span', { class: 'badge', 'aria-label': `${c.unread} unread` }, String(c.unread)) : null)));
    }));
  }

  renderThread() {
    const conv = this.store.convs.get(this.store.open);
    this.layout.classList.toggle('thread-open', !!conv);
    this.thread.hidden = !conv;
    this.empty.hidden = !!conv;
    if (!conv) return;
    this.renderHead();
    this.renderMessages();
    this.renderTyping();
  }

  renderHead() {
    const conv = this.store.convs.get(this.store.open);
    if (!conv) return;
    this.title.textContent = this.convTitle(conv);
    const s = this.store;
    const others = conv.members.filter((u) => u !== s.me);
    this.members.replaceChildren(...others.map((u) => {
      const p = s.presence.get(u);
      const state = p == null ? '' : p.online ? 'online' : p.last_seen ? `last seen ${shortTime(p.last_seen)}` : 'offline';
      return h('span', { class: 'member' }, h('span', { class: `dot ${p == null ? 'unknown' : p.online ? 'online' : 'offline'}`, 'aria-hidden': 'true' }),
        others.length > 1 ? `${s.name(u)}${state && ` · ${state}`}` : state);
    }));
  }

  // renderMessages shows the open conversation: its messages by id, then
  // the pending ones, reusing the element of every message that did not
  // change (its state, with edits, deletion and reactions, is the signature).
  renderMessages() {
    const s = this.store;
    const conv = s.convs.get(s.open);
    if (!conv) return;
    const sc = this.scroller;
    const atBottom = sc.scrollHeight - sc.scrollTop - sc.clientHeight < NEAR_BOTTOM;
    const fromBottom = sc.scrollHeight - sc.scrollTop;

    const msgs = [...conv.messages.values()].sort((a, b) => a.id - b.id);
    const seen = s.seenUpTo(conv);
    const lastSeen = msgs.findLast((m) => m.sender_id === s.me && m.id <= seen)?.id;
    // A run of messages from one sender, each within 5 minutes of the one
    // before, shows the name at its start and the time at its end.
    const apart = (a, b) => !a || !b || a.sender_id !== b.sender_id || Date.parse(b.created_at) - Date.parse(a.created_at) > 5 * 60e3;
    const items = msgs.map((m, i) => this.messageView(`m${m.id}`, {
      mine: m.sender_id === s.me, first: apart(msgs[i - 1], m), last: apart(m, msgs[i + 1]),
      name: m.sender_name || s.name(m.sender_id), text: m.message, time: m.created_at, id: m.id, seen: m.id === lastSeen,
      conv: conv.id, edited: !!m.edited_at, deleted: !!m.deleted, reactions: m.reactions ?? {},
      changeable: s.mayChange(m), editing: this.editing === m.id, confirming: this.confirming === m.id, picking: this.picking === m.id,
    }));
    for (const p of s.pending.values()) {
      if (p.conv !== conv.id) continue;
      items.push(this.messageView(`p${p.cmid}`, {
        mine: true, first: false, text: p.text, cmid: p.cmid, state: p.state, error: p.error,
      }));
    }
    const keys = new Set(items.map((el) => el.dataset.key));
    for (const k of this.messageEls.keys()) if (!keys.has(k)) this.messageEls.delete(k);
    reconcile(this.msgList, items);

    this.older.hidden = conv.loaded && !conv.hasMore;
    this.older.disabled = conv.loading;
    this.older.textContent = conv.loading ? 'Loading…' : 'Load earlier messages';
    if (this.follow || atBottom) sc.scrollTop = sc.scrollHeight;
    else sc.scrollTop = sc.scrollHeight - fromBottom; // older messages came in above
    this.follow = false;
  }

  messageView(key, v) {
    const sig = JSON.stringify(v);
    const had = this.messageEls.get(key);
    if (had?.sig === sig) return had.el;
    const status = [];
    if (v.state === 'failed') {
      status.push(h('span', { class: 'msg-error' }, `Not sent: ${v.error}`),
        h('button', { type: 'button', class: 'link', onclick: () => this.store.retry(v.cmid) }, 'Retry'),
        h('button', { type: 'button', class: 'link', onclick: () => this.store.discard(v.cmid) }, 'Discard'));
    } else if (v.state === 'queued') {
      status.push(h('span', { class: 'msg-state' }, 'Waiting for the connection…'));
    } else if (v.state) {
      status.push(h('span', { class: 'msg-state' }, v.state === 'sent' ? 'Sent' : 'Sending…'));
    }
    if (v.edited) status.push(h('span', { class: 'edited' }, 'edited'));
    if (v.time && (v.last || v.seen)) status.push(h('time', { datetime: v.time }, clockTime(v.time)));
    if (v.seen) status.push(h('span', { class: 'seen' }, 'Seen'));
    const bubble = v.editing ? this.editForm(v)
      : v.deleted ? h('div', { class: 'bubble deleted' }, 'Message deleted')
        : h('div', { class: 'bubble', title: v.time ? fullTime(v.time) : null }, v.text);
    const el = h('li', {
      class: ['msg', v.mine ? 'mine' : 'theirs', v.first ? 'first' : '', v.state ? `pending ${v.state}` : '', v.deleted ? 'deleted' : ''].filter(Boolean).join(' '),
      dataset: { key, id: v.id, cmid: v.cmid },
    },
    v.first && !v.mine ? h('span', { class: 'msg-sender' }, v.name) : null,
    bubble,
    v.id && !v.deleted ? this.reactionsView(v) : null,
    v.id && !v.deleted && !v.editing ? this.actionsView(v) : null,
    h('div', { class: 'msg-meta' }, status));
    this.messageEls.set(key, { sig, el });
    return el;
  }

  // reactionsView: a chip per emoji with its count; the user's own are
  // marked, and a click adds or removes the user's.
  reactionsView(v) {
    const s = this.store;
    const chips = Object.entries(v.reactions).map(([emoji, users]) => {
      const mine = users.includes(s.me);
      return h('button', {
        type: 'button', class: `reaction${mine ? ' mine' : ''}`, dataset: { emoji },
        title: users.map((u) => s.name(u)).join(', '), 'aria-pressed': mine ? 'true' : 'false',
        onclick: () => s.react(v.conv, v.id, emoji, !mine),
      }, emoji, ' ', String(users.length));
    });
    return chips.length ? h('div', { class: 'reactions' }, chips) : null;
  }

  // actionsView: react, and for the user's own messages in the edit
  // window, edit and delete (delete asks first).
  actionsView(v) {
    const s = this.store;
    const pick = (id) => {
      this.picking = id;
      this.renderMessages();
    };
    if (v.confirming) {
      return h('div', { class: 'msg-actions open' },
        h('span', {}, 'Delete for everyone?'),
        h('button', { type: 'button', class: 'link danger', dataset: { action: 'confirm-delete' }, onclick: () => {
          this.confirming = null;
          s.remove(v.conv, v.id);
          this.renderMessages();
        } }, 'Delete'),
        h('button', { type: 'button', class: 'link', onclick: () => {
          this.confirming = null;
          this.renderMessages();
        } }, 'Cancel'));
    }
    if (v.picking) {
      return h('div', { class: 'msg-actions open', role: 'group', 'aria-label': 'Reactions' },
        QUICK_REACTIONS.map((emoji) => h('button', {
          type: 'button', class: 'pick', dataset: { emoji }, 'aria-label': `React with ${emoji}`,
          onclick: () => {
            this.picking = null;
            if (!(v.reactions[emoji] ?? []).includes(s.me)) s.react(v.conv, v.id, emoji, true);
            this.renderMessages();
          },
        }, emoji)),
        h('button', { type: 'button', class: 'link', onclick: () => pick(null) }, 'Close'));
    }
    return h('div', { class: 'msg-actions' },
      h('button', { type: 'button', class: 'link', dataset: { action: 'react' }, onclick: () => pick(v.id) }, 'React'),
      v.changeable ? h('button', { type: 'button', class: 'link', dataset: { action: 'edit' }, onclick: () => {
        this.editing = v.id;
        this.renderMessages();
        this.msgList.querySelector('.edit-form textarea')?.focus();
      } }, 'Edit') : null,
      v.changeable ? h('button', { type: 'button', class: 'link', dataset: { action: 'delete' }, onclick: () => {
        this.confirming = v.id;
        this.renderMessages();
      } }, 'Delete') : null);
  }

  // editForm edits a message in place: Enter (or Save) sends an EDIT,
  // Escape (or Cancel) leaves it as it was.
  editForm(v) {
    const done = () => {
      this.editing = null;
      this.renderMessages();
    };
    const area = h('textarea', { rows: '2', 'aria-label': 'Edit message' });
    area.value = v.text;
    const save = () => {
      const text = area.value.trim();
      if (text && text !== v.text) this.store.edit(v.conv, v.id, text);
      done();
    };
    area.addEventListener('keydown', (ev) => {
      if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) {
        ev.preventDefault();
        save();
      } else if (ev.key === 'Escape') {
        done();
      }
    });
    return h('form', { class: 'bubble edit-form', onsubmit: (ev) => {
      ev.preventDefault();
      save();
    } }, area,
    h('div', { class: 'edit-buttons' },
      h('button', { type: 'submit', class: 'primary' }, 'Save'),
      h('button', { type: 'button', class: 'link', onclick: done }, 'Cancel')));
  }

  renderTyping() {
    const conv = this.store.convs.get(this.store.open);
    const who = conv ? this.store.typers(conv).map((u) => this.store.name(u)) : [];
    this.typing.textContent = who.length === 0 ? ''
      : who.length === 1 ? `${who[0]} is typing…` : `${who.slice(0, -1).join(', ')} and ${who.at(-1)} are typing…`;
  }

  loadOlder() {
    const conv = this.store.convs.get(this.store.open);
    if (!conv || conv.loading || !conv.hasMore) return;
    this.store.loadOlder(conv).catch((e) => this.notice(`History: ${e.message}`));
  }

  fitInput() {
    this.input.style.height = 'auto';
    this.input.style.height = `${Math.min(this.input.scrollHeight, 160)}px`;
  }

  notice(text) {
    this.noticeEl.textContent = text;
    this.noticeEl.hidden = false;
    clearTimeout(this.noticeTimer);
    this.noticeTimer = setTimeout(() => {
      this.noticeEl.hidden = true;
    }, 8000);
  }
}

main();
