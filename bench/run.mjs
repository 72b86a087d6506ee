#!/usr/bin/env node
// Ferry's benchmark command (issue 6). Starts the real ingest server on its own embedded
// PostgreSQL (tests/e2e/harness.mjs), opens headless Chromium, runs each benchmark several times
// on the same seeded data, and writes the figures (median, min, max, and the machine) into
// BENCHMARKS.md, keeping the hand-written analysis between its markers.
//
//   node bench/run.mjs                 all parts, 5 MiB, 7 runs each, writes BENCHMARKS.md
//   node bench/run.mjs --quick         tiny sizes, 2 runs, writes nothing (CI: proves it works)
//   node bench/run.mjs --only pipeline,auto,e2e,size,server   some parts only
//                                      (server: `cargo bench -p ferry-server --bench ingest`,
//                                      the ingest, COPY, naive and load figures; --server-runs N)
//   node bench/run.mjs --runs 9 --out /tmp/b.md
//   node bench/run.mjs --only profile --pkg /tmp/pkg-named
//                                      a CPU profile of the wasm pipeline and of an unchanged
//                                      auto run, top functions by self time; --pkg serves /pkg
//                                      from another folder (a wasm-bindgen output that keeps the
//                                      name section, so the profile names Rust functions)
//
// A benchmark is not a test: no timing fails it. It exits non-zero when something is broken
// (a run that does not complete, a count in PostgreSQL that differs, a page error).
// Needs: pkg/ built (scripts/build-wasm.sh), `npm ci` in tests/e2e/ and in bench/.

import { readFileSync, writeFileSync, existsSync, rmSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { gzipSync, brotliCompressSync } from 'node:zlib';
import os from 'node:os';
import path from 'node:path';
import { Server, launchBrowser, ROOT } from '../tests/e2e/harness.mjs';

const argv = process.argv.slice(2);
const flag = (name) => argv.includes(name);
const option = (name) => { const i = argv.indexOf(name); return i >= 0 ? argv[i + 1] : undefined; };
const QUICK = flag('--quick');
const RUNS = Number(option('--runs') ?? (QUICK ? 2 : 7));
const ONLY = new Set((option('--only') ?? 'pipeline,auto,e2e,size,server').split(','));
const OUT = option('--out') ?? (QUICK ? null : path.join(ROOT, 'BENCHMARKS.md'));
const BYTES = QUICK ? 256 * 1024 : 5 * 1024 * 1024;
// The largest user Chromium allows: its localStorage holds 10 MiB of UTF-16 (5 M code units)
// per origin, keys included; 10,000,000 bytes leaves room for the sample's last record.
const LARGEST_BYTES = QUICK ? 512 * 1024 : 10_000_000;
// A user's uplink as issue 15 sets it: Chromium's network emulation (DevTools protocol).
const SLOW_NETWORK = { offline: false, latency: 40, uploadThroughput: 20e6 / 8, downloadThroughput: 100e6 / 8 };
const SEED = 6; // fixed: the same sample on every run and machine
const INVALID = 0.02;
const BENCH_DIR = path.join(ROOT, 'bench');
const PKG_DIR = option('--pkg') ? path.resolve(option('--pkg')) : null;
const MB = 1e6;

const T0 = performance.now();
const log = (...a) => console.error(`bench: [${((performance.now() - T0) / 1000).toFixed(1)} s]`, ...a);
const stats = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return { median: s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2, min: s[0], max: s[s.length - 1], n: s.length };
};
const fmt = (x, d = 1) => (x === undefined || x === null || Number.isNaN(x) ? '–' : x.toFixed(d));
const check = (ok, what) => { if (!ok) throw new Error(`broken: ${what}`); };
const sh = (cmd, args) => { try { return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim(); } catch { return 'unknown'; } };

function machine() {
  const cpuinfo = existsSync('/proc/cpuinfo') ? readFileSync('/proc/cpuinfo', 'utf8') : '';
  return {
    nproc: os.availableParallelism?.() ?? os.cpus().length,
    model: (cpuinfo.match(/model name\s*:\s*(.+)/) ?? [])[1] ?? os.cpus()[0]?.model ?? 'unknown',
    memGiB: (os.totalmem() / 2 ** 30).toFixed(1),
    kernel: `${os.type()} ${os.release()}`,
    node: process.version,
    rustc: sh('rustc', ['--version']),
    postgres: sh('psql', ['--version']),
    commit: sh('git', ['-C', ROOT, 'rev-parse', '--short', 'HEAD']) + (sh('git', ['-C', ROOT, 'status', '--porcelain', '--untracked-files=no']) ? ' (with uncommitted changes)' : ''),
  };
}

const CONTENT_TYPES = { '.js': 'text/javascript', '.mjs': 'text/javascript', '.html': 'text/html', '.json': 'application/json' };

