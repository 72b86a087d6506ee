// End-to-end tests of issue 5: the Taskboard demo in headless Chromium, the wasm migrator,
// the real ingest server and PostgreSQL. Every test checks PostgreSQL by SQL as well as the
// page, and saves screenshots under tests/e2e/artifacts/.
//
//   cd tests/e2e && npm ci && node --test
//
// One server (one embedded cluster) serves every test; each test has its own demo user.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { Server, launchBrowser, newDevice, openPage, shot, storageText, appStorage, notice, loadSampleData, fillTasks, userName, escaped, clearlyValidTask, tasksMigratedOnce } from './harness.mjs';

const server = new Server();
let browser;

before(async () => {
  await server.start();
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await server.dispose();
});

const url = (hash = '') => `${server.url}/${hash}`;
const q = (s) => `'${String(s).replaceAll("'", "''")}'`;
const rows = (table, user) => server.count(`SELECT count(*) FROM ${table} WHERE user_id = ${q(user)}`);
const quarantined = (user, kind) => server.count(`SELECT count(*) FROM ferry_quarantine WHERE user_id = ${q(user)}${kind ? ` AND kind = ${q(kind)}` : ''}`);
// (The browser's verification marks its run 'verified' on the server: POST /v1/migrations/{id}/verify.)
const runs = (user) => server.sql(`SELECT migration_id, status FROM ferry_migration_runs WHERE user_id = ${q(user)}`);
const received = (user, kind) => server.count(`SELECT count(*) FROM ferry_received WHERE user_id = ${q(user)} AND kind = ${q(kind)}`);
const openConflicts = (user) => server.count(`SELECT count(*) FROM ferry_conflicts WHERE user_id = ${q(user)} AND status = 'open'`);

/** A signed-in device (token obtained over HTTP) with a fresh profile. */
async function signedInDevice(label, options = {}) {
  const session = await server.token(userName(label));
  const context = await newDevice(browser, { session, ...options });
  return { session, context, user: session.user_id };
}

/** The local tasks array, parsed in Node from well-formed JSON text (lone surrogates intact). */
async function localTasks(page) {
  const all = JSON.parse(await storageText(page));
  try { return JSON.parse(all.tasks ?? '[]'); } catch { return []; }
}

/** Every clearly valid local task is in PostgreSQL exactly once with its title; nothing else is. */
const assertTasksMigratedOnce = (user, local) => tasksMigratedOnce(server, user, local);

/** The numbers of the "Your 1,234 tasks … 2 records need your attention." message. */
function parseSummary(text) {
  const n = (re) => Number((text.match(re)?.[1] ?? '0').replaceAll(',', ''));
  return { tasks: n(/([\d,]+) tasks?\b/), environments: n(/([\d,]+) environments?\b/), attention: n(/([\d,]+) records? needs? your attention/) };
}

