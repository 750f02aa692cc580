// Connection keeps one WebSocket to /ws/inbox/ open. Every (re)connect asks
// for the events after the last sequence it saw (?since=), so after a drop
// nothing is missed and nothing arrives twice; a SYNCED with "more": true is
// followed by RESUME frames until the catch-up is complete. A refused
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
    this.attempts = 0;
    this.stopped = true;
    this.state = { name: 'stopped' };
    this.onOnline = () => {
      if (this.state.name === 'retrying') this.open();
    };
  }

  start(since) {
    this.lastSeq = since;
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
    q.set('since', String(this.lastSeq));
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
    if (Number.isSafeInteger(f.seq) && f.seq > this.lastSeq) this.lastSeq = f.seq;
    if (f.type === 'SYNCED') {
      if (f.more) {
        this.resume(f.seq);
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
    this.send({ type: 'RESUME', since });
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
