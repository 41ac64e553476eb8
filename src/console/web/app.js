// The InferLlama console: one page, hash routes, no dependencies. It talks to the node's console API
// (/api/inferllama/console/, cookies + X-CSRF-Token) and, for models, to the Hub API the clients use,
// with a key the console makes for this session and the node revokes when the session ends.
const API = '/api/inferllama/console/';

const state = { me: null, config: null, sessionKey: null };

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

// ---- Talking to the node ----

function csrfToken() {
  const match = document.cookie.match(/(?:^|;\s*)inferllama_csrf=([^;]*)/);
  return match ? match[1] : '';
}

let refreshing = null;
// One refresh at a time, across tabs too: the session's refresh token is good once, and a second use would
// end the session. A tab that waited finds the shared cookie renewed by the other and needs none.
function refreshSession() {
  if (!refreshing) {
    const run = async () => {
      const probe = await fetch(API + 'me', { credentials: 'same-origin' });
      if (probe.ok) return true;
      const response = await fetch(API + 'refresh', {
        method: 'POST', credentials: 'same-origin', body: '{}',
        headers: { 'X-CSRF-Token': csrfToken(), 'Content-Type': 'application/json' },
      });
      return response.ok;
    };
    refreshing = (navigator.locks ? navigator.locks.request('inferllama-refresh', run) : run())
      .catch(() => false)
      .finally(() => { refreshing = null; });
  }
  return refreshing;
}

async function readAnswer(response) {
  const type = response.headers.get('Content-Type') || '';
  if (type.includes('json')) return response.json();
  return response.text();
}

async function api(method, action, body, retry = true) {
  const headers = {};
  // Every change is JSON with the CSRF header: a form from another site can send neither.
  if (method !== 'GET') {
    headers['X-CSRF-Token'] = csrfToken();
    headers['Content-Type'] = 'application/json';
  }
  const response = await fetch(API + action, {
    method, headers, credentials: 'same-origin', body: method === 'GET' ? undefined : JSON.stringify(body || {}),
  });
  if (response.status === 401 && retry && csrfToken() && !['sign-in', 'refresh'].includes(action)) {
    if (await refreshSession()) return api(method, action, body, false);
  }
  const data = await readAnswer(response);
  if (!response.ok) throw new ApiError(response.status, (data && data.error) || `${response.status}`);
  return data;
}

// The Hub API, as huggingface_hub calls it, with this session's key (one request for it at a time).
function sessionKey() {
  if (!state.sessionKey) {
    state.sessionKey = api('POST', 'session-key').then((answer) => answer.key);
    state.sessionKey.catch(() => { state.sessionKey = null; });
  }
  return state.sessionKey;
}

// Absolute URLs the node hands out (upload links) are followed on this page's own origin: the CSP allows
// no other, and behind a proxy public_url may name the node differently.
function sameOrigin(url) {
  const parsed = new URL(url, location.origin);
  return parsed.pathname + parsed.search;
}

async function hub(method, path, { json, body, headers = {} } = {}, retry = true) {
  const send = { Authorization: `Bearer ${await sessionKey()}`, ...headers };
  if (json !== undefined) send['Content-Type'] = send['Content-Type'] || 'application/json';
  const response = await fetch(sameOrigin(path), { method, headers: send, body: json !== undefined ? JSON.stringify(json) : body });
  if (response.status === 401 && retry) {
    // The session's key ended (another tab took a new one, or the session was refreshed elsewhere).
    state.sessionKey = null;
    return hub(method, path, { json, body, headers }, false);
  }
  const data = await readAnswer(response);
  if (!response.ok) {
    const message = (data && data.error) || response.headers.get('X-Error-Message') || `${response.status}`;
    throw new ApiError(response.status, message);
  }
  return data;
}

// ---- Building the page (text only: nothing from the node is ever parsed as HTML) ----

function h(tag, attrs = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === false || value === null || value === undefined) continue;
    if (name.startsWith('on')) element.addEventListener(name.slice(2), value);
    else if (name === 'text') element.textContent = value;
    else element.setAttribute(name, value === true ? '' : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return element;
}