/** A browser profile whose /bench/* requests are answered from bench/ on disk. */
async function device(browser, server) {
  const context = await browser.newContext();
  await context.route(`${server.url}/bench/**`, async (route) => {
    const rel = decodeURIComponent(new URL(route.request().url()).pathname.slice('/bench/'.length));
    const file = path.resolve(BENCH_DIR, rel);
    if (!file.startsWith(BENCH_DIR + path.sep) || !existsSync(file)) return route.fulfill({ status: 404, body: 'not found' });
    return route.fulfill({ status: 200, contentType: CONTENT_TYPES[path.extname(file)] ?? 'application/octet-stream', body: readFileSync(file) });
  });
  if (PKG_DIR) {
    await context.route(`${server.url}/pkg/**`, (route) => {
      // Paths below /pkg/ (wasm-bindgen's snippets/ folder included), kept inside PKG_DIR.
      const rel = decodeURIComponent(new URL(route.request().url()).pathname.slice('/pkg/'.length));
      const file = path.resolve(PKG_DIR, rel);
      if (!file.startsWith(PKG_DIR + path.sep)) return route.fulfill({ status: 404, body: 'not found' });
      const type = file.endsWith('.wasm') ? 'application/wasm' : CONTENT_TYPES[path.extname(file)] ?? 'application/octet-stream';
      return existsSync(file) ? route.fulfill({ status: 200, contentType: type, body: readFileSync(file) }) : route.fulfill({ status: 404, body: 'not found' });
    });
  }
  return context;
}

/** Opens the bench page signed in with `token`; records requests and errors. */
async function open(context, server, token) {
  const page = await context.newPage();
  page.requests = [];
  page.errors = [];
  page.on('request', (r) => page.requests.push(`${r.method()} ${new URL(r.url()).pathname}`));
  page.on('pageerror', (e) => page.errors.push(String(e)));
  page.on('console', (m) => { if (m.type() === 'error') page.errors.push(m.text()); });
  await page.goto(`${server.url}/bench/pipeline.html#token=${encodeURIComponent(token)}`);
  await page.waitForFunction(() => window.benchReady === true, null, { timeout: 30_000 });
  return page;
}

const results = {};

async function benchPipeline(browser, server, spec, bytes, runs) {
  const { token } = await server.token(`bench-pipeline-${bytes}`);
  const context = await device(browser, server);
  const page = await open(context, server, token);
  const filled = await page.evaluate(([s, b, f]) => window.bench.fill(s, b, f), [SEED, bytes, INVALID]);
  log(`pipeline: ${filled.keys} keys, ${(filled.bytes / MB).toFixed(2)} MB of UTF-16`);
  const initMs = await page.evaluate(() => window.bench.wasmInitMs());
  // One warm-up of each, then interleaved runs: the same page, the same data.
  const first = await page.evaluate((sp) => window.bench.wasmDryRun(sp), spec);
  check(first.status === 'dry_run', `wasm dry run answered ${first.status}`);
  check(first.batches > 0 && first.bodyBytes > 0, 'the wasm dry run encoded no batches');
  const inspected = await page.evaluate((sp) => window.bench.wasmInspect(sp), spec);
  const base = await page.evaluate(() => window.bench.baseline(false));
  await page.evaluate(() => window.bench.baseline(true));
  check(base.records > 0 && base.batches > 0, 'the baseline produced no batches');
  const t = { inspect: [], dryRun: [], baseline: [], baselineHashed: [] };
  for (let i = 0; i < runs; i++) {
    t.inspect.push((await page.evaluate((sp) => window.bench.wasmInspect(sp), spec)).ms);
    t.dryRun.push((await page.evaluate((sp) => window.bench.wasmDryRun(sp), spec)).ms);
    t.baseline.push((await page.evaluate(() => window.bench.baseline(false))).ms);
    t.baselineHashed.push((await page.evaluate(() => window.bench.baseline(true))).ms);
  }
  check(page.errors.length === 0, `page errors: ${page.errors.join('; ')}`);
  const wasmKinds = Object.fromEntries(first.kinds.map((k) => [k.kind, k]));
  const wasmAccepted = first.kinds.reduce((n, k) => n + k.valid + k.repaired, 0);
  const wasmRejected = first.kinds.reduce((n, k) => n + k.rejected, 0);
  await context.close();
  return { filled, initMs, t, base, wasmKinds, wasmAccepted, wasmRejected, toSend: first.recordsToSend, inspected, dryBatches: first.batches, dryBytes: first.bodyBytes };
}

