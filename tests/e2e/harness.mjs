// The end-to-end harness: the real ingest server (its own embedded PostgreSQL in a temporary
// folder, on a free port), headless Chromium through playwright-core (the system browser, no
// download), SQL through psql over the cluster's Unix socket, and page helpers.
//
// It builds nothing but the server binary when none is given: the wasm bundle must already be
// in pkg/ (scripts/build-wasm.sh). Environment:
//   FERRY_SERVER_BIN  the ferry-server binary (default: target/release/ferry-server, built
//                     with `cargo build --release -p ferry-server` when missing)
//   CHROMIUM          the browser (default /usr/bin/chromium)
//   E2E_LOG=1         echo the server's log

import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, mkdirSync, rmSync, existsSync, chmodSync, readdirSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import assert from 'node:assert/strict';
import { chromium } from 'playwright-core';

export const ROOT = path.resolve(fileURLToPath(new URL('../..', import.meta.url)));
export const ARTIFACTS = path.join(ROOT, 'tests/e2e/artifacts');
const CHROMIUM_ARGS = ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--disable-background-networking',
  '--disable-component-update', '--disable-sync', '--no-first-run'];

function pgBinDir() {
  try { return execFileSync('pg_config', ['--bindir'], { encoding: 'utf8' }).trim(); } catch { /* not on PATH */ }
  const base = '/usr/lib/postgresql';
  const versions = existsSync(base) ? readdirSync(base).filter((v) => /^\d+$/.test(v)).sort((a, b) => b - a) : [];
  return versions.length ? path.join(base, versions[0], 'bin') : null;
}

export function serverBinary() {
  if (process.env.FERRY_SERVER_BIN) return process.env.FERRY_SERVER_BIN;
  const bin = path.join(ROOT, 'target/release/ferry-server');
  if (!existsSync(bin)) {
    console.error('e2e: building the server: cargo build --release --locked -p ferry-server');
    execFileSync('cargo', ['build', '--release', '--locked', '-p', 'ferry-server'], { cwd: ROOT, stdio: ['ignore', 2, 2] });
  }
  return bin;
}

/**
 * The ingest server on its embedded PostgreSQL. `start()` waits for `/readyz`; `stop()` shuts it
 * down gracefully (which stops the cluster); `start()` again reuses the data and the port, and
 * the JWT secret is fixed for the run, so tokens survive a restart.
 */
export class Server {
  constructor() {
    this.dir = mkdtempSync('/tmp/fe2e-'); // short: a Unix socket path may not exceed 107 bytes
    chmodSync(this.dir, 0o755); // PostgreSQL runs as `postgres` when we are root
    this.env = {
      ...process.env,
      FERRY_PROJECT_DIR: ROOT,
      FERRY_APP_MIGRATIONS: path.join(ROOT, 'examples/taskboard/migrations'),
      FERRY_HOST: '127.0.0.1',
      FERRY_PORT: '0',
      FERRY_PG_DATA: path.join(this.dir, 'pgdata'),
      FERRY_PG_SOCKET_DIR: path.join(this.dir, 'run'),
      FERRY_PG_PORT: '5432',
      FERRY_DEV: 'true',
      FERRY_JWT_SECRET: randomBytes(32).toString('hex'),
      FERRY_FIELD_KEY: randomBytes(32).toString('hex'),
      FERRY_RATE_LIMIT_PER_SECOND: '0',
      // Opens the operator dashboard at /admin (tests/e2e/admin.test.mjs).
      FERRY_OPERATOR_TOKEN: randomBytes(32).toString('hex'),
      RUST_LOG: process.env.RUST_LOG ?? 'info',
      NO_COLOR: '1',
    };
    delete this.env.DATABASE_URL;
    const bin = pgBinDir();
    if (bin) this.env.PATH = `${process.env.PATH}:${bin}`;
    this.log = [];
    this.url = null;
    this.child = null;
  }

