// The two example apps that are not the demo (issue 11 §5), each run as an adopting team runs
// Ferry: its own spec, its tables from its own migrations folder (made by `spec ddl`), its own
// page calling `autoMigrate`, tokens minted by "its login" (HS256 with the shared secret, a
// string `sub`, not the dev endpoint). The legacy localStorage is what the old app wrote
// (examples/<app>/legacy.js); every row is checked by SQL with its exact values, every
// rejected record is in the quarantine with its reason, a reload sends nothing and doubles
// nothing, and the keys the spec does not read are untouched.
//
// - Pantry (examples/pantry): one persisted state-container key with two kinds at two paths,
//   boolean legacy maps, duplicate ids resolved by `duplicates: newest`. Served by the Ferry
//   server itself (FERRY_WWW_DIR), like the demo.
// - Recipes (examples/recipes): per-record keys with an index (unlisted keys reported, not
//   migrated), two app versions' note keys feeding one table. Served from the app's own origin
//   (a static server on loopback with its copy of pkg/), calling Ferry across origins (CORS).

import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { createHmac, randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { Server, ROOT, appStorage, launchBrowser, newDevice, openPage, shot, storageText } from './harness.mjs';
import * as pantry from '../../examples/pantry/legacy.js';
import * as recipes from '../../examples/recipes/legacy.js';

let browser;
const cleanups = [];
after(async () => {
  await browser?.close();
  for (const c of cleanups.reverse()) await c();
});

const q = (s) => `'${String(s).replaceAll("'", "''")}'`;
/** A timestamptz column as ISO 8601 UTC text, whatever the session's time zone. */
const iso = (col) => `to_char(${col} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') AS ${col}`;

/** The app's login: an HS256 token for `sub` signed with the secret it shares with Ferry. */
function mintToken(secret, sub) {
  const b64 = (v) => Buffer.from(JSON.stringify(v)).toString('base64url');
  const body = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64({ sub, iat: Math.floor(Date.now() / 1000), exp: Math.floor(Date.now() / 1000) + 3600 })}`;
  return `${body}.${createHmac('sha256', secret).update(body).digest('base64url')}`;
}

/** A Ferry server for one example app: its spec, its migrations folder, optionally its page. */
async function appServer(app, extra = {}) {
  const server = new Server();
  Object.assign(server.env, {
    FERRY_SPEC: path.join(ROOT, `specs/${app}.json`),
    FERRY_APP_MIGRATIONS: path.join(ROOT, `examples/${app}/migrations`),
    FERRY_WWW_DIR: path.join(ROOT, 'tests/e2e/no-www'), // nothing of the demo
    ...extra,
  });
  cleanups.push(() => server.dispose());
  await server.start();
  return server;
}

/** A signed-in user of `server`: the token the app's login gave, and the user id Ferry derives. */
async function signIn(server, sub) {
  const token = mintToken(server.env.FERRY_JWT_SECRET, sub);
  const response = await fetch(`${server.url}/v1/me`, { headers: { Authorization: `Bearer ${token}` } });
  assert.equal(response.status, 200, await response.clone().text());
  const { user_id: user } = await response.json();
  return { token, user };
}

const TYPES = { '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8', '.mjs': 'text/javascript; charset=utf-8', '.wasm': 'application/wasm', '.json': 'application/json' };

/** The app's own web server on loopback: `dir` at `/`, and its copy of the Ferry package at `/pkg/`. */
async function appOrigin(dir) {
  const http = createServer(async (req, res) => {
    const { pathname } = new URL(req.url, 'http://x');
    const [base, rel] = pathname.startsWith('/pkg/') ? [path.join(ROOT, 'pkg'), pathname.slice(5)] : [dir, pathname.slice(1) || 'index.html'];
    const file = path.resolve(base, rel);
    if (!file.startsWith(base + path.sep)) { res.writeHead(403).end(); return; }
    try {
      const body = await readFile(file);
      res.writeHead(200, { 'Content-Type': TYPES[path.extname(file)] ?? 'application/octet-stream' }).end(body);
    } catch {
      res.writeHead(404).end();
    }
  });
  await new Promise((resolve) => http.listen(0, '127.0.0.1', resolve));
  cleanups.push(() => new Promise((resolve) => http.close(resolve)));
  return `http://127.0.0.1:${http.address().port}`;
}