function svg(tag, attrs = {}, ...children) {
  const element = document.createElementNS('http://www.w3.org/2000/svg', tag);
  for (const [name, value] of Object.entries(attrs)) element.setAttribute(name, value);
  for (const child of children.flat()) element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return element;
}

function say(message, kind = 'ok') {
  const status = document.getElementById('status');
  status.replaceChildren(message ? h('span', { class: kind }, message) : '');
}

// After a page load focus starts at the top (the skip link comes first); after a move within the console it
// goes to the new content, so a screen reader reads it.
let moved = false;
function show(title, ...content) {
  const main = document.getElementById('main');
  document.title = `${title} · InferLlama`;
  main.replaceChildren(h('h1', {}, title), ...content);
  if (moved) main.focus();
}

let fieldCount = 0;
function field(label, attrs, hint) {
  const id = `f${++fieldCount}`;
  const input = h('input', { id, name: attrs.name || id, ...attrs });
  const hintId = hint ? `${id}-hint` : null;
  if (hintId) input.setAttribute('aria-describedby', hintId);
  return h('label', { for: id }, label, input, hint ? h('span', { class: 'hint', id: hintId }, hint) : null);
}

// A form whose submit runs `action(values)`; errors are shown in the form and announced.
function form(name, fields, submitLabel, action, extra = {}) {
  const error = h('p', { class: 'error', role: 'alert' });
  const button = h('button', { type: 'submit', class: extra.danger ? 'danger' : null }, submitLabel);
  const element = h('form', { 'aria-label': name, novalidate: true }, ...fields, error, button);
  element.addEventListener('submit', async (event) => {
    event.preventDefault();
    error.textContent = '';
    button.disabled = true;
    try {
      const values = Object.fromEntries(new FormData(element).entries());
      await action(values, element);
    } catch (e) {
      error.textContent = e.message;
    } finally {
      button.disabled = false;
    }
  });
  return element;
}

function table(headers, rows) {
  return h('div', { class: 'table-wrap' },
    h('table', {},
      h('thead', {}, h('tr', {}, headers.map((name) => h('th', { scope: 'col' }, name)))),
      h('tbody', {}, rows.map((cells) => h('tr', {}, cells.map((cell) => h('td', {}, cell)))))));
}

