// Taskboard: the legacy app's screens (tasks, environments, preferences) over localStorage,
// plus the "Data & sync" screen (sync.js). No framework, no build step.

import { $, h, fmt, announce } from './dom.js';
import { tasks, environments, preferences, drafts, custom, LEGACY_STATUSES } from './store.js';
import { startSync } from './sync.js';

const VIEWS = ['tasks', 'environments', 'preferences', 'data'];
const STATUS_LABEL = { todo: 'To do', 'in-progress': 'In progress', done: 'Done' };
const PAGE = 100;
let shown = PAGE;

// ---- navigation ---------------------------------------------------------------------------

function show(view, { remember = false } = {}) {
  if (!VIEWS.includes(view)) view = 'tasks';
  for (const section of document.querySelectorAll('main > section')) section.hidden = section.dataset.view !== view;
  for (const link of document.querySelectorAll('.tabs a')) {
    if (link.dataset.view === view) link.setAttribute('aria-current', 'page'); else link.removeAttribute('aria-current');
  }
  // The legacy app remembered the last screen, raw (not JSON), under its own prefix.
  if (remember) custom.set('lastRoute', `/${view}`);
  document.dispatchEvent(new CustomEvent('viewchange', { detail: view }));
}

addEventListener('hashchange', () => show(location.hash.slice(1), { remember: true }));

// ---- tasks --------------------------------------------------------------------------------

export function renderTasks() {
  const { ok, items } = tasks.read();
  const filter = $('task-filter').value;
  $('load-error').hidden = ok;
  if (!ok) $('load-error').textContent = 'Some of your saved tasks could not be read. They are kept as they are and nothing will overwrite them.';
  const rows = items.map((t, index) => ({ t, index }))
    .filter(({ t }) => filter === 'all' || tasks.status(t) === filter)
    .reverse(); // newest first: the legacy app appended
  const list = $('task-list');
  list.replaceChildren(...rows.slice(0, shown).map(({ t, index }) => taskItem(t, index)));
  if (!rows.length) list.append(h('li', { class: 'empty' }, 'No tasks yet. Add one above, or load sample data in Data & sync.'));
  $('task-count').textContent = `${fmt(Math.min(shown, rows.length))} of ${fmt(rows.length)} shown`;
  $('more-tasks').hidden = rows.length <= shown;
}

function taskItem(t, index) {
  const isObject = t && typeof t === 'object' && !Array.isArray(t);
  const title = isObject && typeof t.title === 'string' && t.title !== '' ? t.title : null;
  const status = tasks.status(t);
  const select = h('select', { 'aria-label': `Status of ${title ?? 'untitled task'}`, disabled: !isObject,
    onchange: (e) => { tasks.update(index, { status: e.target.value }); renderTasks(); } },
  LEGACY_STATUSES.map((s) => h('option', { value: s, selected: s === status }, STATUS_LABEL[s])));
  const due = isObject && typeof t.dueDate === 'string' ? new Date(t.dueDate) : null;
  return h('li', { class: `task ${status}`, 'data-index': index },
    h('div', { class: 'task-main' },
      h('span', { class: title ? 'title' : 'title muted' }, title ?? '(untitled task)'),
      h('span', { class: 'meta' },
        isObject && typeof t.priority === 'string' ? h('span', { class: `badge ${t.priority}` }, t.priority) : null,
        ...(isObject && Array.isArray(t.tags) ? t.tags.filter((x) => typeof x === 'string').map((x) => h('span', { class: 'tag' }, x)) : []),
        due && !isNaN(due) ? h('span', {}, `due ${due.toLocaleDateString('en-GB', { day: 'numeric', month: 'short', year: 'numeric' })}`) : null)),
    select,
    h('button', { type: 'button', class: 'btn icon', 'aria-label': `Delete ${title ?? 'untitled task'}`,
      onclick: () => { tasks.remove(index); renderTasks(); announce('Task deleted.'); } }, '✕'));
}