async function benchAuto(browser, server, spec) {
  // Empty localStorage.
  {
    const { token } = await server.token('bench-auto-empty');
    const context = await device(browser, server);
    const page = await open(context, server, token);
    const ms = [];
    let requests = 0;
    await page.evaluate((sp) => window.bench.autoRun(sp), spec); // makes the migrator once
    for (let i = 0; i < Math.max(RUNS, 5); i++) {
      const before = page.requests.length;
      const r = await page.evaluate((sp) => window.bench.autoRun(sp), spec);
      requests += page.requests.length - before;
      check(r.status === 'nothing_to_migrate', `empty auto run answered ${r.status}`);
      ms.push(r.ms);
    }
    results.autoEmpty = { ms, requests };
    await context.close();
  }
  // An already-migrated, unchanged user.
  {
    const { token, user_id: user } = await server.token('bench-auto-migrated');
    const context = await device(browser, server);
    const page = await open(context, server, token);
    const filled = await page.evaluate(([s, b, f]) => window.bench.fill(s, b, f), [SEED, BYTES, INVALID]);
    const first = await page.evaluate((sp) => window.bench.migrate(sp), spec);
    check(first.status === 'completed', `the first migration answered ${first.status}`);
    check(server.count(`SELECT count(*) FROM tasks WHERE user_id = '${user}'`) > 0, 'no tasks in PostgreSQL after the first migration');
    const ms = [];
    let requests = 0;
    for (let i = 0; i < Math.max(RUNS, 5); i++) {
      const before = page.requests.length;
      const r = await page.evaluate((sp) => window.bench.autoRun(sp), spec);
      requests += page.requests.length - before;
      check(r.status === 'up_to_date', `unchanged auto run answered ${r.status}`);
      ms.push(r.ms);
    }
    // Backup (issue item 2) of the same localStorage: device-key mode (snapshot + compress +
    // seal + store in IndexedDB) and passphrase mode (the same under PBKDF2-SHA256 600,000, the
    // bytes a download gets); then the export of a stored backup (open + PBKDF2 + seal again).
    const backup = { device: [], passphrase: [], exportStored: [], deviceBytes: 0, passphraseBytes: 0, exportBytes: 0 };
    const before = page.requests.length;
    for (let i = 0; i < Math.max(RUNS, 5); i++) {
      const d = await page.evaluate(() => window.bench.backupNow());
      backup.device.push(d.ms);
      backup.deviceBytes = d.bytes;
      const p = await page.evaluate(() => window.bench.exportNow('correct horse battery staple'));
      backup.passphrase.push(p.ms);
      backup.passphraseBytes = p.bytes;
      const e = await page.evaluate(() => window.bench.exportBackup('correct horse battery staple'));
      backup.exportStored.push(e.ms);
      backup.exportBytes = e.bytes;
    }
    check(backup.deviceBytes > 0 && backup.passphraseBytes > 0 && backup.exportBytes > 0, 'a backup came back empty');
    check(page.requests.length === before, 'a backup sent a request');
    check(page.errors.length === 0, `page errors: ${page.errors.join('; ')}`);
    results.autoMigrated = { ms, requests, filled, firstMigrationMs: first.ms, batches: first.batchesSent, backup };
  }
}

/** Top functions by self time in a CDP CPU profile. */
function topSelf(profile, n = 15) {
  const self = new Map();
  const dt = profile.timeDeltas;
  const byId = new Map(profile.nodes.map((x) => [x.id, x]));
  profile.samples.forEach((id, i) => {
    const f = byId.get(id).callFrame;
    const name = f.functionName || `(${f.url.split('/').pop() || 'program'})`;
    self.set(name, (self.get(name) ?? 0) + (dt[i] ?? 0) / 1000);
  });
  const total = [...self.values()].reduce((a, b) => a + b, 0);
  return [...self.entries()].sort((a, b) => b[1] - a[1]).slice(0, n).map(([name, ms]) => ({ name, ms, share: ms / total }));
}

async function profileWasm(browser, server, spec) {
  const { token } = await server.token('bench-profile');
  const context = await device(browser, server);
  const page = await open(context, server, token);
  await page.evaluate(([s, b, f]) => window.bench.fill(s, b, f), [SEED, BYTES, INVALID]);
  await page.evaluate((sp) => window.bench.wasmDryRun(sp), spec);
  const cdp = await context.newCDPSession(page);
  await cdp.send('Profiler.enable');
  await cdp.send('Profiler.setSamplingInterval', { interval: 100 });
  const profiles = {};
  for (const [name, fn] of [['dry run ×3', 'wasmDryRun'], ['baseline ×3', 'baseline']]) {
    await cdp.send('Profiler.start');
    for (let i = 0; i < 3; i++) await page.evaluate(([f, sp]) => (f === 'baseline' ? window.bench.baseline(false) : window.bench[f](sp)), [fn, spec]);
    profiles[name] = topSelf((await cdp.send('Profiler.stop')).profile);
  }
  const first = await page.evaluate((sp) => window.bench.migrate(sp), spec);
  check(first.status === 'completed', `the migration answered ${first.status}`);
  await cdp.send('Profiler.start');
  for (let i = 0; i < 5; i++) await page.evaluate((sp) => window.bench.autoRun(sp), spec);
  profiles['unchanged auto run ×5'] = topSelf((await cdp.send('Profiler.stop')).profile);
  for (const [name, top] of Object.entries(profiles)) {
    console.log(`\n#### CPU profile: ${name} (self time, top ${top.length})\n\n| function | ms | share |\n| --- | ---: | ---: |`);
    for (const t of top) console.log(`| \`${t.name.replace(/\|/g, '\\|').slice(0, 110)}\` | ${t.ms.toFixed(1)} | ${(100 * t.share).toFixed(1)}% |`);
  }
  await context.close();
}

