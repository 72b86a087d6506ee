// The Recipes page: shows the app's own data, and runs Ferry the way an adopting app does —
// `autoMigrate` at start-up once the user is signed in, plus Ferry's <ferry-migrate> component
// for "Migrate my data" (progress, report, conflicts, backups).
// The page and its copy of the Ferry package (`/pkg/`) are served by the app's own web server;
// the Ferry server is elsewhere: `?server=URL` (its FERRY_CORS_ORIGINS lists this origin),
// by default this page's origin.

import { autoMigrate } from '/pkg/auto.js';
import '/pkg/ferry-migrate.js';
import { INDEX_KEY, ITEM_PREFIX, legacyStorage } from './legacy.js';

const server = new URLSearchParams(location.search).get('server') ?? location.origin;
const SESSION = 'recipes-session'; // the app's login keeps {user, token} here, per tab
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

const parsed = (key) => { try { return JSON.parse(localStorage.getItem(key) ?? 'null'); } catch { return null; } };

function item(text) {
  const li = document.createElement('li');
  li.textContent = text;
  return li;
}

function render() {
  const index = parsed(INDEX_KEY);
  const slugs = Array.isArray(index) ? index : [];
  $('recipes').replaceChildren(...slugs.map((slug) => {
    const r = parsed(ITEM_PREFIX + slug);
    return item(r ? `${r.title ?? '(untitled)'} — serves ${r.serves ?? '?'}` : `${slug} (missing)`);
  }));
  const notes = parsed('recipes.shopping') ?? parsed('recipes.notes') ?? [];
  $('notes').replaceChildren(...(Array.isArray(notes) ? notes : []).map((n) => item(`${(n?.checked ?? n?.done) ? '☑' : '☐'} ${n?.note ?? n?.text ?? ''}`)));
}

function show(result) {
  const text = {
    migrated: () => `Your recipes are now saved to your account (${result.report.recordsSent} records sent, ${result.report.quarantined.length} set aside for review).`,
    nothing_to_do: () => 'Everything is saved.',
    in_other_tab: () => 'Another tab is saving your recipes.',
    retrying: () => `The server is not reachable; trying again in ${Math.round(result.retryInMs / 1000)} s.`,
    failed: () => `Not saved: ${result.error.message}`,
  }[result.status];
  $('status').textContent = text ? text() : result.status;
  $('status').dataset.status = result.status;
  (window.ferryResults ??= []).push(result);
}

function migrate() {
  if (!session()) return;
  $('status').textContent = 'Saving your recipes to your account…';
  return autoMigrate({ server, getToken, onResult: show });
}

$('signin').addEventListener('submit', async (e) => {
  e.preventDefault();
  const response = await fetch(`${server}/dev/token`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ user: $('user').value }) });
  if (!response.ok) { $('status').textContent = `Sign-in failed: ${response.status}`; return; }
  const { token } = await response.json();
  sessionStorage.setItem(SESSION, JSON.stringify({ user: $('user').value, token }));
  $('signin').hidden = true;
  connect();
  migrate();
});
// The component shares the page's migrator with autoMigrate: same server, same getToken.
const ferry = $('ferry');
ferry.setAttribute('server', server);
ferry.kindLabels = { recipes: 'Recipes', notes: 'Shopping notes', notes_v1: 'Shopping notes (old)' };
ferry.addEventListener('ferry-restored', render);
const connect = () => { if (session()) ferry.getToken = getToken; };
$('sample').addEventListener('click', () => {
  for (const [key, value] of Object.entries(legacyStorage())) localStorage.setItem(key, value);
  render();
  migrate();
});

render();
connect();
if (session()) migrate();
else { $('signin').hidden = false; $('status').textContent = 'Sign in to save your recipes to your account.'; }
