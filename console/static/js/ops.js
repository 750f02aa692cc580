// The operator view (/ops): GET /api/admin/status every second with
// the admin token entered here (kept in sessionStorage for this tab). Rates
// are the difference of two readings.

import { API } from './api.js';
import { h, fullTime } from './dom.js';

const KEY = 'inbox.admin';
const EVERY = 1000;
const root = document.getElementById('app');

function main(reason) {
  const token = sessionStorage.getItem(KEY);
  if (!token) {
    ask(reason);
    return;
  }
  watch(new API(token));
}

// ask shows the token form; the view refuses to show anything without one.
function ask(reason) {
  const input = h('input', { id: 'admin-token', name: 'admin-token', type: 'password', autocomplete: 'off', spellcheck: 'false', required: true });
  const status = h('p', { class: `signin-status${reason ? ' bad' : ''}`, role: 'status' }, reason ?? '');
  root.replaceChildren(h('main', { class: 'signin' }, h('div', { class: 'card' },
    h('h1', {}, h('span', { class: 'brand' }, 'inbox'), ' operator view'),
    status,
    h('form', {
      class: 'signin-token',
      onsubmit: (ev) => {
        ev.preventDefault();
        const t = input.value.trim();
        if (!t) return;
        sessionStorage.setItem(KEY, t);
        main();
      },
    },
    h('label', { for: 'admin-token' }, 'Admin token'),
    h('div', { class: 'row' }, input, h('button', { type: 'submit', class: 'primary' }, 'Open')),
    h('p', { class: 'hint' }, 'INBOX_ADMIN_TOKEN, or admin_token in dev-secrets.json in the data folder.')))));
  input.focus();
}

function watch(api) {
  const view = new OpsView(() => {
    clearTimeout(timer);
    sessionStorage.removeItem(KEY);
    main();
  });
  root.replaceChildren(view.el);
  let timer;
  let prev = null;
  const tick = async () => {
    try {
      const s = await api.get('/api/admin/status');
      view.render(s, prev);
      prev = s;
    } catch (e) {
      if (e.status === 401 || e.status === 403) {
        sessionStorage.removeItem(KEY);
        main(`The admin token was refused: ${e.message}`);
        return;
      }
      view.trouble(e.message);
    }
    timer = setTimeout(tick, EVERY);
  };
  tick();
}

const number = new Intl.NumberFormat();
const decimal = new Intl.NumberFormat(undefined, { maximumFractionDigits: 1 });

function bytes(n) {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return `${i === 0 ? n : decimal.format(n)} ${units[i]}`;
}

function duration(ms) {
  const s = Math.floor(ms / 1000);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
}

// tile is one figure with its label and an optional note.
function tile(label, value, note, state) {
  return h('div', { class: `tile${state ? ` ${state}` : ''}`, dataset: { tile: label } },
    h('span', { class: 'tile-label' }, label),
    h('span', { class: 'tile-value' }, value),
    note ? h('span', { class: 'tile-note' }, note) : null);
}

class OpsView {
  constructor(forget) {
    this.head = h('span', { class: 'me' });
    this.live = h('span', { id: 'conn', class: 'conn', role: 'status', dataset: { state: 'connecting' } }, 'Loading…');
    this.body = h('div', { class: 'ops-body' });
    this.el = h('div', { class: 'ops-app' },
      h('header', { class: 'bar' },
        h('span', { class: 'brand' }, 'inbox'), h('span', { class: 'bar-title' }, 'operator view'),
        this.live, h('span', { class: 'spacer' }), this.head,
        h('button', { type: 'button', class: 'quiet', onclick: forget }, 'Forget token')),
      h('main', { class: 'ops' }, this.body));
  }

  trouble(text) {
    this.live.dataset.state = 'retrying';
    this.live.textContent = `Not updating: ${text}`;
  }

