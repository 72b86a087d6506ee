#!/usr/bin/env node
// Where the bytes of the wasm bundle go: sums function body sizes by crate, from a module that
// still has its name section (pkg/ is built without it). Make one with:
//   wasm-bindgen --target web --out-dir /tmp/pkg-named target/wasm32-unknown-unknown/wasm-release/ferry.wasm
//   node bench/size-breakdown.mjs /tmp/pkg-named/ferry_bg.wasm
// Sizes are before wasm-opt and before gzip, so read them as shares, not as final bytes.

import { readFileSync } from 'node:fs';

const bytes = readFileSync(process.argv[2] ?? '/tmp/pkg-named/ferry_bg.wasm');
let pos = 8;
const u32 = () => { let r = 0, s = 0, b; do { b = bytes[pos++]; r |= (b & 0x7f) << s; s += 7; } while (b & 0x80); return r >>> 0; };
const str = () => { const n = u32(); const t = bytes.toString('utf8', pos, pos + n); pos += n; return t; };

let imported = 0;
const bodySizes = [];
const names = new Map();
const sections = {};
while (pos < bytes.length) {
  const id = bytes[pos++];
  const size = u32();
  const end = pos + size;
  if (id === 2) { // imports: count function imports, they shift function indexes
    for (let n = u32(), i = 0; i < n; i++) {
      str(); str();
      const kind = bytes[pos++];
      if (kind === 0) { u32(); imported++; } else if (kind === 1) { pos++; const f = bytes[pos++]; u32(); if (f & 1) u32(); } else if (kind === 2) { const f = bytes[pos++]; u32(); if (f & 1) u32(); } else if (kind === 3) { pos += 2; } else { pos++; u32(); }
    }
  } else if (id === 10) {
    for (let n = u32(), i = 0; i < n; i++) { const s = u32(); bodySizes.push(s); pos += s; }
  } else if (id === 0) {
    const name = str();
    sections[`custom:${name}`] = size;
    if (name === 'name') {
      while (pos < end) {
        const sub = bytes[pos++];
        const len = u32();
        const subEnd = pos + len;
        if (sub === 1) for (let n = u32(), i = 0; i < n; i++) { const idx = u32(); names.set(idx, str()); }
        pos = subEnd;
      }
    }
  }
  sections[id] = (sections[id] ?? 0) + size;
  pos = end;
}

// The crate of a Rust function name: the first path segment that names a package of Cargo.lock
// (so `<alloc::vec::Vec<serde_json::Value> as Drop>::drop` counts for serde_json); names in
// only core/alloc/std count as "std".
const lock = readFileSync(new URL('../Cargo.lock', import.meta.url), 'utf8');
const packages = new Set([...lock.matchAll(/^name = "([^"]+)"/gm)].map((m) => m[1].replace(/-/g, '_')));
function crateOf(name) {
  const segments = (name.match(/[a-z_][a-z0-9_]*(?=(?:\[[0-9a-f]+\])?::)/g) ?? []);
  const own = segments.find((c) => packages.has(c));
  if (own) return own;
  return segments.some((c) => ['core', 'alloc', 'std'].includes(c)) ? 'std (core, alloc)' : '(unnamed or glue)';
}

const byCrate = new Map();
let total = 0;
bodySizes.forEach((s, i) => {
  const c = crateOf(names.get(i + imported) ?? '');
  byCrate.set(c, (byCrate.get(c) ?? 0) + s);
  total += s;
});
console.log(`code section: ${total} bytes in ${bodySizes.length} functions; data section: ${sections[11] ?? 0} bytes`);
console.log('| crate | code bytes | share |\n| --- | ---: | ---: |');
for (const [c, s] of [...byCrate].sort((a, b) => b[1] - a[1]).slice(0, 25)) console.log(`| ${c} | ${s} | ${(100 * s / total).toFixed(1)}% |`);
