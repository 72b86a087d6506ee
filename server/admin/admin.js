// The operator's fleet dashboard. Every value from the server is inserted as text
// (textContent, attributes set one by one): no markup is ever built from data.

import { trendChart, fillHours } from '/admin/chart.js';

const TOKEN_KEY = 'ferry-operator-token';
const $ = (id) => document.getElementById(id);

/** An element with attributes and children (strings become text nodes). */
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'dataset') Object.assign(node.dataset, v);
    else node.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c ?? '')));
  return node;
}

/** Gives every body cell of `table` its column's name (`data-label`), which narrow screens show. */
function labelCells(table) {
  const names = [...table.tHead.rows[0].cells].map((c) => c.textContent);
  for (const row of table.tBodies[0].rows) {
    if (row.cells.length !== names.length) continue;
    [...row.cells].forEach((c, i) => { c.dataset.label = names[i]; });
  }
}

const fmt = (n) => Number(n ?? 0).toLocaleString('en');
const plural = (n, word) => `${fmt(n)} ${word}${Number(n) === 1 ? '' : 's'}`;
const when = (t) => (t ? t.replace('T', ' ').replace(/\.\d+Z$|Z$/, ' UTC') : '—');
const STATES = [
  ['started', 'Started'], ['verified', 'Verified'], ['in_progress', 'In progress'], ['stalled', 'Stalled'], ['rolled_back', 'Rolled back'],
];
const STATE_NAME = Object.fromEntries(STATES);
const RUN_STATE = { running: 'In progress', abandoned: 'Stalled', verified: 'Verified', rolled_back: 'Rolled back' };

function say(text, kind = 'info') {
  const box = $('status');
  box.textContent = text;
  box.dataset.kind = kind;
}

class ApiError extends Error {
  constructor(status, body) {
    super(body?.error?.message ?? `HTTP ${status}`);
    this.status = status;
    this.code = body?.error?.code;
    this.requestId = body?.error?.request_id;
  }
}

async function api(path, options = {}) {
  const token = sessionStorage.getItem(TOKEN_KEY);
  const headers = { Authorization: `Bearer ${token}`, ...(options.body ? { 'Content-Type': 'application/json' } : {}) };
  const response = await fetch(path, { ...options, headers });
  let body = null;
  try { body = await response.json(); } catch { /* not JSON */ }
  if (!response.ok) throw new ApiError(response.status, body);
  return body;
}

function failed(error) {
  if (error instanceof ApiError && (error.status === 401 || error.status === 403)) {
    sessionStorage.removeItem(TOKEN_KEY);
    showSignedIn(false);
  }
  const id = error.requestId ? ` (request ${error.requestId})` : '';
  say(`${error.message}${id}`, 'error');
}

function showSignedIn(on) {
  $('signin').hidden = on;
  $('signed-in').hidden = !on;
  $('dashboard').hidden = !on;
  document.body.dataset.signedIn = on ? 'yes' : 'no';
}

// ---- The summary -------------------------------------------------------------------------

let lastHours = [];

/** The chart at the width of its box, so its text stays legible from 375 px up. */
function drawTrend() {
  const box = $('trend');
  const width = Math.max(300, Math.min(1100, Math.round(box.clientWidth || 720)));
  box.replaceChildren(trendChart(fillHours(lastHours), { width, height: width < 600 ? 200 : 240 }));
}

