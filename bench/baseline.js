// The JavaScript baseline of the browser-pipeline benchmark (issue 6, item 1): what a good
// TypeScript team would write by hand to move the Taskboard's localStorage to a backend, doing the
// work Ferry's wasm pipeline does, so the two can be timed side by side on the same data.
//
// It reads every localStorage key, sorts keys into the kinds of specs/taskboard.json, JSON.parses
// each value, validates and transforms every record with Zod schemas that mirror the spec (legacy
// enum mapping, defaults, ISO 8601 and epoch timestamps, lengths, tags), derives the target ids
// (legacy UUIDs kept, anything else UUID v5 under the app's namespace, as Ferry does), drops exact
// duplicates, and JSON.stringifies batches bounded like Ferry's (2,000 records / 1 MiB).
//
// It is written to be fast, not to look slow: one pass, no per-record closures made in the loop,
// schemas built once, a synchronous SHA-1 for the few UUID v5 ids. It does NOT do what a team would
// usually skip, and Ferry does: the lossless string rule (lone surrogates, NUL), content hashes for
// exactly-once verification (optional here: `hashes: true` adds SHA-256 per record via WebCrypto,
// the idiomatic browser way), or quoting the offending value in every rejection message. The
// benchmark reports both variants so the comparison is not flattering to Ferry.
//
// Runs in the browser (ES module). Zod is imported by the page and passed in, so this file has no
// import map to care about.

/** Batch bounds, as Ferry's defaults. */
export const LIMITS = { maxRecords: 2000, maxBytes: 1024 * 1024 };

// ---------------------------------------------------------------------------------------------
// Ids: UUID v5 (RFC 4122, SHA-1) with a small synchronous SHA-1, like the `uuid` package's
// browser build. Ferry's namespace: UUID v5 of the app name under Ferry's fixed namespace.
// ---------------------------------------------------------------------------------------------

const FERRY_NAMESPACE = '6f1ec3a2-5b7d-4e0f-9a84-1c2d3e4f5a6b';
const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const encoder = new TextEncoder();
const HEX = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, '0'));
const W = new Uint32Array(80);

function sha1(bytes) {
  const len = bytes.length;
  const words = ((len + 8) >> 6) + 1;
  const m = new Uint32Array(words * 16);
  for (let i = 0; i < len; i++) m[i >> 2] |= bytes[i] << (24 - (i & 3) * 8);
  m[len >> 2] |= 0x80 << (24 - (len & 3) * 8);
  m[words * 16 - 1] = len * 8;
  let h0 = 0x67452301, h1 = 0xefcdab89, h2 = 0x98badcfe, h3 = 0x10325476, h4 = 0xc3d2e1f0;
  for (let o = 0; o < m.length; o += 16) {
    for (let t = 0; t < 16; t++) W[t] = m[o + t];
    for (let t = 16; t < 80; t++) { const x = W[t - 3] ^ W[t - 8] ^ W[t - 14] ^ W[t - 16]; W[t] = (x << 1) | (x >>> 31); }
    let a = h0, b = h1, c = h2, d = h3, e = h4;
    for (let t = 0; t < 80; t++) {
      const f = t < 20 ? ((b & c) | (~b & d)) + 0x5a827999 : t < 40 ? (b ^ c ^ d) + 0x6ed9eba1
        : t < 60 ? ((b & c) | (b & d) | (c & d)) + 0x8f1bbcdc : (b ^ c ^ d) + 0xca62c1d6;
      const tmp = (((a << 5) | (a >>> 27)) + f + e + W[t]) | 0;
      e = d; d = c; c = (b << 30) | (b >>> 2); b = a; a = tmp;
    }
    h0 = (h0 + a) | 0; h1 = (h1 + b) | 0; h2 = (h2 + c) | 0; h3 = (h3 + d) | 0; h4 = (h4 + e) | 0;
  }
  const out = new Uint8Array(20);
  [h0, h1, h2, h3, h4].forEach((h, i) => { out[i * 4] = h >>> 24; out[i * 4 + 1] = h >>> 16; out[i * 4 + 2] = h >>> 8; out[i * 4 + 3] = h; });
  return out;
}

const uuidBytes = (u) => Uint8Array.from(u.replace(/-/g, '').match(/../g), (h) => parseInt(h, 16));

function uuidv5(nsBytes, nameBytes) {
  const input = new Uint8Array(16 + nameBytes.length);
  input.set(nsBytes);
  input.set(nameBytes, 16);
  const h = sha1(input);
  h[6] = (h[6] & 0x0f) | 0x50;
  h[8] = (h[8] & 0x3f) | 0x80;
  let s = '';
  for (let i = 0; i < 16; i++) { s += HEX[h[i]]; if (i === 3 || i === 5 || i === 7 || i === 9) s += '-'; }
  return s;
}

const APP_NAMESPACE = uuidBytes(uuidv5(uuidBytes(FERRY_NAMESPACE), encoder.encode('taskboard')));

