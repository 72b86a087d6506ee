// autoMigrate (pkg/auto.js) as an app that is not the demo uses it: a page of the server's
// origin without the demo's scripts imports the package and calls it. The bad inputs of issue
// 14 (a token provider that throws, a spec that does not parse, a server that is down, a
// throwing callback) resolve to a result with a code and a sentence, logged once, and never
// throw into the page; a real run migrates, and the next call sends nothing.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Server, launchBrowser, newDevice, openPage, userName } from './harness.mjs';

const server = new Server();
let browser;

before(async () => {
  await server.start();
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await server.dispose();
});

/** A fresh profile on a page of the server's origin that runs none of the demo's code. */
async function bareApp() {
  const context = await newDevice(browser);
  const page = await openPage(context, `${server.url}/readyz`);
  page.warnings = [];
  page.on('console', (m) => { if (m.type() === 'warning' && /^Ferry: the migration did not complete/.test(m.text())) page.warnings.push(m.text()); });
  return { context, page };
}

/** Calls autoMigrate in the page with `options` (`getToken` built there from `token`). */
const autoMigrate = (page, { token, throwingToken, ...options }) => page.evaluate(async ({ token, throwingToken, options }) => {
  const { autoMigrate } = await import('/pkg/auto.js');
  const results = [];
  const getToken = async () => { if (throwingToken) throw new Error('no session'); return token; };
  const first = await autoMigrate({ server: location.origin, getToken, ...options, onResult: (r) => { results.push(r.status); throw new Error('an app bug'); },
    onProgress: () => { throw new Error('another app bug'); } });
  return { first, results };
}, { token, throwingToken, options });

test('autoMigrate: a throwing token provider, a bad spec and a server that is down are results, logged once', async () => {
  const { context, page } = await bareApp();
  await page.evaluate(() => localStorage.setItem('tasks', JSON.stringify([{ id: crypto.randomUUID(), title: 'One', status: 'todo', createdAt: '2024-01-01T00:00:00Z' }])));

  const noToken = await autoMigrate(page, { throwingToken: true });
  assert.equal(noToken.first.status, 'failed');
  assert.equal(noToken.first.error.code, 'token_provider');
  assert.match(noToken.first.error.message, /getToken failed.*no session/);
  assert.deepEqual(noToken.results, ['failed'], 'onResult heard it once (and its throw was swallowed)');

  const badSpec = await autoMigrate(page, { token: 'unused', spec: '{"ferry_spec": 1}' });
  assert.equal(badSpec.first.status, 'failed');
  assert.equal(badSpec.first.error.code, 'spec_invalid');
  assert.match(badSpec.first.error.message, /spec/);

  const down = await page.evaluate(async () => {
    const { autoMigrate } = await import('/pkg/auto.js');
    const stop = new AbortController();
    const opts = { server: 'http://127.0.0.1:9', getToken: async () => 't', signal: stop.signal };
    const once = await autoMigrate({ ...opts, retry: false });
    const retrying = await autoMigrate(opts);
    stop.abort();
    return { once, retrying };
  });
  assert.equal(down.once.status, 'failed');
  assert.equal(down.once.error.code, 'unavailable');
  assert.equal(down.once.error.failure, 'unreachable');
  assert.match(down.once.error.message, /127\.0\.0\.1:9\/v1\/spec/);
  assert.equal(down.retrying.status, 'retrying');
  assert.equal(down.retrying.retryInMs, 2000);

  assert.equal(page.warnings.length, 4, `one warning per failed call:\n${page.warnings.join('\n')}`);
  assert.deepEqual(page.errors, []);
  assert.equal(await page.evaluate(() => JSON.parse(localStorage.getItem('tasks')).length), 1, 'the app data is untouched');
  await context.close();
});