test('the page loads, works as the legacy app did, and signs in a demo user', async () => {
  const name = userName('legacy');
  const context = await newDevice(browser);
  const page = await openPage(context, url());
  await page.waitForSelector('#task-list .empty');
  await shot(page, 'tasks-empty-desktop');

  // A draft autosaves to formData:newTask and survives a reload.
  await page.fill('#new-task [name=title]', 'Write the launch post');
  await page.selectOption('#new-task [name=priority]', 'high');
  await page.fill('#new-task [name=tags]', 'marketing, launch');
  const draft = JSON.parse(await page.evaluate(() => localStorage.getItem('formData:newTask')));
  assert.equal(draft.fields.title, 'Write the launch post');
  assert.equal(typeof draft.savedAt, 'number');
  await page.reload();
  assert.equal(await page.inputValue('#new-task [name=title]'), 'Write the launch post');
  await page.click('#new-task button');
  const [task] = await localTasks(page);
  assert.match(task.id, /^[0-9a-f-]{36}$/);
  assert.equal(task.status, 'todo');
  assert.deepEqual(task.tags, ['marketing', 'launch']);
  assert.ok(!Number.isNaN(Date.parse(task.createdAt)) && task.createdAt.endsWith('Z'));
  assert.equal(await page.evaluate(() => localStorage.getItem('formData:newTask')), null, 'the draft is cleared once added');

  await page.selectOption('#task-list li select', 'in-progress');
  assert.equal((await localTasks(page))[0].status, 'in-progress', 'statuses are written in the legacy form');
  await shot(page, 'tasks-one-desktop');

  // Environments: the GitHub token is stored in config and shown masked.
  await page.click('a[data-view="environments"]');
  await page.fill('#new-env [name=name]', 'Staging EU');
  await page.fill('#new-env [name=githubToken]', 'ghp_secretsecretsecret1234');
  await page.click('#new-env button');
  const envs = JSON.parse(await page.evaluate(() => localStorage.getItem('environments')));
  assert.equal(envs[0].id, 'staging-eu');
  assert.equal(envs[0].config.githubToken, 'ghp_secretsecretsecret1234');
  assert.ok(!(await page.textContent('#env-list')).includes('secretsecret'), 'the token is masked');
  await shot(page, 'environments-desktop');
  await page.setViewportSize({ width: 375, height: 812 });
  await shot(page, 'environments-375');

  await page.click('a[data-view="preferences"]');
  await page.selectOption('#prefs [name=theme]', 'dark');
  await page.selectOption('#prefs [name=language]', 'fr-FR');
  const prefs = JSON.parse(await page.evaluate(() => localStorage.getItem('userPreferences')));
  assert.deepEqual([prefs.theme, prefs.language], ['dark', 'fr-FR']);
  assert.equal(await page.evaluate(() => localStorage.getItem('taskboard:lastRoute')), '/preferences');
  await shot(page, 'preferences-dark-375');
  await page.selectOption('#prefs [name=theme]', 'light');
  await page.click('a[data-view="tasks"]');
  await page.selectOption('#task-list li select', 'done');
  await shot(page, 'tasks-375');
  await page.click('#task-list li button');
  assert.deepEqual(await localTasks(page), []);

  // Nothing reaches the server before sign-in.
  assert.ok(!page.requests.some((r) => r.includes('/v1/')), page.requests.join('\n'));
  const { user_id: userId } = await server.token(name);
  assert.equal(runs(userId).length, 0);

  await page.setViewportSize({ width: 1280, height: 860 });
  await page.fill('#signin-name', name);
  await page.click('#signin button');
  await page.waitForSelector('#signed-in:not([hidden])');
  assert.equal(await page.textContent('#user-name'), name);
  const session = JSON.parse(await page.evaluate(() => sessionStorage.getItem('taskboard-session')));
  assert.ok(session.token.split('.').length === 3, 'a JWT is kept in sessionStorage');
  await page.click('a[data-view="data"]');
  await page.waitForFunction(() => !/Checking/.test(document.getElementById('sync-state').textContent));
  await shot(page, 'data-signed-in-desktop');
  await page.keyboard.press('Tab');
  assert.deepEqual(page.errors, []);
  assert.equal(rows('tasks', userId), 0, 'no local tasks, nothing stored');
  await context.close();
});