/**
 * A fresh browser profile on `origin` with the legacy app's localStorage and the app's session
 * (what its login left in sessionStorage), then the app's page opened at `pageUrl`.
 */
async function legacyBrowser(origin, pageUrl, storage, sessionKey, session) {
  browser ??= await launchBrowser();
  const context = await newDevice(browser);
  const page = await openPage(context, `${origin}/legacy.js`);
  await page.evaluate(({ storage, sessionKey, session }) => {
    localStorage.clear();
    for (const [k, v] of Object.entries(storage)) localStorage.setItem(k, v);
    sessionStorage.setItem(sessionKey, JSON.stringify(session));
  }, { storage, sessionKey, session });
  await page.goto(pageUrl);
  return { context, page };
}

/** Waits for the page's Ferry outcome (migrated, nothing_to_do or failed) and returns it. */
async function outcome(page) {
  await page.waitForFunction(() => ['migrated', 'nothing_to_do', 'failed'].includes(document.getElementById('status')?.dataset.status),
    null, { timeout: 120_000, polling: 100 });
  return page.evaluate(() => window.ferryResults.at(-1));
}

const quarantine = (server, user) => server.sql(`SELECT kind, key, locator, raw_value, reasons FROM ferry_quarantine WHERE user_id = ${q(user)} ORDER BY kind, key, locator`);
const reasonText = (r) => JSON.stringify(r.reasons);

test('Pantry: a persisted state container migrates both kinds at their paths, legacy booleans repaired, the newest duplicate kept', async () => {
  const server = await appServer('pantry', { FERRY_WWW_DIR: path.join(ROOT, 'examples/pantry') });
  const { token, user } = await signIn(server, `pantry|${randomBytes(4).toString('hex')}`);
  const storage = pantry.legacyStorage();
  const { context, page } = await legacyBrowser(server.url, `${server.url}/`, storage, 'pantry-session', { user: 'ada', token });

  const first = await outcome(page);
  assert.equal(first.status, 'migrated', JSON.stringify(first));
  await shot(page, 'pantry-migrated', { fullPage: true });

  const items = server.sql(`SELECT id, name, qty, unit, ${iso('expires_on')}, opened, tags, ${iso('updated_at')} FROM pantry_items WHERE user_id = ${q(user)} ORDER BY id`);
  assert.deepEqual(items, [
    // The edited copy pushed later (newest updatedAt) is the row; the UUID legacy id is the row id.
    { id: '3f9a1c52-7b1e-4c2a-9d4e-1a2b3c4d5e01', name: 'Flour (T55)', qty: 1.5, unit: 'kg', expires_on: '2026-12-24T00:00:00Z', opened: true, tags: null, updated_at: '2026-10-09T09:00:00Z' },
    { id: '3f9a1c52-7b1e-4c2a-9d4e-1a2b3c4d5e02', name: 'Crème fraîche 🥛', qty: 0.5, unit: 'l', expires_on: '2026-11-30T00:00:00Z', opened: false, tags: ['dairy', 'fridge'], updated_at: '2026-10-02T09:00:00Z' },
    { id: '3f9a1c52-7b1e-4c2a-9d4e-1a2b3c4d5e03', name: 'Eggs', qty: 6, unit: 'pcs', expires_on: null, opened: true, tags: null, updated_at: '2026-10-03T09:00:00Z' },
    { id: '3f9a1c52-7b1e-4c2a-9d4e-1a2b3c4d5e04', name: 'Olive oil', qty: 1, unit: 'l', expires_on: null, opened: true, tags: ['pantry'], updated_at: '2026-10-04T09:00:00Z' },
    { id: '3f9a1c52-7b1e-4c2a-9d4e-1a2b3c4d5e05', name: '  Rice  ', qty: 500, unit: 'g', expires_on: null, opened: false, tags: null, updated_at: '2026-10-05T09:00:00Z' },
  ]);
  assert.deepEqual(server.sql(`SELECT currency, low_stock_alert FROM pantry_settings WHERE user_id = ${q(user)}`),
    [{ currency: 'EUR', low_stock_alert: false }], '"no" became false');

  const held = quarantine(server, user);
  assert.equal(held.length, 4, JSON.stringify(held, null, 1));
  assert.ok(held.every((r) => r.kind === 'items' && r.key === 'pantry-store'), JSON.stringify(held));
  const byRaw = (needle) => held.find((r) => r.raw_value?.includes(needle));
  assert.match(reasonText(byRaw('5e06')), /name/, 'no name: the required field is named');
  assert.match(reasonText(byRaw('"Sugar"')), /qty/);
  assert.match(reasonText(byRaw('"Salt"')), /unit|pinch/);
  assert.match(byRaw('"Flour"').raw_value, /"updatedAt":1790845200000/, 'the older Flour copy is the one held');
  assert.match(reasonText(byRaw('"Flour"')), /duplicate|same id/i);
  assert.equal(first.report.quarantined.length, 4, 'the page was told about the four held records');

  // A reload sends nothing and doubles nothing; the app's keys are as it left them.
  const mark = page.requests.length;
  await page.reload();
  assert.equal((await outcome(page)).status, 'nothing_to_do');
  assert.deepEqual(page.requests.slice(mark).filter((r) => r === 'POST /v1/batches'), []);
  assert.equal(server.count(`SELECT count(*) FROM pantry_items WHERE user_id = ${q(user)}`), 5);
  assert.equal(server.count(`SELECT count(*) FROM pantry_settings WHERE user_id = ${q(user)}`), 1);
  assert.equal(quarantine(server, user).length, 4);
  const after = JSON.parse(await storageText(page));
  assert.equal(after[pantry.UI_KEY], storage[pantry.UI_KEY], 'pantry-ui (not in the spec) is untouched');
  assert.equal(after[pantry.STORE_KEY], storage[pantry.STORE_KEY], 'the store is kept (no cleanup asked)');
  assert.match(await page.locator('#items').textContent(), /Crème fraîche 🥛/, 'the page still shows its data');
  assert.deepEqual(page.errors, []);
  await context.close();
});

