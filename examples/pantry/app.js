// The Pantry page: shows the app's own data, and runs Ferry the way an adopting app does —
// `autoMigrate` at start-up once the user is signed in, plus a "Migrate my data" button.
// The Ferry server defaults to this page's origin (`?server=URL` names another one, which
// must list this origin in FERRY_CORS_ORIGINS).

import { autoMigrate } from '/pkg/auto.js';
import { STORE_KEY, legacyStorage } from './legacy.js';

const server = new URLSearchParams(location.search).get('server') ?? location.origin;
const SESSION = 'pantry-session'; // the app's login keeps {user, token} here, per tab
const $ = (id) => document.getElementById(id);

function session() {
  try { return JSON.parse(sessionStorage.getItem(SESSION) ?? 'null'); } catch { return null; }
}

// The app's login. This example signs in with the Ferry dev server's token endpoint (dev mode
// only); a real app returns the access token of its own login here (README, "Use Ferry in your app").
async function getToken() {
  const s = session();
  if (!s?.token) throw new Error('not signed in');
  return s.token;
}

function render() {
  let store = null;
  try { store = JSON.parse(localStorage.getItem(STORE_KEY) ?? 'null'); } catch { /* shown as empty */ }
  const items = Array.isArray(store?.state?.items) ? store.state.items : [];
  $('items').replaceChildren(...items.map((item) => {
    const tr = document.createElement('tr');
    for (const v of [item?.name, item?.qty, item?.unit, item?.expires, item?.opened]) {
      const td = document.createElement('td');
      td.textContent = v === undefined ? '' : String(v);
      tr.append(td);
    }
    return tr;
  }));
  const s = store?.state?.settings;
  $('settings').textContent = s ? `Currency ${s.currency}, low-stock alert ${s.lowStockAlert}` : 'No settings';
}

function show(result) {
  const text = {
    migrated: () => `Your data is now saved to your account (${result.report.recordsSent} records sent, ${result.report.quarantined.length} set aside for review).`,
    nothing_to_do: () => 'Everything is saved.',
    in_other_tab: () => 'Another tab is saving your data.',
    retrying: () => `The server is not reachable; trying again in ${Math.round(result.retryInMs / 1000)} s.`,
    failed: () => `Not saved: ${result.error.message}`,
  }[result.status];
  $('status').textContent = text ? text() : result.status;
  $('status').dataset.status = result.status;
  (window.ferryResults ??= []).push(result);
}

function migrate() {
  if (!session()) return;
  $('status').textContent = 'Saving your data to your account…';
  return autoMigrate({ server, getToken, onResult: show });
}

$('signin').addEventListener('submit', async (e) => {
  e.preventDefault();
  const response = await fetch(`${server}/dev/token`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ user: $('user').value }) });
  if (!response.ok) { $('status').textContent = `Sign-in failed: ${response.status}`; return; }
  const { token } = await response.json();
  sessionStorage.setItem(SESSION, JSON.stringify({ user: $('user').value, token }));
  $('signin').hidden = true;
  migrate();
});
$('migrate').addEventListener('click', () => migrate());
$('sample').addEventListener('click', () => {
  for (const [key, value] of Object.entries(legacyStorage())) localStorage.setItem(key, value);
  render();
  migrate();
});

render();
if (session()) migrate();
else { $('signin').hidden = false; $('status').textContent = 'Sign in to save your pantry to your account.'; }