function bytes(n) {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

function go(route) {
  if (location.hash === route) render();
  else location.hash = route;
}

function routeParams() {
  const [, query = ''] = location.hash.split('?');
  return new URLSearchParams(query);
}

// ---- Navigation ----

function renderNav(current) {
  const links = state.me
    ? [['#/profile', 'Profile'], ['#/keys', 'API keys'], ['#/usage', 'Usage'], ['#/models', 'Models'],
      ['#/torrents', 'Torrents'], ['#/settings', 'Settings']]
    : [['#/sign-in', 'Sign in']].concat(state.config && state.config.signup ? [['#/sign-up', 'Sign up']] : []);
  if (state.me && state.me.user.admin) links.push(['#/operator', 'Operator']);
  const items = links.map(([href, label]) => h('li', {}, h('a', { href, 'aria-current': current === href ? 'page' : null }, label)));
  if (state.me) {
    items.push(h('li', {}, h('button', {
      class: 'link', type: 'button', onclick: async () => {
        await api('POST', 'sign-out').catch(() => {});
        state.me = null;
        state.sessionKey = null;
        say('Signed out.');
        go('#/sign-in');
      },
    }, `Sign out (${state.me.user.name})`)));
  }
  document.getElementById('nav').replaceChildren(h('ul', {}, items));
}

// ---- Pages for everyone ----

function signInPage() {
  show('Sign in',
    form('Sign in', [
      field('User name or email', { name: 'user', autocomplete: 'username', required: true }),
      field('Password', { name: 'password', type: 'password', autocomplete: 'current-password', required: true }),
    ], 'Sign in', async (v) => {
      await api('POST', 'sign-in', { user: v.user, password: v.password });
      state.sessionKey = null;
      state.me = await api('GET', 'me');
      say(`Signed in as ${state.me.user.name}.`);
      go('#/profile');
    }),
    h('p', {}, h('a', { href: '#/forgot' }, 'Forgot your password?')),
    state.config && state.config.signup ? h('p', {}, 'No account yet? ', h('a', { href: '#/sign-up' }, 'Sign up')) : null);
}

function signUpPage() {
  if (!state.config.signup) {
    show('Sign up', h('p', {}, 'This node does not take sign-ups: ask its operator for an invitation.'));
    return;
  }
  show('Sign up',
    form('Sign up', [
      field('User name', { name: 'user', autocomplete: 'username', required: true, pattern: '[A-Za-z0-9][A-Za-z0-9._-]{0,63}' },
        'Letters, digits, . _ -; it is also the namespace of your models.'),
      field('Email', { name: 'email', type: 'email', autocomplete: 'email', required: true }, 'We send a link to check it.'),
      field('Password', { name: 'password', type: 'password', autocomplete: 'new-password', required: true, minlength: 10 },
        'At least 10 characters.'),
    ], 'Create account', async (v) => {
      await api('POST', 'sign-up', { user: v.user, email: v.email, password: v.password });
      show('Check your email', h('p', {}, `We sent a link to ${v.email}. Open it to finish signing up.`));
    }));
}

async function verifyPage() {
  const token = routeParams().get('token') || '';
  show('Email address');
  try {
    const answer = await api('POST', 'verify-email', { token });
    show('Email address', h('p', { class: 'ok' }, `The address ${answer.user.email} is confirmed.`),
      h('p', {}, h('a', { href: state.me ? '#/profile' : '#/sign-in' }, state.me ? 'Back to your profile' : 'Sign in')));
  } catch (e) {
    show('Email address', h('p', { class: 'error', role: 'alert' }, e.message));
  }
}

function forgotPage() {
  show('Forgot your password',
    form('Reset password', [field('User name or email', { name: 'user', autocomplete: 'username', required: true })],
      'Send a reset link', async (v) => {
        await api('POST', 'forgot', { user: v.user });
        say('If that account exists, a reset link is on its way to its email address.');
      }));
}

function resetPage() {
  const token = routeParams().get('token') || '';
  const invite = routeParams().get('invite') === '1';
  show(invite ? 'Welcome: choose a password' : 'Choose a new password',
    form('New password', [
      field('New password', { name: 'password', type: 'password', autocomplete: 'new-password', required: true, minlength: 10 }),
      field('Repeat it', { name: 'again', type: 'password', autocomplete: 'new-password', required: true }),
    ], 'Set password', async (v) => {
      if (v.password !== v.again) throw new Error('The two passwords differ.');
      const answer = await api('POST', 'reset', { token, password: v.password });
      say(`Password set for ${answer.user.name}: sign in with it.`);
      go('#/sign-in');
    }));
}

// ---- Pages of a signed-in user ----

function profilePage() {
  const { user, sessions } = state.me;
  show('Profile',
    table(['', ''], [
      ['User name', user.name],
      ['Email', user.email ? `${user.email}${user.email_verified ? '' : ' (not confirmed yet)'}` : '—'],
      ['Member since', user.created],
    ]),
    h('h2', {}, 'Change your email address'),
    form('Change email', [field('New email', { name: 'email', type: 'email', autocomplete: 'email', required: true, value: user.email || '' })],
      'Save', async (v) => {
        const answer = await api('POST', 'profile', { email: v.email });
        state.me = await api('GET', 'me');
        say(answer.verify === 'sent' ? `We sent a link to ${v.email}: the address changes once you open it.` : 'Email address saved.');
        profilePage();
      }),
    h('h2', {}, 'Change your password'),
    form('Change password', [
      field('Current password', { name: 'current', type: 'password', autocomplete: 'current-password', required: true }),
      field('New password', { name: 'new', type: 'password', autocomplete: 'new-password', required: true, minlength: 10 }),
    ], 'Change password', async (v, element) => {
      await api('POST', 'password', { current: v.current, new: v.new });
      element.reset();
      say('Password changed; your other sessions were signed out.');
    }),
    h('h2', {}, 'Change your user name'),
    h('p', {}, 'Your keys, usage and models move to the new name with you. Your models\' old addresses stop working, and your old name stays yours: you can take it back. Your other sessions are signed out.'),
    form('Change user name', [
      field('New user name', { name: 'name', autocomplete: 'username', required: true, pattern: '[A-Za-z0-9][A-Za-z0-9._-]{0,63}' },
        'Letters, digits, . _ -; it is also the namespace of your models.'),
      field('Your password', { name: 'password', type: 'password', autocomplete: 'current-password', required: true }),
    ], 'Change user name', async (v) => {
      const answer = await api('POST', 'rename', { name: v.name, password: v.password });
      state.sessionKey = null;
      state.me = await api('GET', 'me');
      say(`Your user name is ${answer.user.name} now.`);
      renderNav('#/profile');
      profilePage();
    }),
    h('h2', {}, 'Where you are signed in'),
    table(['Signed in', 'Last refreshed', 'Ends', ''], sessions.map((s) => [s.created, s.refreshed, s.expires, s.current ? 'this browser' : ''])));
}

async function keysPage() {
  const { keys } = await api('GET', 'keys');
  const created = h('div', { 'aria-live': 'polite' });
  const rows = keys.map((key) => [key.label || '—', h('code', {}, `${key.hint}…`), key.created, key.revoked ? `revoked ${key.revoked}` : 'active',
    key.revoked ? '' : h('button', {
      type: 'button', class: 'secondary', 'aria-label': `Revoke key ${key.label || key.hint}`, onclick: async () => {
        await api('POST', `keys/${encodeURIComponent(key.id)}/revoke`);
        say(`Key ${key.label || key.hint} revoked.`);
        keysPage();
      },
    }, 'Revoke')]);
  show('API keys',
    h('p', {}, 'Tools authenticate with a key: ', h('code', {}, 'HF_TOKEN=il_…'), ' and ', h('code', {}, `HF_ENDPOINT=${location.origin}`), '.'),
    form('Create key', [field('Label', { name: 'label', maxlength: 100 }, 'Where you will use it, e.g. "laptop".')], 'Create key', async (v) => {
      const key = await api('POST', 'keys', { label: v.label });
      created.replaceChildren(h('p', { class: 'ok' }, 'Your new key, shown this once:'), h('code', { class: 'secret', id: 'new-key' }, key.key));
      const { keys: after } = await api('GET', 'keys');
      say(`Key created (${after.length} in all).`);
    }),
    created,
    h('h2', {}, 'Your keys'),
    keys.length ? table(['Label', 'Starts with', 'Created', 'State', ''], rows) : h('p', {}, 'No keys yet.'));
}

function usageChart(days) {
  const width = 600, height = 160, left = 36, bottom = 18;
  const max = Math.max(1, ...days.map((d) => d.requests));
  const step = (width - left) / Math.max(1, days.length);
  const bars = days.map((d, i) => {
    const barHeight = ((height - bottom) * d.requests) / max;
    return svg('rect', { class: 'bar', x: left + i * step + 1, y: height - bottom - barHeight, width: Math.max(1, step - 2), height: barHeight },
      svg('title', {}, `${d.day}: ${d.requests} requests, ${d.tokens} tokens`));
  });
  return svg('svg', { class: 'chart', viewBox: `0 0 ${width} ${height}`, role: 'img', 'aria-label': `Requests per day over ${days.length} days, at most ${max}` },
    svg('line', { class: 'axis', x1: left, y1: height - bottom, x2: width, y2: height - bottom }),
    svg('text', { x: 0, y: 10 }, String(max)),
    svg('text', { x: 0, y: height - bottom }, '0'),
    days.length ? svg('text', { x: left, y: height - 4 }, days[0].day) : '',
    days.length ? svg('text', { x: width - 60, y: height - 4 }, days[days.length - 1].day) : '',
    bars);
}

async function usagePage() {
  const since = new Date(Date.now() - 89 * 86400000).toISOString().slice(0, 10);
  const { usage } = await api('GET', `usage?since=${since}`);
  const byDay = new Map();
  for (let t = Date.parse(since); t <= Date.now(); t += 86400000) {
    const day = new Date(t).toISOString().slice(0, 10);
    byDay.set(day, { day, requests: 0, tokens: 0 });
  }
  for (const row of usage) {
    const d = byDay.get(row.day) || { day: row.day, requests: 0, tokens: 0 };
    d.requests += row.requests;
    d.tokens += row.tokens;
    byDay.set(row.day, d);
  }
  const days = [...byDay.values()].sort((a, b) => a.day.localeCompare(b.day));
  const total = days.reduce((sum, d) => ({ requests: sum.requests + d.requests, tokens: sum.tokens + d.tokens }), { requests: 0, tokens: 0 });
  show('Usage',
    h('div', { class: 'cards' },
      h('div', { class: 'card' }, h('div', {}, 'Requests, 90 days'), h('div', { class: 'value', id: 'total-requests' }, total.requests)),
      h('div', { class: 'card' }, h('div', {}, 'Tokens, 90 days'), h('div', { class: 'value', id: 'total-tokens' }, total.tokens))),
    h('h2', {}, 'Requests per day'),
    usageChart(days),
    h('h2', {}, 'By repository'),
    usage.length
      ? table(['Day', 'Repository', 'Requests', 'Tokens'], usage.map((r) => [r.day, r.repo || '—', r.requests, r.tokens]))
      : h('p', {}, 'No requests in the last 90 days.'));
}

// ---- Models: the Hub API, as the clients use it ----

async function sha256Hex(buffer) {
  const digest = await crypto.subtle.digest('SHA-256', buffer);
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, '0')).join('');
}

