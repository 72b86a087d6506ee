// Ferry's auto-run in one call: `autoMigrate({ server, getToken })` in the app's start-up code.
//
// Shipped in the npm package as `auto.js` (scripts/build-wasm.sh copies it from src/js/), next to
// the wasm-bindgen glue `ferry.js`, which it loads lazily so that a failure to load the bundle
// is a result, not an exception at import. What it does, in order:
//   0. the light first step (stamp.js): when localStorage is exactly what the last verified
//      migration under the same spec saw, answer `nothing_to_do` at once, without downloading
//      the wasm bundle and without a request;
//   1. load and initialise the wasm bundle once per page;
//   2. take the spec the app gives, or fetch `GET {server}/v1/spec` once and keep it in the
//      Cache API, so an already-migrated user's page load makes no request at all;
//   3. make the migrator once per server and storage name (shared with `getMigrator`);
//   4. run it in auto mode; on `spec_mismatch` refetch the spec and run once more;
//   5. when the server is unreachable, retry in the background (2 s doubling to 30 s, and at
//      once when the browser comes back online) until the run ends or `signal` aborts;
//   6. when another tab holds the run, pass on that tab's completed run as this one's result.
// It never throws into the app: every outcome is a result object, given to the returned
// promise (the first one) and to `onResult` (every one), and a failure is logged once.

import { dropStamp, unchanged, writeStamp } from './stamp.js';

const SPEC_CACHE = 'ferry-spec';
const FIRST_RETRY_MS = 2000;
const MAX_RETRY_MS = 30_000;

let loading = null; // Promise<module | null>
const migrators = new Map(); // `${server}\n${storageName}` → { getToken, promise }
const specTexts = new WeakMap(); // Migrator → the spec text it was made with

/** Loads and initialises the bundle once; resolves to the module. */
function loadBundle() {
  loading ??= import('./ferry.js').then(async (mod) => { await mod.default(); return mod; });
  loading.catch(() => { loading = null; }); // a later call tries again
  return loading;
}

const specUrl = (server) => `${String(server).replace(/\/+$/, '')}/v1/spec`; // as the migrator joins its paths

/** An Error with a `code`, like the migrator's own (`FerryError`). */
function failure(code, message, kind) {
  const e = new Error(message);
  e.name = 'FerryError';
  e.code = code;
  e.failure = kind;
  return e;
}

/** The spec text: the app's own, or the server's, from the Cache API unless `fresh`. */
async function specText({ server, getToken, spec }, fresh) {
  if (spec !== undefined) return typeof spec === 'string' ? spec : JSON.stringify(spec);
  const url = specUrl(server);
  const cache = globalThis.caches ? await caches.open(SPEC_CACHE).catch(() => null) : null;
  if (cache && !fresh) {
    const hit = await cache.match(url);
    if (hit) return hit.text();
  }
  let token;
  try {
    token = await getToken(false);
  } catch (e) {
    throw failure('token_provider', `the app's getToken failed before the spec could be fetched: ${e?.message ?? e}`, 'browser');
  }
  let response;
  try {
    response = await fetch(url, { headers: { Authorization: `Bearer ${token}` } });
  } catch (e) {
    throw failure('unavailable', `GET ${url} could not reach the server: ${e?.message ?? e}`, 'unreachable');
  }
  if (!response.ok) {
    const kind = response.status >= 500 || response.status === 429 ? 'unreachable' : 'refused';
    throw failure(kind === 'unreachable' ? 'unavailable' : 'spec_unavailable', `GET ${url} answered ${response.status}`, kind);
  }
  const text = await response.text();
  await cache?.put(url, new Response(text, { headers: { 'Content-Type': 'application/json' } })).catch(() => {});
  return text;
}

/** The spec text without the network: the app's own, or the cached one; null when neither. */
async function specTextAtHand({ server, spec }) {
  if (spec !== undefined) return typeof spec === 'string' ? spec : JSON.stringify(spec);
  if (!globalThis.caches) return null;
  try {
    const hit = await (await caches.open(SPEC_CACHE)).match(specUrl(server));
    return hit ? await hit.text() : null;
  } catch {
    return null;
  }
}

const storageNameOf = (options) => options.migrator?.storageName ?? 'ferry';

async function forgetCachedSpec(server) {
  if (!globalThis.caches) return;
  await caches.open(SPEC_CACHE).then((c) => c.delete(specUrl(server))).catch(() => {});
}

/**
 * The page's migrator for `server`, made once (concurrent first calls share it) and remade with
 * `fresh: true` (spec refetched) or when `getToken` changes. Rejects with a `FerryError`.
 */
export function getMigrator(options, { fresh = false } = {}) {
  const { server, getToken, migrator: migratorOptions = {} } = options;
  const key = `${server}\n${migratorOptions.storageName ?? 'ferry'}`;
  const known = migrators.get(key);
  if (known && !fresh && known.getToken === getToken) return known.promise;
  const promise = (async () => {
    let mod;
    try {
      mod = await loadBundle();
    } catch (e) {
      throw failure('load_failed', `the Ferry bundle (ferry.js, ferry_bg.wasm) could not be loaded: ${e?.message ?? e}`, 'browser');
    }
    const spec = await specText(options, fresh);
    try {
      const migrator = new mod.Migrator(spec, server, getToken, migratorOptions);
      specTexts.set(migrator, spec);
      return migrator;
    } catch (e) {
      // A cached spec the migrator refuses is dropped, so the next call fetches it again.
      if (options.spec === undefined) await forgetCachedSpec(server);
      throw e;
    }
  })();
  const entry = { getToken, promise };
  migrators.set(key, entry);
  promise.catch(() => { if (migrators.get(key) === entry) migrators.delete(key); });
  return promise;
}

