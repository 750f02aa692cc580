// Connection keeps one WebSocket to /ws/inbox/ open. Every (re)connect asks
// for the events after the last ones it saw (?since=), so after a drop
// nothing is missed and nothing arrives twice; a SYNCED with "more": true is
// followed by RESUME frames until the catch-up is complete.
//
// What it saw is kept per partition (docs/protocol.md, Resume with more than
// one partition): a server with one stream sends SYNCED without a cursor and
// every seq is a sequence of that stream, so the highest seq is the
// position; with more streams SYNCED carries a cursor and a seq names its
// partition in its low 8 bits, so the position is the highest seq of each
// partition, sent as a comma-separated list. Until the first SYNCED tells
// which, the list is sent: a one-stream server takes its highest entry. A refused
// upgrade is invisible to a page (no status, no body), so after a socket
// that never opened the connection asks checkSession why, and stops if the
// credentials are refused.

const MIN_DELAY = 500; // first retry after 250-500 ms
const MAX_DELAY = 15000;
const PING_EVERY = 20000;
const SILENCE = 45000; // no frame for this long, ping included: reconnect
const RESUME_RETRY = 2000; // a refused RESUME that says not when is asked again after this

export class Connection {
  // onFrame(frame) gets every server frame; onState(state) every change of
  // state: {name: 'connecting'|'syncing'|'live'|'retrying'|'stopped',
  // retryAt, code, reason}. checkSession() resolves to null when the
  // credentials are fine, else to the server's reason.
  constructor({ token, onFrame, onState, checkSession }) {
    this.token = token;
    this.onFrame = onFrame;
    this.onState = onState;
    this.checkSession = checkSession;
    this.ws = null;
    this.lastSeq = 0;
    this.seen = new Map(); // seq % 256 -> the highest seq seen there
    this.partitioned = null; // unknown until a SYNCED: has it a cursor?
    this.attempts = 0;
    this.stopped = true;
    this.state = { name: 'stopped' };
    this.onOnline = () => {
      if (this.state.name === 'retrying') this.open();
    };
  }

  // start opens the socket from the ids in since (event ids the page
  // already holds, e.g. each conversation's last message).
  start(since) {
    this.lastSeq = 0;
    this.seen = new Map();
    this.partitioned = null;
    for (const id of since) this.note(id);
    this.stopped = false;
    window.addEventListener('online', this.onOnline);
    this.pinger = setInterval(() => this.ping(), PING_EVERY);
    this.open();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    clearTimeout(this.resumeTimer);
    clearInterval(this.pinger);
    window.removeEventListener('online', this.onOnline);
    if (this.ws) this.ws.close(1000, 'signed out');
    this.ws = null;
    this.setState({ name: 'stopped' });
  }

  // send writes frame if the socket is open, and reports whether it did.
  send(frame) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(JSON.stringify(frame));
    return true;
  }

  get live() {
    return this.state.name === 'live';
  }

  setState(state) {
    this.state = state;
    this.onState(state);
  }

  open() {
    clearTimeout(this.retryTimer);
    const q = new URLSearchParams();
    if (this.token) q.set('token', this.token);
    q.set('since', this.position());
    const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const ws = new WebSocket(`${scheme}//${location.host}/ws/inbox/?${q}`);
    this.ws = ws;
    this.resuming = null;
    clearTimeout(this.resumeTimer);
    let opened = false;
    this.setState({ name: 'connecting' });
    ws.onopen = () => {
      opened = true;
      this.lastFrameAt = Date.now();
      this.setState({ name: 'syncing' });
    };
    ws.onmessage = (ev) => this.receive(ev.data);
    ws.onclose = (ev) => {
      if (ws === this.ws) this.closed(opened, ev);
    };
  }

  receive(data) {
    let f;
    try {
      f = JSON.parse(data);
    } catch {
      return;
    }
    this.lastFrameAt = Date.now();
    if (Number.isSafeInteger(f.seq)) this.note(f.seq);
    if (f.type === 'SYNCED') {
      this.partitioned = typeof f.cursor === 'string';
      if (this.partitioned) for (const id of f.cursor.split(',')) this.note(Number(id));
      if (f.more) {
        this.resume(this.partitioned ? f.cursor : f.seq);
      } else {
        this.resuming = null;
        this.attempts = 0;
        this.setState({ name: 'live' });
      }
    } else if (f.type === 'ERROR' && this.resuming != null && !f.client_msg_id && this.resumeRefused(f)) {
      return;
    }
    this.onFrame(f);
  }

  // resume asks for the next page of a catch-up. Until its SYNCED the
  // socket gets no events (docs/protocol.md, Resume).
  resume(since) {
    clearTimeout(this.resumeTimer);
    this.resuming = since;
    this.send(typeof since === 'string' ? { type: 'RESUME', cursor: since } : { type: 'RESUME', since });
  }

  // note records an event id seen.
  note(id) {
    if (!Number.isSafeInteger(id) || id < 0) return;
    if (id > this.lastSeq) this.lastSeq = id;
    const k = id % 256;
    if (!(this.seen.get(k) >= id)) this.seen.set(k, id);
  }

  // position is where a (re)connect resumes from: the highest seq with one
  // stream, the highest of each partition with more (or while unknown).
  position() {
    if (this.partitioned === false || this.seen.size <= 1) return String(this.lastSeq);
    return [...this.seen.values()].sort((a, b) => a - b).join(',');
  }

  // resumeRefused handles the server's refusal of a RESUME: a spent catch-up
  // budget (rate_limited) is asked again when it says; a catch-up already
  // under way answers for itself. Other errors are the page's to show.
  resumeRefused(f) {
    if (f.code === 'rate_limited') {
      const m = /in ([0-9.]+)(ms|s)\b/.exec(f.error ?? '');
      const wait = f.retry_after_ms ?? (m ? Number(m[1]) * (m[2] === 's' ? 1000 : 1) : RESUME_RETRY);
      clearTimeout(this.resumeTimer);
      this.resumeTimer = setTimeout(() => this.resume(this.resuming), wait + 100);
      return true;
    }
    return f.code === 'bad_request' && /catch-up/.test(f.error ?? '');
  }

  async closed(opened, ev) {
    this.ws = null;
    if (this.stopped) return;
    if (!opened) {
      const reason = await this.checkSession();
      if (this.stopped) return;
      if (reason) {
        this.stopped = true;
        clearInterval(this.pinger);
        this.setState({ name: 'stopped', reason });
        return;
      }
    }
    const delay = Math.min(MAX_DELAY, MIN_DELAY * 2 ** this.attempts) * (0.5 + Math.random() / 2);
    this.attempts++;
    this.retryTimer = setTimeout(() => this.open(), delay);
    this.setState({ name: 'retrying', retryAt: Date.now() + delay, code: ev.code, reason: ev.reason });
  }

  ping() {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return;
    if (Date.now() - this.lastFrameAt > SILENCE) {
      // A dead network may never finish the closing handshake: give up on
      // this socket at once.
      const ws = this.ws;
      ws.onmessage = ws.onclose = null;
      ws.close(4000, 'no answer from the server');
      this.closed(true, { code: 4000, reason: 'no answer from the server' });
      return;
    }
    this.send({ type: 'PING' });
  }
}
