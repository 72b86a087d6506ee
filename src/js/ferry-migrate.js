// <ferry-migrate>: the "Migrate my data" UI as a standard web component (no framework).
//
//   <ferry-migrate server="https://ingest.example.com"></ferry-migrate>
//   <script type="module">
//     import '@ferry/migrator/ferry-migrate';
//     document.querySelector('ferry-migrate').getToken = (refresh) => myLogin.token(refresh);
//   </script>
//
// It shows a button, the run's progress (an ARIA progress bar and a polite live region), the
// result report, the records set aside, the conflicts to resolve, and the backups to download
// (passphrase-protected) or restore (with a confirmation step). It uses the page's shared
// migrator (auto.js's getMigrator), so it never runs beside the page's autoMigrate: a second run
// in another tab or the same page waits for the first, as every migrator run does.
//
// Theming: CSS custom properties (--ferry-accent, --ferry-accent-text, --ferry-danger,
// --ferry-radius, --ferry-border, --ferry-muted, --ferry-gap, --ferry-font) and parts (button,
// progress, progress-bar, status, report, table, conflicts, conflict, backups, backup, input).
// Events (bubbling, composed): `ferry-done` (detail: the run report), `ferry-restored` (detail:
// { restored, backupId }: re-read your app's state), `ferry-resolved` (detail: { id, choice }),
// `ferry-error` (detail: the FerryError). Every string from the user's data is set as text.

import { getMigrator } from './auto.js';

const STAGE = { inspect: 'Reading your data', validate: 'Checking records', backup: 'Making a backup',
  upload: 'Uploading', verify: 'Verifying', done: 'Done' };
const OUTCOMES = [['inserted', 'New'], ['updated', 'Updated'], ['unchanged', 'Unchanged'], ['merged', 'Merged'],
  ['kept_stored', 'Kept yours'], ['conflict_queued', 'To review'], ['quarantined', 'Set aside']];
const heard = new WeakSet(); // migrators whose run outcomes refresh the components
const fmt = (n) => Number(n ?? 0).toLocaleString('en-US');
const plural = (n, one, many = `${one}s`) => `${fmt(n)} ${n === 1 ? one : many}`;
const size = (b) => (b >= 1048576 ? `${(b / 1048576).toFixed(1)} MB` : `${Math.max(1, Math.round(b / 1024))} KB`);

const STYLE = `
:host { display: block; container: ferry / inline-size; font: var(--ferry-font, inherit); color: inherit;
  --_accent: var(--ferry-accent, #2458d6); --_accent-text: var(--ferry-accent-text, #fff);
  --_danger: var(--ferry-danger, #b42318); --_radius: var(--ferry-radius, 6px);
  --_border: var(--ferry-border, #d0d5dd); --_muted: var(--ferry-muted, #5d6470); --_gap: var(--ferry-gap, .75rem); }
:host([hidden]), [hidden] { display: none !important; }
* { box-sizing: border-box; }
button, input { font: inherit; }
button { border: 1px solid var(--_border); border-radius: var(--_radius); background: transparent; color: inherit;
  padding: .4rem .8rem; cursor: pointer; min-height: 2.25rem; }
button:focus-visible, input:focus-visible { outline: 2px solid var(--_accent); outline-offset: 2px; }
button[disabled] { opacity: .55; cursor: default; }
.primary { background: var(--_accent); border-color: var(--_accent); color: var(--_accent-text); }
.danger { border-color: var(--_danger); color: var(--_danger); }
.row { display: flex; flex-wrap: wrap; gap: var(--_gap); align-items: center; margin: 0 0 var(--_gap); }
.bar { height: .5rem; border-radius: var(--_radius); background: color-mix(in srgb, var(--_accent) 15%, transparent); overflow: hidden; margin: 0 0 var(--_gap); }
.bar > div { height: 100%; width: 0; background: var(--_accent); transition: width .2s; }
.muted { color: var(--_muted); }
h3 { font-size: 1rem; margin: var(--_gap) 0 .4rem; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: .3rem .4rem; border-bottom: 1px solid var(--_border); vertical-align: top; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; }
.scroll { overflow-x: auto; }
ul { padding-left: 1.2rem; margin: .3rem 0; }
.conflict { border: 1px solid var(--_border); border-radius: var(--_radius); padding: var(--_gap); margin: 0 0 var(--_gap); list-style: none; }
.sides { display: grid; grid-template-columns: repeat(auto-fit, minmax(12rem, 1fr)); gap: var(--_gap); }
pre { white-space: pre-wrap; word-break: break-word; margin: .2rem 0; font-size: .85em; }
figure { margin: 0; } figcaption { font-weight: 600; }
form { display: inline-flex; flex-wrap: wrap; gap: .4rem; }
@container ferry (max-width: 30rem) {
  table.backups thead { display: none; }
  table.backups tr { display: grid; grid-template-columns: 1fr auto auto; }
  table.backups td { border: 0; }
  table.backups td.actions { grid-column: 1 / -1; }
  table.backups tr { border-bottom: 1px solid var(--_border); }
}
input { border: 1px solid var(--_border); border-radius: var(--_radius); padding: .35rem .5rem; min-width: 0; }
`;

