// "Load sample data": fills localStorage the way years of the legacy app would have. The data
// comes from Ferry's one seeded generator (the ferry-sample crate), which the ingest server
// hands out in dev mode only (GET /dev/sample): demo data is not part of the migrator's bundle.
// The browser benchmarks (bench/page.js) and the end-to-end tests load samples through here too.

/**
 * The `[key, value]` pairs of a seeded sample. `JSON.parse` turns the answer's `\ud800`-style
 * escapes back into lone surrogates (and `\u0000` into NUL), so every string is exactly what
 * the generator wrote.
 */
export async function fetchSample({ app = 'taskboard', seed, targetBytes, invalidFraction = 0.02 }) {
  const query = new URLSearchParams({ app, seed: String(seed), bytes: String(targetBytes), faults: String(invalidFraction) });
  const response = await fetch(`/dev/sample?${query}`);
  if (!response.ok) {
    const message = await response.json().then((b) => b?.error?.message, () => null);
    throw new Error(`Sample data comes from the server in dev mode; GET /dev/sample answered ${response.status}${message ? `: ${message}` : ''}.`);
  }
  return response.json();
}

/**
 * Writes a sample into localStorage; resolves to `{ keys, bytes }`. Stops with a clear error
 * when the browser's quota is reached (the keys written so far stay).
 */
export async function loadSample({ seed, targetBytes }) {
  const pairs = await fetchSample({ seed, targetBytes });
  let bytes = 0;
  for (const [key, value] of pairs) {
    try { localStorage.setItem(key, value); } catch (e) {
      throw new Error(`The browser's storage is full after ${bytes.toLocaleString()} bytes (${e.name}).`);
    }
    bytes += 2 * (key.length + value.length);
  }
  return { keys: pairs.length, bytes };
}
