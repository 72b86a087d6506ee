// "Data & sync": demo sign-in, the automatic migration on load, the "Migrate my data" button
// with its progress and report, conflicts and backups. Migrator calls go through migration.js.

import { $, h, fmt, plural, bytes, duration, announce, setBar } from './dom.js';
import * as ferry from './migration.js';
import { loadSample } from './sample.js';

const SESSION = 'taskboard-session'; // sessionStorage: the demo token lives as long as the tab
const STAGE = { inspect: 'Reading your data', validate: 'Checking records', backup: 'Making a backup',
  upload: 'Uploading', verify: 'Verifying', done: 'Done' };
const KIND_LABEL = { tasks: ['task', 'tasks'], environments: ['environment', 'environments'],
  preferences: ['preferences', 'preferences'], form_drafts: ['form draft', 'form drafts'], custom: ['setting', 'settings'] };
const SAVED = ['inserted', 'updated', 'unchanged', 'merged', 'kept_stored'];

let ctx = null;
let busy = false;
let rerun = false; // an auto-run was asked for while another run was busy
// While a run is in flight in this tab, the status line follows the run: an inspection taken
// mid-run (or just before a second run starts) would contradict the progress bar.
let runText = '';
let autoRetries = null; // AbortController of the auto-run's background retries
const announced = new Set();

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

function showAccount() {
  const s = session();
  $('signin').hidden = !!s;
  $('signed-in').hidden = !s;
  $('user-name').textContent = s?.user ?? '';
  document.querySelector('.avatar').textContent = (s?.user ?? '?').slice(0, 1).toUpperCase();
  $('migrate').disabled = !s;
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
  refreshLists();
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
      showReport(result.report);
    }
  };
  try {
    // No inspect() first: it parses everything, while an auto run returns in milliseconds,
    // without a request, when nothing changed since the last migration.
    await ferry.autoMigrate(tokenProvider, { onProgress, onResult, signal: retries.signal });
  } finally {
    busy = false;
    // Only a run that had work to do re-reads the state: an unchanged load stays request-free.
    const ran = runText !== '';
    runText = '';
    if (ran || location.hash === '#data') refreshState();
    document.documentElement.dataset.autoRun = 'idle';
    if (rerun && !retries.signal.aborted) autoRun();
  }
}

// ---- "Migrate my data" ---------------------------------------------------------------------

async function manualRun() {
  if (busy) { announce('A migration is already running in this tab.'); return; }
  busy = true;
  autoRetries?.abort();
  $('auto-sync').hidden = true;
  $('migrate').disabled = true;
  $('run').hidden = false;
  $('report').hidden = true;
  const bar = $('run-bar');
  const onProgress = (p) => {
    const records = p.recordsTotal ? ` · ${fmt(p.recordsDone)} of ${plural(p.recordsTotal, 'record')}` : '';
    const eta = p.stage === 'upload' ? ` · ${duration(p.etaMs)}` : '';
    const text = `${STAGE[p.stage] ?? p.stage} — ${Math.round(p.percent)}%${records}${eta}`;
    $('run-stage').textContent = text;
    setBar(bar, p.percent, text);
    showRun(p);
  };
  onProgress({ stage: 'inspect', percent: 0, recordsDone: 0, recordsTotal: 0 });
  try {
    const report = await ferry.run(tokenProvider, { mode: 'manual', onProgress });
    onProgress({ stage: 'done', percent: 100, recordsDone: report.recordsSent, recordsTotal: report.recordsToSend });
    showReport(report);
    if (report.status === 'completed') announceOutcome(report);
    else announce(report.status === 'up_to_date' ? 'Everything is already saved to your account.' : 'There is nothing to migrate in this browser.', 'ok');
  } catch (e) {
    $('run-stage').textContent = `Stopped: ${e.message ?? e}`;
    announce('The migration stopped. Nothing is lost: your data is still in this browser. Try again when you are ready.', 'error');
  } finally {
    busy = false;
    runText = '';
    $('migrate').disabled = !session();
    refreshState();
  }
}

