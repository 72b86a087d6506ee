// "Data & sync": demo sign-in, the automatic migration on load and its messages. "Migrate my
// data" with its progress and report, the conflicts and the backups are Ferry's own
// <ferry-migrate> component (pkg/ferry-migrate.js), wired here to the demo's sign-in and
// messages. Migrator calls go through migration.js.

import { $, fmt, plural, bytes, announce, setBar } from './dom.js';
import * as ferry from './migration.js';
import '/pkg/ferry-migrate.js'; // defines <ferry-migrate>: a few KB, no wasm until it is shown
import { loadSample } from './sample.js';

const SESSION = 'taskboard-session'; // sessionStorage: the demo token lives as long as the tab
const STAGE = { inspect: 'Reading your data', validate: 'Checking records', backup: 'Making a backup',
  upload: 'Uploading', verify: 'Verifying', done: 'Done' };
const KIND_LABEL = { tasks: ['task', 'tasks'], environments: ['environment', 'environments'],
  preferences: ['preferences', 'preferences'], form_drafts: ['form draft', 'form drafts'], custom: ['setting', 'settings'] };
const SAVED = ['inserted', 'updated', 'unchanged', 'merged', 'kept_stored'];
const KIND_NAMES = { tasks: 'Tasks', environments: 'Environments', preferences: 'Preferences', form_drafts: 'Form drafts', custom: 'Settings' };

let ctx = null;
let busy = false;
let rerun = false; // an auto-run was asked for while another run was busy
// While a run is in flight in this tab, the status line follows the run: an inspection taken
// mid-run (or just before a second run starts) would contradict the progress bar.
let runText = '';
let autoRetries = null; // AbortController of the auto-run's background retries
const announced = new Set();
let listening = false; // the page's migrator tells this page the outcome of every run

// ---- sign-in and the token provider --------------------------------------------------------

const session = () => JSON.parse(sessionStorage.getItem(SESSION) ?? 'null');

async function requestToken(user) {
  const response = await fetch('/dev/token', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ user }) });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body?.error?.message ?? `Sign-in failed (${response.status}).`);
  sessionStorage.setItem(SESSION, JSON.stringify({ user: body.user, token: body.token, expiresAt: body.expires_at }));
  return body.token;
}

/** What the migrator calls for a bearer token; `refresh` after the server refused one. */
async function tokenProvider(refresh) {
  const s = session();
  if (!s) throw new Error('Not signed in.');
  const expired = s.expiresAt && Date.parse(s.expiresAt) < Date.now() + 60_000;
  return refresh || expired ? requestToken(s.user) : s.token;
}

/**
 * Ferry's <ferry-migrate>, given the token provider while a user is signed in (the same one as
 * the auto-run's, so both share the page's migrator).
 */
function ferryUi() {
  const el = $('ferry');
  const want = session() ? tokenProvider : null;
  if (el.getToken !== want) el.getToken = want;
  return el;
}

function showAccount() {
  const s = session();
  $('signin').hidden = !!s;
  $('signed-in').hidden = !s;
  $('user-name').textContent = s?.user ?? '';
  document.querySelector('.avatar').textContent = (s?.user ?? '?').slice(0, 1).toUpperCase();
  ferryUi();
  $('sync-state').textContent = s ? 'Checking…' : 'Sign in to save your data to your account.';
}

// ---- messages ------------------------------------------------------------------------------

function savedCount(report, kind) {
  const o = report.outcomes?.[kind] ?? {};
  return SAVED.reduce((n, k) => n + (o[k] ?? 0), 0);
}

function attentionCount(report) {
  return Object.values(report.outcomes ?? {}).reduce((n, o) => n + (o.quarantined ?? 0) + (o.conflict_queued ?? 0), 0);
}