function base64(bytesView) {
  let text = '';
  for (let i = 0; i < bytesView.length; i += 0x8000) text += String.fromCharCode(...bytesView.subarray(i, i + 0x8000));
  return btoa(text);
}

// One file into a hosted model: preupload, the LFS batch and PUT for large files, then the commit.
async function uploadFile(repo, path, file) {
  const buffer = await file.arrayBuffer();
  const view = new Uint8Array(buffer);
  const pre = await hub('POST', `/api/models/${repo}/preupload/main`, {
    json: { files: [{ path, size: view.length, sample: base64(view.subarray(0, 512)) }] },
  });
  const mode = pre.files[0].uploadMode;
  const lines = [{ key: 'header', value: { summary: `Upload ${path} with the console`, description: '' } }];
  if (mode === 'lfs') {
    const oid = await sha256Hex(buffer);
    const lfsHeaders = { Accept: 'application/vnd.git-lfs+json', 'Content-Type': 'application/vnd.git-lfs+json' };
    const batch = await hub('POST', `/${repo}.git/info/lfs/objects/batch`, {
      headers: lfsHeaders,
      json: { operation: 'upload', transfers: ['basic'], objects: [{ oid, size: view.length }], hash_algo: 'sha256', ref: { name: 'main' } },
    });
    const object = batch.objects[0];
    if (object.error) throw new Error(object.error.message);
    if (object.actions && object.actions.upload) {
      const put = await fetch(sameOrigin(object.actions.upload.href), { method: 'PUT', body: buffer });
      if (!put.ok) throw new Error(`the upload was refused (${put.status})`);
      if (object.actions.verify) {
        await hub('POST', object.actions.verify.href, { headers: lfsHeaders, json: { oid, size: view.length } });
      }
    }
    lines.push({ key: 'lfsFile', value: { path, algo: 'sha256', oid, size: view.length } });
  } else {
    lines.push({ key: 'file', value: { path, content: base64(view), encoding: 'base64' } });
  }
  return hub('POST', `/api/models/${repo}/commit/main`, {
    headers: { 'Content-Type': 'application/x-ndjson' },
    body: lines.map((line) => JSON.stringify(line)).join('\n'),
  });
}