test('autoMigrate: a real run migrates with the fetched spec, and the next call is nothing_to_do without a request', async () => {
  const session = await server.token(userName('auto'));
  const { context, page } = await bareApp();
  await page.evaluate(() => localStorage.setItem('tasks', JSON.stringify([1, 2, 3].map((i) => ({ id: crypto.randomUUID(), title: `Task ${i}`, status: 'todo', createdAt: '2024-01-01T00:00:00Z' })))));
  const run = await autoMigrate(page, { token: session.token });
  assert.equal(run.first.status, 'migrated', JSON.stringify(run.first));
  assert.equal(run.first.report.recordsSent, 3);
  assert.deepEqual(run.results, ['migrated']);
  assert.equal(server.count(`SELECT count(*) FROM tasks WHERE user_id = '${session.user_id}'`), 3);

  const mark = page.requests.length;
  const again = await autoMigrate(page, { token: session.token });
  assert.equal(again.first.status, 'nothing_to_do');
  const api = page.requests.slice(mark).filter((r) => /\/v1\//.test(r));
  assert.deepEqual(api, [], 'the cached spec and the fingerprints answer without a request');
  assert.deepEqual(page.warnings, []);
  assert.deepEqual(page.errors, []);
  await context.close();
});

test('autoMigrate: an already-migrated, unchanged user downloads only the light loader and makes no request; a change runs the migrator', async () => {
  const session = await server.token(userName('light'));
  const { context, page } = await bareApp();
  await page.evaluate(() => localStorage.setItem('tasks', JSON.stringify([1, 2].map((i) => ({ id: crypto.randomUUID(), title: `Task ${i}`, status: 'todo', createdAt: '2024-01-01T00:00:00Z' })))));
  const run = await autoMigrate(page, { token: session.token });
  assert.equal(run.first.status, 'migrated', JSON.stringify(run.first));
  assert.ok(await page.evaluate(() => localStorage.getItem('ferry-stamp:ferry')), 'the verified run left a stamp');
  // The app moves to another screen: only its last route changes, a key the spec ignores.
  await page.evaluate(() => localStorage.setItem('taskboard:lastRoute', '/elsewhere'));

  // The next page load: a new document (no module state), the same browser profile.
  const requested = [];
  page.on('request', (r) => requested.push(r));
  await page.goto(`${server.url}/readyz`);
  const light = await page.evaluate(async (token) => {
    const t0 = performance.now();
    const { autoMigrate } = await import('/pkg/auto.js');
    const result = await autoMigrate({ server: location.origin, getToken: async () => token });
    return { result, ms: performance.now() - t0 };
  }, session.token);
  assert.deepEqual(light.result, { status: 'nothing_to_do', report: null });
  const fetched = [];
  for (const r of requested) {
    const body = await (await r.response())?.body().catch(() => null);
    fetched.push({ path: new URL(r.url()).pathname, bytes: body?.length ?? 0 });
  }
  const paths = fetched.map((f) => f.path).filter((p) => p !== '/readyz');
  assert.deepEqual(paths.sort(), ['/pkg/auto.js', '/pkg/stamp.js'], 'no wasm, no glue, no request to the server');
  const bytes = fetched.filter((f) => f.path.startsWith('/pkg/')).reduce((n, f) => n + f.bytes, 0);
  assert.ok(bytes > 1000 && bytes < 20_000, `the light step took ${bytes} bytes`);
  console.log(`light step: ${bytes} bytes (auto.js + stamp.js, uncompressed), ${light.ms.toFixed(1)} ms to the result`);

  // A change: the light step cannot vouch for it, the migrator runs and sends the new record.
  await page.evaluate(() => {
    const tasks = JSON.parse(localStorage.getItem('tasks'));
    tasks.push({ id: crypto.randomUUID(), title: 'Task 3', status: 'todo', createdAt: '2024-01-01T00:00:00Z' });
    localStorage.setItem('tasks', JSON.stringify(tasks));
  });
  const changed = await autoMigrate(page, { token: session.token });
  assert.equal(changed.first.status, 'migrated', JSON.stringify(changed.first));
  assert.equal(changed.first.report.recordsSent, 1);
  assert.equal(server.count(`SELECT count(*) FROM tasks WHERE user_id = '${session.user_id}'`), 3);
  assert.deepEqual(page.errors, []);
  await context.close();
});

test('autoMigrate: a second tab that finds the run held reports in_other_tab, then the first tab\'s outcome', async () => {
  const session = await server.token(userName('auto-tabs'));
  const { context, page: a } = await bareApp();
  const b = await openPage(context, `${server.url}/readyz`);
  await a.evaluate(() => {
    const tasks = Array.from({ length: 3000 }, (_, i) => ({ id: crypto.randomUUID(), title: `Task ${i}`, status: 'todo', description: 'notes '.repeat(20), createdAt: '2024-01-01T00:00:00Z' }));
    localStorage.setItem('tasks', JSON.stringify(tasks));
  });
  const start = (page) => page.evaluate((token) => {
    window.__results = [];
    window.__stages = [];
    return import('/pkg/auto.js').then(({ autoMigrate }) => {
      window.__first = autoMigrate({ server: location.origin, getToken: async () => token,
        onProgress: (p) => window.__stages.push(p.stage), onResult: (r) => window.__results.push(r) });
    });
  }, session.token);
  await start(a);
  await a.waitForFunction(() => window.__stages.includes('upload'), null, { timeout: 60_000, polling: 20 });
  await start(b);
  const firstB = await b.evaluate(() => window.__first);
  assert.equal(firstB.status, 'in_other_tab', JSON.stringify(firstB));
  const firstA = await a.evaluate(() => window.__first);
  assert.equal(firstA.status, 'migrated');
  await b.waitForFunction(() => window.__results.some((r) => r.status === 'migrated'), null, { timeout: 60_000, polling: 50 });
  const laterB = await b.evaluate(() => window.__results.map((r) => [r.status, r.report?.migrationId]));
  assert.deepEqual(laterB, [['in_other_tab', null], ['migrated', firstA.report.migrationId]]);
  assert.equal(b.requests.filter((r) => r === 'POST /v1/batches').length, 0, 'only the first tab uploads');
  await context.close();
});
