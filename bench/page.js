// The in-page half of the benchmarks: loaded by bench/pipeline.html, which run.mjs opens on the
// ingest server's origin (the page itself is served from disk by Playwright's routing, /pkg and
// /v1 by the real server), so the migrator runs exactly as in the demo, same origin, no CORS.
// Everything is exposed on `window.bench` for run.mjs to call; each function returns plain data.

import init, { Migrator } from '/pkg/ferry.js';
// The demo's sample loader: the seeded generator's pairs from the server's GET /dev/sample.
import { fetchSample } from '/js/sample.js';

// The baseline and Zod load only when asked for, so the end-to-end page load carries nothing but
// what the demo loads (Zod is dozens of modules, each served through Playwright's routing).
let baselineModules = null;
const loadBaseline = () => (baselineModules ??= Promise.all([import('/bench/node_modules/zod/index.js'), import('/bench/baseline.js')]));

const params = new URLSearchParams(location.hash.slice(1));
const token = params.get('token') ?? '';
const tokenProvider = async () => token;
const now = () => performance.now();

let ready = null;
let wasmExports = null; // what init() resolves to: the module's exports, `memory` among them
const wasmInit = () => (ready ??= (async () => { const t = now(); wasmExports = await init(); return now() - t; })());

async function specText() {
  const r = await fetch('/v1/spec', { headers: { Authorization: `Bearer ${token}` } });
  if (!r.ok) throw new Error(`GET /v1/spec answered ${r.status}`);
  return r.text();
}

let migrator = null;
async function getMigrator(spec) {
  await wasmInit();
  migrator ??= new Migrator(spec ?? await specText(), location.origin, tokenProvider, { storageName: 'ferry' });
  return migrator;
}

window.bench = {
  /** Fills localStorage with the seeded sample; returns its size in UTF-16 bytes and key count. */
  async fill(seed, bytes, invalidFraction) {
    localStorage.clear();
    const pairs = await fetchSample({ seed, targetBytes: bytes, invalidFraction });
    let size = 0;
    for (const [k, v] of pairs) { localStorage.setItem(k, v); size += 2 * (k.length + v.length); }
    return { bytes: size, keys: pairs.length };
  },

  async wasmInitMs() { return wasmInit(); },

  /** One timed wasm inspect() (read + inventory + parse + validate + transform + ids + hashes). */
  async wasmInspect(spec) {
    const m = await getMigrator(spec);
    const t = now();
    const r = await m.inspect();
    const ms = now() - t;
    const kinds = Object.fromEntries(r.kinds.map((k) => [k.kind, k.summary]));
    return { ms, kinds, knownBytes: r.knownBytes };
  },

  /** One timed wasm dry run (read + fingerprints + the same pipeline + batch encoding; no backup, no request). */
  async wasmDryRun(spec) {
    const m = await getMigrator(spec);
    const t = now();
    const r = await m.run({ mode: 'manual', dryRun: true });
    return { ms: now() - t, status: r.status, recordsToSend: r.recordsToSend, batches: r.batchesPlanned, bodyBytes: r.bytesPlanned, kinds: r.kinds };
  },

  /** One timed device-key backup of localStorage: snapshot + compress + seal + store in IndexedDB. */
  async backupNow() {
    const m = await getMigrator();
    const t = now();
    const info = await m.backupNow();
    return { ms: now() - t, bytes: info.fileSize };
  },

  /** One timed passphrase backup of localStorage: snapshot + compress + PBKDF2 600,000 + seal (the bytes handed to a download). */
  async exportNow(passphrase) {
    const m = await getMigrator();
    const t = now();
    const bytes = await m.exportNow(passphrase);
    return { ms: now() - t, bytes: bytes.length };
  },

  /** One timed pass of the JavaScript baseline over the same localStorage. */
  async baseline(hashes) {
    const [z, { migrate, makeSchemas }] = await loadBaseline();
    const migratedAtMs = Date.now();
    const t = now();
    const schemas = makeSchemas(z, migratedAtMs);
    const r = await migrate(localStorage, { z, schemas, migratedAtMs, hashes });
    const ms = now() - t;
    const bodyBytes = r.batches.reduce((n, b) => n + b.length, 0);
    return { ms, counts: r.counts, records: r.records, rejected: r.rejected, batches: r.batches.length, bodyBytes };
  },

  /** A full run through the real server; returns the report. */
  async migrate(spec, mode = 'manual') {
    const m = await getMigrator(spec);
    const t = now();
    const r = await m.run({ mode, uploadBackup: false });
    return { ms: now() - t, ...r };
  },

  /** One timed auto run (the page-load path). */
  async autoRun(spec) {
    const m = await getMigrator(spec);
    const t = now();
    const r = await m.run({ mode: 'auto', uploadBackup: false });
    return { ms: now() - t, status: r.status };
  },

  /** One timed passphrase export of the newest backup (open + PBKDF2 600,000 + seal). */
  async exportBackup(passphrase) {
    const m = await getMigrator();
    const list = await m.backups();
    if (!list.length) throw new Error('no backup to export: migrate first');
    const t = now();
    const bytes = await m.exportBackup(list[list.length - 1].id, passphrase);
    return { ms: now() - t, bytes: bytes.length };
  },

  /**
   * End to end from this page's navigation: wasm init, spec fetch, migrator, auto run with
   * upload and server verification. `sinceNavigation` is measured from the navigation start.
   */
  async endToEnd() {
    const loaded = now();
    await wasmInit();
    const initialised = now();
    const spec = await specText();
    const fetched = now();
    const m = await getMigrator(spec);
    const marks = { loaded, initialised, fetched, start: now() };
    // Wasm memory when each stage begins: where the peak comes from.
    const memoryAt = { instantiated: wasmExports.memory.buffer.byteLength };
    const r = await m.run({ mode: 'auto', uploadBackup: false, onProgress: (p) => {
      marks[p.stage] ??= now();
      memoryAt[p.stage] ??= wasmExports.memory.buffer.byteLength;
    } });
    marks.end = now();
    // Wasm memory only grows, so its size after the run is the run's peak (this page did
    // nothing else in wasm).
    let storageBytes = 0; // after the timed part: the run leaves localStorage as it was
    for (let i = 0; i < localStorage.length; i++) { const k = localStorage.key(i); storageBytes += 2 * (k.length + localStorage.getItem(k).length); }
    return { marks, storageBytes, sinceNavigation: marks.end, memoryBytes: wasmExports.memory.buffer.byteLength, memoryAt, status: r.status, kinds: r.kinds, recordsSent: r.recordsSent, batchesSent: r.batchesSent, durationMs: r.durationMs };
  },
};
window.benchReady = true;