test('a fresh user with about 5 MB: auto-run stores every valid record once and quarantines the rest', async () => {
  const { context, user } = await signedInDevice('5mb');
  // A fixed seed: the same 5 MB every run, so a failure can be reproduced.
  const page = await openPage(context, url('?seed=20261121#data'));
  const batches = [];
  page.on('request', (r) => {
    if (r.method() === 'POST' && new URL(r.url()).pathname === '/v1/batches') {
      batches.push({ encoding: r.headers()['content-encoding'], bytes: r.postDataBuffer()?.length ?? 0 });
    }
  });
  const loaded = await loadSampleData(page, '5000000');
  assert.doesNotMatch(loaded, /fallback/, 'the seeded generator (GET /dev/sample) is used, no fallback');
  assert.match(loaded, /\((4\.\d|5\.\d) MB\)/, loaded);
  await page.waitForSelector('#auto-sync:not([hidden])', { timeout: 30_000 });
  // While the auto-run shows its bar, the status line of the data view follows the run: it never
  // says "not saved" or "Everything is saved" at 3%.
  await page.evaluate(() => {
    const state = document.getElementById('sync-state');
    const sync = document.getElementById('auto-sync');
    window.contradictions = [];
    const check = () => { if (!sync.hidden && !/^Saving your data/.test(state.textContent)) window.contradictions.push(state.textContent); };
    new MutationObserver(check).observe(state, { childList: true, characterData: true, subtree: true });
    check();
  });
  const bar = page.locator('#auto-bar');
  assert.equal(await bar.getAttribute('role'), 'progressbar');
  assert.ok(await bar.getAttribute('aria-valuetext'));
  await shot(page, 'auto-run-progress-desktop');
  await page.click('a[data-view="tasks"]'); // the app stays usable during the run
  assert.ok(await page.locator('#task-list li').count() > 0);
  const message = await notice(page, /now saved to your account/, 180_000);
  assert.deepEqual(await page.evaluate(() => window.contradictions), [], 'the status line never contradicted the run');
  await shot(page, 'auto-run-done-desktop');
  await page.setViewportSize({ width: 375, height: 812 });
  await shot(page, 'auto-run-done-375');

  const local = await localTasks(page);
  const { stored } = assertTasksMigratedOnce(user, local);
  // Batches travel gzip-compressed: the upload is a fraction of the data's UTF-8 size.
  // (A body under 1 KiB goes as it is: compressing it would save nothing.)
  assert.ok(batches.length > 0 && batches.every((b) => b.encoding === 'gzip' || b.bytes < 1024), JSON.stringify(batches));
  const utf8 = await page.evaluate(() => {
    const enc = new TextEncoder();
    let n = 0;
    for (let i = 0; i < localStorage.length; i++) {
      const k = localStorage.key(i);
      n += enc.encode(k).length + enc.encode(localStorage.getItem(k)).length;
    }
    return n;
  });
  const uploaded = batches.reduce((n, b) => n + b.bytes, 0);
  console.log(`uploaded ${uploaded} bytes in ${batches.length} batches for ${utf8} bytes of localStorage`);
  assert.ok(uploaded < utf8 * 0.5, `uploaded ${uploaded} bytes for ${utf8} bytes of localStorage`);
  const shown = parseSummary(message);
  assert.equal(shown.tasks, stored, `the page says ${shown.tasks} tasks, PostgreSQL holds ${stored}`);
  assert.equal(shown.environments, rows('environments', user));
  assert.ok(quarantined(user) > 0, 'the invalid records are in the quarantine');
  assert.equal(shown.attention, quarantined(user) + openConflicts(user));
  const reasons = server.sql(`SELECT reasons FROM ferry_quarantine WHERE user_id = ${q(user)} LIMIT 20`);
  assert.ok(reasons.every((r) => Array.isArray(r.reasons) ? r.reasons.length > 0 : Object.keys(r.reasons).length > 0), 'every quarantined record has reasons');
  assert.equal(runs(user).length, 1, 'one migration');
  assert.equal(runs(user)[0].status, 'verified', 'the browser verified its run on the server');
  assert.equal(received(user, 'tasks'), stored + quarantined(user, 'tasks'), 'the server received each task record once');
  assert.deepEqual(page.errors, []);
  await context.close();
});

test('data loaded while the load-time run is still busy is migrated as soon as that run ends', async () => {
  const { context, user } = await signedInDevice('busy');
  // The load-time run has read a few tasks and is uploading them, held, when sample data is
  // loaded: that data was not in what it read, so it needs a run of its own afterwards.
  let release;
  const held = new Promise((r) => { release = r; });
  await context.route('**/v1/batches', async (route) => { await held; await route.continue(); });
  const page = await openPage(context, url('readyz'));
  const early = [1, 2, 3].map((i) => ({ id: crypto.randomUUID(), title: `Early task ${i}`, status: 'todo', createdAt: '2024-01-01T00:00:00Z' }));
  await page.evaluate((tasks) => localStorage.setItem('tasks', JSON.stringify(tasks)), early);
  await page.goto(url('#data'));
  await page.waitForSelector('#auto-sync:not([hidden])');
  // The sample loaded while that run is held (not through loadSampleData, which waits for it).
  await page.click('a[data-view="data"]');
  await page.selectOption('#sample-size', '1048576');
  await page.click('#sample');
  await notice(page, /^Loaded /, 60_000);
  release();
  await page.waitForFunction(() => /now saved to your account/.test(document.getElementById('notice')?.textContent ?? ''), null, { timeout: 60_000 });
  await page.waitForFunction(() => document.getElementById('auto-sync').hidden, null, { timeout: 60_000 });
  await page.waitForFunction(() => /Everything is saved/.test(document.getElementById('sync-state')?.textContent ?? ''), null, { timeout: 60_000 });
  // The sample replaced the early tasks in localStorage; both sets are in PostgreSQL, once.
  const local = await localTasks(page);
  assert.ok(local.length > 100);
  assertTasksMigratedOnce(user, [...early, ...local]);
  assert.equal(runs(user).length, 2, 'the held run and the one after it');
  assert.deepEqual(page.errors, []);
  await context.close();
});

