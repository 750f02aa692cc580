// Sign-in. A node on development secrets offers its users for one-click
// sign-in (GET /api/dev/users, POST /api/dev/token); otherwise the console
// uses the inbox_token cookie (when the server accepts it from this origin)
// or a token pasted in. The token lives in sessionStorage: per tab, so two
// tabs can be two users, and gone when the tab closes.

import { API } from './api.js';
import { h } from './dom.js';

const KEY = 'inbox.token';

export function storedToken() {
  return sessionStorage.getItem(KEY);
}

export function forgetToken() {
  sessionStorage.removeItem(KEY);
}

export function rememberToken(token) {
  sessionStorage.setItem(KEY, token);
}

// renewer returns how to get a fresh token for user before the one in use
// expires: a development sign-in mints one; with any other token there is
// no way (null), and the user signs in again after the socket closes.
export function renewer(user) {
  return async () => {
    const { token } = await new API(null).post('/api/dev/token', { user_id: user });
    return token;
  };
}

// resume signs in with the stored token, if any: {api, session, token} or
// null. A refused token is forgotten and its reason returned as {reason}.
export async function resume() {
  const token = storedToken();
  if (!token) return null;
  const api = new API(token);
  try {
    return { api, token, session: await api.get('/api/session') };
  } catch (e) {
    if (e.status !== 401) throw e;
    forgetToken();
    return { reason: e.message };
  }
}

// signIn shows the sign-in screen in root and resolves once the user has
// signed in: {api, session, token, names}. reason, if given, says why the
// previous session ended.
export function signIn(root, reason) {
  return new Promise((done) => {
    const status = h('p', { class: 'signin-status', role: 'status' });
    const say = (text, bad = true) => {
      status.textContent = text;
      status.classList.toggle('bad', bad);
    };
    if (reason) say(`Signed out: ${reason}`);

    const finish = (api, session, token, names) => {
      if (token) rememberToken(token);
      done({ api, session, token, names });
    };

    const demo = h('section', { class: 'signin-demo', hidden: true, 'aria-labelledby': 'demo-title' });
    const cookie = h('section', { class: 'signin-cookie', hidden: true });
    const tokenInput = h('input', {
      id: 'token', name: 'token', type: 'password', autocomplete: 'off', spellcheck: 'false', required: true,
      placeholder: 'eyJhbGciOi…',
    });
    const paste = h('form', {
      class: 'signin-token',
      onsubmit: async (ev) => {
        ev.preventDefault();
        const token = tokenInput.value.trim();
        if (!token) return;
        const api = new API(token);
        try {
          finish(api, await api.get('/api/session'), token, new Map());
        } catch (e) {
          say(`That token was refused: ${e.message}`);
        }
      },
    },
    h('label', { for: 'token' }, 'Or paste a user token'),
    h('div', { class: 'row' }, tokenInput, h('button', { type: 'submit' }, 'Sign in')),
    h('p', { class: 'hint' }, 'Mint one with ', h('code', {}, 'go run ./cmd/inbox token alice'), ' in the folder where inboxd runs.'));

    root.replaceChildren(h('main', { class: 'signin' },
      h('div', { class: 'card' },
        h('h1', {}, h('span', { class: 'brand' }, 'inbox'), ' console'),
        status, demo, cookie, paste)));

    // Development sign-in, if the node offers it (404 otherwise).
    const anon = new API(null);
    anon.get('/api/dev/users').then(({ users }) => {
      if (users.length === 0) return;
      const names = new Map(users.filter((u) => u.name).map((u) => [u.user_id, u.name]));
      demo.replaceChildren(
        h('h2', { id: 'demo-title' }, 'Sign in as'),
        h('p', { class: 'hint' }, 'This server runs on development secrets: any user signs in with one click.'),
        h('ul', { class: 'user-list' }, users.map((u) => h('li', {},
          h('button', {
            class: 'user', dataset: { user: u.user_id },
            onclick: async () => {
              try {
                const { token } = await anon.post('/api/dev/token', { user_id: u.user_id });
                const api = new API(token);
                finish(api, await api.get('/api/session'), token, names);
              } catch (e) {
                say(`Could not sign in as ${u.user_id}: ${e.message}`);
              }
            },
          }, h('span', { class: 'avatar', 'aria-hidden': 'true' }, (u.name || u.user_id).slice(0, 1).toUpperCase()),
          h('span', { class: 'user-name' }, u.name || u.user_id),
          h('span', { class: 'user-id' }, u.user_id))))));
      demo.hidden = false;
      demo.querySelector('button')?.focus();
    }).catch(() => {});

    // The inbox_token cookie, if this origin may use it.
    anon.get('/api/session').then((session) => {
      cookie.replaceChildren(h('button', {
        class: 'primary', onclick: () => finish(anon, session, null, new Map()),
      }, `Continue as ${session.name || session.user_id}`),
      h('p', { class: 'hint' }, 'Signed in by this site\u2019s inbox_token cookie.'));
      cookie.hidden = false;
    }).catch(() => {});
  });
}