function renderSummary(s) {
  const states = $('states');
  states.replaceChildren();
  for (const [key, name] of STATES) {
    states.append(el('div', { class: `card state-${key}` }, el('dt', {}, name), el('dd', { dataset: { state: key } }, fmt(s.users[key]))));
  }
  const hours = Math.round(s.stalled_after_secs / 3600);
  $('stalled-note').textContent = `Stalled: a running migration with no batch for ${hours} h. A user's state is their latest migration's.`;

  lastHours = s.hours;
  drawTrend();

  const kinds = $('kinds').tBodies[0];
  kinds.replaceChildren();
  if (!s.kinds.length) kinds.append(el('tr', {}, el('td', { colspan: 5 }, 'No records received yet.')));
  for (const k of s.kinds) {
    const outcomes = Object.entries(k.outcomes).map(([o, n]) => `${o.replaceAll('_', ' ')} ${fmt(n)}`).join(', ') || '—';
    kinds.append(el('tr', { dataset: { kind: k.kind } },
      el('th', { scope: 'row' }, k.kind),
      el('td', { dataset: { col: 'received' }, class: 'num' }, fmt(k.received)),
      el('td', { dataset: { col: 'outcomes' } }, outcomes),
      el('td', { dataset: { col: 'quarantined' }, class: 'num' }, fmt(k.quarantined)),
      el('td', { dataset: { col: 'conflicts' }, class: 'num' }, fmt(k.conflicts_open))));
  }

  labelCells($('kinds'));

  const rejections = $('rejections').tBodies[0];
  rejections.replaceChildren();
  if (!s.rejections.length) rejections.append(el('tr', {}, el('td', { colspan: 3 }, 'Nothing quarantined.')));
  for (const r of s.rejections) {
    rejections.append(el('tr', { dataset: { kind: r.kind, field: r.field ?? '' } },
      el('th', { scope: 'row' }, `${r.kind} · ${r.field ?? '(record)'}`),
      el('td', { class: 'num', dataset: { col: 'records' } }, fmt(r.records)),
      el('td', { class: 'example' }, r.example)));
  }
  labelCells($('rejections'));
  const versions = $('versions').tBodies[0];
  versions.replaceChildren();
  if (!s.spec_versions.length) versions.append(el('tr', {}, el('td', { colspan: 4 }, 'No migrations yet.')));
  for (const v of s.spec_versions) {
    versions.append(el('tr', {},
      el('td', {}, v.app ?? '(not recorded)'), el('td', {}, v.version ?? '—'),
      el('td', { class: 'num' }, fmt(v.users)), el('td', { class: 'num' }, fmt(v.running))));
  }
}

// ---- The user list -----------------------------------------------------------------------

let nextAfter = null;

async function loadUsers(append = false) {
  const state = $('state').value;
  const params = new URLSearchParams({ limit: '50' });
  if (state) params.set('state', state);
  if (append && nextAfter) params.set('after', nextAfter);
  const page = await api(`/admin/api/users?${params}`);
  const body = $('users').tBodies[0];
  if (!append) body.replaceChildren();
  for (const u of page.users) {
    const open = el('button', { type: 'button', class: 'link', title: u.user_id, 'aria-label': `Open user ${u.user_id}` },
      el('code', { class: 'id-full' }, u.user_id), el('code', { class: 'id-short', 'aria-hidden': 'true' }, `${u.user_id.slice(0, 8)}…`));
    open.addEventListener('click', () => openUser(u.user_id).catch(failed));
    body.append(el('tr', { dataset: { user: u.user_id } },
      el('td', {}, open),
      el('td', {}, el('span', { class: `pill state-${u.state}` }, STATE_NAME[u.state] ?? u.state)),
      el('td', { class: 'num' }, fmt(u.received)),
      el('td', { class: 'num' }, fmt(u.quarantined)),
      el('td', { class: 'num' }, fmt(u.conflicts_open)),
      el('td', {}, when(u.last_batch_at))));
  }
  if (!body.rows.length) body.append(el('tr', {}, el('td', { colspan: 6 }, 'No user in this state.')));
  labelCells($('users'));
  nextAfter = page.next_after;
  $('more').hidden = !nextAfter;
}

// ---- A user's drill-down -----------------------------------------------------------------

let shownUser = null;

function textBlock(text) {
  return el('pre', { class: 'raw' }, text);
}