/** `runs` end-to-end migrations of a BYTES user; `network`: Chromium's emulated network, if any. */
async function benchEndToEnd(browser, server, runs, network = null) {
  const nav = [], inPage = [], verify = [], stages = {}, memory = [], uploaded = [];
  let last = null;
  for (let i = 0; i < runs; i++) {
    const { token, user_id: user } = await server.token(`bench-e2e-${network ? 'slow-' : ''}${i}`);
    const context = await device(browser, server);
    const page = await open(context, server, token);
    if (network) {
      const cdp = await context.newCDPSession(page);
      await cdp.send('Network.enable');
      await cdp.send('Network.emulateNetworkConditions', network);
    }
    const filled = await page.evaluate(([s, b, f]) => window.bench.fill(s, b, f), [SEED, BYTES, INVALID]);
    // Timed: navigation → wasm init → spec → migrator → auto run (backup, upload, verify). The
    // same page navigates again: a new page (another renderer) may see localStorage before the
    // fill's writes reach the browser process, and then migrate only part of it.
    page.requests.length = 0;
    // Batch bodies as they go on the wire (gzip-compressed by the browser), against the UTF-8
    // size of what localStorage holds.
    const utf8 = await page.evaluate(() => {
      const enc = new TextEncoder();
      let n = 0;
      for (let k = 0; k < localStorage.length; k++) n += enc.encode(localStorage.key(k)).length + enc.encode(localStorage.getItem(localStorage.key(k))).length;
      return n;
    });
    let wire = 0;
    const gzipped = [];
    page.on('request', (rq) => {
      if (rq.method() !== 'POST' || new URL(rq.url()).pathname !== '/v1/batches') return;
      wire += rq.postDataBuffer()?.length ?? 0;
      gzipped.push(rq.headers()['content-encoding'] === 'gzip' || (rq.postDataBuffer()?.length ?? 0) < 1024); // under 1 KiB goes as it is
    });
    const t0 = performance.now();
    await page.goto(`${server.url}/bench/pipeline.html?e2e=${network ? 'slow-' : ''}${i}#token=${encodeURIComponent(token)}`);
    await page.waitForFunction(() => window.benchReady === true, null, { timeout: 30_000 });
    const r = await page.evaluate(() => window.bench.endToEnd());
    const t1 = performance.now();
    check(r.status === 'completed', `end-to-end run answered ${r.status}`);
    check(r.storageBytes === filled.bytes, `the page saw ${r.storageBytes} bytes of localStorage, ${filled.bytes} were written`);
    check(results.pipeline === undefined || r.recordsSent === results.pipeline.toSend, `the run sent ${r.recordsSent} records, the dry run planned ${results.pipeline?.toSend}`);
    const tasks = r.kinds.find((k) => k.kind === 'tasks');
    const expected = tasks.valid + tasks.repaired;
    const stored = server.count(`SELECT count(*) FROM tasks WHERE user_id = '${user}'`);
    const t2 = performance.now();
    check(stored > 0 && stored === expected, `PostgreSQL holds ${stored} tasks for the user, the run reported ${expected}`);
    check(page.errors.length === 0, `page errors: ${page.errors.join('; ')}`);
    check(gzipped.length === r.batchesSent && gzipped.every(Boolean), `${gzipped.filter(Boolean).length} of ${r.batchesSent} batches went gzip-compressed`);
    uploaded.push({ wire, utf8 });
    nav.push(t1 - t0); inPage.push(r.sinceNavigation); verify.push(t2 - t1); memory.push(r.memoryBytes / MB);
    // Where the time went, from the run's progress events (each stage until the next one).
    const order = ['start', 'inspect', 'backup', 'validate', 'upload', 'verify', 'done', 'end'].filter((k) => r.marks[k] !== undefined);
    const before = { 'page load (HTML, page module, ferry.js)': r.marks.loaded, 'wasm fetch + compile + instantiate': r.marks.initialised - r.marks.loaded,
      'GET /v1/spec': r.marks.fetched - r.marks.initialised, 'new Migrator (IndexedDB, locks)': r.marks.start - r.marks.fetched };
    for (const [k, v] of Object.entries(before)) (stages[k] ??= []).push(v);
    for (let j = 0; j + 1 < order.length; j++) (stages[`${order[j]} → ${order[j + 1]}`] ??= []).push(r.marks[order[j + 1]] - r.marks[order[j]]);
    last = { filled, tasks: expected, recordsSent: r.recordsSent, batches: r.batchesSent, runMs: r.durationMs, memoryAt: r.memoryAt };
    await context.close();
  }
  return { nav, inPage, verify, last, stages, memory, uploaded };
}

