// Every call into the Ferry migrator (pkg/ferry.js, the wasm facade of issue 4) lives in this
// module, so adapting the page to a change of that API touches one file. The rest of the page
// only sees the functions exported here and plain objects.

const SPEC_URL = '/v1/spec';
const SPEC_CACHE = 'taskboard-ferry-spec';

let loading = null;
let migrator = null; // Promise<Migrator>
let migratorToken = null;

/** Loads and initialises the wasm bundle once; resolves to null (never throws) if it is missing. */
export function loadFerry() {
  loading ??= import('/pkg/ferry.js')
    .then(async (mod) => { await mod.default(); return mod; })
    .catch((e) => { console.warn('Ferry migrator unavailable:', e); return null; });
  return loading;
}

// The spec is fetched once and kept in the Cache API, so a page load of an already-migrated
// user makes no request at all. A spec_mismatch error drops it (see `run`).
async function specText(tokenProvider, fresh = false) {
  const cache = globalThis.caches ? await caches.open(SPEC_CACHE) : null;
  if (cache && !fresh) {
    const hit = await cache.match(SPEC_URL);
    if (hit) return hit.text();
  }
  const response = await fetch(SPEC_URL, { headers: { Authorization: `Bearer ${await tokenProvider(false)}` } });
  if (!response.ok) throw new Error(`GET ${SPEC_URL} answered ${response.status}`);
  const text = await response.text();
  await cache?.put(SPEC_URL, new Response(text, { headers: { 'Content-Type': 'application/json' } }));
  return text;
}

/**
 * The migrator for this page, made once (the promise is shared, so concurrent first calls get
 * the same instance). `tokenProvider(refresh)` resolves to a bearer token; the migrator calls it
 * with `true` after a 401. Replaced instances are not freed: a call may still be running on them.
 */
export function getMigrator(tokenProvider, { fresh = false } = {}) {
  if (!migrator || fresh || migratorToken !== tokenProvider) {
    migratorToken = tokenProvider;
    const made = (async () => {
      const mod = await loadFerry();
      if (!mod?.Migrator) throw new Error('The migrator (pkg/ferry.js) could not be loaded.');
      const spec = await specText(tokenProvider, fresh);
      return new mod.Migrator(spec, location.origin, tokenProvider, { storageName: 'ferry' });
    })();
    migrator = made;
    made.catch(() => { if (migrator === made) migrator = null; }); // a failed start is retried next call
  }
  return migrator;
}

/** Forget the migrator (sign-out). */
export function dropMigrator() { migrator = null; migratorToken = null; }

/** What would be migrated, and where this browser stands. No network. */
export async function inspect(tokenProvider) {
  return (await getMigrator(tokenProvider)).inspect();
}

/** Runs (or resumes) a migration; on a spec mismatch, refetches the spec and tries once more. */
export async function run(tokenProvider, { mode, onProgress, kinds, dryRun = false }) {
  const options = { mode, dryRun, onProgress, uploadBackup: false, ...(kinds ? { kinds } : {}) };
  try {
    return await (await getMigrator(tokenProvider)).run(options);
  } catch (e) {
    if (e?.code !== 'spec_mismatch') throw e;
    return (await getMigrator(tokenProvider, { fresh: true })).run(options);
  }
}

/** Calls `callback(report)` when a run in any tab ends (a skipped auto run learns the outcome). */
export async function onOutcome(tokenProvider, callback) {
  (await getMigrator(tokenProvider)).onOutcome(callback);
}

export async function backups(tokenProvider) { return (await getMigrator(tokenProvider)).backups(); }
export async function restore(tokenProvider, id) { return (await getMigrator(tokenProvider)).restore(id); }
/** A passphrase-protected backup file, as a Blob ready to download. */
export async function exportBackup(tokenProvider, id, passphrase) {
  const bytes = await (await getMigrator(tokenProvider)).exportBackup(id, passphrase);
  return new Blob([bytes], { type: 'application/octet-stream' });
}
export async function conflicts(tokenProvider) { return (await getMigrator(tokenProvider)).conflicts(); }
/** `choice`: "stored" | "incoming" | "edited" (then `value` is column → value). */
export async function resolve(tokenProvider, id, choice, value) {
  return (await getMigrator(tokenProvider)).resolve(id, choice, choice === 'edited' ? value : undefined);
}
export async function rollback(tokenProvider, migrationId) {
  return (await getMigrator(tokenProvider)).rollback(migrationId ?? undefined);
}

/** Whether an error is worth retrying later without the user (server down, offline). */
export function isTransient(e) {
  return ['unavailable', 'protocol'].includes(e?.code) || e instanceof TypeError || /GET \/v1\/spec answered 5/.test(e?.message ?? '');
}