test('a reload in the middle of the upload resumes, finishes, and duplicates nothing', async () => {
  const { context, user } = await signedInDevice('reload');
  // Slow every batch down so the reload surely lands mid-upload.
  await context.route('**/v1/batches', async (route) => { await new Promise((r) => setTimeout(r, 700)); await route.continue(); });
  const page = await openPage(context, url('#data'));
  await context.setOffline(true); // hold the auto-run until the data is in place
  await fillTasks(page, 5_000_000);
  await context.setOffline(false);
  await page.reload();
  await page.waitForFunction(() => {
    const bar = document.getElementById('auto-bar');
    return /Uploading/.test(bar.getAttribute('aria-valuetext')) && Number(bar.getAttribute('aria-valuenow')) >= 15;
  }, null, { timeout: 120_000, polling: 50 });
  await shot(page, 'reload-before');
  const sentBefore = page.requests.filter((r) => r === 'POST /v1/batches').length;
  await page.reload();
  const message = await notice(page, /now saved to your account/, 180_000);
  await shot(page, 'reload-after');
  assert.ok(sentBefore >= 1, 'at least one batch went out before the reload');
  const ids = runs(user);
  assert.equal(ids.length, 1, `one migration, resumed (runs: ${JSON.stringify(ids)})`);
  const local = await localTasks(page);
  const { stored } = assertTasksMigratedOnce(user, local);
  assert.equal(stored, local.length, 'every generated task is valid and stored');
  assert.equal(received(user, 'tasks'), local.length, 'each record received once');
  assert.equal(server.count(`SELECT count(*) FROM (SELECT sequence FROM ferry_ingest_ledger WHERE user_id = ${q(user)} GROUP BY sequence HAVING count(*) > 1) d`), 0);
  assert.equal(server.count(`SELECT count(*) FROM (SELECT kind, key, locator FROM ferry_quarantine WHERE user_id = ${q(user)} GROUP BY 1, 2, 3 HAVING count(*) > 1) d`), 0, 'no record quarantined twice');
  assert.ok(parseSummary(message).tasks <= stored);
  await context.close();
});

test('two tabs opened at once run one migration', async () => {
  const name = userName('tabs');
  const context = await newDevice(browser);
  const first = await openPage(context, url('#data'));
  await loadSampleData(first, '1048576'); // signed out: nothing runs yet
  await first.close();
  const session = await server.token(name);
  await context.addInitScript((s) => { if (!sessionStorage.getItem('taskboard-session')) sessionStorage.setItem('taskboard-session', s); },
    JSON.stringify({ user: session.user, token: session.token, expiresAt: session.expires_at }));
  const [a, b] = await Promise.all([openPage(context), openPage(context)]);
  await Promise.all([a.goto(url('#tasks')), b.goto(url('#tasks'))]);
  const [ma, mb] = await Promise.all([notice(a, /now saved to your account/), notice(b, /now saved to your account/)]);
  await shot(a, 'two-tabs-a');
  await shot(b, 'two-tabs-b');
  assert.equal(ma, mb, 'both tabs tell the same outcome');
  const batchesA = a.requests.filter((r) => r === 'POST /v1/batches').length;
  const batchesB = b.requests.filter((r) => r === 'POST /v1/batches').length;
  assert.ok((batchesA === 0) !== (batchesB === 0), `only one tab uploads (a: ${batchesA}, b: ${batchesB})`);
  assert.equal(runs(session.user_id).length, 1, 'one migration run');
  assertTasksMigratedOnce(session.user_id, await localTasks(a));
  await context.close();
});