function setupTaskForm() {
  const form = $('new-task');
  const fieldsOf = () => Object.fromEntries(['title', 'description', 'priority', 'dueDate', 'tags'].map((n) => [n, form.elements[n].value]));
  const draft = drafts.read('newTask');
  if (draft) {
    for (const [name, value] of Object.entries(draft)) {
      const input = form.elements[name];
      if (input && typeof value === 'string') input.value = value;
      else if (input && Array.isArray(value)) input.value = value.join(', ');
    }
    $('draft-state').textContent = 'draft restored';
  }
  form.addEventListener('input', () => { drafts.save('newTask', fieldsOf()); $('draft-state').textContent = 'draft saved'; });
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const f = fieldsOf();
    try {
      tasks.add({ ...f, title: f.title.trim(), tags: f.tags.split(',').map((x) => x.trim()).filter(Boolean) });
    } catch (err) { announce(err.message, 'error'); return; }
    drafts.clear('newTask');
    form.reset();
    $('draft-state').textContent = '';
    renderTasks();
    announce(`Task “${f.title.trim()}” added.`);
  });
  $('task-filter').addEventListener('change', () => { shown = PAGE; renderTasks(); });
  $('more-tasks').addEventListener('click', () => { shown += PAGE; renderTasks(); });
}

// ---- environments -------------------------------------------------------------------------

export function renderEnvironments() {
  const { items } = environments.read();
  const cards = items.map((env) => {
    const ok = env && typeof env === 'object';
    const config = ok && env.config && typeof env.config === 'object' ? env.config : {};
    const token = typeof config.githubToken === 'string' ? config.githubToken : null;
    const tokenText = h('code', { class: 'secret' }, token ? `${token.slice(0, 4)}${'•'.repeat(12)}` : 'not set');
    let revealed = false;
    const reveal = token && h('button', { type: 'button', class: 'btn link', 'aria-pressed': 'false',
      onclick: (e) => { revealed = !revealed; tokenText.textContent = revealed ? token : `${token.slice(0, 4)}${'•'.repeat(12)}`;
        e.target.textContent = revealed ? 'Hide' : 'Show'; e.target.setAttribute('aria-pressed', String(revealed)); } }, 'Show');
    return h('li', { class: 'card env' },
      h('h2', {}, ok && typeof env.name === 'string' ? env.name : '(unnamed environment)',
        ok && env.isActive === false ? h('span', { class: 'badge low' }, 'inactive') : h('span', { class: 'badge ok' }, 'active')),
      h('dl', {},
        h('dt', {}, 'Id'), h('dd', {}, ok ? String(env.id ?? '—') : '—'),
        h('dt', {}, 'API'), h('dd', {}, typeof config.apiUrl === 'string' ? config.apiUrl : '—'),
        h('dt', {}, 'Region'), h('dd', {}, typeof config.region === 'string' ? config.region : '—'),
        h('dt', {}, 'GitHub token'), h('dd', {}, tokenText, ' ', reveal)));
  });
  $('env-list').replaceChildren(...cards);
  if (!cards.length) $('env-list').append(h('li', { class: 'empty' }, 'No environments yet.'));
}

function setupEnvForm() {
  const form = $('new-env');
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const f = Object.fromEntries(new FormData(form));
    try { environments.add({ ...f, name: f.name.trim() }); } catch (err) { announce(err.message, 'error'); return; }
    form.reset();
    renderEnvironments();
    announce(`Environment “${f.name.trim()}” added.`);
  });
}

// ---- preferences --------------------------------------------------------------------------

export function renderPreferences() {
  const prefs = preferences.read();
  const form = $('prefs');
  form.elements.theme.value = prefs.theme === 'system' ? 'auto' : (prefs.theme ?? 'auto');
  form.elements.language.value = typeof prefs.language === 'string' ? prefs.language : 'en';
  applyTheme(prefs.theme);
}

function applyTheme(theme) {
  const dark = theme === 'dark' || ((theme === 'auto' || theme === 'system' || !theme) && matchMedia('(prefers-color-scheme: dark)').matches);
  document.documentElement.dataset.theme = dark ? 'dark' : 'light';
}

function setupPreferences() {
  $('prefs').addEventListener('change', (e) => {
    preferences.set({ [e.target.name]: e.target.value });
    renderPreferences();
    $('prefs-saved').textContent = 'Saved.';
  });
}

/** Re-reads everything from localStorage (after sample data or a restore). */
export function renderAll() { shown = PAGE; renderTasks(); renderEnvironments(); renderPreferences(); }

// ---- start --------------------------------------------------------------------------------

setupTaskForm();
setupEnvForm();
setupPreferences();
renderAll();
$('notice-close').addEventListener('click', () => { $('notice').hidden = true; });
startSync({ renderAll });
const last = (custom.get('lastRoute') ?? '').replace(/^\//, '');
show(location.hash.slice(1) || (VIEWS.includes(last) ? last : 'tasks'));