async function modelsPage() {
  const me = state.me.user.name;
  const models = await hub('GET', `/api/models?author=${encodeURIComponent(me)}`);
  show('Models',
    h('h2', {}, 'Create a model'),
    form('Create model', [
      field('Name', { name: 'name', required: true, pattern: '[A-Za-z0-9][A-Za-z0-9._-]*' }, `It becomes ${me}/NAME.`),
      h('label', {}, 'Visibility', h('select', { name: 'visibility' }, h('option', { value: 'public' }, 'Public'), h('option', { value: 'private' }, 'Private'))),
    ], 'Create', async (v) => {
      await hub('POST', '/api/repos/create', { json: { name: v.name, organization: me, type: 'model', visibility: v.visibility } });
      say(`Model ${me}/${v.name} created.`);
      go(`#/model?repo=${encodeURIComponent(`${me}/${v.name}`)}`);
    }),
    h('h2', {}, 'Your models'),
    models.length
      ? table(['Model', 'Visibility'], models.map((m) => [h('a', { href: `#/model?repo=${encodeURIComponent(m.id)}` }, m.id), m.private ? 'private' : 'public']))
      : h('p', {}, 'No models yet.'));
}

async function modelPage() {
  const repo = routeParams().get('repo') || '';
  const files = await hub('GET', `/api/models/${repo}/tree/main?recursive=1`).catch((e) => {
    if (e.status === 404) return [];
    throw e;
  });
  const fileInput = h('input', { type: 'file', id: 'upload-file', name: 'file', required: true });
  const rows = files.filter((f) => f.type === 'file').map((f) => [
    h('a', { href: `/${repo}/resolve/main/${f.path.split('/').map(encodeURIComponent).join('/')}` }, f.path),
    bytes(f.size),
    h('button', {
      type: 'button', class: 'secondary', 'aria-label': `Delete file ${f.path}`, onclick: async () => {
        if (!window.confirm(`Delete ${f.path} from ${repo}?`)) return;
        await hub('POST', `/api/models/${repo}/commit/main`, {
          headers: { 'Content-Type': 'application/x-ndjson' },
          body: [{ key: 'header', value: { summary: `Delete ${f.path}` } }, { key: 'deletedFile', value: { path: f.path } }]
            .map((l) => JSON.stringify(l)).join('\n'),
        });
        say(`${f.path} deleted.`);
        modelPage();
      },
    }, 'Delete')]);
  show(repo,
    h('h2', {}, 'Upload a file'),
    form('Upload file', [
      h('label', { for: 'upload-file' }, 'File', fileInput),
      field('Path in the model', { name: 'path' }, 'Empty: the file\'s own name.'),
    ], 'Upload', async (v) => {
      const file = fileInput.files[0];
      if (!file) throw new Error('Choose a file first.');
      const path = v.path || file.name;
      say(`Uploading ${path}…`);
      const commit = await uploadFile(repo, path, file);
      say(`${path} uploaded (commit ${commit.commitOid.slice(0, 8)}).`);
      modelPage();
    }),
    h('h2', {}, 'Files'),
    rows.length ? table(['Path', 'Size', ''], rows) : h('p', {}, 'No files yet.'),
    h('h2', {}, 'Delete this model'),
    form('Delete model', [field(`Type ${repo} to confirm`, { name: 'confirm', required: true })], 'Delete model', async (v) => {
      if (v.confirm !== repo) throw new Error(`Type ${repo} exactly.`);
      const [organization, name] = repo.split('/');
      await hub('DELETE', '/api/repos/delete', { json: { name, organization, type: 'model' } });
      say(`${repo} deleted.`);
      go('#/models');
    }, { danger: true }));
}