test('two devices of one user: each kind follows its conflict policy; a manual conflict is resolved in the UI', async () => {
  const session = await server.token(userName('devices'));
  const user = session.user_id;
  const shared = { t1: crypto.randomUUID(), t2: crypto.randomUUID() };
  const device = (label, v) => ({
    tasks: JSON.stringify([
      { id: shared.t1, title: `T1 from ${label}`, status: 'todo', createdAt: '2025-01-01T00:00:00.000Z', updatedAt: v.t1 },
      { id: shared.t2, title: `T2 from ${label}`, status: 'done', createdAt: '2025-01-01T00:00:00.000Z', updatedAt: v.t2 },
      { id: crypto.randomUUID(), title: `Only on ${label}`, status: 'in-progress', createdAt: '2025-02-01T00:00:00.000Z' },
    ]),
    environments: JSON.stringify([{ id: 'production', name: `Production (${label})`, isActive: true, createdAt: 1735689600000, updatedAt: v.env,
      config: { region: `region-${label}`, [`only${label}`]: true, githubToken: `ghp_${label}000000000000000000000000000000000` } }]),
    userPreferences: JSON.stringify({ theme: v.theme, language: 'en' }),
    'formData:newTask': JSON.stringify({ fields: { title: `Draft on ${label}` }, savedAt: v.draft }),
    'taskboard:boardLayout': JSON.stringify({ zoom: v.zoom }),
  });
  // A is older for T1 and the environment, newer for T2; B migrates second.
  const data = {
    A: device('A', { t1: '2025-03-01T00:00:00.000Z', t2: '2025-06-01T00:00:00.000Z', env: 1740787200000, theme: 'light', draft: 1740787200000, zoom: 1 }),
    B: device('B', { t1: '2025-05-01T00:00:00.000Z', t2: '2025-04-01T00:00:00.000Z', env: 1746057600000, theme: 'dark', draft: 1746057600000, zoom: 2 }),
  };
  const pages = {};
  for (const label of ['A', 'B']) {
    const context = await newDevice(browser, { session });
    await context.addInitScript((pairs) => {
      if (!sessionStorage.getItem('seeded')) { for (const [k, v] of Object.entries(pairs)) localStorage.setItem(k, v); sessionStorage.setItem('seeded', '1'); }
    }, data[label]);
    pages[label] = await openPage(context, url('#tasks'));
    pages[label].text = await notice(pages[label], /now saved to your account/);
  }
  assert.match(pages.B.text, /1 record needs your attention/);
  const one = (sql) => server.sql(sql)[0];
  // tasks: newest wins.
  assert.equal(one(`SELECT title FROM tasks WHERE user_id = ${q(user)} AND legacy_id = ${q(shared.t1)}`).title, 'T1 from B');
  assert.equal(one(`SELECT title FROM tasks WHERE user_id = ${q(user)} AND legacy_id = ${q(shared.t2)}`).title, 'T2 from A');
  assert.equal(rows('tasks', user), 4);
  // environments: merged key by key, the newer device wins shared keys.
  const env = one(`SELECT name, config FROM environments WHERE user_id = ${q(user)}`);
  assert.equal(env.name, 'Production (B)');
  assert.equal(env.config.onlyA, true);
  assert.equal(env.config.onlyB, true);
  assert.equal(env.config.region, 'region-B');
  // preferences: the device that migrates last overwrites.
  assert.equal(one(`SELECT theme FROM user_preferences WHERE user_id = ${q(user)}`).theme, 'dark');
  // custom: a stored row is never replaced.
  assert.equal(one(`SELECT value FROM custom_data WHERE user_id = ${q(user)} AND key = 'taskboard:boardLayout'`).value.zoom, 1);
  // form drafts: manual, so the stored row stays and a conflict waits for the user.
  assert.equal(one(`SELECT data FROM form_drafts WHERE user_id = ${q(user)}`).data.fields.title, 'Draft on A');
  assert.equal(openConflicts(user), 1);

  const page = pages.B;
  await page.click('a[data-view="data"]');
  const conflict = page.locator('#conflicts li').first();
  await conflict.waitFor();
  assert.match(await conflict.textContent(), /Draft on A[\s\S]*Draft on B/);
  await shot(page, 'conflict-desktop');
  await page.setViewportSize({ width: 375, height: 812 });
  await conflict.scrollIntoViewIfNeeded();
  await shot(page, 'conflict-375');
  await conflict.getByRole('button', { name: 'Use this browser’s version' }).click();
  await notice(page, /Your choice is saved/);
  assert.equal(one(`SELECT data FROM form_drafts WHERE user_id = ${q(user)}`).data.fields.title, 'Draft on B');
  assert.equal(one(`SELECT status FROM ferry_conflicts WHERE user_id = ${q(user)}`).status, 'took_incoming');
  assert.equal(await page.locator('#conflicts li').count(), 0);
  await page.context().close();
  await pages.A.context().close();
});