function showReport(report) {
  const box = $('report');
  const columns = ['inserted', 'updated', 'unchanged', 'merged', 'kept_stored', 'conflict_queued', 'quarantined'];
  const heads = ['New', 'Updated', 'Unchanged', 'Merged', 'Kept yours', 'Conflicts', 'Quarantined'];
  const order = Object.keys(KIND_LABEL);
  const kinds = Object.keys(report.outcomes ?? {}).sort((a, b) => (order.indexOf(a) + 1 || 99) - (order.indexOf(b) + 1 || 99));
  const rows = kinds.map((k) => h('tr', { 'data-kind': k }, h('th', { scope: 'row' }, KIND_LABEL[k]?.[1] ?? k),
    columns.map((c) => h('td', { 'data-outcome': c }, fmt(report.outcomes[k][c] ?? 0)))));
  const quarantined = report.quarantined ?? [];
  // replaceChildren writes a null argument as the text "null": leave absent parts out.
  box.replaceChildren(...[
    h('h3', {}, report.status === 'completed' ? 'Migration report' : 'Nothing new to send'),
    h('p', { class: 'muted' }, `${plural(report.recordsSent ?? 0, 'record')} sent in ${plural(report.batchesSent ?? 0, 'batch', 'batches')}`,
      report.resumed ? ' (resumed an interrupted migration)' : '', ` · ${((report.durationMs ?? 0) / 1000).toFixed(1)} s`,
      report.retries ? ` · ${plural(report.retries, 'retry', 'retries')}` : ''),
    rows.length ? h('div', { class: 'scroll' }, h('table', { class: 'outcomes' },
      h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Kind'), heads.map((x) => h('th', { scope: 'col' }, x)))),
      h('tbody', {}, rows))) : null,
    report.backupId ? h('p', {}, 'Backup made before sending: ', h('code', {}, report.backupId), ' (see Backups below).') : null,
    quarantined.length ? h('details', {}, h('summary', {}, `${plural(quarantined.length, 'record')} could not be migrated and ${quarantined.length === 1 ? 'was' : 'were'} kept aside`),
      h('ul', { class: 'reasons' }, quarantined.slice(0, 200).map((q) => h('li', {}, h('strong', {}, KIND_LABEL[q.kind]?.[0] ?? q.kind), ': ', (q.reasons ?? []).join('; '))))) : null,
    ...(report.warnings ?? []).map((w) => h('p', { class: 'alert' }, w)),
  ].filter((part) => part !== null));
  box.hidden = false;
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

// ---- conflicts -----------------------------------------------------------------------------

async function refreshConflicts() {
  let list = [];
  try { list = await ferry.conflicts(tokenProvider); } catch (e) { $('conflicts-empty').textContent = `Conflicts could not be loaded: ${e.message}`; return; }
  $('conflicts-empty').hidden = list.length > 0;
  $('conflicts').replaceChildren(...list.map(conflictItem));
}

function conflictItem(c) {
  const editor = h('textarea', { rows: 6, 'aria-label': 'Edited version (JSON)', spellcheck: false });
  editor.value = JSON.stringify(c.incoming, null, 2);
  const editBox = h('div', { class: 'edit', hidden: true }, editor,
    h('button', { type: 'button', class: 'btn primary', onclick: () => {
      let value;
      try { value = JSON.parse(editor.value); } catch { announce('The edited version is not valid JSON.', 'error'); return; }
      choose('edited', value);
    } }, 'Save edited version'));
  const item = h('li', { class: 'card conflict', 'data-conflict': c.id },
    h('h3', {}, `${KIND_LABEL[c.kind]?.[0] ?? c.kind}: `, h('span', {}, String(c.stored?.form_name ?? c.stored?.name ?? c.row_id))),
    h('div', { class: 'sides' },
      h('figure', {}, h('figcaption', {}, 'Saved in your account'), h('pre', {}, JSON.stringify(c.stored, null, 2))),
      h('figure', {}, h('figcaption', {}, 'In this browser'), h('pre', {}, JSON.stringify(c.incoming, null, 2)))),
    h('div', { class: 'actions' },
      h('button', { type: 'button', class: 'btn', onclick: () => choose('stored') }, 'Keep account version'),
      h('button', { type: 'button', class: 'btn', onclick: () => choose('incoming') }, 'Use this browser’s version'),
      h('button', { type: 'button', class: 'btn link', onclick: () => { editBox.hidden = false; editor.focus(); } }, 'Edit…')),
    editBox);
  async function choose(choice, value) {
    try {
      await ferry.resolve(tokenProvider, c.id, choice, value);
      item.remove();
      announce('Your choice is saved.', 'ok');
      $('conflicts-empty').hidden = $('conflicts').children.length > 0;
    } catch (e) { announce(`Could not save your choice: ${e.message}`, 'error'); }
  }
  return item;
}

// ---- backups -------------------------------------------------------------------------------

async function refreshBackups() {
  let list = [];
  try { list = await ferry.backups(tokenProvider); } catch (e) { $('backups').replaceChildren(h('tr', {}, h('td', { colSpan: 4 }, `Backups could not be listed: ${e.message}`))); return; }
  $('backups').replaceChildren(...list.map(backupRow));
  if (!list.length) $('backups').append(h('tr', {}, h('td', { colSpan: 4, class: 'muted' }, 'No backups yet: one is made before your data is first sent.')));
}

function backupRow(b) {
  const when = new Date(b.createdAtMs).toLocaleString('en-GB', { dateStyle: 'medium', timeStyle: 'short' });
  const pass = h('input', { type: 'password', minLength: 8, placeholder: 'passphrase (8+ characters)', 'aria-label': `Passphrase for the backup of ${when}` });
  const download = h('form', { class: 'inline-form', hidden: true, onsubmit: async (e) => {
    e.preventDefault();
    if (pass.value.length < 8) { announce('Use a passphrase of at least 8 characters.', 'error'); return; }
    try {
      const blob = await ferry.exportBackup(tokenProvider, b.id, pass.value);
      const a = h('a', { href: URL.createObjectURL(blob), download: `taskboard-backup-${new Date(b.createdAtMs).toISOString().slice(0, 10)}.ferry` });
      document.body.append(a); a.click(); a.remove();
      setTimeout(() => URL.revokeObjectURL(a.href), 10_000);
      pass.value = ''; download.hidden = true;
      announce('Backup downloaded. Keep the passphrase: it is the only way to open the file.', 'ok');
    } catch (err) { announce(`Could not export the backup: ${err.message}`, 'error'); }
  } }, pass, h('button', { class: 'btn primary' }, 'Download'));
  let armed = false;
  const restoreBtn = h('button', { type: 'button', class: 'btn', onclick: async (e) => {
    if (!armed) { armed = true; e.target.textContent = 'Confirm restore'; e.target.classList.add('danger'); return; }
    try {
      const { restored } = await ferry.restore(tokenProvider, b.id);
      ctx.renderAll();
      announce(`Restored ${plural(restored, 'key')} from the backup of ${when}.`, 'ok');
      refreshState();
    } catch (err) { announce(`Could not restore: ${err.message}`, 'error'); }
    armed = false; e.target.textContent = 'Restore'; e.target.classList.remove('danger');
  } }, 'Restore');
  return h('tr', { 'data-backup': b.id },
    h('td', {}, when), h('td', {}, bytes(b.byteSize ?? b.fileSize ?? 0)), h('td', {}, fmt(b.keyCount)),
    h('td', { class: 'row-actions' },
      h('button', { type: 'button', class: 'btn', 'aria-expanded': 'false', onclick: (e) => {
        download.hidden = !download.hidden; e.target.setAttribute('aria-expanded', String(!download.hidden)); if (!download.hidden) pass.focus();
      } }, 'Download…'), restoreBtn, download));
}

function refreshLists() { if (session()) { refreshConflicts(); refreshBackups(); } }

// ---- start ---------------------------------------------------------------------------------

export function startSync(context) {
  ctx = context;
  showAccount();
  $('signin').addEventListener('submit', async (e) => {
    e.preventDefault();
    try { await requestToken($('signin-name').value.trim()); } catch (err) { announce(err.message, 'error'); return; }
    ferry.dropMigrator();
    showAccount();
    announce(`Signed in as ${session().user}.`);
    await listen();
    autoRun();
  });
  $('signout').addEventListener('click', () => { sessionStorage.removeItem(SESSION); ferry.dropMigrator(); showAccount(); announce('Signed out.'); });
  $('migrate').addEventListener('click', manualRun);
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
  document.addEventListener('viewchange', (e) => { if (e.detail === 'data') { refreshLists(); refreshState(); } });
  if (session()) {
    document.documentElement.dataset.autoRun = 'pending';
    listen().then(autoRun);
  }
}

async function listen() {
  try { await ferry.onOutcome(tokenProvider, announceOutcome); } catch { /* the run reports its own errors */ }
}