  async start() {
    const child = spawn(serverBinary(), ['serve'], { env: this.env, stdio: ['ignore', 'pipe', 'pipe'] });
    this.child = child;
    const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
    this.exited = exited;
    const url = new Promise((resolve) => {
      const onData = (chunk) => {
        const text = chunk.toString();
        this.log.push(text);
        if (process.env.E2E_LOG) process.stderr.write(text);
        const m = text.match(/listening on (http:\/\/[\d.:]+)/);
        if (m) resolve(m[1]);
      };
      child.stdout.on('data', onData);
      child.stderr.on('data', onData);
    });
    const first = await Promise.race([url, exited, sleep(120_000, 'timeout', { ref: false })]);
    if (typeof first !== 'string' || !first.startsWith('http')) {
      throw new Error(`ferry-server did not start (${JSON.stringify(first)}); its log:\n${this.log.join('').slice(-4000)}`);
    }
    this.url = first;
    this.env.FERRY_PORT = new URL(first).port; // a restart keeps the address the pages use
    for (let i = 0; i < 100; i++) {
      try { if ((await fetch(`${first}/readyz`)).ok) return this; } catch { /* not yet */ }
      await sleep(100);
    }
    throw new Error(`${first}/readyz never answered 200`);
  }

  async stop() {
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    child.kill('SIGTERM');
    const done = await Promise.race([this.exited, sleep(30_000, 'timeout', { ref: false })]);
    if (done === 'timeout') {
      child.kill('SIGKILL');
      await this.exited;
      try { execFileSync('pg_ctl', ['-D', this.env.FERRY_PG_DATA, 'stop', '-m', 'immediate'], { env: this.env, stdio: 'ignore' }); } catch { /* best effort */ }
    }
    this.child = null;
  }

  async dispose() {
    await this.stop();
    rmSync(this.dir, { recursive: true, force: true });
  }

  /** Rows of `query` as plain objects (psql over the Unix socket; json_agg keeps types). */
  sql(query) {
    const wrapped = `SELECT coalesce(json_agg(t), '[]'::json) FROM (${query}) t`;
    const out = execFileSync('psql', ['-X', '-q', '-At', '-v', 'ON_ERROR_STOP=1', '-h', this.env.FERRY_PG_SOCKET_DIR,
      '-p', '5432', '-U', 'postgres', '-d', 'ferry', '-c', wrapped], { encoding: 'utf8', env: this.env });
    return JSON.parse(out);
  }

  /** One number: `SELECT count(*) …`. */
  count(query) { return Number(Object.values(this.sql(query)[0] ?? { n: 0 })[0]); }

  /** A demo token and user id for `user`. */
  async token(user) {
    const response = await fetch(`${this.url}/dev/token`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ user }) });
    if (!response.ok) throw new Error(`POST /dev/token: ${response.status} ${await response.text()}`);
    return response.json();
  }
}

export async function launchBrowser() {
  return chromium.launch({ executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium', headless: true, args: CHROMIUM_ARGS });
}

/** A unique demo user name for one test. */
export const userName = (label) => `e2e-${label}-${randomBytes(3).toString('hex')}`;

/**
 * A browser profile (a "device"). With `session`, every page opened in it starts signed in as
 * that user (the demo keeps the token in sessionStorage, per tab).
 */
export async function newDevice(browser, { session, width = 1280 } = {}) {
  const context = await browser.newContext({ viewport: { width, height: 860 }, acceptDownloads: true });
  if (session) {
    await context.addInitScript((s) => {
      if (!sessionStorage.getItem('taskboard-session')) sessionStorage.setItem('taskboard-session', s);
    }, JSON.stringify({ user: session.user, token: session.token, expiresAt: session.expires_at }));
  }
  return context;
}

/** A page that records its errors, dialogs and requests. */
export async function openPage(context, url) {
  const page = await context.newPage();
  page.errors = [];
  page.dialogs = [];
  page.requests = [];
  page.on('pageerror', (e) => page.errors.push(String(e)));
  page.on('dialog', (d) => { page.dialogs.push(d.message()); d.dismiss().catch(() => {}); });
  page.on('request', (r) => page.requests.push(`${r.method()} ${new URL(r.url()).pathname}`));
  if (url) await page.goto(url);
  return page;
}

let shots = 0;
/** Saves a screenshot under tests/e2e/artifacts/ (the viewport, or the full page). */
export async function shot(page, name, { fullPage = false } = {}) {
  mkdirSync(ARTIFACTS, { recursive: true });
  const file = path.join(ARTIFACTS, `${String(++shots).padStart(2, '0')}-${name}.png`);
  await page.screenshot({ path: file, fullPage });
  return file;
}

/** localStorage as JSON text (well-formed JSON.stringify escapes lone surrogates, so it survives CDP). */
export const storageText = (page) => page.evaluate(() => {
  const all = {};
  for (let i = 0; i < localStorage.length; i++) { const k = localStorage.key(i); all[k] = localStorage.getItem(k); }
  return JSON.stringify(Object.fromEntries(Object.entries(all).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))));
});