/** Forgets the page's migrators (sign-out): the next call makes new ones. */
export function dropMigrators() { migrators.clear(); }

/** Whether a failure is worth retrying without the user: the server or the network is down. */
export function isTransient(e) {
  return e?.failure === 'unreachable' || e?.code === 'unavailable' || e?.code === 'protocol' || e instanceof TypeError;
}

const STATUS = { completed: 'migrated', skipped: 'in_other_tab' };

// One `onOutcome` listener per migrator (listeners live as long as the page), shared by calls.
const outcomeWaiters = new WeakMap(); // Migrator → Set<(outcome) => void>

/** The next run outcome any tab of this origin announces. */
function nextOutcome(migrator) {
  return new Promise((resolve) => {
    let waiters = outcomeWaiters.get(migrator);
    if (!waiters) {
      waiters = new Set();
      outcomeWaiters.set(migrator, waiters);
      migrator.onOutcome((outcome) => {
        const now = [...waiters];
        waiters.clear();
        for (const w of now) w(outcome);
      });
    }
    waiters.add(resolve);
  });
}

/** One run; resolves to [result, the migrator used, if one was made]. */
async function attempt(options) {
  let migrator = null;
  const run = async (fresh) => (migrator = await getMigrator(options, { fresh })).run({
    mode: 'auto',
    cleanup: options.cleanup ?? false,
    uploadBackup: options.uploadBackup ?? false,
    onProgress: options.onProgress,
  });
  try {
    let report;
    try {
      report = await run(false);
    } catch (e) {
      if (e?.code !== 'spec_mismatch' || options.spec !== undefined) throw e;
      report = await run(true); // the server runs another spec version: fetch it, once
    }
    const result = { status: STATUS[report.status] ?? 'nothing_to_do', report };
    if (result.status !== 'in_other_tab') {
      // The stamp the next page load's light check compares with (none while in flight).
      const state = await migrator.verifiedState().catch(() => null);
      writeStamp(storageNameOf(options), specTexts.get(migrator) ?? '', state);
    }
    return [result, migrator];
  } catch (e) {
    dropStamp(storageNameOf(options));
    const error = { code: e?.code ?? 'unknown', failure: e?.failure ?? 'browser', message: String(e?.message ?? e) };
    const offline = globalThis.navigator?.onLine === false;
    return [{ status: isTransient(e) || offline ? 'retrying' : 'failed', error }, migrator];
  }
}

/**
 * Runs the app's migration automatically; resolves to the first result and never rejects.
 * See auto.d.ts for the options and the result.
 */
export function autoMigrate(options) {
  const { onResult, signal, retry = true } = options ?? {};
  let logged = false;
  let delay = FIRST_RETRY_MS;
  const tell = (result) => {
    if (result.error && !logged) {
      logged = true;
      console.warn(`Ferry: the migration did not complete (${result.error.code}): ${result.error.message}`);
    }
    try { onResult?.(result); } catch (e) { console.warn('Ferry: onResult threw:', e); }
    return result;
  };
  const once = async () => {
    if (!options?.server || typeof options.getToken !== 'function') {
      return { status: 'failed', error: { code: 'invalid_argument', failure: 'browser', message: 'autoMigrate needs { server, getToken }' } };
    }
    const spec = await specTextAtHand(options);
    if (spec !== null && unchanged(storageNameOf(options), spec)) return { status: 'nothing_to_do', report: null };
    const [result, migrator] = await attempt(options);
    if (result.status === 'in_other_tab' && migrator) {
      // The other tab's completed run is this page's result too.
      nextOutcome(migrator).then((o) => { if (o?.status === 'completed' && !signal?.aborted) tell({ status: 'migrated', report: o }); }, () => {});
    }
    if (result.status !== 'retrying') return result;
    if (!retry) return { ...result, status: 'failed' };
    result.retryInMs = delay;
    return result;
  };
  const later = (result) => {
    if (result.status !== 'retrying' || signal?.aborted) return;
    let timer = null;
    const again = () => {
      clearTimeout(timer);
      removeEventListener('online', again);
      signal?.removeEventListener('abort', stop);
      if (signal?.aborted) return;
      delay = Math.min(delay * 2, MAX_RETRY_MS);
      once().catch(broken).then(tell).then(later);
    };
    const stop = () => { clearTimeout(timer); removeEventListener('online', again); };
    timer = setTimeout(again, result.retryInMs);
    addEventListener('online', again);
    signal?.addEventListener('abort', stop, { once: true });
  };
  const broken = (e) => ({ status: 'failed', error: { code: 'unknown', failure: 'browser', message: String(e?.message ?? e) } });
  return once().catch(broken).then(tell).then((result) => { later(result); return result; });
}