/** Ferry's id rule for global ids: a legacy UUID is kept, anything else is UUID v5 of kind NUL legacy. */
function targetId(kind, legacy) {
  if (legacy.length === 36 && UUID_RE.test(legacy)) return legacy.toLowerCase();
  return uuidv5(APP_NAMESPACE, encoder.encode(`${kind}\u0000${legacy}`));
}

// ---------------------------------------------------------------------------------------------
// Schemas: specs/taskboard.json in Zod.
// ---------------------------------------------------------------------------------------------

const ISO_RE = /^(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?)?(Z|[+-]\d{2}:?\d{2})?$/;

/** ISO 8601 into epoch ms, years 0001–9999, the calendar date checked; NaN when it is not one. */
function isoToMs(s) {
  const m = ISO_RE.exec(s);
  if (m === null) return NaN;
  const y = +m[1], mo = +m[2], d = +m[3];
  if (y < 1 || mo < 1 || mo > 12 || d < 1) return NaN;
  const date = new Date(Date.UTC(2000, mo - 1, d));
  date.setUTCFullYear(y);
  if (date.getUTCDate() !== d) return NaN;
  const ms = Date.parse(m[4] === undefined ? `${s.slice(0, 10)}T00:00:00Z` : m[8] === undefined ? `${s}Z` : s);
  return Number.isNaN(ms) && y < 1000 ? date.getTime() : ms;
}

const MIN_MS = -62135596800000; // 0001-01-01
const MAX_MS = 253402300799999; // 9999-12-31T23:59:59.999

export function makeSchemas(z, migratedAtMs) {
  const iso = z.string().transform((s, ctx) => {
    const ms = isoToMs(s);
    if (Number.isNaN(ms)) { ctx.addIssue({ code: 'custom', message: `not an ISO 8601 timestamp: ${JSON.stringify(s.slice(0, 40))}` }); return z.NEVER; }
    return ms;
  });
  const epochMs = z.number().refine((n) => Number.isFinite(n) && n >= MIN_MS && n <= MAX_MS, 'epoch ms out of range');
  const isoOrEpoch = z.union([epochMs, iso]);
  const tag = z.string().min(1).max(64);

  const task = z.object({
    id: z.string().min(1),
    title: z.string().min(1).max(500),
    status: z.enum(['pending', 'in_progress', 'completed', 'todo', 'in-progress', 'done'])
      .transform((s) => TASK_STATUS[s]),
    description: z.string().max(20000).optional(),
    priority: z.enum(['low', 'medium', 'high', 'urgent']).optional(),
    tags: z.array(tag).max(50).optional(),
    dueDate: iso.optional(),
    createdAt: iso,
    updatedAt: iso.nullish(),
  }).transform((t) => ({
    legacy_id: t.id, title: t.title, status: t.status, description: t.description ?? null,
    priority: t.priority ?? null, tags: t.tags ?? null, due_date: t.dueDate ?? null,
    created_at: t.createdAt, updated_at: t.updatedAt ?? t.createdAt,
  }));

  const environment = z.object({
    id: z.string().min(1),
    name: z.string().min(1).max(200),
    description: z.string().max(2000).optional(),
    config: z.unknown().refine((v) => v !== undefined && v !== null, 'config is required'),
    isActive: z.boolean().default(true),
    createdAt: isoOrEpoch.optional(),
    updatedAt: isoOrEpoch.optional(),
  }).transform((e) => ({
    legacy_id: e.id, name: e.name, description: e.description ?? null, config: e.config,
    is_active: e.isActive, created_at: e.createdAt ?? migratedAtMs, updated_at: e.updatedAt ?? migratedAtMs,
    schema_version: 2,
  }));

  const preferences = z.looseObject({
    theme: z.enum(['light', 'dark', 'system', 'auto']).transform((t) => (t === 'auto' ? 'system' : t)).default('system'),
    language: z.string().regex(/^[a-z]{2}(-[A-Z]{2})?$/).default('en'),
  });

  const formDraft = z.looseObject({ savedAt: epochMs.optional() });
  return { task, environment, preferences, formDraft, formName: z.string().min(1).max(200) };
}

const TASK_STATUS = { pending: 'pending', in_progress: 'in_progress', completed: 'completed', todo: 'pending', 'in-progress': 'in_progress', done: 'completed' };

// ---------------------------------------------------------------------------------------------
// The migration.
// ---------------------------------------------------------------------------------------------

const reasonsOf = (error) => error.issues.map((i) => `${i.path.join('.') || '(record)'}: ${i.message}`);

/** Which kind a key belongs to (the spec's sources), or null. */
function kindOf(key) {
  if (key === 'tasks') return 'tasks';
  if (key === 'environments') return 'environments';
  if (key === 'userPreferences') return 'preferences';
  if (key.startsWith('formData:')) return 'form_drafts';
  if (key === 'taskboard:lastRoute') return null; // the spec's `ignore`
  if (key.startsWith('taskboard:')) return 'custom';
  return null;
}