/** localStorage as the app sees its own data: Ferry's own keys (the light loader's stamp, leases) left out. */
export const appStorage = async (page) =>
  Object.fromEntries(Object.entries(JSON.parse(await storageText(page))).filter(([k]) => !/^ferry-(stamp|lease):/.test(k)));

/** Waits until the status message matches `re`; returns its text. */
export async function notice(page, re, timeout = 120_000) {
  await page.waitForFunction((src) => {
    const box = document.getElementById('notice');
    return box && !box.hidden && new RegExp(src).test(document.getElementById('notice-text').textContent);
  }, re.source, { timeout, polling: 200 });
  return page.locator('#notice-text').textContent();
}

/**
 * Writes about `targetBytes` (UTF-16) of valid legacy tasks straight into localStorage, for the
 * tests about resuming that must not depend on the sample generator.
 */
export const fillTasks = (page, targetBytes) => page.evaluate((target) => {
  const tasks = [];
  let bytes = 0;
  for (let i = 0; bytes < target; i++) {
    const t = { id: crypto.randomUUID(), title: `Task ${i}: review the ${['billing', 'search', 'export'][i % 3]} flow`, status: ['todo', 'in-progress', 'done'][i % 3],
      description: 'Steps to reproduce, notes from the call, links. '.repeat(1 + (i % 6)), createdAt: new Date(Date.UTC(2024, 0, 1) + i * 60000).toISOString() };
    bytes += 2 * JSON.stringify(t).length;
    tasks.push(t);
  }
  localStorage.setItem('tasks', JSON.stringify(tasks));
  return tasks.length;
}, targetBytes);

/** Loads sample data through the UI ("Data & sync" → size → "Load sample data"). */
export async function loadSampleData(page, size = '1048576') {
  // After the load-time auto-run: sample data written while it runs gets a second run of its own.
  await page.waitForFunction(() => !['pending', 'busy'].includes(document.documentElement.dataset.autoRun), null, { timeout: 60_000 });
  await page.click('a[data-view="data"]');
  await page.selectOption('#sample-size', size);
  await page.click('#sample');
  return notice(page, /^Loaded /, 60_000);
}

/**
 * The lossless string rule of ferry-core: NUL, lone surrogates and U+FFFF become U+FFFF and
 * four uppercase hex digits of the code unit. PostgreSQL holds strings in this form.
 */
export function escaped(s) {
  let out = '';
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    const high = c >= 0xd800 && c <= 0xdbff;
    const low = c >= 0xdc00 && c <= 0xdfff;
    if (high && i + 1 < s.length && s.charCodeAt(i + 1) >= 0xdc00 && s.charCodeAt(i + 1) <= 0xdfff) { out += s[i] + s[i + 1]; i++; continue; }
    if (c === 0 || c === 0xffff || high || low) out += `\uffff${c.toString(16).toUpperCase().padStart(4, '0')}`;
    else out += s[i];
  }
  return out;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const ISO = /^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?)?$/;