async function torrentsPage() {
  const { user } = state.me;
  const models = await hub('GET', `/api/models?author=${encodeURIComponent(user.name)}`);
  const announce = `${location.origin}/announce/${user.passkey}`;
  show('Torrents',
    h('p', {}, 'Your passkey makes the torrents and web seeds this node hands you count as yours. Keep it private.'),
    table(['', ''], [['Passkey', h('code', {}, user.passkey)], ['Private announce URL', h('code', {}, announce)]]),
    h('button', {
      type: 'button', class: 'secondary', onclick: async () => {
        if (!window.confirm('Torrents made with the old passkey stop working. Go on?')) return;
        await api('POST', 'passkey');
        state.me = await api('GET', 'me');
        say('New passkey made.');
        torrentsPage();
      },
    }, 'Make a new passkey'),
    h('h2', {}, 'Your public models'),
    table(['Model', 'Torrent', 'Magnet'], models.filter((m) => !m.private).map((m) => [m.id,
      h('a', { href: `/api/models/${m.id}/torrent/main` }, '.torrent'),
      h('a', { href: `/api/models/${m.id}/magnet/main` }, 'magnet')])));
}

function settingsPage() {
  show('Settings',
    h('h2', {}, 'Your data'),
    h('p', {}, 'Everything this node holds about you, as JSON: account, keys (never their secrets), sessions, usage, models and audit events.'),
    h('button', {
      type: 'button', id: 'export', onclick: async () => {
        const archive = await api('GET', 'export');
        const link = h('a', {
          href: URL.createObjectURL(new Blob([JSON.stringify(archive, null, 2)], { type: 'application/json' })),
          download: `inferllama-${state.me.user.name}-export.json`,
        }, 'Download');
        document.body.append(link);
        link.click();
        link.remove();
        say('Your export is downloading.');
      },
    }, 'Export my data'),
    h('section', { class: 'danger-zone', 'aria-labelledby': 'danger' },
      h('h2', { id: 'danger' }, 'Danger Zone'),
      h('p', {}, 'Deleting your account signs you out everywhere and revokes your keys at once. For 30 days an operator can still restore it; then your account, usage records and models are purged.'),
      form('Delete account', [field('Your password', { name: 'password', type: 'password', autocomplete: 'current-password', required: true })],
        'Delete Account', async (v) => {
          await api('POST', 'delete-account', { password: v.password });
          state.me = null;
          state.sessionKey = null;
          show('Account deleted', h('p', {}, 'Your account is deleted; it will be purged in 30 days.'));
          renderNav('');
        }, { danger: true })));
}