test('server down during the auto-run: the app stays usable and the migration completes by itself', async () => {
  const { context, user } = await signedInDevice('down');
  await context.route('**/v1/batches', async (route) => { await new Promise((r) => setTimeout(r, 500)); await route.continue().catch(() => {}); });
  const page = await openPage(context, url('#data'));
  await context.setOffline(true);
  const generated = await fillTasks(page, 5_000_000);
  await context.setOffline(false);
  await page.reload();
  await page.waitForFunction(() => /Uploading/.test(document.getElementById('auto-bar').getAttribute('aria-valuetext') ?? ''), null, { timeout: 120_000, polling: 50 });
  await server.stop();
  try {
    // Usable while the server is gone: add a task, switch screens.
    await page.click('a[data-view="tasks"]');
    await page.fill('#new-task [name=title]', 'Added while offline');
    await page.click('#new-task button');
    await page.locator('#task-list li', { hasText: 'Added while offline' }).waitFor();
    await page.waitForTimeout(3000);
    await shot(page, 'server-down');
  } finally {
    await server.start();
  }
  const message = await notice(page, /now saved to your account/, 240_000);
  await shot(page, 'server-back');
  assert.ok(!/could not be saved/.test(message));
  assert.equal(runs(user).length, 1);
  assert.equal(rows('tasks', user), generated, 'every task stored once');
  assert.deepEqual(page.errors, []);
  await context.close();
});

test('restoring a backup brings localStorage back exactly, and a backup downloads protected', async () => {
  const { context, user } = await signedInDevice('restore');
  const page = await openPage(context, url('#data'));
  // A key no kind of the spec reads (another part of the app): the backup holds it too.
  await page.evaluate(() => localStorage.setItem('onboarding', '{"step":3,"done":true}'));
  await loadSampleData(page, '1048576');
  await notice(page, /now saved to your account/);
  // The page's run is over (its stamp written, its report drawn) before the data goes.
  await page.waitForFunction(() => document.documentElement.dataset.autoRun === 'idle', null, { timeout: 60_000 });
  assert.equal(runs(user).length, 1, `one migration for the sample data: ${JSON.stringify(runs(user))}`);
  const before = await appStorage(page);
  const storedBefore = rows('tasks', user);
  // The browser loses the site's data (the user cleared it, a cleaner tool ran).
  await page.evaluate(() => localStorage.clear());
  assert.notDeepEqual(await appStorage(page), before);
  await page.click('a[data-view="tasks"]');
  await page.click('a[data-view="data"]');
  const row = page.locator('#backups tr[data-backup]').first();
  await row.waitFor();
  const cells = await row.locator('td').allTextContents();
  assert.match(cells[0], /\d{4}/, 'a date');
  assert.match(cells[1], /(KB|MB)$/, 'a size');
  assert.ok(Number(cells[2].replaceAll(',', '')) >= 5, 'a key count');
  await shot(page, 'backups-desktop');

  await row.getByRole('button', { name: 'Download…' }).click();
  await row.locator('input[type=password]').fill('correct horse battery');
  const [download] = await Promise.all([page.waitForEvent('download'), row.getByRole('button', { name: 'Download', exact: true }).click()]);
  const file = readFileSync(await download.path());
  assert.ok(file.length > 100, 'the exported backup has content');
  const title = JSON.parse(before.tasks).find((t) => typeof t?.title === 'string' && t.title.length > 12)?.title;
  assert.ok(title && !file.toString('latin1').includes(title), 'the exported backup is not plain text');

  await row.getByRole('button', { name: 'Restore' }).click();
  await row.getByRole('button', { name: 'Confirm restore' }).click();
  await notice(page, /^Restored /);
  // Ferry's own keys (the light loader's stamp, leases) are not the app's: never backed up.
  const expected = before;
  const actual = await appStorage(page);
  assert.deepEqual(Object.keys(actual).sort(), Object.keys(expected).sort(), 'the same keys');
  for (const [k, v] of Object.entries(expected)) assert.equal(actual[k], v, `value of ${k}`);
  assert.equal(actual.onboarding, '{"step":3,"done":true}');
  await page.setViewportSize({ width: 375, height: 812 });
  await shot(page, 'backups-375', { fullPage: true });
  // The app works after the restore and a reload: its tasks are back, nothing is sent again.
  // (The load-time run is awaited before the user moves, so that what it sees is settled.)
  await page.reload();
  await page.waitForFunction(() => document.documentElement.dataset.autoRun === 'idle', null, { timeout: 60_000 });
  assert.equal(runs(user).length, 1, `no second migration after the restore: ${JSON.stringify(runs(user))}`);
  await page.click('a[data-view="tasks"]');
  await page.locator('#task-list li').first().waitFor();
  assert.ok(await page.locator('#task-list li').count() > 10);
  // Regression: concurrent first calls made two migrators and freed one in use ("null pointer passed to rust").
  await page.click('a[data-view="data"]');
  await page.locator('#backups tr[data-backup]').first().waitFor();
  assert.doesNotMatch(await page.locator('ferry-migrate [role=status]').textContent(), /could not|null pointer/);
  assert.equal(rows('tasks', user), storedBefore, 'a local restore does not touch the server');
  await context.close();
});

