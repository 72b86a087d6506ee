// Every call into the Ferry migrator (pkg/ferry.js, the wasm facade of issue 4) lives in this
// module, so adapting the page to a change of that API touches one file. The rest of the page
// only sees the functions exported here and plain objects.

// The auto-run, the spec cache and the shared migrator come from the package's auto.js
// (`autoMigrate`, `getMigrator`): this module only adds what the demo's own UI needs.
let auto = null; // Promise<auto.js module>
const loadAuto = () => (auto ??= import('/pkg/auto.js').catch((e) => { auto = null; throw e; }));
const options = (tokenProvider) => ({ server: location.origin, getToken: tokenProvider, migrator: { storageName: 'ferry' } });

/**
 * The migrator for this page, made once by auto.js (shared with the auto-run).
 * `tokenProvider(refresh)` resolves to a bearer token; the migrator calls it with `true` after
 * a 401. `fresh` refetches the spec.
 */
export async function getMigrator(tokenProvider, { fresh = false } = {}) {
  return (await loadAuto()).getMigrator(options(tokenProvider), { fresh });
}

/** Forget the migrator (sign-out). */
export function dropMigrator() { auto?.then((m) => m.dropMigrators(), () => {}); }

/**
 * The automatic run on load: auto.js's `autoMigrate`, which never throws and retries by itself
 * while the server is unreachable (until `signal` aborts). Resolves to its first result.
 */
export async function autoMigrate(tokenProvider, { onProgress, onResult, signal }) {
  try {
    return (await loadAuto()).autoMigrate({ ...options(tokenProvider), onProgress, onResult, signal });
  } catch (e) {
    const result = { status: 'failed', error: { code: 'load_failed', failure: 'browser', message: `The migrator (pkg/auto.js) could not be loaded: ${e?.message ?? e}` } };
    onResult?.(result);
    return result;
  }
}

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
