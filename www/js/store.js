// The legacy storage layer, kept exactly as the app wrote localStorage before it had a backend
// (specs/taskboard.json describes the layout): `tasks` and `environments` are JSON arrays,
// `userPreferences` one object, `formData:<form>` one draft per form and `taskboard:<x>`
// anything else. Reads are defensive: years of old app versions left odd records behind, and
// the app must show what it can without ever rewriting a value it could not read.

export const LEGACY_STATUSES = ['todo', 'in-progress', 'done'];
// Records written by newer builds use the target names; show them under the legacy ones.
const STATUS_ALIASES = { pending: 'todo', in_progress: 'in-progress', completed: 'done' };

/** `{ ok, value }`: `ok` is false when the key holds text that is not JSON (left untouched). */
function readJson(key, fallback) {
  const text = localStorage.getItem(key);
  if (text === null) return { ok: true, value: fallback };
  try { return { ok: true, value: JSON.parse(text) }; } catch { return { ok: false, value: fallback }; }
}

function readArray(key) {
  const { ok, value } = readJson(key, []);
  return Array.isArray(value) ? { ok, items: value } : { ok: false, items: [] };
}

export const tasks = {
  read: () => readArray('tasks'),
  write(items) { localStorage.setItem('tasks', JSON.stringify(items)); },
  /** The legacy status of any task record, for display. */
  status(t) { const s = t?.status; return STATUS_ALIASES[s] ?? (LEGACY_STATUSES.includes(s) ? s : 'todo'); },
  add(fields) {
    const { ok, items } = tasks.read();
    if (!ok) throw new Error('Your saved tasks could not be read, so nothing was changed.');
    const now = new Date().toISOString();
    const task = { id: crypto.randomUUID(), title: fields.title, status: 'todo' };
    if (fields.description) task.description = fields.description;
    if (fields.priority) task.priority = fields.priority;
    if (fields.tags?.length) task.tags = fields.tags;
    if (fields.dueDate) task.dueDate = fields.dueDate;
    task.createdAt = now;
    task.updatedAt = now;
    items.push(task);
    tasks.write(items);
    return task;
  },
  /** Changes the record at `index` (array positions are the handle: old ids may repeat). */
  update(index, change) {
    const { ok, items } = tasks.read();
    if (!ok || typeof items[index] !== 'object' || items[index] === null) return;
    Object.assign(items[index], change, { updatedAt: new Date().toISOString() });
    tasks.write(items);
  },
  remove(index) {
    const { ok, items } = tasks.read();
    if (!ok) return;
    items.splice(index, 1);
    tasks.write(items);
  },
};

export const environments = {
  read: () => readArray('environments'),
  add({ name, apiUrl, region, githubToken }) {
    const { ok, items } = environments.read();
    if (!ok) throw new Error('Your saved environments could not be read, so nothing was changed.');
    const slug = name.toLowerCase().normalize('NFKD').replace(/[^a-z0-9]+/g, '-').replace(/^-|-$/g, '') || 'env';
    let id = slug;
    for (let n = 2; items.some((e) => e?.id === id); n++) id = `${slug}-${n}`;
    const config = { apiUrl: apiUrl || `https://api.${id}.taskboard.app/v1`, region };
    if (githubToken) config.githubToken = githubToken;
    const now = Date.now();
    items.push({ id, name, config, isActive: true, createdAt: now, updatedAt: now });
    localStorage.setItem('environments', JSON.stringify(items));
  },
};

export const preferences = {
  read() {
    const { value } = readJson('userPreferences', {});
    return value && typeof value === 'object' && !Array.isArray(value) ? value : {};
  },
  set(change) {
    const { ok, value } = readJson('userPreferences', {});
    const prefs = ok && value && typeof value === 'object' && !Array.isArray(value) ? value : {};
    localStorage.setItem('userPreferences', JSON.stringify({ ...prefs, ...change }));
  },
};

export const drafts = {
  read(form) {
    const { value } = readJson(`formData:${form}`, null);
    return value?.fields && typeof value.fields === 'object' ? value.fields : null;
  },
  save(form, fields) { localStorage.setItem(`formData:${form}`, JSON.stringify({ fields, savedAt: Date.now() })); },
  clear(form) { localStorage.removeItem(`formData:${form}`); },
};

/** Custom keys under the app prefix, written raw as the legacy app did (not always JSON). */
export const custom = {
  get: (name) => localStorage.getItem(`taskboard:${name}`),
  set(name, raw) { if (localStorage.getItem(`taskboard:${name}`) !== raw) localStorage.setItem(`taskboard:${name}`, raw); },
};

/** Counts of the app's records, for the "your data" line. */
export function localSummary() {
  return { tasks: tasks.read().items.length, environments: environments.read().items.length, keys: localStorage.length };
}
