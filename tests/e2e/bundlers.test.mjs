// The npm package (pkg/) in the builds web apps ship: a tiny app (tests/bundlers/app) that
// imports `@ferry/migrator/auto` by name, built for production by Vite and by webpack 5
// (tests/bundlers/build.mjs), served as static files and run in Chromium: each build's page
// migrates a user's localStorage by itself, every row checked in PostgreSQL, and its next load
// sends nothing. (The third way, a plain <script type="module"> with no build step, is the
// demo's and auto.test.mjs's.)

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { ROOT, Server, launchBrowser, newDevice, openPage, userName, shot } from './harness.mjs';

const BUNDLERS = path.join(ROOT, 'tests/bundlers');
const server = new Server();
let browser;
let built;

before(async () => {
  built = JSON.parse(execFileSync(process.execPath, [path.join(BUNDLERS, 'build.mjs')], { cwd: BUNDLERS, encoding: 'utf8' }).trim().split('\n').pop());
  server.env.FERRY_WWW_DIR = path.join(BUNDLERS, 'dist');
  await server.start();
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await server.dispose();
});

for (const bundler of ['vite', 'webpack']) {
  test(`a ${bundler} production build of an app importing the package migrates on load, then sends nothing`, async () => {
    const files = built[bundler].map((f) => f.file);
    assert.ok(files.some((f) => f.endsWith('.wasm')), `${bundler} emitted the wasm as an asset: ${files}`);
    assert.ok(!built[bundler].some((f) => f.file.endsWith('.js') && f.bytes > 200_000), `the wasm is not inlined into JS: ${JSON.stringify(built[bundler])}`);

    const name = userName(bundler);
    const { user_id: user } = await server.token(name);
    const context = await newDevice(browser);
    const page = await openPage(context, `${server.url}/readyz`);
    const tasks = [1, 2, 3, 4].map((i) => ({ id: crypto.randomUUID(), title: `${bundler} task ${i} — “quoted” ✓`, status: 'todo', createdAt: '2024-01-01T00:00:00Z' }));
    await page.evaluate((t) => localStorage.setItem('tasks', JSON.stringify(t)), tasks);

    await page.goto(`${server.url}/${bundler}/index.html?user=${encodeURIComponent(name)}`);
    await page.waitForFunction(() => document.body.dataset.result, null, { timeout: 60_000 });
    const result = JSON.parse(await page.evaluate(() => document.body.dataset.result));
    assert.equal(result.status, 'migrated', JSON.stringify(result));
    assert.match(await page.textContent('#status'), /now saved/);
    await shot(page, `bundler-${bundler}`);
    const stored = server.sql(`SELECT id::text, title FROM tasks WHERE user_id = '${user}' ORDER BY title`);
    assert.deepEqual(stored.map((r) => r.title), tasks.map((t) => t.title).sort());
    assert.deepEqual(stored.map((r) => r.id).sort(), tasks.map((t) => t.id).sort());

    const mark = page.requests.length;
    await page.reload();
    await page.waitForFunction(() => document.body.dataset.result, null, { timeout: 60_000 });
    const again = JSON.parse(await page.evaluate(() => document.body.dataset.result));
    assert.equal(again.status, 'nothing_to_do', JSON.stringify(again));
    assert.deepEqual(page.requests.slice(mark).filter((r) => /\/v1\//.test(r)), [], 'an unchanged user sends nothing');
    assert.deepEqual(page.errors, []);
    await context.close();
  });
}