/**
 * The server benchmark (server/benches/ingest.rs): its own embedded PostgreSQL and server
 * processes; it checks every row by SQL and exits non-zero when anything is off. Full mode
 * builds it with the bench (release) profile against the release server; quick mode runs it
 * with the test profile CI has already compiled, against FERRY_SERVER_BIN.
 */
function benchServer() {
  const json = path.join(os.tmpdir(), `ferry-bench-server-${process.pid}.json`);
  const args = QUICK
    // --workspace: the features `cargo test --workspace` already compiled. scripts/test.sh runs
    // this with the clippy wrapper its build used, so nothing at all is compiled again.
    ? ['test', '--workspace', '--bench', 'ingest', '--locked', '--', '--quick', '--json', json]
    : ['bench', '-p', 'ferry-server', '--bench', 'ingest', '--locked', '--', '--json', json, '--runs', option('--server-runs') ?? '3', '--load-runs', option('--server-runs') ?? '3'];
  log(`cargo ${args.join(' ')}`);
  execFileSync('cargo', args, { cwd: ROOT, stdio: ['ignore', 2, 2], env: process.env });
  results.server = JSON.parse(readFileSync(json, 'utf8'));
  rmSync(json, { force: true });
}

function benchSize() {
  const size = (f) => { const b = readFileSync(path.join(ROOT, 'pkg', f)); return { raw: b.length, gz: gzipSync(b, { level: 9 }).length, br: brotliCompressSync(b).length }; };
  results.size = { wasm: size('ferry_bg.wasm'), js: size('ferry.js') };
}

// ---------------------------------------------------------------------------------------------
// The report.
// ---------------------------------------------------------------------------------------------

const row = (cells) => `| ${cells.join(' | ')} |`;
const msRow = (name, xs, extra = []) => { const s = stats(xs); return row([name, fmt(s.median), fmt(s.min), fmt(s.max), ...extra]); };

