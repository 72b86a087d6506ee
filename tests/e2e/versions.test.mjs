// Spec versions end to end (issue 11 §4, issue 14 §5): the Taskboard demo in headless Chromium,
// the wasm migrator, the real ingest server and its PostgreSQL, with the fault proxy between
// them. A user starts migrating under version N; the upload is cut off; the server is restarted
// serving N and N+1 (or only N+1) and the page reloads with the app now on N+1. The run must
// complete with every record exactly once in PostgreSQL (checked by SQL), never looping on
// `spec_mismatch`.
//
//   cd tests/e2e && node --test versions.test.mjs

import { test, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Server, launchBrowser, newDevice, openPage, storageText, userName, clearlyValidTask } from './harness.mjs';
import { FaultProxy } from './proxy.mjs';

const ROOT = path.resolve(import.meta.dirname, '../..');
const V1_PATH = path.join(ROOT, 'specs/taskboard.json');
const V1 = readFileSync(V1_PATH, 'utf8');
const V2 = V1.replace('"version": "2026.11"', '"version": "2026.12"');
const specDir = mkdtempSync('/tmp/fe2e-specs-');
writeFileSync(path.join(specDir, 'taskboard-2026.11.json'), V1);
writeFileSync(path.join(specDir, 'taskboard-2026.12.json'), V2);
const V2_PATH = path.join(specDir, 'taskboard-2026.12.json');

const server = new Server();
server.env.FERRY_SPEC = V1_PATH;
let proxy;
let browser;
const contexts = [];

before(async () => {
  await server.start();
  proxy = await new FaultProxy(server.url).start();
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await proxy?.close();
  await server.dispose();
  rmSync(specDir, { recursive: true, force: true });
});

afterEach(async () => {
  proxy.reset();
  for (const c of contexts.splice(0)) await c.close().catch(() => {});
});

const url = (hash = '') => `${proxy.url}/${hash}`;
const q = (s) => `'${String(s).replaceAll("'", "''")}'`;

/** A signed-in device whose localStorage holds about `bytes` of the seeded sample. */
async function seededDevice(label, bytes) {
  const session = await server.token(userName(label));
  const context = await newDevice(browser);
  contexts.push(context);
  const seeder = await openPage(context, url('#tasks'));
  await seeder.evaluate(async ({ bytes }) => {
    const { fetchSample } = await import('/js/sample.js');
    const pairs = await fetchSample({ seed: 7101, targetBytes: bytes, invalidFraction: 0.02 });
    for (const [k, v] of pairs) localStorage.setItem(k, v);
  }, { bytes });
  const checker = await openPage(context, url('#tasks'));
  const want = await seeder.evaluate(() => localStorage.length);
  for (let i = 0; i < 100 && await checker.evaluate(() => localStorage.length) !== want; i++) { await sleep(100); await checker.reload(); }
  await checker.close();
  await seeder.close();
  await context.addInitScript((s) => {
    if (!sessionStorage.getItem('taskboard-session')) sessionStorage.setItem('taskboard-session', s);
    window.__outcomes = [];
    const channel = new BroadcastChannel('ferry:ferry');
    channel.onmessage = (e) => { try { window.__outcomes.push(JSON.parse(e.data)); } catch { /* not a report */ } };
  }, JSON.stringify({ user: session.user, token: session.token, expiresAt: session.expires_at }));
  return { context, session, user: session.user_id };
}

async function completedReport(page, timeout = 120_000) {
  const handle = await page.waitForFunction(() => (window.__outcomes ?? []).find((o) => o.status === 'completed' || o.status === 'failed'), null, { timeout, polling: 100 });
  const report = await handle.jsonValue();
  assert.equal(report.status, 'completed', `the run failed: ${report.error}`);
  return report;
}

/** Every clearly valid local task is in PostgreSQL exactly once; nothing applied twice. */
async function assertExactlyOnce(page, user) {
  const all = JSON.parse(await storageText(page));
  const local = JSON.parse(all.tasks ?? '[]');
  const stored = server.sql(`SELECT legacy_id FROM tasks WHERE user_id = ${q(user)}`).map((r) => r.legacy_id);
  const counts = new Map();
  for (const id of stored) counts.set(id, (counts.get(id) ?? 0) + 1);
  assert.deepEqual([...counts].filter(([, n]) => n > 1), [], 'no task is stored twice');
  const ids = local.map((t) => t?.id);
  const valid = local.filter((t) => clearlyValidTask(t) && ids.indexOf(t.id) === ids.lastIndexOf(t.id));
  assert.ok(valid.length > 50, `the sample has valid tasks (${valid.length})`);
  const missing = valid.filter((t) => counts.get(t.id) !== 1).map((t) => t.id);
  assert.deepEqual(missing.slice(0, 5), [], `${missing.length} valid tasks are not stored exactly once`);
  assert.equal(server.count(`SELECT count(*) FROM (SELECT migration_id, sequence FROM ferry_ingest_ledger WHERE user_id = ${q(user)} GROUP BY 1, 2 HAVING count(*) > 1) d`), 0,
    'no batch applied twice');
  return stored.length;
}