test('Recipes: only indexed per-record keys migrate, stale keys are reported, two note keys feed one table once', async () => {
  const origin = await appOrigin(path.join(ROOT, 'examples/recipes'));
  const server = await appServer('recipes', { FERRY_CORS_ORIGINS: origin });
  const { token, user } = await signIn(server, `recipes|${randomBytes(4).toString('hex')}`);
  const storage = recipes.legacyStorage();
  const { context, page } = await legacyBrowser(origin, `${origin}/?server=${encodeURIComponent(server.url)}`, storage, 'recipes-session', { user: 'grace', token });

  const first = await outcome(page);
  assert.equal(first.status, 'migrated', JSON.stringify(first));
  await shot(page, 'recipes-migrated', { fullPage: true });

  const rows = server.sql(`SELECT legacy_id, title, serves, minutes, vegetarian, ingredients, steps, ${iso('created_at')}, ${iso('updated_at')} FROM recipes WHERE user_id = ${q(user)} ORDER BY legacy_id`);
  assert.deepEqual(rows, [
    { legacy_id: 'pancakes', title: 'Pancakes', serves: 4, minutes: 25, vegetarian: true, ingredients: ['flour', 'milk', 'eggs'], steps: 'Whisk.\nRest 10 min.\nFry.', created_at: '2025-02-01T08:00:00Z', updated_at: '2025-02-01T08:00:00Z' },
    { legacy_id: 'pho-bo', title: 'Phở bò 🍜', serves: 2, minutes: 240, vegetarian: false, ingredients: ['beef bones', 'star anise', 'rice noodles'], steps: '', created_at: '2025-03-01T18:00:00Z', updated_at: '2025-06-01T18:30:00Z' },
    { legacy_id: 'salad', title: 'Green salad', serves: 2, minutes: null, vegetarian: true, ingredients: [], steps: '', created_at: '2025-04-01T12:00:00Z', updated_at: '2025-04-01T12:00:00Z' },
  ]);
  const notes = server.sql(`SELECT id, legacy_id, text, done, ${iso('updated_at')} FROM shopping_notes WHERE user_id = ${q(user)} ORDER BY legacy_id`);
  assert.deepEqual(notes.map(({ id, ...rest }) => rest), [
    { legacy_id: '1', text: 'Star anise', done: true, updated_at: '2025-05-10T10:00:00Z' },
    { legacy_id: '2', text: 'Rice noodles', done: true, updated_at: '2025-06-02T09:00:00Z' },
    { legacy_id: '3', text: 'Milk, 1 l', done: false, updated_at: '2025-05-10T10:02:00Z' },
    { legacy_id: '4', text: 'Limes «bio»', done: false, updated_at: '2025-06-02T09:05:00Z' },
  ], 'one row per note id across both keys: the newest version of note 2');
  assert.equal(new Set(notes.map((n) => n.id)).size, 4);

  const held = quarantine(server, user);
  const keys = held.map((r) => `${r.kind} ${r.key}`).sort();
  assert.deepEqual(keys, [
    'notes recipes.shopping',
    'notes_v1 recipes.notes',
    'recipes recipes.item.feast',
    'recipes recipes.item.mystery',
    'recipes recipes.item.old-soup',
    'recipes recipes.item.test',
  ], JSON.stringify(held, null, 1));
  const of = (key) => held.find((r) => r.key === key);
  for (const stale of ['recipes.item.old-soup', 'recipes.item.test']) {
    assert.match(reasonText(of(stale)), /recipes\.index/, `${stale}: the reason names the index key`);
    assert.deepEqual(JSON.parse(of(stale).raw_value), JSON.parse(storage[stale]), `${stale}: kept whole`);
  }
  assert.match(reasonText(of('recipes.item.mystery')), /title/);
  assert.match(reasonText(of('recipes.item.feast')), /serves/);
  assert.match(of('recipes.notes').raw_value, /Rice noodles/, 'the older copy of note 2 is the one held');
  assert.match(of('recipes.shopping').raw_value, /"id":5/);
  assert.equal(first.report.quarantined.length, held.length, 'the page was told about every held record');
  // `lost` is listed but its key is gone: a warning of the run, nothing to migrate.
  assert.deepEqual(first.report.warnings.filter((w) => /recipes\.index/.test(w)),
    ['kind `recipes`: index key "recipes.index" lists id "lost", but there is no key "recipes.item.lost"']);

  // A reload sends nothing and doubles nothing; the app's own keys are as it left them.
  const mark = page.requests.length;
  await page.reload();
  assert.equal((await outcome(page)).status, 'nothing_to_do');
  assert.deepEqual(page.requests.slice(mark).filter((r) => r === 'POST /v1/batches'), []);
  assert.equal(server.count(`SELECT count(*) FROM recipes WHERE user_id = ${q(user)}`), 3);
  assert.equal(server.count(`SELECT count(*) FROM shopping_notes WHERE user_id = ${q(user)}`), 4);
  assert.equal(quarantine(server, user).length, held.length);
  const after = await appStorage(page);
  assert.deepEqual(after, storage, 'every key (the draft, the index, the stale recipes) is as the app left it');
  assert.deepEqual(page.errors, []);
  await context.close();
});