/**
 * Migrates `storage` (a Storage, or anything with `length`, `key(i)`, `getItem(k)`): returns the
 * encoded batches and counts. `z` is Zod; `hashes` adds a SHA-256 content hash per record
 * (WebCrypto, so the function is async either way).
 */
export async function migrate(storage, { z, schemas, migratedAtMs, limits = LIMITS, hashes = false }) {
  const s = schemas ?? makeSchemas(z, migratedAtMs);
  const records = [];
  const rejected = [];
  const counts = { valid: 0, rejected: 0, duplicates: 0, unknownKeys: 0, bytes: 0 };
  const seen = new Map(); // `${kind}\u0000${id}` → JSON of the row, for duplicates

  const accept = (kind, key, at, legacy, row) => {
    const id = targetId(kind, legacy);
    const dedupe = `${kind}\u0000${id}`;
    const json = JSON.stringify(row);
    const before = seen.get(dedupe);
    if (before !== undefined) {
      if (before === json) { counts.duplicates++; return; }
      rejected.push({ kind, key, at, raw: row, reasons: [`duplicate id ${legacy} with different content`] });
      counts.rejected++;
      return;
    }
    seen.set(dedupe, json);
    row.id = id;
    records.push({ kind, key, at, id, row });
    counts.valid++;
  };
  const reject = (kind, key, at, raw, reasons) => { rejected.push({ kind, key, at, raw, reasons }); counts.rejected++; };

  const n = storage.length;
  for (let i = 0; i < n; i++) {
    const key = storage.key(i);
    const text = storage.getItem(key);
    counts.bytes += 2 * (key.length + text.length);
    const kind = kindOf(key);
    if (kind === null) { counts.unknownKeys++; continue; }
    let value;
    try { value = JSON.parse(text); } catch (e) { reject(kind, key, null, text, [`not JSON: ${e.message}`]); continue; }

    if (kind === 'tasks' || kind === 'environments') {
      if (!Array.isArray(value)) { reject(kind, key, null, text, ['expected an array']); continue; }
      const schema = kind === 'tasks' ? s.task : s.environment;
      for (let at = 0; at < value.length; at++) {
        const item = value[at];
        const r = schema.safeParse(item);
        if (r.success) accept(kind, key, at, r.data.legacy_id, r.data);
        else reject(kind, key, at, item, reasonsOf(r.error));
      }
    } else if (kind === 'preferences') {
      const r = s.preferences.safeParse(value);
      if (r.success) accept(kind, key, null, '', { theme: r.data.theme, language: r.data.language, preferences: value, updated_at: migratedAtMs });
      else reject(kind, key, null, value, reasonsOf(r.error));
    } else if (kind === 'form_drafts') {
      const name = key.slice('formData:'.length);
      const nameOk = s.formName.safeParse(name);
      const r = s.formDraft.safeParse(value);
      if (nameOk.success && r.success) accept(kind, key, null, name, { form_name: name, data: value, updated_at: r.data.savedAt ?? migratedAtMs });
      else reject(kind, key, null, value, [...(nameOk.success ? [] : reasonsOf(nameOk.error)), ...(r.success ? [] : reasonsOf(r.error))]);
    } else {
      accept(kind, key, null, key, { key, value, updated_at: migratedAtMs });
    }
  }

  if (hashes) {
    const all = [...records, ...rejected];
    const digests = await Promise.all(all.map((r) => crypto.subtle.digest('SHA-256', encoder.encode(JSON.stringify(r.row ?? r.raw)))));
    for (let i = 0; i < all.length; i++) {
      const d = new Uint8Array(digests[i], 0, 16);
      let h = '';
      for (let j = 0; j < 16; j++) h += HEX[d[j]];
      all[i].hash = h;
    }
  }

  const batches = encodeBatches(records, rejected, limits);
  return { batches, counts, records: records.length, rejected: rejected.length };
}

/** JSON.stringify of batches bounded by records and bytes (items stringified once, then joined). */
export function encodeBatches(records, rejected, { maxRecords, maxBytes }) {
  const out = [];
  let recs = [], rejs = [], bytes = 0, count = 0, sequence = 0;
  const flush = () => {
    if (count === 0) return;
    const header = JSON.stringify({ app: 'taskboard', spec_version: '2026.11', sequence: sequence++ });
    out.push(`{"header":${header},"records":[${recs.join(',')}],"rejected":[${rejs.join(',')}]}`);
    recs = []; rejs = []; bytes = 0; count = 0;
  };
  const push = (list, item) => {
    const text = JSON.stringify(item);
    if (count > 0 && (count >= maxRecords || 200 + bytes + text.length + 1 > maxBytes)) flush();
    list === 0 ? recs.push(text) : rejs.push(text);
    bytes += text.length + 1;
    count++;
  };
  for (const r of records) push(0, r);
  for (const r of rejected) push(1, r);
  flush();
  return out;
}