/** An element with attributes (`on…` functions become listeners) and children (strings become text). */
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === false || v === null || v === undefined) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'hidden') el.hidden = true;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  el.append(...children.flat().filter((c) => c !== null && c !== undefined && c !== false).map((c) => (c instanceof Node ? c : String(c))));
  return el;
}

/** What a conflict's record is called: its title or name when it has one, else its id. */
function titleOf(c) {
  for (const side of [c.stored, c.incoming]) {
    for (const field of ['title', 'name', 'form_name', 'label']) {
      if (typeof side?.[field] === 'string' && side[field].trim()) return side[field];
    }
  }
  return String(c.row_id);
}

/** The child of `parent` whose `attr` is `id`, if it is shown already. */
function keep(parent, attr, id) {
  for (const child of parent.children) if (child.getAttribute(attr) === String(id)) return child;
  return null;
}

export class FerryMigrate extends HTMLElement {
  static observedAttributes = ['server', 'storage-name'];

  #getToken = null;
  #spec = undefined;
  #kindLabels = {};
  #busy = false;
  #refreshing = null;
  #again = false;
  #shown = false;
  #observer = null;
  #parts;

  constructor() {
    super();
    // Properties the page set before this module defined the element (an "upgrade") go
    // through the setters below.
    for (const name of ['getToken', 'spec', 'kindLabels']) {
      if (Object.hasOwn(this, name)) {
        const value = this[name];
        delete this[name];
        this[name] = value;
      }
    }
    const root = this.attachShadow({ mode: 'open' });
    const bar = h('div', { part: 'progress-bar' });
    this.#parts = {
      button: h('button', { type: 'button', id: 'migrate', class: 'primary', part: 'button', onclick: () => this.migrate() }, 'Migrate my data'),
      bar,
      progress: h('div', { class: 'bar', part: 'progress', role: 'progressbar', 'aria-label': 'Migration progress',
        'aria-valuemin': 0, 'aria-valuemax': 100, 'aria-valuenow': 0, hidden: true }, bar),
      status: h('p', { part: 'status', role: 'status', 'aria-live': 'polite' }),
      report: h('div', { id: 'report', part: 'report', hidden: true }),
      conflicts: h('ul', { id: 'conflicts', part: 'conflicts' }),
      conflictsBox: h('section', { hidden: true, 'aria-label': 'Records to review' }),
      backups: h('tbody', { id: 'backups' }),
    };
    const p = this.#parts;
    p.conflictsBox.append(h('h3', {}, 'Records to review'), h('p', { class: 'muted' }, 'Your account and this browser hold different versions of these records. Choose one.'), p.conflicts);
    root.append(h('style', {}, STYLE),
      h('div', { class: 'row' }, p.button),
      p.progress, p.status, p.report, p.conflictsBox,
      h('section', { part: 'backups', 'aria-label': 'Backups' }, h('h3', {}, 'Backups'),
        h('p', { class: 'muted' }, 'A copy of your data is sealed in this browser before anything is sent.'),
        h('div', { class: 'scroll' }, h('table', { part: 'table', class: 'backups' },
          h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Made'), h('th', { scope: 'col', class: 'n' }, 'Size'), h('th', { scope: 'col', class: 'n' }, 'Keys'), h('th', { scope: 'col' }, h('span', { class: 'muted' }, 'Actions')))),
          p.backups))));
  }

  /** `(refresh: boolean) => Promise<string>`: the user's bearer token (required). */
  get getToken() { return this.#getToken; }
  set getToken(fn) {
    this.#getToken = typeof fn === 'function' ? fn : null;
    if (!this.#parts) return; // an upgrade: connectedCallback follows
    this.#sync();
    if (this.#getToken && this.#shown) this.refresh();
  }

  /** The spec (text or object) when the page has it; default: fetched from the server. */
  get spec() { return this.#spec; }
  set spec(value) { this.#spec = value ?? undefined; }

  /** Names for the kinds in the report: `{ tasks: 'Tasks' }`; a kind not named shows as is. */
  get kindLabels() { return this.#kindLabels; }
  set kindLabels(value) { this.#kindLabels = value && typeof value === 'object' ? value : {}; }

  // The migrator (the wasm bundle, the spec) is loaded only once the element is shown: a page
  // that keeps it in a hidden view costs nothing until the user opens that view.
  connectedCallback() {
    this.#sync();
    this.#observer ??= new IntersectionObserver((entries) => {
      const shown = entries.some((e) => e.isIntersecting);
      if (shown && !this.#shown && this.#getToken) this.refresh();
      this.#shown = shown;
    });
    this.#observer.observe(this);
  }
  disconnectedCallback() { this.#observer?.disconnect(); this.#observer = null; this.#shown = false; }
  attributeChangedCallback() { if (this.#shown && this.#getToken) this.refresh(); }

  #options() {
    const server = this.getAttribute('server') || location.origin;
    const storageName = this.getAttribute('storage-name');
    return { server, getToken: this.#getToken, spec: this.#spec, migrator: storageName ? { storageName } : {} };
  }

  #migrator() {
    if (!this.#getToken) return Promise.reject(Object.assign(new Error('set getToken on <ferry-migrate> first'), { code: 'invalid_argument' }));
    return getMigrator(this.#options());
  }

  #sync() { this.#parts.button.disabled = this.#busy || !this.#getToken; }

  #say(text, tone = '') {
    this.#parts.status.textContent = text;
    this.#parts.status.dataset.tone = tone;
  }

  #fail(prefix, e) {
    this.#say(`${prefix}: ${e?.message ?? e}`, 'error');
    this.dispatchEvent(new CustomEvent('ferry-error', { detail: e, bubbles: true, composed: true }));
  }

  #label(kind) { return Object.hasOwn(this.#kindLabels, kind) ? String(this.#kindLabels[kind]) : kind; }

  /** Runs (or resumes) a migration, as the button does. Resolves to the report, or null on failure. */
  async migrate() {
    if (this.#busy) return null;
    this.#busy = true;
    this.#sync();
    const { progress, bar } = this.#parts;
    progress.hidden = false;
    const onProgress = (p) => {
      const pct = Math.round(p.percent ?? 0);
      const text = `${STAGE[p.stage] ?? p.stage}: ${pct}%${p.recordsTotal ? ` (${fmt(p.recordsDone)} of ${plural(p.recordsTotal, 'record')})` : ''}`;
      bar.style.width = `${pct}%`;
      progress.setAttribute('aria-valuenow', String(pct));
      progress.setAttribute('aria-valuetext', text);
      this.#parts.status.textContent = text;
    };
    onProgress({ stage: 'inspect', percent: 0 });
    let report = null;
    try {
      const run = async (fresh) => (await getMigrator(this.#options(), { fresh })).run({ mode: 'manual', onProgress });
      try {
        report = await run(false);
      } catch (e) {
        if (e?.code !== 'spec_mismatch' || this.#spec !== undefined) throw e;
        report = await run(true); // the server runs another spec version: fetch it, once
      }
      onProgress({ stage: 'done', percent: 100, recordsDone: report.recordsSent, recordsTotal: report.recordsToSend });
      this.#say(this.#summary(report), this.#attention(report) ? 'warn' : 'ok');
      this.#showReport(report);
      this.dispatchEvent(new CustomEvent('ferry-done', { detail: report, bubbles: true, composed: true }));
    } catch (e) {
      this.#fail('The migration stopped (nothing is lost: your data is still in this browser)', e);
    } finally {
      this.#busy = false;
      this.#sync();
      progress.hidden = true;
    }
    this.refresh();
    return report;
  }

  #attention(report) {
    return Object.values(report.outcomes ?? {}).reduce((n, o) => n + (o.quarantined ?? 0) + (o.conflict_queued ?? 0), 0);
  }

  #summary(report) {
    if (report.status === 'up_to_date') return 'Everything is already saved to your account.';
    if (report.status === 'nothing_to_migrate') return 'There is nothing to migrate in this browser.';
    if (report.status === 'skipped') return 'Another tab is saving your data.';
    const attention = this.#attention(report);
    return `${plural(report.recordsSent ?? 0, 'record')} saved to your account.${attention ? ` ${plural(attention, 'record')} ${attention === 1 ? 'needs' : 'need'} your attention.` : ''}`;
  }

  /** Shows a run report made elsewhere (e.g. `autoMigrate`'s result) as the button's would be. */
  show(report) {
    if (report) this.#showReport(report);
  }

  #showReport(report) {
    const kinds = Object.keys(report.outcomes ?? {});
    const quarantined = report.quarantined ?? [];
    this.#parts.report.replaceChildren(...[
      h('h3', {}, report.status === 'completed' ? 'Migration report' : 'Nothing new to send'),
      h('p', { class: 'muted' }, `${plural(report.recordsSent ?? 0, 'record')} sent in ${plural(report.batchesSent ?? 0, 'batch', 'batches')}`,
        report.resumed ? ' (resumed an interrupted migration)' : '', ` · ${((report.durationMs ?? 0) / 1000).toFixed(1)} s`,
        report.retries ? ` · ${plural(report.retries, 'retry', 'retries')}` : ''),
      kinds.length ? h('div', { class: 'scroll' }, h('table', { part: 'table' },
        h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Kind'), OUTCOMES.map(([, head]) => h('th', { scope: 'col', class: 'n' }, head)))),
        h('tbody', {}, kinds.map((k) => h('tr', { 'data-kind': k }, h('th', { scope: 'row' }, this.#label(k)),
          OUTCOMES.map(([o]) => h('td', { class: 'n', 'data-outcome': o }, fmt(report.outcomes[k][o])))))))) : null,
      quarantined.length ? h('details', {}, h('summary', {}, `${plural(quarantined.length, 'record')} could not be migrated and ${quarantined.length === 1 ? 'was' : 'were'} set aside`),
        h('ul', { class: 'reasons' }, quarantined.slice(0, 200).map((q) => h('li', {}, h('strong', {}, this.#label(q.kind)), ': ', (q.reasons ?? []).join('; '))))) : null,
      ...(report.warnings ?? []).map((w) => h('p', { class: 'muted' }, w)),
    ].filter((part) => part !== null));
    this.#parts.report.hidden = false;
  }

  /** Re-reads the conflicts and backups (after a run elsewhere, a restore, a sign-in). */
  async refresh() {
    if (!this.#getToken) return; // nothing to show before the page signs the user in
    // Calls while one is in flight coalesce into one more read once it ends.
    if (this.#refreshing) { this.#again = true; return this.#refreshing; }
    this.#refreshing = (async () => {
      do {
        this.#again = false;
        await this.#read();
      } while (this.#again);
    })();
    try { await this.#refreshing; } finally { this.#refreshing = null; }
  }

  async #read() {
    let migrator;
    try { migrator = await this.#migrator(); } catch (e) { this.#fail('The migrator could not start', e); return; }
    this.#sync();
    if (!heard.has(migrator)) {
      // A run of any tab (the page's autoMigrate included) ends: its backup and conflicts show.
      heard.add(migrator);
      migrator.onOutcome(() => { for (const el of document.querySelectorAll('ferry-migrate')) el.refresh(); });
    }
    const [conflicts, backups] = await Promise.allSettled([migrator.conflicts(), migrator.backups()]);
    // Items already shown are kept as they are (an armed restore, a half-typed passphrase or an
    // edit in progress survive a refresh); new ones are added, gone ones removed.
    if (conflicts.status === 'fulfilled') {
      const list = this.#parts.conflicts;
      list.replaceChildren(...conflicts.value.map((c) => keep(list, 'data-conflict', c.id) ?? this.#conflict(c)));
      this.#parts.conflictsBox.hidden = conflicts.value.length === 0;
    } else {
      this.#fail('Records to review could not be loaded', conflicts.reason);
    }
    if (backups.status === 'fulfilled') {
      const body = this.#parts.backups;
      const rows = [...backups.value].sort((a, b) => b.createdAtMs - a.createdAtMs) // newest first
        .map((b) => keep(body, 'data-backup', b.id) ?? this.#backup(b));
      body.replaceChildren(...(rows.length ? rows
        : [h('tr', {}, h('td', { colspan: 4, class: 'muted' }, 'No backups yet: one is made before your data is first sent.'))]));
    } else {
      this.#fail('Backups could not be listed', backups.reason);
    }
  }

  #conflict(c) {
    const editor = h('textarea', { rows: 6, 'aria-label': 'Edited version (JSON)', spellcheck: 'false', part: 'input' });
    editor.value = JSON.stringify(c.incoming, null, 2);
    const editBox = h('div', { hidden: true }, editor, h('div', { class: 'row' }, h('button', { type: 'button', class: 'primary', onclick: () => {
      let value;
      try { value = JSON.parse(editor.value); } catch { this.#say('The edited version is not valid JSON.', 'error'); editor.focus(); return; }
      choose('edited', value);
    } }, 'Save edited version')));
    const item = h('li', { class: 'conflict', part: 'conflict', 'data-conflict': c.id },
      h('h3', {}, `${this.#label(c.kind)}: `, titleOf(c)),
      h('div', { class: 'sides' },
        h('figure', {}, h('figcaption', {}, 'Saved in your account'), h('pre', {}, JSON.stringify(c.stored, null, 2))),
        h('figure', {}, h('figcaption', {}, 'In this browser'), h('pre', {}, JSON.stringify(c.incoming, null, 2)))),
      h('div', { class: 'row' },
        h('button', { type: 'button', onclick: () => choose('stored') }, 'Keep account version'),
        h('button', { type: 'button', onclick: () => choose('incoming') }, 'Use this browser’s version'),
        h('button', { type: 'button', 'aria-expanded': 'false', onclick: (e) => { editBox.hidden = false; e.currentTarget.setAttribute('aria-expanded', 'true'); editor.focus(); } }, 'Edit…')),
      editBox);
    const choose = async (choice, value) => {
      try {
        await (await this.#migrator()).resolve(c.id, choice, choice === 'edited' ? value : undefined);
        item.remove();
        this.#parts.conflictsBox.hidden = this.#parts.conflicts.children.length === 0;
        this.#say('Your choice is saved.', 'ok');
        this.dispatchEvent(new CustomEvent('ferry-resolved', { detail: { id: c.id, choice }, bubbles: true, composed: true }));
      } catch (e) { this.#fail('Your choice could not be saved', e); }
    };
    return item;
  }

  #backup(b) {
    const made = new Date(b.createdAtMs);
    const when = made.toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'short' });
    const pass = h('input', { type: 'password', minlength: 8, required: true, autocomplete: 'new-password', part: 'input',
      placeholder: 'passphrase (8+ characters)', 'aria-label': `Passphrase for the backup of ${when}` });
    const download = h('form', { hidden: true, onsubmit: async (e) => {
      e.preventDefault();
      if (pass.value.length < 8) { this.#say('Use a passphrase of at least 8 characters.', 'error'); pass.focus(); return; }
      try {
        const bytes = await (await this.#migrator()).exportBackup(b.id, pass.value);
        const a = h('a', { href: URL.createObjectURL(new Blob([bytes], { type: 'application/octet-stream' })), download: `backup-${made.toISOString().slice(0, 10)}.ferry` });
        this.shadowRoot.append(a);
        a.click();
        a.remove();
        setTimeout(() => URL.revokeObjectURL(a.href), 10_000);
        pass.value = '';
        download.hidden = true;
        this.#say('Backup downloaded. Keep the passphrase: it is the only way to open the file.', 'ok');
      } catch (err) { this.#fail('The backup could not be exported', err); }
    } }, pass, h('button', { class: 'primary' }, 'Download'));
    let armed = false;
    const restore = h('button', { type: 'button', onclick: async () => {
      if (!armed) {
        armed = true;
        restore.textContent = 'Confirm restore';
        restore.classList.add('danger');
        this.#say(`Restoring replaces this browser’s data with the backup of ${when}. Press “Confirm restore” to go on.`, 'warn');
        return;
      }
      armed = false;
      restore.textContent = 'Restore';
      restore.classList.remove('danger');
      try {
        const { restored } = await (await this.#migrator()).restore(b.id);
        this.#say(`Restored ${plural(restored, 'key')} from the backup of ${when}.`, 'ok');
        this.dispatchEvent(new CustomEvent('ferry-restored', { detail: { restored, backupId: b.id }, bubbles: true, composed: true }));
      } catch (err) { this.#fail('The backup could not be restored', err); }
    } }, 'Restore');
    return h('tr', { part: 'backup', 'data-backup': b.id },
      h('td', {}, when), h('td', { class: 'n' }, size(b.byteSize ?? b.fileSize ?? 0)), h('td', { class: 'n' }, fmt(b.keyCount)),
      h('td', { class: 'actions' }, h('div', { class: 'row' },
        h('button', { type: 'button', 'aria-expanded': 'false', onclick: (e) => {
          download.hidden = !download.hidden;
          e.currentTarget.setAttribute('aria-expanded', String(!download.hidden));
          if (!download.hidden) pass.focus();
        } }, 'Download…'), restore), download));
  }
}

if (!customElements.get('ferry-migrate')) customElements.define('ferry-migrate', FerryMigrate);
