// Tiny DOM helpers. User data only ever reaches the page as text nodes (never innerHTML), so a
// title like `<script>alert(1)</script>` shows as those characters.

/** `h('li', { class: 'x', onclick }, 'text', child)`: strings become text nodes. */
export function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith('on')) node.addEventListener(name.slice(2), value);
    else if (name in node && !name.startsWith('aria') && name !== 'class') node[name] = value;
    else node.setAttribute(name === 'class' ? 'class' : name, value === true ? '' : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export const $ = (id) => document.getElementById(id);
export const fmt = (n) => Number(n ?? 0).toLocaleString('en-US');
export const plural = (n, one, many = `${one}s`) => `${fmt(n)} ${n === 1 ? one : many}`;

export function bytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KB`;
  return `${(n / 1024 / 1024).toFixed(1)} MB`;
}

export function duration(ms) {
  if (ms === null || ms === undefined) return 'estimating…';
  const s = Math.ceil(ms / 1000);
  return s < 60 ? `about ${s} s left` : `about ${Math.ceil(s / 60)} min left`;
}

/** Shows a message in the polite live region (screen readers announce it). */
export function announce(text, tone = 'info') {
  const box = $('notice');
  box.dataset.tone = tone;
  $('notice-text').textContent = text;
  box.hidden = false;
}

/** Sets a role=progressbar element's ARIA values and its fill. */
export function setBar(bar, percent, text) {
  const p = Math.max(0, Math.min(100, Math.round(percent)));
  bar.setAttribute('aria-valuenow', String(p));
  bar.setAttribute('aria-valuetext', text);
  bar.firstElementChild.style.width = `${p}%`;
}