/**
 * Starts the user's migration under the server's only version (N), lets some batches through,
 * then cuts the server off; returns the migration id in flight and the closed page's device.
 */
async function interruptedUnderOldVersion(label) {
  const device = await seededDevice(label, 2_500_000);
  const first = proxy.batchPosts + 1;
  proxy.set({ delayMs: 400, delayPaths: /^\/v1\/batches$/ });
  const page = await openPage(device.context, url('#data'));
  const applied = () => proxy.batches().filter((e) => e.nth >= first && e.status === 200).length;
  for (let i = 0; i < 600 && applied() < 1; i++) await sleep(50);
  assert.ok(applied() >= 1, 'the upload started: a batch was applied under N');
  proxy.set({ refuse: true });
  await sleep(500);
  const inFlight = server.sql(`SELECT migration_id FROM ferry_migration_runs WHERE user_id = ${q(device.user)}`);
  assert.equal(inFlight.length, 1, 'one migration started');
  const cached = await page.evaluate(async () => (await (await caches.open('ferry-spec')).keys()).length);
  assert.equal(cached, 1, 'the page keeps the spec it fetched');
  await page.close();
  return { device, migrationId: inFlight[0].migration_id };
}

/** The app now ships N+1: the page's cached spec is dropped and the page loaded again. */
async function reloadOnNewVersion(device) {
  proxy.reset();
  // From a page of the same origin that is not the app, so that no run starts on the old spec.
  const other = await device.context.newPage();
  await other.goto(`${proxy.url}/readyz`);
  assert.equal(await other.evaluate(() => caches.delete('ferry-spec')), true, 'the cached spec is dropped');
  await other.close();
  return openPage(device.context, url('#data'));
}

async function restartServing(spec) {
  await server.stop();
  server.env.FERRY_SPEC = spec;
  await server.start();
}

test('1. the app ships N+1 while a migration under N is in flight and the server serves both: it finishes under N, each record once', async () => {
  await restartServing(V1_PATH);
  const { device, migrationId } = await interruptedUnderOldVersion('versions-both');
  await restartServing(specDir);
  const page = await reloadOnNewVersion(device);
  const report = await completedReport(page);
  assert.equal(report.resumed, true, 'the migration in flight was resumed');
  assert.equal(report.migrationId, migrationId, 'under its own id (and version)');
  const spec = await page.evaluate(async () => (await (await caches.open('ferry-spec')).match(`${location.origin}/v1/spec`))?.text());
  assert.match(spec ?? '', /"version": "2026.12"/, 'the page now runs the new version');
  assert.deepEqual(server.sql(`SELECT migration_id FROM ferry_migration_runs WHERE user_id = ${q(device.user)}`).map((r) => r.migration_id), [migrationId]);
  const stored = await assertExactlyOnce(page, device.user);
  const refused = proxy.batches().filter((e) => e.status === 400).length;
  assert.equal(refused, 0, 'no spec_mismatch');
  console.log(`# versions, both served: ${stored} tasks stored once, ${report.batchesSent} batches after the reload`);
});

test('2. the server no longer serves N: the page plans again under N+1 and completes, each record once', async () => {
  await restartServing(V1_PATH);
  const { device, migrationId } = await interruptedUnderOldVersion('versions-dropped');
  await restartServing(V2_PATH);
  const page = await reloadOnNewVersion(device);
  const report = await completedReport(page);
  assert.notEqual(report.migrationId, migrationId, 'a new migration');
  assert.ok((report.warnings ?? []).some((w) => w.includes('2026.11') && w.includes('2026.12')), JSON.stringify(report.warnings));
  // One wave of parallel uploads (3) of the old migration is refused, then the page re-plans.
  const mismatches = proxy.batches().filter((e) => e.status === 400).length;
  assert.ok(mismatches >= 1 && mismatches <= 3, `one wave of spec_mismatch, no loop (${mismatches})`);
  await assertExactlyOnce(page, device.user);
  await restartServing(V1_PATH);
});