function report(info) {
  const out = [];
  out.push(`Generated by \`node bench/run.mjs${QUICK ? ' --quick' : ''}\` on ${info.date}; ${RUNS} timed runs per figure after one warm-up.`, '');
  out.push('**Machine.** ' + [`${info.nproc} CPUs (${info.model})`, `${info.memGiB} GiB RAM`, info.kernel,
    `load average ${info.loadStart} at start, ${info.loadEnd} at end`, `Chromium ${info.chromium}`, `Node ${info.node}`,
    info.rustc, info.postgres, `server ${info.server ?? '–'}`, `commit ${info.commit}`].join('; ') + '.', '');
  const pipelineSection = (number, what, p) => {
    const mb = p.filled.bytes / MB;
    const tp = (xs) => fmt(mb / (stats(xs).median / 1000), 1);
    const ratio = (xs) => fmt(stats(xs).median / stats(p.t.dryRun).median, 2);
    out.push(`### ${number}. Browser pipeline${what} (${fmt(mb, 2)} MB of UTF-16, ${p.filled.keys} keys, seed ${SEED}, ${INVALID * 100}% broken; ${p.t.dryRun.length} timed run(s))`, '');
    out.push(row(['', 'median ms', 'min ms', 'max ms', 'MB/s (median)', 'baseline ÷ wasm dry run']), row(['---', '---:', '---:', '---:', '---:', '---:']));
    out.push(msRow('wasm `inspect()` (read, inventory, parse, validate, transform, ids, hashes; IndexedDB reads)', p.t.inspect, [tp(p.t.inspect), '']));
    out.push(msRow(`wasm \`run({dryRun: true})\` (read, fingerprints, the same pipeline, batch encoding: ${p.dryBatches} batches, ${fmt(p.dryBytes / MB, 2)} MB)`, p.t.dryRun, [tp(p.t.dryRun), '']));
    out.push(msRow('JS baseline: JSON.parse + Zod 4 + transforms + ids + JSON.stringify batches', p.t.baseline, [tp(p.t.baseline), ratio(p.t.baseline)]));
    out.push(msRow('JS baseline + SHA-256 content hash per record (WebCrypto)', p.t.baselineHashed, [tp(p.t.baselineHashed), ratio(p.t.baselineHashed)]));
    out.push('', `Both sides saw the same records: wasm accepted ${p.wasmAccepted} and rejected ${p.wasmRejected}; the baseline accepted ${p.base.records} and rejected ${p.base.rejected} (it dropped ${p.base.counts.duplicates} exact duplicates) and encoded ${p.base.batches} batches, ${fmt(p.base.bodyBytes / MB, 2)} MB. wasm module instantiation: ${fmt(p.initMs)} ms (once per page load, not in the figures above).`, '');
  };
  if (results.pipeline) pipelineSection('1', '', results.pipeline);
  if (results.pipelineLargest) pipelineSection('1b', ', the largest user Chromium allows', results.pipelineLargest);
  if (results.autoEmpty || results.autoMigrated) {
    out.push('### 5. Auto-run with nothing to do', '');
    out.push(row(['', 'median ms', 'min ms', 'max ms', 'requests (all runs)', 'target']), row(['---', '---:', '---:', '---:', '---:', '---']));
    if (results.autoEmpty) out.push(msRow('empty localStorage: `run({mode: "auto"})`', results.autoEmpty.ms, [String(results.autoEmpty.requests), '≤ 2 ms, 0 requests']));
    if (results.autoMigrated) out.push(msRow(`already migrated, unchanged (${fmt(results.autoMigrated.filled.bytes / MB, 2)} MB): \`run({mode: "auto"})\``, results.autoMigrated.ms, [String(results.autoMigrated.requests), '≤ 25 ms, 0 requests']));
    out.push('', 'Measured on a migrator already made (wasm instantiated, spec in hand); the first migration of the second user took ' + (results.autoMigrated ? `${fmt(results.autoMigrated.firstMigrationMs, 0)} ms in ${results.autoMigrated.batches} batches.` : '–.'), '');
    if (results.autoMigrated) {
      const a = results.autoMigrated;
      const b = a.backup;
      out.push(`### 2. Backup of the same ${fmt(a.filled.bytes / MB, 2)} MB`, '', row(['', 'median ms', 'min ms', 'max ms', 'target']), row(['---', '---:', '---:', '---:', '---']));
      out.push(msRow(`device key: \`backupNow()\` = read localStorage + compress + seal (AES-256-GCM, WebCrypto) + store in IndexedDB; ${b.deviceBytes} bytes`, b.device, ['≤ 150 ms']));
      out.push(msRow(`passphrase: \`exportNow(passphrase)\` = read + compress + PBKDF2-SHA256 600,000 + seal; ${b.passphraseBytes} bytes`, b.passphrase, ['≤ 250 ms']));
      out.push(msRow(`passphrase copy of a stored backup: \`exportBackup(id, passphrase)\` = open + PBKDF2 + seal again; ${b.exportBytes} bytes`, b.exportStored, ['']), '');
    }
  }
  if (results.e2e) {
    const e = results.e2e;
    out.push(`### 4. End to end (${fmt(e.last.filled.bytes / MB, 2)} MB user, loopback)`, '');
    out.push(row(['', 'median ms', 'min ms', 'max ms', 'target']), row(['---', '---:', '---:', '---:', '---']));
    out.push(msRow('page navigation → run completed and verified by the server (Playwright clock)', e.nav, ['≤ 1,000 ms']));
    out.push(msRow('the same on the page clock (from navigation start)', e.inPage, ['']));
    out.push(msRow('then `SELECT count(*)` by psql confirms the rows (not in the figures above)', e.verify, ['']));
    const input = e.last.filled.bytes / MB;
    out.push(row([`peak wasm memory of the run, MB (input ${fmt(input, 2)} MB of UTF-16; ${fmt(stats(e.memory).median / input, 1)}× the input)`, fmt(stats(e.memory).median), fmt(stats(e.memory).min), fmt(stats(e.memory).max), '≤ 2× the input']));
    const at = Object.entries(e.last.memoryAt ?? {}).map(([k, v]) => `${k} ${fmt(v / MB, 2)}`).join(', ');
    const up = e.uploaded.map((u) => u.wire / u.utf8);
    out.push(row([`bytes uploaded (batch bodies on the wire, gzip) ÷ the input's UTF-8 size (${fmt(e.uploaded[0].utf8 / MB, 2)} MB); ${e.uploaded[0].wire} bytes`, fmt(stats(up).median, 2), fmt(stats(up).min, 2), fmt(stats(up).max, 2), '≤ 0.35']));
    out.push('', 'Where the time goes (page clock; each stage of the run lasts until the next progress event):', '', row(['stage', 'median ms', 'min ms', 'max ms']), row(['---', '---:', '---:', '---:']));
    for (const [name, xs] of Object.entries(e.stages)) out.push(msRow(name, xs));
    out.push('', `Wasm memory (MB, last run) when the module was instantiated and when each stage began: ${at}; after the run ${fmt(e.memory[e.memory.length - 1], 2)}.`);
    out.push('', `Each run: a new user and browser profile; wasm init, GET /v1/spec, backup sealed into IndexedDB (device key), ${e.last.batches} batches, ${e.last.recordsSent} records, per-kind verification; ${e.last.tasks} tasks confirmed in PostgreSQL.`, '');
  }
  if (results.e2eSlow) {
    const e = results.e2eSlow;
    const n = SLOW_NETWORK;
    out.push(`### 4b. End to end on an emulated network (${fmt(e.last.filled.bytes / MB, 2)} MB user; Chromium's network emulation: ${fmt(n.uploadThroughput * 8 / 1e6, 0)} Mbit/s up, ${fmt(n.downloadThroughput * 8 / 1e6, 0)} Mbit/s down, ${n.latency} ms latency per request; ${e.nav.length} run(s))`, '');
    out.push(row(['', 'median ms', 'min ms', 'max ms', 'target']), row(['---', '---:', '---:', '---:', '---']));
    out.push(msRow('page navigation → run completed and verified by the server (Playwright clock)', e.nav, ['≤ 3,000 ms']));
    const up = e.uploaded.map((u) => u.wire);
    out.push(msRow('batch bodies on the wire, KB', up.map((b) => b / 1e3), ['']));
    out.push('', 'Where the time goes:', '', row(['stage', 'median ms', 'min ms', 'max ms']), row(['---', '---:', '---:', '---:']));
    for (const [name, xs] of Object.entries(e.stages)) out.push(msRow(name, xs));
    out.push('');
  }
  if (results.server) {
    const { ingest: i, load } = results.server;
    const rs = (x) => `${fmt(x.median, 0)} (${fmt(x.min, 0)}–${fmt(x.max, 0)})`;
    out.push(`### 3. Server ingest (${i.records} task records, ${fmt(i.json_bytes_per_pass / MB, 1)} MB of batch JSON in ${i.batches_per_pass} batches; \`cargo bench -p ferry-server --bench ingest\`)`, '');
    out.push(`${QUICK ? 'Debug' : 'Release'} server over HTTP on loopback, concurrent clients; PostgreSQL 15 with default settings (durable), the same cluster for every contender. Median (min–max) of ${i.server_empty_records_per_s.runs} runs; the naive migrator on a ${i.naive_subset}-record subset.`, '');
    out.push(row(['contender', 'records/s', 'batch p50 / p99 ms']), row(['---', '---:', '---:']));
    out.push(row(['Ferry server, empty table', rs(i.server_empty_records_per_s), `${fmt(i.server_empty_batch_latency.p50_ms, 0)} / ${fmt(i.server_empty_batch_latency.p99_ms, 0)}`]));
    out.push(row(['Ferry server, every record conflicting (`newest` → updated, before-images)', rs(i.server_conflict_records_per_s), `${fmt(i.server_conflict_batch_latency.p50_ms, 0)} / ${fmt(i.server_conflict_batch_latency.p99_ms, 0)}`]));
    out.push(row(['binary `COPY` into the same table (the practical limit)', rs(i.copy_records_per_s), '']));
    out.push(row(['naive: one `INSERT` per record per transaction, 1 connection', rs(i.naive_1_connection_records_per_s), '']));
    out.push(row([`naive, ${i.naive_concurrent_connections} connections`, rs(i.naive_concurrent_records_per_s), '']));
    out.push('', `Server ÷ COPY: **${fmt(100 * i.server_empty_vs_copy, 0)}%** (empty), ${fmt(100 * i.server_conflict_vs_copy, 0)}% (conflicting); target ≥ 50%. Server ÷ naive: **${fmt(i.server_empty_vs_naive_1, 1)}×** (1 connection), ${fmt(i.server_empty_vs_naive_concurrent, 1)}× (${i.naive_concurrent_connections} connections); target ≥ 25×.`, '');
    out.push('### 6. Load (simulated users migrating at once; every record checked in PostgreSQL exactly once)', '');
    out.push(row(['', 'users × records', 'records/s', 'batch p50 ms', 'batch p99 ms (≤ 1,000)', 'batch max ms', 'errors (0)', 'peak RSS MiB per process (≤ 200)']), row(['---', '---:', '---:', '---:', '---:', '---:', '---:', '---:']));
    for (const [name, l] of [
      ['1 server process', load.one_server],
      ['2 server processes, one database', load.two_servers],
      ['3 server processes behind nginx (round robin, keep-alive)', load.three_behind_nginx],
      ['the same, rate-limit buckets shared in PostgreSQL (`FERRY_RATE_LIMIT_SHARED`)', load.three_behind_nginx_shared_limits],
    ]) {
      if (!l) continue;
      out.push(row([name, `${results.server.params?.users ?? '–'} × ${results.server.params?.records_per_user ?? '–'}`, rs(l.records_per_s), fmt(l.batch_latency_p50_ms.median, 0), fmt(l.batch_latency_p99_ms.median, 0), fmt(l.batch_latency_max_ms.median, 0), String(l.errors), fmt(l.peak_rss_mib_per_process.max, 1)]));
    }
    out.push('');
  }
  if (results.size) {
    const s = results.size;
    out.push('### 7. Size', '', row(['file', 'bytes', 'gzip -9 (zlib)', 'brotli 11', 'target']), row(['---', '---:', '---:', '---:', '---']));
    out.push(row(['`pkg/ferry_bg.wasm`', String(s.wasm.raw), String(s.wasm.gz), String(s.wasm.br), '≤ 250 KB gzipped']));
    out.push(row(['`pkg/ferry.js`', String(s.js.raw), String(s.js.gz), String(s.js.br), '']), '');
  }
  return out.join('\n');
}

