// "Load sample data": fills localStorage the way years of the legacy app would have. The real
// generator is ferry_core::sample, exposed by the wasm bundle as `generateSample`; when the
// bundle lacks it, a small JavaScript fallback writes about 200 records, a few of them broken.

import { wasmSample } from './migration.js';

const WORDS = ['Fix', 'login', 'page', 'Write', 'release notes', 'Review', 'pull request', 'Update', 'billing', 'export',
  'Plan', 'sprint', 'Refactor', 'search', 'Call', 'customer', 'Migrate', 'database', 'Design', 'onboarding'];

function fallbackPairs(seed) {
  let s = seed >>> 0 || 1;
  const rnd = () => ((s = (s * 1664525 + 1013904223) >>> 0) / 2 ** 32);
  const pick = (a) => a[Math.floor(rnd() * a.length)];
  const iso = (ms) => new Date(ms).toISOString();
  const start = Date.UTC(2023, 0, 1);
  const tasks = [];
  for (let i = 0; i < 200; i++) {
    const created = start + Math.floor(rnd() * 700) * 86400000;
    const t = { id: crypto.randomUUID(), title: `${pick(WORDS)} ${pick(WORDS)}`, status: pick(['todo', 'in-progress', 'done']) };
    if (rnd() < 0.5) t.priority = pick(['low', 'medium', 'high', 'urgent']);
    if (rnd() < 0.3) t.tags = [pick(['frontend', 'backend', 'ops', 'design'])];
    t.createdAt = iso(created);
    if (rnd() < 0.6) t.updatedAt = iso(created + 86400000);
    tasks.push(t);
  }
  // A few records every old app version leaves behind: each must end in the quarantine.
  tasks.push({ id: crypto.randomUUID(), status: 'todo', createdAt: iso(start) });             // no title
  tasks.push({ id: crypto.randomUUID(), title: 'Archived', status: 'archived', createdAt: iso(start) });
  tasks.push({ id: crypto.randomUUID(), title: 'Bad date', status: 'done', createdAt: 'yesterday' });
  tasks.push({ id: crypto.randomUUID(), title: 'x'.repeat(600), status: 'todo', createdAt: iso(start) });
  tasks.push('not a task');
  const envs = ['production', 'staging', 'preview'].map((id, i) => ({
    id, name: id[0].toUpperCase() + id.slice(1), isActive: i < 2, createdAt: start + i * 86400000,
    config: { apiUrl: `https://api.${id}.taskboard.app/v1`, region: 'eu-west-1', githubToken: `ghp_${id}${'0'.repeat(30)}` },
  }));
  envs.push({ id: 'broken', config: {} }); // no name
  return [
    ['tasks', JSON.stringify(tasks)],
    ['environments', JSON.stringify(envs)],
    ['userPreferences', JSON.stringify({ theme: 'auto', language: 'en', fontSize: 14 })],
    ['formData:newTask', JSON.stringify({ fields: { title: 'Half-written task', priority: 'high' }, savedAt: Date.now() })],
    ['formData:feedback', '{"fields":{"message":"Love the new bo'], // a write cut short
    ['taskboard:lastRoute', '/tasks'],
    ['taskboard:onboardingStep', '3'],
    ['taskboard:boardLayout', JSON.stringify({ columns: ['todo', 'doing', 'done'], zoom: 1.25 })],
  ];
}

/**
 * Writes a sample into localStorage; resolves to `{ source, keys, bytes }`. Stops with a clear
 * error when the browser's quota is reached (the keys written so far stay).
 */
export async function loadSample({ seed, targetBytes }) {
  let source = 'wasm';
  let pairs = null;
  try { pairs = await wasmSample(seed, targetBytes, 0.02); } catch (e) { console.warn('generateSample failed:', e); }
  if (!pairs) { source = 'fallback'; pairs = fallbackPairs(seed); }
  let bytes = 0;
  for (const [key, value] of pairs) {
    try { localStorage.setItem(key, value); } catch (e) {
      throw new Error(`The browser's storage is full after ${bytes.toLocaleString()} bytes (${e.name}).`);
    }
    bytes += 2 * (key.length + value.length);
  }
  return { source, keys: pairs.length, bytes };
}