// ---- The operator's view ----

async function operatorPage() {
  const o = await api('GET', 'operator/overview');
  const userRows = o.users.map((u) => [u.name, u.email || '—', u.deleted ? `deleted ${u.deleted}` : u.disabled ? 'disabled' : 'active',
    h('span', { class: 'row' },
      u.deleted
        ? h('button', { type: 'button', class: 'secondary', onclick: () => operatorAction(`users/${u.name}/restore`, `${u.name} restored.`) }, 'Restore')
        : h('button', { type: 'button', class: 'secondary', onclick: () => operatorAction(`users/${u.name}/${u.disabled ? 'enable' : 'disable'}`, `${u.name} ${u.disabled ? 'enabled' : 'disabled'}.`) }, u.disabled ? 'Enable' : 'Disable'),
      u.deleted ? '' : h('button', { type: 'button', class: 'secondary', onclick: async () => {
        const answer = await api('POST', `operator/users/${u.name}/reset-link`);
        say(answer.sent ? `Reset link mailed to ${u.name}.` : `Reset link for ${u.name}: ${answer.url}`);
      } }, 'Reset password'))]);
  show('Operator',
    h('div', { class: 'cards' },
      h('div', { class: 'card' }, h('div', {}, 'Disk used'), h('div', { class: 'value' }, bytes(o.cache.bytes_stored)),
        h('div', { class: 'hint' }, o.cache.max_disk ? `of ${bytes(o.cache.max_disk)}` : 'no budget')),
      h('div', { class: 'card' }, h('div', {}, 'Upstream'), h('div', { class: 'value' }, o.health.upstream)),
      h('div', { class: 'card' }, h('div', {}, 'Redis'), h('div', { class: 'value' }, o.health.redis)),
      h('div', { class: 'card' }, h('div', {}, 'Sessions'), h('div', { class: 'value' }, o.health.sessions)),
      h('div', { class: 'card' }, h('div', {}, 'Tracked swarms'), h('div', { class: 'value' }, o.tracker.swarms),
        h('div', { class: 'hint' }, `${o.tracker.peers} peers`))),
    h('h2', {}, 'Cache'),
    o.cache.repos.length
      ? table(['Repository', 'Stored', 'Pinned', 'Eviction order'], o.cache.repos.map((r) => [r.repo, bytes(r.bytes), r.pinned ? 'yes' : '', r.evict_rank ? `#${r.evict_rank}` : '']))
      : h('p', {}, 'Nothing cached yet.'),
    h('h2', {}, 'Swarms and peers'),
    o.tracker.busiest.length
      ? h('div', { class: 'swarms' }, o.tracker.busiest.map((w) => h('details', {},
        h('summary', {}, `${w.snapshot || w.info_hash}: ${w.seeders} seeders, ${w.leechers} leechers`),
        w.peers.length
          ? table(['Address', 'Port', 'Has it all'], w.peers.map((p) => [p.address, p.port, p.seeder ? 'yes' : 'no']))
          : h('p', {}, 'No peer announced lately.'))))
      : h('p', {}, 'No swarm tracked yet.'),
    h('h2', {}, 'Seeding'),
    table(['', ''], [['Torrents seeded', o.cluster.seeding.torrents], ['Peers', o.cluster.seeding.peers],
      ['Uploaded', bytes(o.cluster.seeding.uploaded)]]),
    h('h2', {}, 'Mirrors'),
    o.mirrors.length ? table(['Repository', 'Branch'], o.mirrors.map((m) => [m.repo, m.branch])) : h('p', {}, 'No mirrors.'),
    h('h2', {}, 'Upstreams'),
    table(['URL', 'Kind', 'Healthy', 'Requests'], o.cluster.upstreams.map((u) => [u.url, u.kind, u.healthy ? 'yes' : 'no', u.requests])),
    h('h2', {}, 'Users'),
    table(['User', 'Email', 'State', ''], userRows),
    h('h2', {}, 'Invite someone'),
    form('Invite', [
      field('User name', { name: 'name', required: true }),
      field('Email', { name: 'email', type: 'email', required: true }),
    ], 'Invite', async (v, element) => {
      const answer = await api('POST', 'operator/invite', { name: v.name, email: v.email });
      element.reset();
      say(answer.sent ? `Invitation mailed to ${v.email}.` : `This node sends no mail: give ${v.name} this link: ${answer.url}`);
    }));
}