async function openUser(userId) {
  const d = await api(`/admin/api/users/${encodeURIComponent(userId)}`);
  shownUser = userId;
  $('detail-user').textContent = d.user_id;

  const runs = $('runs').tBodies[0];
  runs.replaceChildren();
  for (const r of [...d.runs].reverse()) {
    const m = r.report.migration_id;
    const records = Object.values(r.report.kinds).reduce((s, k) => s + (k.received ?? 0), 0);
    const action = r.state === 'rolled_back'
      ? el('span', { class: 'hint' }, 'rolled back')
      : el('button', { type: 'button', class: 'danger', dataset: { rollback: m }, 'aria-label': `Roll back migration ${m}` }, 'Roll back…');
    if (action.tagName === 'BUTTON') action.addEventListener('click', () => confirmAction(rollbackAction(d.user_id, m)));
    runs.append(el('tr', { dataset: { migration: m } },
      el('td', {}, el('code', {}, m)),
      el('td', { dataset: { col: 'state' } }, RUN_STATE[r.state] ?? r.state),
      el('td', {}, when(r.started_at)), el('td', {}, when(r.last_batch_at)),
      el('td', { class: 'num' }, fmt(r.report.batches)), el('td', { class: 'num' }, fmt(records)),
      el('td', {}, action)));
  }

  labelCells($('runs'));
  const q = $('quarantine');
  q.replaceChildren();
  if (!d.quarantine.length) q.append(el('li', { class: 'hint' }, 'Nothing quarantined.'));
  $('quarantine-count').textContent = d.quarantine_total > d.quarantine.length
    ? `(the oldest ${fmt(d.quarantine.length)} of ${fmt(d.quarantine_total)}; \`ferry-server quarantine\` lists them all)`
    : `(${fmt(d.quarantine_total)})`;
  for (const r of d.quarantine) {
    const reasons = el('ul', { class: 'reasons' });
    for (const reason of Array.isArray(r.reasons) ? r.reasons : [r.reasons]) reasons.append(el('li', {}, typeof reason === 'string' ? reason : JSON.stringify(reason)));
    q.append(el('li', { dataset: { quarantine: String(r.id) } },
      el('p', {}, el('strong', {}, r.kind), ' · key ', el('code', {}, r.key), r.locator ? ` · at ${r.locator}` : '', ` · ${when(r.created_at)}`),
      reasons,
      r.raw_value !== null ? textBlock(r.raw_value) : el('p', { class: 'hint' }, `Value not shown: ${r.withheld ?? 'withheld'}.`)));
  }

  const c = $('conflicts');
  c.replaceChildren();
  if (!d.conflicts.length) c.append(el('li', { class: 'hint' }, 'No open conflict.'));
  for (const x of d.conflicts) {
    const buttons = el('p', { class: 'actions start' });
    for (const [choice, label] of [['stored', 'Keep stored…'], ['incoming', 'Take incoming…']]) {
      const b = el('button', { type: 'button', dataset: { resolve: choice }, 'aria-label': `${label.slice(0, -1)} version of conflict ${x.id}` }, label);
      b.addEventListener('click', () => confirmAction(resolveAction(d.user_id, x.id, choice)));
      buttons.append(b);
    }
    c.append(el('li', { dataset: { conflict: String(x.id) } },
      el('p', {}, el('strong', {}, x.kind), ' · row ', el('code', {}, x.row_id), ` · ${when(x.created_at)}`),
      el('p', { class: 'hint' }, 'Stored'), textBlock(JSON.stringify(x.stored, null, 1)),
      el('p', { class: 'hint' }, 'Incoming'), textBlock(JSON.stringify(x.incoming, null, 1)),
      buttons));
  }

  const b = $('backups');
  b.replaceChildren();
  if (!d.backups.length) b.append(el('li', { class: 'hint' }, 'No backup uploaded.'));
  for (const x of d.backups) b.append(el('li', {}, el('code', {}, x.id), ` · ${fmt(x.size)} bytes · ${when(x.created_at)}`));

  const a = $('audit');
  a.replaceChildren();
  if (!d.audit.length) a.append(el('li', { class: 'hint' }, 'No operator action yet.'));
  for (const x of d.audit) {
    const what = x.action === 'resolve_conflict' ? `conflict ${x.details?.conflict_id ?? '?'} resolved as ${x.details?.choice ?? '?'}, migration ` : `${x.action.replaceAll('_', ' ')} of `;
    a.append(el('li', { dataset: { audit: String(x.id) } }, `${when(x.at)} · ${what}`, el('code', {}, x.migration_id ?? '—'), ` · ${x.result.replaceAll('_', ' ')} · by ${x.operator}`));
  }

  $('detail').hidden = false;
  $('detail').focus();
}

// ---- Actions behind a typed confirmation ----------------------------------------------------

let pending = null;

