// A small SVG chart of the fleet's trend: records per hour as bars, users per hour as a line,
// over the last `hours.length` hours. Built with DOM calls only (no markup strings), so no
// value can become an element.

const NS = 'http://www.w3.org/2000/svg';

function svg(tag, attrs = {}, text) {
  const node = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

/** A "nice" upper bound for an axis: 1, 2 or 5 times a power of ten, at least `max`. */
export function niceMax(max) {
  if (!(max > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(max));
  for (const m of [1, 2, 5, 10]) if (m * p >= max) return m * p;
  return 10 * p;
}

/**
 * The last `span` hours ending with the hour of `now`, each with the server's totals or zeros.
 * `hours`: [{hour: '2026-12-03T06:00:00Z', records, users}].
 */
export function fillHours(hours, now = new Date(), span = 48) {
  const by = new Map(hours.map((h) => [h.hour, h]));
  const end = Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate(), now.getUTCHours());
  const out = [];
  for (let i = span - 1; i >= 0; i--) {
    const key = new Date(end - i * 3600_000).toISOString().replace(/:00\.000Z$/, ':00Z');
    const h = by.get(key);
    out.push({ hour: key, records: h ? h.records : 0, users: h ? h.users : 0 });
  }
  return out;
}

/** The chart as an <svg> element, with a text summary for screen readers. */
export function trendChart(hours, { width = 720, height = 220 } = {}) {
  const pad = { left: 44, right: 36, top: 12, bottom: 28 };
  const w = width - pad.left - pad.right;
  const h = height - pad.top - pad.bottom;
  const maxRecords = niceMax(Math.max(0, ...hours.map((x) => x.records)));
  const maxUsers = niceMax(Math.max(0, ...hours.map((x) => x.users)));
  const totalRecords = hours.reduce((s, x) => s + x.records, 0);
  const peakUsers = Math.max(0, ...hours.map((x) => x.users));
  const label = `${totalRecords.toLocaleString('en')} records in the last ${hours.length} hours; at most ${peakUsers} users in one hour`;
  const root = svg('svg', { viewBox: `0 0 ${width} ${height}`, role: 'img', 'aria-label': label, class: 'trend', preserveAspectRatio: 'xMidYMid meet' });
  root.append(svg('title', {}, label));
  const step = w / Math.max(1, hours.length);
  const y = (v, max) => pad.top + h - (v / max) * h;

  // Grid and left axis (records).
  for (const f of [0, 0.5, 1]) {
    const yy = pad.top + h - f * h;
    root.append(svg('line', { x1: pad.left, x2: pad.left + w, y1: yy, y2: yy, class: 'grid' }));
    // Counts are whole: a half-way mark that is not is left unlabelled.
    const records = f * maxRecords;
    const users = f * maxUsers;
    if (Number.isInteger(records)) root.append(svg('text', { x: pad.left - 6, y: yy + 4, 'text-anchor': 'end', class: 'axis records' }, records.toLocaleString('en')));
    if (Number.isInteger(users)) root.append(svg('text', { x: pad.left + w + 6, y: yy + 4, 'text-anchor': 'start', class: 'axis users' }, users.toLocaleString('en')));
  }
  // Bars: records.
  hours.forEach((x, i) => {
    if (!x.records) return;
    const top = y(x.records, maxRecords);
    const bar = svg('rect', { x: pad.left + i * step + step * 0.15, y: top, width: Math.max(1, step * 0.7), height: pad.top + h - top, class: 'bar' });
    bar.append(svg('title', {}, `${x.hour}: ${x.records} records from ${x.users} users`));
    root.append(bar);
  });
  // Line: users.
  const points = hours.map((x, i) => `${(pad.left + (i + 0.5) * step).toFixed(1)},${y(x.users, maxUsers).toFixed(1)}`).join(' ');
  root.append(svg('polyline', { points, class: 'line', fill: 'none' }));
  // Hour labels: about one per 110 px, on whole multiples of 6 hours.
  const every = Math.max(6, Math.ceil((hours.length * 110) / w / 6) * 6);
  hours.forEach((x, i) => {
    if ((hours.length - 1 - i) % every !== 0) return;
    root.append(svg('text', { x: pad.left + (i + 0.5) * step, y: height - 8, 'text-anchor': 'middle', class: 'axis' }, `${x.hour.slice(5, 10)} ${x.hour.slice(11, 13)}h`));
  });
  return root;
}