async function operatorAction(action, message) {
  try {
    await api('POST', `operator/${action}`);
    say(message);
    operatorPage();
  } catch (e) {
    say(e.message, 'error');
  }
}

// ---- Routing ----

const publicPages = { '#/sign-in': signInPage, '#/sign-up': signUpPage, '#/verify': verifyPage, '#/forgot': forgotPage, '#/reset': resetPage };
const userPages = {
  '#/profile': profilePage, '#/keys': keysPage, '#/usage': usagePage, '#/models': modelsPage, '#/model': modelPage,
  '#/torrents': torrentsPage, '#/settings': settingsPage, '#/operator': operatorPage,
};

async function render() {
  const route = location.hash.split('?')[0] || '#/';
  try {
    if (!state.config) state.config = await api('GET', 'config');
    if (!state.me && csrfToken()) state.me = await api('GET', 'me').catch(() => null);
    renderNav(route);
    if (publicPages[route]) return await publicPages[route]();
    if (!state.me) return signInPage();
    const page = userPages[route] || profilePage;
    return await page();
  } catch (e) {
    if (e.status === 401) {
      state.me = null;
      state.sessionKey = null;
      renderNav('#/sign-in');
      return signInPage();
    }
    say(e.message, 'error');
  }
  return undefined;
}

window.addEventListener('hashchange', () => {
  moved = true;
  say('');
  render();
});
render();