  render(s, prev) {
    this.live.dataset.state = 'live';
    this.live.textContent = `Updated ${new Date(s.time).toLocaleTimeString()}`;
    this.head.textContent = `node ${s.node} · up ${duration(Date.parse(s.time) - Date.parse(s.started_at))}`;
    const t = s.totals;
    let appends = '…';
    let deliveries = '…';
    if (prev) {
      const dt = (Date.parse(s.time) - Date.parse(prev.time)) / 1000;
      if (dt > 0) {
        appends = decimal.format(Math.max(0, t.appends - prev.totals.appends) / dt);
        deliveries = decimal.format(Math.max(0, t.deliveries - prev.totals.deliveries) / dt);
      }
    }
    const lagState = (n) => (n > 1000 ? 'bad' : n > 0 ? 'warn' : null);
    // Load against the bounds past which the node sheds (docs/overload.md):
    // typing and presence go at half a bound, messages at the bound.
    const load = s.load;
    const boundState = (v, max) => (v > max ? 'bad' : v > max / 2 ? 'warn' : null);
    const shedBy = Object.entries(load.shed).map(([kind, reasons]) =>
      `${kind}: ${Object.entries(reasons).map(([r, n]) => `${number.format(n)} ${r.replace('_', ' ')}`).join(', ')}`).join('; ');
    const sections = [
      h('section', { class: 'ops-section', 'aria-labelledby': 'traffic' },
        h('h2', { id: 'traffic' }, 'Traffic'),
        h('div', { class: 'tiles' },
          tile('Open sockets', number.format(t.open_sockets)),
          tile('Appends/s', appends, `${number.format(t.appends)} stored · ${number.format(t.append_errors)} failed`, t.append_errors ? 'warn' : null),
          tile('Deliveries/s', deliveries, `${number.format(t.deliveries)} frames queued to sockets`),
          tile('Feed lag', number.format(s.feed.lag), `events; routed up to ${number.format(s.feed.seq)}`, lagState(s.feed.lag)),
          tile('Feed delay', `${decimal.format(load.feed_lag_ms)} ms`, `sends ${decimal.format(load.append_latency_ms)} ms · ${number.format(load.queued_frames)} frames queued; shedding past ${number.format(load.max_feed_lag_ms)} ms`,
            boundState(Math.max(load.feed_lag_ms / load.max_feed_lag_ms, load.append_latency_ms / load.max_append_latency_ms, load.queued_frames / load.max_queued_frames), 1)),
          tile('Projection lag', number.format(s.projection.lag), `events; applied up to ${number.format(s.projection.applied)}`, lagState(s.projection.lag)),
          tile('Slow sockets closed', number.format(t.slow_closes), '4013', t.slow_closes ? 'warn' : null),
          tile('Auth failures', number.format(t.auth_failures)),
          tile('Shed', number.format(t.shed), t.shed ? shedBy : 'nothing refused under load', t.shed ? 'warn' : null))),
      h('section', { class: 'ops-section', 'aria-labelledby': 'streams' },
        h('h2', { id: 'streams' }, s.streams.length === 1 ? 'Stream' : 'Streams'),
        h('div', { class: 'ops-scroll' }, h('table', { class: 'ops-table' },
          h('thead', {}, h('tr', {}, ['Name', 'Events', 'Size', 'First seq', 'Last seq', 'Replicas', 'Consumers'].map((c) => h('th', { scope: 'col' }, c)))),
          h('tbody', {}, s.streams.map((st) => h('tr', { dataset: { stream: st.name } },
            h('th', { scope: 'row' }, st.name, h('span', { class: 'subjects' }, st.subjects.join(' '))),
            h('td', {}, number.format(st.messages)), h('td', {}, bytes(st.bytes)),
            h('td', {}, number.format(st.first_seq)), h('td', {}, number.format(st.last_seq)),
            h('td', {}, String(st.replicas)), h('td', {}, String(st.consumers)))))))),
      h('section', { class: 'ops-section', 'aria-labelledby': 'errors' },
        h('h2', { id: 'errors' }, 'Last warnings and errors',
          h('span', { class: 'count' }, ` ${number.format(s.errors_total)} since start`)),
        s.errors.length === 0 ? h('p', { class: 'hint' }, 'None since the node started.')
          : h('ol', { class: 'log' }, s.errors.toReversed().map((e) => h('li', { class: `log-${e.level.toLowerCase()}` },
            h('time', { datetime: e.time, title: fullTime(e.time) }, new Date(e.time).toLocaleTimeString()),
            h('span', { class: 'log-level' }, e.level),
            h('span', { class: 'log-msg' }, e.message),
            e.attrs ? h('span', { class: 'log-attrs' }, Object.entries(e.attrs).map(([k, v]) => `${k}=${v}`).join(' ')) : null)))),
    ];
    this.body.replaceChildren(...sections);
  }
}

main();
