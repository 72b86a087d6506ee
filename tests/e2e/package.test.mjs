// The npm package that scripts/build-wasm.sh writes to pkg/: its package.json names files that
// exist, and an adopter's TypeScript file that uses every public call compiles with
// `tsc --strict` against it (resolved through "exports" from node_modules, as a bundler would),
// while calls the API must refuse are refused. Needs a built pkg/; no browser, no server.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, copyFileSync, symlinkSync, rmSync, statSync } from 'node:fs';
import path from 'node:path';
import { ROOT } from './harness.mjs';

const PKG = path.join(ROOT, 'pkg');
const TSC = path.join(ROOT, 'tests/e2e/node_modules/typescript/bin/tsc');
const manifest = () => JSON.parse(readFileSync(path.join(PKG, 'package.json'), 'utf8'));

/** Every path a package.json entry names, with where it was named. */
function namedPaths(pkg) {
  const out = [['main', pkg.main], ['types', pkg.types]];
  const walk = (where, value) => {
    if (typeof value === 'string') out.push([where, value]);
    else for (const [k, v] of Object.entries(value ?? {})) walk(`${where}["${k}"]`, v);
  };
  walk('exports', pkg.exports);
  return out;
}

test('pkg/package.json describes an ES module package whose every named file exists', () => {
  const pkg = manifest();
  const cargo = readFileSync(path.join(ROOT, 'Cargo.toml'), 'utf8');
  const version = /\[package\][^[]*?\nversion = "([^"]+)"/.exec(cargo)?.[1];
  assert.equal(pkg.version, version, 'the version is the crate\'s');
  assert.match(pkg.name, /^(@[a-z0-9-]+\/)?[a-z0-9-]+$/, `name ${JSON.stringify(pkg.name)}`);
  assert.equal(pkg.type, 'module');
  // Only the component's module has an effect (it defines <ferry-migrate>): a bundler keeps it.
  assert.deepEqual(pkg.sideEffects, ['./ferry-migrate.js'], `sideEffects ${JSON.stringify(pkg.sideEffects)}`);
  for (const entry of ['.', './auto', './ferry-migrate']) {
    assert.equal(Object.keys(pkg.exports?.[entry] ?? {})[0], 'types', `exports["${entry}"] lists "types" first (TypeScript reads conditions in order)`);
    assert.ok(pkg.exports[entry].default, `exports["${entry}"] has "default"`);
  }
  for (const [where, rel] of namedPaths(pkg)) {
    assert.ok(rel.startsWith('./'), `${where} is ${JSON.stringify(rel)}: package paths start with ./`);
    assert.ok(existsSync(path.join(PKG, rel)), `${where} names ${rel}, which the build did not write`);
  }
  for (const rel of pkg.files ?? []) {
    assert.ok(existsSync(path.join(PKG, rel)), `"files" lists ${rel}, which the build did not write`);
  }
  const shipped = new Set((pkg.files ?? []).map((f) => f.replace(/\/$/, '')));
  for (const [where, rel] of namedPaths(pkg)) {
    const top = rel.slice(2).split('/')[0];
    assert.ok(top === 'package.json' || shipped.has(top), `${where} names ${rel}, which "files" leaves out of the package`);
  }
  // Every glue module's import is shipped too (wasm-bindgen's snippets).
  const glue = readFileSync(path.join(PKG, 'ferry.js'), 'utf8');
  for (const [, rel] of glue.matchAll(/from "\.\/([^"]+)"/g)) {
    assert.ok(existsSync(path.join(PKG, rel)), `ferry.js imports ./${rel}, which is missing`);
    assert.ok(shipped.has(rel.split('/')[0]), `ferry.js imports ./${rel}, which "files" leaves out`);
  }
});

/** A throw-away app folder with pkg/ installed as node_modules/<name>, and `files` copied in. */
function adopterApp(files) {
  const dir = mkdtempSync('/tmp/ferry-adopter-');
  const scope = path.join(dir, 'node_modules', ...manifest().name.split('/').slice(0, -1));
  mkdirSync(scope, { recursive: true });
  symlinkSync(PKG, path.join(dir, 'node_modules', manifest().name), 'dir');
  for (const f of files) copyFileSync(path.join(ROOT, 'tests/adopter', f), path.join(dir, f));
  return dir;
}

const tsc = (dir, file) => {
  try {
    execFileSync(process.execPath, [TSC, '--strict', '--noEmit', '--target', 'es2022', '--module', 'esnext',
      '--moduleResolution', 'bundler', '--lib', 'es2022,esnext.disposable,dom', file], { cwd: dir, encoding: 'utf8' });
    return '';
  } catch (e) {
    return `${e.stdout ?? ''}${e.stderr ?? ''}` || String(e);
  }
};

test('an adopter file using every public call compiles with tsc --strict', () => {
  assert.ok(statSync(TSC).isFile(), `${TSC} is missing: run scripts/setup.sh`);
  const dir = adopterApp(['adopter.ts']);
  try {
    const out = tsc(dir, 'adopter.ts');
    assert.equal(out, '', `tsc --strict refused tests/adopter/adopter.ts:\n${out}`);
  } finally { rmSync(dir, { recursive: true, force: true }); }
});

test('tsc --strict refuses a wrong conflict choice, run mode and a missing getToken', () => {
  const dir = adopterApp(['bad.ts']);
  try {
    const source = readFileSync(path.join(dir, 'bad.ts'), 'utf8').split('\n');
    const expected = source.flatMap((line, i) => {
      const m = /\/\/ (TS\d+)$/.exec(line);
      return m ? [`bad.ts(${i + 1},`, m[1]] : [];
    });
    assert.ok(expected.length >= 6, 'bad.ts marks the lines it expects refused');
    const out = tsc(dir, 'bad.ts');
    for (let i = 0; i < expected.length; i += 2) {
      const line = out.split('\n').find((l) => l.startsWith(expected[i]));
      assert.ok(line?.includes(`error ${expected[i + 1]}`), `expected ${expected[i + 1]} at ${expected[i]}…; tsc said:\n${out}`);
    }
  } finally { rmSync(dir, { recursive: true, force: true }); }
});