/** "Your 1,234 tasks and 3 environments are now saved to your account. 2 records need your attention." */
export function summary(report) {
  const parts = ['tasks', 'environments'].map((k) => [k, savedCount(report, k)]).filter(([, n]) => n > 0)
    .map(([k, n]) => `${fmt(n)} ${KIND_LABEL[k][n === 1 ? 0 : 1]}`);
  const others = Object.keys(report.outcomes ?? {}).filter((k) => k !== 'tasks' && k !== 'environments')
    .reduce((n, k) => n + savedCount(report, k), 0);
  if (others) parts.push(plural(others, 'other item'));
  let text = parts.length
    ? `Your ${parts.slice(0, -1).join(', ')}${parts.length > 1 ? ' and ' : ''}${parts.at(-1)} ${parts.length === 1 && parts[0].startsWith('1 ') ? 'is' : 'are'} now saved to your account.`
    : 'Your data is saved to your account.';
  const attention = attentionCount(report);
  if (attention) text += ` ${plural(attention, 'record')} ${attention === 1 ? 'needs' : 'need'} your attention.`;
  return text;
}

function announceOutcome(report) {
  if (report?.status !== 'completed' || announced.has(report.migrationId)) return;
  announced.add(report.migrationId);
  announce(summary(report), attentionCount(report) ? 'warn' : 'ok');
  ferryUi().refresh(); // the run's backup and conflicts
  refreshState();
}

// ---- automatic run on load -----------------------------------------------------------------

// auto.js's autoMigrate does the work (spec, migrator, spec mismatch, retries while the server
// is unreachable); the page only draws its progress and results.
async function autoRun() {
  if (!session()) return;
  // Data that arrives while a run is busy (sample data loaded during the load-time run) gets a
  // run of its own as soon as that one ends.
  if (busy) { rerun = true; return; }
  rerun = false;
  document.documentElement.dataset.autoRun = 'busy'; // for tests and styles: a run is on
  autoRetries?.abort(); // a new auto-run replaces the background retries of the last one
  const retries = new AbortController();
  autoRetries = retries;
  busy = true;
  const bar = $('auto-bar');
  const onProgress = (p) => {
    // An unchanged browser answers from its fingerprints within the inspect stage: it never
    // shows anything and sends nothing. The bar appears only once there is work to do.
    if (p.stage === 'inspect') return;
    $('auto-sync').hidden = false;
    const text = `${STAGE[p.stage] ?? p.stage}: ${Math.round(p.percent)}%`;
    setBar(bar, p.percent, text);
    $('auto-sync-text').textContent = `Saving your data to your account… ${Math.round(p.percent)}%`;
    showRun(p);
  };
  const onResult = (result) => {
    if (retries.signal.aborted) return; // "Migrate my data" took over
    if (result.status === 'retrying') {
      $('auto-sync').hidden = false;
      $('auto-sync-text').textContent = 'Can’t reach the server right now. Your data is safe here; saving will resume by itself.';
      $('auto-bar').setAttribute('aria-valuetext', 'Waiting for the server');
      return;
    }
    $('auto-sync').hidden = true;
    if (result.status === 'failed') {
      announce(`Your data could not be saved to your account yet: ${result.error.message}. Use “Migrate my data” to try again.`, 'error');
    } else if (result.status === 'migrated') {
      announceOutcome(result.report);
      $('ferry').show(result.report);
    }
  };
  let result = null;
  try {
    // No inspect() first: it parses everything, while an auto run returns in milliseconds,
    // without a request, when nothing changed since the last migration.
    result = await ferry.autoMigrate(tokenProvider, { onProgress, onResult, signal: retries.signal });
  } finally {
    // Once the page has a migrator (anything but the light first step's "nothing to do"), it
    // also tells the outcome of runs other tabs finish. An unchanged load never loads the wasm.
    if (result && result.status !== 'nothing_to_do') listen();
    busy = false;
    // Only a run that had work to do re-reads the state: an unchanged load stays request-free.
    const ran = runText !== '';
    runText = '';
    if (ran || location.hash === '#data') refreshState();
    document.documentElement.dataset.autoRun = 'idle';
    if (rerun && !retries.signal.aborted) autoRun();
  }
}

