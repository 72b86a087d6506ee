// The light first step of the auto-run, in plain JavaScript (a few KB): before the wasm bundle
// is downloaded, `unchanged()` tells from a stamp in localStorage whether this browser's data
// is exactly what the last verified migration saw. An already-migrated, unchanged user then
// downloads nothing more than auto.js and this file, and makes no request.
//
// The stamp (`ferry-stamp:<storageName>`, ~200 bytes) holds which keys the spec watches (exact
// keys and prefixes, and the keys and prefixes its `ignore` takes away), an id of the spec text,
// and a digest of every watched key with its value as last verified. The digest is computed
// here only, on both sides: from the migrator's recorded fingerprints when the stamp is written
// (`verifiedState()`, after a verified run or an up-to-date check) and from localStorage when it
// is read. `ferryFingerprint` is also the migrator's own fingerprint of a value
// (src/browser/local.rs imports it from this file).

/** `[length, fnv, mix]` of a string's UTF-16 code units (Rust: `Fingerprint::of_utf16`). */
export function ferryFingerprint(s) {
  let fnv = 0x811c9dc5;
  let mix = 0x9747b28c;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    fnv = Math.imul(fnv ^ c, 0x01000193);
    mix = Math.imul(mix ^ c, 0x5bd1e995);
    mix ^= mix >>> 15;
  }
  return new Uint32Array([s.length, fnv >>> 0, mix >>> 0]);
}

const STAMP_VERSION = 1;
const stampKey = (storageName) => `ferry-stamp:${storageName}`;
const specId = (text) => Array.from(ferryFingerprint(text), (n) => n.toString(16)).join('-');

/** One watched pair's hash in two 32-bit lanes, from the key's and the value's fingerprints. */
function pairHash(keyFp, valueFp) {
  let a = 0x811c9dc5;
  let b = 0x9747b28c;
  for (const word of [...keyFp, ...valueFp]) {
    a = Math.imul(a ^ word, 0x01000193);
    b = Math.imul(b ^ word, 0x5bd1e995);
    b ^= b >>> 13;
  }
  return [a >>> 0, b >>> 0];
}

/** Order-free digest of `[key, valueFingerprint]` pairs: count, XOR lane, sum lane. */
function digest(pairs) {
  let n = 0;
  let x = 0;
  let sum = 0;
  for (const [key, valueFp] of pairs) {
    const [a, b] = pairHash(ferryFingerprint(key), valueFp);
    n += 1;
    x = (x ^ a) >>> 0;
    sum = (sum + b) >>> 0;
  }
  return `${n}:${x.toString(16)}:${sum.toString(16)}`;
}

/** The watched pairs of localStorage now, as `[key, valueFingerprint]`. */
function* watchedNow({ exact, prefixes, ignoredExact = [], ignoredPrefixes = [] }) {
  const exactSet = new Set(exact);
  const ignoredSet = new Set(ignoredExact);
  for (let i = 0; i < localStorage.length; i++) {
    const key = localStorage.key(i);
    if (key === null) continue;
    if (!exactSet.has(key) && !prefixes.some((p) => key.length > p.length && key.startsWith(p))) continue;
    // The spec's `ignore`: volatile UI state under a watched prefix (never an exact or index key).
    if (ignoredSet.has(key) || ignoredPrefixes.some((p) => key.startsWith(p))) continue;
    const value = localStorage.getItem(key);
    if (value !== null) yield [key, ferryFingerprint(value)];
  }
}

function readStamp(storageName) {
  try {
    const stamp = JSON.parse(localStorage.getItem(stampKey(storageName)) ?? 'null');
    const lists = [stamp?.exact, stamp?.prefixes, stamp?.ignoredExact ?? [], stamp?.ignoredPrefixes ?? []];
    return stamp?.v === STAMP_VERSION && lists.every(Array.isArray) ? stamp : null;
  } catch {
    return null;
  }
}

/**
 * Whether localStorage holds exactly what the last verified migration under `specText` saw.
 * False whenever it cannot tell (no stamp, another spec, storage unavailable).
 */
export function unchanged(storageName, specText) {
  try {
    const stamp = readStamp(storageName);
    if (!stamp || typeof specText !== 'string' || stamp.spec !== specId(specText)) return false;
    return digest(watchedNow(stamp)) === stamp.digest;
  } catch {
    return false;
  }
}

/**
 * Records the migrator's verified state (`Migrator.verifiedState()`) as the stamp; `null` (a
 * migration in flight, or no verified state) removes it. Never throws.
 */
export function writeStamp(storageName, specText, state) {
  try {
    if (!state) {
      localStorage.removeItem(stampKey(storageName));
      return;
    }
    const pairs = state.keys.map(([key, len, fnv, mix]) => [key, new Uint32Array([len, fnv, mix])]);
    const { exact, prefixes, ignoredExact = [], ignoredPrefixes = [] } = state;
    const stamp = JSON.stringify({ v: STAMP_VERSION, spec: specId(specText), exact, prefixes, ignoredExact, ignoredPrefixes, digest: digest(pairs) });
    if (localStorage.getItem(stampKey(storageName)) !== stamp) localStorage.setItem(stampKey(storageName), stamp);
  } catch {
    // A full or unavailable localStorage only costs the light check: the next load runs the migrator.
  }
}

/** Removes the stamp (a run that did not end verified): the next load runs the migrator. */
export function dropStamp(storageName) {
  writeStamp(storageName, '', null);
}