function rollbackAction(userId, migrationId) {
  return {
    title: 'Roll back this migration?',
    text: `Migration ${migrationId} of user ${userId}.`,
    warning: "Every row it wrote goes back to how it was before it; later changes to those rows are lost. The user's browser will migrate the records again on its next run.",
    code: migrationId.slice(0, 8),
    button: 'Roll back',
    async run() {
      say('Rolling back…');
      const done = await api(`/admin/api/users/${encodeURIComponent(userId)}/rollback`, {
        method: 'POST', body: JSON.stringify({ migration_id: migrationId, confirm: true }),
      });
      const r = done.rollback;
      say(r.already_rolled_back
        ? `Migration ${migrationId} was already rolled back; nothing changed.`
        : `Rolled back migration ${migrationId}: ${plural(r.restored, 'row')} put back, ${plural(r.dismissed_conflicts, 'conflict')} dismissed (audit #${done.audit_id}).`, 'done');
      return userId;
    },
  };
}

function resolveAction(userId, conflictId, choice) {
  const keep = choice === 'stored' ? 'keep the stored version (the incoming one is dropped)' : 'write the incoming version over the stored one';
  return {
    title: 'Resolve this conflict for the user?',
    text: `Conflict ${conflictId} of user ${userId}: ${keep}.`,
    warning: 'The user will not be asked about it again. A rollback of its migration undoes the choice.',
    code: String(conflictId),
    button: choice === 'stored' ? 'Keep stored' : 'Take incoming',
    async run() {
      say('Resolving…');
      const done = await api(`/admin/api/users/${encodeURIComponent(userId)}/conflicts/${encodeURIComponent(conflictId)}/resolve`, {
        method: 'POST', body: JSON.stringify({ choice, confirm: true }),
      });
      say(`Resolved conflict ${conflictId}: ${choice === 'stored' ? 'kept the stored version' : 'took the incoming version'} (audit #${done.audit_id}).`, 'done');
      return userId;
    },
  };
}

function confirmAction(action) {
  pending = action;
  $('confirm-title').textContent = action.title;
  $('confirm-text').textContent = action.text;
  $('confirm-warning').textContent = action.warning;
  $('confirm-code').textContent = action.code;
  $('confirm-ok').textContent = action.button;
  $('confirm-input').value = '';
  $('confirm-ok').disabled = true;
  $('confirm').showModal();
  $('confirm-input').focus();
}

async function runAction(action) {
  const userId = await action.run();
  await Promise.all([loadSummary(), loadUsers(), openUser(userId)]);
}

// ---- Wiring ------------------------------------------------------------------------------

async function loadSummary() {
  renderSummary(await api('/admin/api/summary'));
}

async function loadAll() {
  say('Loading…');
  // The summary scans the most; the list and the drill-down do not wait for it.
  await Promise.all([loadSummary(), loadUsers(), shownUser ? openUser(shownUser) : null]);
  say(`Updated ${new Date().toISOString().slice(11, 19)} UTC.`);
  document.body.dataset.loaded = 'yes';
}

function start() {
  $('signin').addEventListener('submit', (e) => {
    e.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $('token').value.trim());
    $('token').value = '';
    showSignedIn(true);
    loadAll().catch(failed);
  });
  $('signout').addEventListener('click', () => {
    sessionStorage.removeItem(TOKEN_KEY);
    shownUser = null;
    showSignedIn(false);
    say('Token forgotten.');
  });
  $('refresh').addEventListener('click', () => loadAll().catch(failed));
  let resize = null;
  window.addEventListener('resize', () => { clearTimeout(resize); resize = setTimeout(drawTrend, 150); });
  $('state').addEventListener('change', () => loadUsers().catch(failed));
  $('more').addEventListener('click', () => loadUsers(true).catch(failed));
  $('close-detail').addEventListener('click', () => { shownUser = null; $('detail').hidden = true; });
  $('confirm-input').addEventListener('input', () => {
    $('confirm-ok').disabled = !pending || $('confirm-input').value.trim() !== pending.code;
  });
  $('confirm-cancel').addEventListener('click', () => { pending = null; $('confirm').close(); });
  $('confirm-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const action = pending;
    if (!action || $('confirm-input').value.trim() !== action.code) return;
    pending = null;
    $('confirm').close();
    runAction(action).catch(failed);
  });
  const signedIn = Boolean(sessionStorage.getItem(TOKEN_KEY));
  showSignedIn(signedIn);
  if (signedIn) loadAll().catch(failed);
  else say('Enter the operator token (FERRY_OPERATOR_TOKEN) to open the dashboard.');
}

start();