function showState(inspection) {
  const kinds = inspection.kinds ?? [];
  const n = (k) => kinds.find((x) => x.kind === k)?.summary ?? {};
  const count = (k) => (n(k).valid ?? 0) + (n(k).repaired ?? 0);
  const last = inspection.lastFinished;
  const text = {
    not_started: `${plural(count('tasks'), 'task')} and ${plural(count('environments'), 'environment')} in this browser are not saved to your account yet.`,
    in_progress: 'A migration was interrupted; it resumes automatically.',
    done: `Everything is saved to your account${last ? ` (last on ${new Date(last.finishedAtMs).toLocaleString('en-GB')})` : ''}.`,
    changed: 'Some changes made in this browser are not saved to your account yet.',
  }[inspection.state] ?? '';
  $('sync-state').textContent = inspection.knownBytes || inspection.state !== 'not_started' ? text : 'There is no local data in this browser.';
}

function showRun(p) {
  runText = `Saving your data to your account… ${Math.round(p.percent)}%`;
  $('sync-state').textContent = runText;
}

async function refreshState() {
  if (!session()) return;
  if (busy) { if (runText) $('sync-state').textContent = runText; return; }
  let inspection;
  try { inspection = await ferry.inspect(tokenProvider); } catch { return; /* shown by the run */ }
  // A run may have started while inspect() was reading: its progress wins.
  if (!busy) showState(inspection);
}

// ---- start ---------------------------------------------------------------------------------

export function startSync(context) {
  ctx = context;
  showAccount();
  $('signin').addEventListener('submit', async (e) => {
    e.preventDefault();
    try { await requestToken($('signin-name').value.trim()); } catch (err) { announce(err.message, 'error'); return; }
    forgetMigrator();
    showAccount();
    announce(`Signed in as ${session().user}.`);
    autoRun();
  });
  $('signout').addEventListener('click', () => { sessionStorage.removeItem(SESSION); forgetMigrator(); showAccount(); announce('Signed out.'); });
  const ui = $('ferry');
  ui.kindLabels = KIND_NAMES;
  ui.addEventListener('ferry-done', (e) => {
    const report = e.detail;
    if (report.status === 'completed') announceOutcome(report);
    else announce(report.status === 'up_to_date' ? 'Everything is already saved to your account.' : 'There is nothing to migrate in this browser.', 'ok');
    refreshState();
  });
  ui.addEventListener('ferry-restored', (e) => {
    ctx.renderAll();
    announce(`Restored ${plural(e.detail.restored, 'key')} from the backup.`, 'ok');
    refreshState();
  });
  ui.addEventListener('ferry-resolved', () => announce('Your choice is saved.', 'ok'));
  ui.addEventListener('ferry-error', (e) => announce(e.detail?.message ?? String(e.detail), 'error'));
  $('sample').addEventListener('click', async () => {
    $('sample').disabled = true;
    const seed = Number(new URLSearchParams(location.search).get('seed') ?? Math.floor(Math.random() * 2 ** 31));
    try {
      const r = await loadSample({ seed, targetBytes: Number($('sample-size').value) });
      ctx.renderAll();
      announce(`Loaded ${plural(r.keys, 'key')} (${bytes(r.bytes)}) of sample data.`);
      autoRun();
    } catch (err) { announce(err.message, 'error'); }
    $('sample').disabled = false;
  });
  document.addEventListener('viewchange', (e) => { if (e.detail === 'data') { ferryUi().refresh(); refreshState(); } });
  if (session()) {
    document.documentElement.dataset.autoRun = 'pending';
    autoRun();
  }
}

/** Another user: the page's migrator goes, and its outcome listener with it. */
function forgetMigrator() {
  ferry.dropMigrator();
  listening = false;
}

async function listen() {
  if (listening) return;
  listening = true;
  try { await ferry.onOutcome(tokenProvider, announceOutcome); } catch { listening = false; /* the run reports its own errors */ }
}