// Date.parse is lenient (it takes 2024-02-30 and year 0000, which the spec refuses): check the
// calendar date itself too.
const isTime = (v) => {
  if (typeof v !== 'string' || !ISO.test(v) || Number.isNaN(Date.parse(v))) return false;
  const [y, m, d] = v.slice(0, 10).split('-').map(Number);
  return y >= 1 && new Date(Date.UTC(y, m - 1, d)).getUTCDate() === d;
};
const STATUSES = ['todo', 'in-progress', 'done', 'pending', 'in_progress', 'completed'];

/**
 * A deliberately strict reading of specs/taskboard.json for tasks: a record this accepts must be
 * migrated (a record it refuses may still be valid or repairable, so it is not used the other way).
 */
export function clearlyValidTask(t) {
  if (!t || typeof t !== 'object' || Array.isArray(t)) return false;
  const str = (v, min, max) => typeof v === 'string' && v.length >= min && v.length <= max;
  return typeof t.id === 'string' && UUID.test(t.id)
    && str(t.title, 1, 500) && t.title.trim() === t.title && !/[\ud800-\udfff\u0000\uffff]/.test(t.title)
    && STATUSES.includes(t.status)
    && (t.description === undefined || str(t.description, 0, 20000))
    && (t.priority === undefined || ['low', 'medium', 'high', 'urgent'].includes(t.priority))
    && (t.tags === undefined || (Array.isArray(t.tags) && t.tags.length <= 50 && t.tags.every((x) => str(x, 1, 64) && !/[\ud800-\udfff\u0000\uffff]/.test(x))))
    && (t.dueDate === undefined || isTime(t.dueDate))
    && isTime(t.createdAt)
    && (t.updatedAt === undefined || t.updatedAt === null || isTime(t.updatedAt));
}

/** A SQL string literal. */
export const sqlText = (s) => `'${String(s).replaceAll("'", "''")}'`;

/**
 * Every clearly valid local task is in PostgreSQL exactly once with its title; nothing else is;
 * every local record is stored, quarantined or a repeat of an id.
 */
export function tasksMigratedOnce(server, user, local) {
  const stored = server.sql(`SELECT legacy_id, title FROM tasks WHERE user_id = ${sqlText(user)}`);
  const byLegacy = new Map();
  for (const r of stored) byLegacy.set(r.legacy_id, (byLegacy.get(r.legacy_id) ?? 0) + 1);
  const ids = local.map((t) => t?.id);
  const unique = local.filter((t) => clearlyValidTask(t) && ids.indexOf(t.id) === ids.lastIndexOf(t.id));
  assert.ok(unique.length > 0, 'the sample has valid tasks');
  for (const t of unique) {
    assert.equal(byLegacy.get(t.id), 1, `task ${t.id} is stored exactly once`);
  }
  const titles = new Map(stored.map((r) => [r.legacy_id, r.title]));
  for (const t of unique.slice(0, 2000)) assert.equal(titles.get(t.id), escaped(t.title), `title of ${t.id}`);
  const localIds = new Set(local.filter((t) => t && typeof t === 'object').map((t) => String(t.id)));
  for (const r of stored) assert.ok(localIds.has(r.legacy_id), `stored task ${r.legacy_id} comes from this browser`);
  // Every local record is accounted for: stored, quarantined, or a repeat of an id.
  const repeats = local.length - new Set(local.map((t) => (t && typeof t === 'object' ? JSON.stringify(t.id) : Math.random()))).size;
  const accounted = stored.length + server.count(`SELECT count(*) FROM ferry_quarantine WHERE user_id = ${sqlText(user)} AND kind = 'tasks'`);
  assert.ok(accounted <= local.length && accounted >= local.length - repeats,
    `stored ${stored.length} + quarantined ${accounted - stored.length} vs ${local.length} local records (${repeats} repeated ids)`);
  return { stored: stored.length, clearlyValid: unique.length };
}