test('Recipes: the <ferry-migrate> component runs "Migrate my data" from the keyboard, reports, lists backups and restores a working app', async () => {
  const origin = await appOrigin(path.join(ROOT, 'examples/recipes'));
  const server = await appServer('recipes', { FERRY_CORS_ORIGINS: origin });
  const { token, user } = await signIn(server, `recipes|${randomBytes(4).toString('hex')}`);
  const storage = recipes.legacyStorage();
  const { context, page } = await legacyBrowser(origin, `${origin}/?server=${encodeURIComponent(server.url)}`, storage, 'recipes-session', { user: 'grace', token });
  assert.equal((await outcome(page)).status, 'migrated');
  const ui = page.locator('ferry-migrate');
  // The auto-run's backup shows in the component once that run ends (no reload).
  await ui.locator('tr[data-backup]').first().waitFor({ timeout: 30_000 });
  assert.equal(await ui.locator('tr[data-backup]').count(), 1);
  assert.equal((await ui.locator('tr[data-backup] td').nth(2).textContent()).replaceAll(',', ''), String(Object.keys(storage).length), 'the backup holds every key of the origin');

  // The user adds a recipe; "Migrate my data", pressed from the keyboard, sends it.
  await page.evaluate(({ index, prefix }) => {
    localStorage.setItem(index, JSON.stringify([...JSON.parse(localStorage.getItem(index)), 'tea']));
    localStorage.setItem(`${prefix}tea`, JSON.stringify({ title: 'Mint tea <img src=x onerror=alert(1)>', serves: 1, minutes: 5, vegetarian: true, ingredients: ['mint'], created: 1767225600000 }));
  }, { index: recipes.INDEX_KEY, prefix: recipes.ITEM_PREFIX });
  const button = ui.getByRole('button', { name: 'Migrate my data' });
  await button.focus();
  await page.keyboard.press('Enter');
  const status = ui.getByRole('status');
  await status.filter({ hasText: /saved to your account/ }).waitFor({ timeout: 60_000 });
  assert.match(await status.textContent(), /^1 record saved to your account\.$/);
  assert.equal(await ui.locator('[role=progressbar]').getAttribute('aria-valuenow'), '100', 'the ARIA progress bar reached 100');
  assert.equal(await ui.locator('tr[data-kind="recipes"] th').textContent(), 'Recipes', 'the kind label the page gave');
  assert.equal(await ui.locator('tr[data-kind="recipes"] td[data-outcome="inserted"]').textContent(), '1');
  assert.deepEqual(server.sql(`SELECT title FROM recipes WHERE user_id = ${q(user)} AND legacy_id = 'tea'`), [{ title: 'Mint tea <img src=x onerror=alert(1)>' }]);
  assert.equal(server.count(`SELECT count(*) FROM recipes WHERE user_id = ${q(user)}`), 4, 'nothing doubled');
  // The run took a backup of its own first: two now, newest first.
  await ui.locator('tr[data-backup]').nth(1).waitFor();
  await shot(page, 'component-report-desktop', { fullPage: true });

  // A passphrase-protected download.
  const oldest = ui.locator('tr[data-backup]').nth(1);
  assert.equal((await oldest.locator('td').nth(2).textContent()).replaceAll(',', ''), String(Object.keys(storage).length));
  await oldest.getByRole('button', { name: 'Download…' }).click();
  await oldest.locator('input[type=password]').fill('correct horse battery');
  const [download] = await Promise.all([page.waitForEvent('download'), oldest.getByRole('button', { name: 'Download', exact: true }).click()]);
  const file = await readFile(await download.path());
  assert.ok(file.length > 100 && !file.toString('latin1').includes('Phở'), 'the file has content and is not plain text');

  // The browser loses its data; restoring the auto-run's backup gives back a working app.
  await page.evaluate(() => localStorage.clear());
  await page.reload();
  await oldest.getByRole('button', { name: 'Restore' }).click();
  await status.filter({ hasText: /Confirm restore/ }).waitFor();
  await oldest.getByRole('button', { name: 'Confirm restore' }).click();
  await status.filter({ hasText: /^Restored \d+ keys/ }).waitFor();
  assert.deepEqual(await appStorage(page), storage, 'every key of the origin is back exactly');
  assert.match(await page.locator('#recipes').textContent(), /Phở bò 🍜/, 'the page re-rendered from the restored data (ferry-restored)');
  await page.setViewportSize({ width: 375, height: 812 });
  await shot(page, 'component-restored-375', { fullPage: true });
  // Strings from the user's data stay text inside the component.
  assert.equal(await ui.locator('img').count(), 0);
  assert.equal(server.count(`SELECT count(*) FROM recipes WHERE user_id = ${q(user)}`), 4, 'a local restore does not touch the server');
  assert.deepEqual(page.errors, []);
  await context.close();
});