const GEN_START = '<!-- generated:start (bench/run.mjs rewrites this section) -->';
const GEN_END = '<!-- generated:end -->';

function writeReport(file, text) {
  const previous = existsSync(file) ? readFileSync(file, 'utf8') : null;
  let doc;
  if (previous && previous.includes(GEN_START) && previous.includes(GEN_END)) {
    doc = previous.slice(0, previous.indexOf(GEN_START) + GEN_START.length) + '\n' + text + '\n' + previous.slice(previous.indexOf(GEN_END));
  } else {
    doc = `# Benchmarks\n\n${GEN_START}\n${text}\n${GEN_END}\n\n<!-- analysis:start (hand-written; bench/run.mjs keeps it) -->\n## Analysis\n\n(to be written)\n<!-- analysis:end -->\n`;
  }
  writeFileSync(file, doc);
}

async function main() {
  const info = { ...machine(), date: new Date().toISOString().slice(0, 16).replace('T', ' ') + ' UTC', loadStart: os.loadavg().map((x) => x.toFixed(2)).join(' ') };
  check(existsSync(path.join(ROOT, 'pkg/ferry_bg.wasm')), 'pkg/ferry_bg.wasm is missing: run scripts/build-wasm.sh');
  check(existsSync(path.join(BENCH_DIR, 'node_modules/zod/index.js')), 'bench/node_modules is missing: run `npm ci` in bench/');
  if (ONLY.has('size')) benchSize();
  if (ONLY.has('server')) { log('server ingest and load'); benchServer(); }
  const needsServer = ['pipeline', 'auto', 'e2e', 'profile'].some((p) => ONLY.has(p));
  // The release server, built (or found up to date in a second) so a stale binary is never timed;
  // FERRY_SERVER_BIN overrides it (CI's quick run passes the debug build it already has).
  if (needsServer && !process.env.FERRY_SERVER_BIN) {
    log('cargo build --release --locked -p ferry-server');
    execFileSync('cargo', ['build', '--release', '--locked', '-p', 'ferry-server'], { cwd: ROOT, stdio: ['ignore', 2, 2] });
  }
  info.server = process.env.FERRY_SERVER_BIN ? path.relative(ROOT, path.resolve(process.env.FERRY_SERVER_BIN)) : 'target/release/ferry-server';
  let server = null, browser = null;
  try {
    if (needsServer) {
      log('starting the ingest server on its own PostgreSQL');
      server = await new Server().start();
      browser = await launchBrowser();
      info.chromium = browser.version();
      const { token } = await server.token('bench-spec');
      const spec = await (await fetch(`${server.url}/v1/spec`, { headers: { Authorization: `Bearer ${token}` } })).text();
      if (ONLY.has('pipeline')) {
        log('pipeline');
        results.pipeline = await benchPipeline(browser, server, spec, BYTES, RUNS);
        log('pipeline, the largest user');
        results.pipelineLargest = await benchPipeline(browser, server, spec, LARGEST_BYTES, QUICK ? 1 : Math.min(RUNS, 3));
      }
      if (ONLY.has('auto')) { log('auto-run'); await benchAuto(browser, server, spec); }
      if (ONLY.has('e2e')) {
        log('end to end');
        results.e2e = await benchEndToEnd(browser, server, RUNS);
        log('end to end, emulated network');
        results.e2eSlow = await benchEndToEnd(browser, server, QUICK ? 1 : Math.min(RUNS, 5), SLOW_NETWORK);
      }
      if (ONLY.has('profile')) { log('profile'); await profileWasm(browser, server, spec); }
    }
  } finally {
    await browser?.close();
    await server?.dispose();
  }
  info.chromium ??= '–';
  info.loadEnd = os.loadavg().map((x) => x.toFixed(2)).join(' ');
  const text = report(info);
  console.log(text);
  if (OUT) { writeReport(OUT, text); log(`wrote ${OUT}`); }
  log('done');
}

// Exit explicitly: the server's PostgreSQL may hold our stdio pipes open for a while after it stops.
main().then(() => process.exit(0), (e) => { console.error('bench: FAILED:', e?.stack ?? e); process.exit(1); });