test('an already-migrated user\'s page load sends no request to the ingest server', async () => {
  const { context, user } = await signedInDevice('quiet');
  const page = await openPage(context, url('#tasks'));
  await page.evaluate(() => localStorage.setItem('tasks', JSON.stringify([{ id: crypto.randomUUID(), title: 'Only one', status: 'todo', createdAt: new Date().toISOString() }])));
  await page.reload();
  await notice(page, /Your 1 task is now saved/);
  assert.equal(rows('tasks', user), 1);
  page.requests.length = 0;
  await page.reload();
  await page.waitForSelector('#task-list li');
  await page.waitForTimeout(2500);
  const api = page.requests.filter((r) => /\/v1\/|\/dev\//.test(r));
  assert.deepEqual(api, [], 'no request to /v1 on load');
  const wasm = () => page.requests.filter((r) => /\.wasm$/.test(r));
  assert.deepEqual(wasm(), [], 'the light first step answered: the migrator (wasm) is not even downloaded');
  assert.ok(await page.locator('#auto-sync').isHidden(), 'no progress bar');
  assert.ok(await page.locator('#notice').isHidden(), 'no message');
  await shot(page, 'already-migrated');
  assert.equal(runs(user).length, 1, 'still one migration');

  // Moving between views rewrites the app's last screen (`taskboard:lastRoute`), UI state the
  // spec's `ignore` names: the next load starts no run, downloads no wasm and sends nothing.
  const lastRoute = () => page.evaluate(() => localStorage.getItem('taskboard:lastRoute'));
  const before = await lastRoute();
  await page.click('a[data-view="preferences"]');
  await page.waitForFunction(() => localStorage.getItem('taskboard:lastRoute') === '/preferences');
  await page.click('a[data-view="tasks"]');
  await page.waitForFunction(() => localStorage.getItem('taskboard:lastRoute') === '/tasks');
  assert.notEqual(before, '/tasks', 'the key changed since the migration');
  page.requests.length = 0;
  await page.reload();
  await page.waitForFunction(() => document.documentElement.dataset.autoRun === 'idle', null, { timeout: 60_000 });
  await page.waitForTimeout(2500);
  assert.deepEqual(page.requests.filter((r) => /\/v1\/|\/dev\//.test(r)), [], 'no request after moving between views');
  assert.deepEqual(wasm(), [], 'no wasm after moving between views');
  assert.equal(runs(user).length, 1, 'still one migration');
  await context.close();
});

test('a lone surrogate and a <script> title are stored exactly and rendered as text', async () => {
  const { context, user } = await signedInDevice('hostile');
  const page = await openPage(context, url('#tasks'));
  const ids = await page.evaluate(() => {
    const xss = crypto.randomUUID();
    const lone = crypto.randomUUID();
    localStorage.setItem('tasks', JSON.stringify([
      { id: xss, title: '<script>alert(1)</script>', status: 'todo', createdAt: '2025-01-01T00:00:00.000Z' },
      { id: lone, title: `Fix ${String.fromCharCode(0xd800)} now`, status: 'in-progress', createdAt: '2025-01-02T00:00:00.000Z' },
    ]));
    localStorage.setItem('taskboard:scratch', `raw ${String.fromCharCode(0xdc00)} text`);
    return { xss, lone };
  });
  await page.reload();
  await notice(page, /now saved to your account/);
  const rendered = await page.evaluate(() => [...document.querySelectorAll('#task-list .title')].map((e) => JSON.stringify(e.textContent)));
  assert.ok(rendered.includes(JSON.stringify('<script>alert(1)</script>')), rendered.join());
  assert.ok(rendered.includes(JSON.stringify(`Fix ${String.fromCharCode(0xd800)} now`)), 'the lone surrogate is rendered as is');
  assert.equal(await page.locator('#task-list script').count(), 0, 'no element was made from data');
  assert.deepEqual(page.dialogs, [], 'no script ran');
  await shot(page, 'hostile-text');
  const title = (id) => server.sql(`SELECT title FROM tasks WHERE user_id = ${q(user)} AND legacy_id = ${q(id)}`)[0]?.title;
  assert.equal(title(ids.xss), '<script>alert(1)</script>');
  assert.equal(title(ids.lone), escaped(`Fix ${String.fromCharCode(0xd800)} now`), 'stored in the lossless escaped form');
  const scratch = server.sql(`SELECT value #>> '{}' AS v FROM custom_data WHERE user_id = ${q(user)} AND key = 'taskboard:scratch'`)[0];
  assert.equal(scratch?.v, escaped(`raw ${String.fromCharCode(0xdc00)} text`));
  await context.close();
});

test('every SQL and HTML string of the hostile corpus is stored exactly and stays text on every view', async () => {
  // The corpus's `sql_html` cases (tests/corpus/hostile.json): tasks and environments whose every
  // text field is an injection attempt. Their arrays are joined into one localStorage per key.
  const corpus = JSON.parse(readFileSync(new URL('../corpus/hostile.json', import.meta.url), 'utf8'));
  const joined = new Map();
  for (const c of corpus.cases.filter((c) => c.category === 'sql_html')) {
    for (const [key, value] of c.storage) {
      let parsed;
      try { parsed = JSON.parse(value); } catch { continue; }
      if (Array.isArray(parsed) && (key === 'tasks' || key === 'environments')) joined.set(key, [...(joined.get(key) ?? []), ...parsed]);
    }
  }
  const tasks = joined.get('tasks') ?? [];
  assert.ok(tasks.length >= 25 && (joined.get('environments') ?? []).length >= 10, 'the corpus has hostile tasks and environments');
  const { context, user } = await signedInDevice('corpus-html');
  const page = await openPage(context, url('#tasks'));
  const elements = () => page.evaluate(() => document.querySelectorAll('script, img, svg, style, iframe, b, textarea').length);
  const before = await elements();
  await page.evaluate((pairs) => { for (const [k, v] of pairs) localStorage.setItem(k, JSON.stringify(v)); }, [...joined]);
  await page.reload();
  await notice(page, /now saved to your account/);

  for (const view of ['#tasks', '#environments', '#preferences', '#data']) {
    await page.goto(url(view));
    await page.waitForTimeout(300);
    assert.equal(await elements(), before, `no element was made from data on ${view}`);
  }
  await page.goto(url('#tasks'));
  const text = await page.evaluate(() => document.querySelector('#task-list')?.textContent ?? '');
  for (const t of tasks) assert.ok(text.includes(t.title), `title ${JSON.stringify(t.title)} is shown as text`);
  assert.deepEqual(page.dialogs, [], 'no script ran');
  await shot(page, 'hostile-corpus-text', { fullPage: true });

  // PostgreSQL holds each title exactly (one row per distinct id), and the tables are all there.
  const stored = new Map(server.sql(`SELECT legacy_id, title FROM tasks WHERE user_id = ${q(user)}`).map((r) => [r.legacy_id, r.title]));
  for (const t of tasks) assert.equal(stored.get(String(t.id)), escaped(t.title), `title of ${JSON.stringify(t.id)}`);
  assert.equal(server.count(`SELECT count(*) FROM pg_tables WHERE tablename IN ('tasks', 'environments', 'user_preferences')`), 3);
  await context.close();
});
