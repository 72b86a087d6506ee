// The layouts of issue 11 §2 in headless Chromium, as an app that is not the demo: the server
// runs a spec (written here) whose tables come from `ferry-server spec ddl`, and a bare page of
// its origin calls autoMigrate over localStorage holding a persisted state container (records
// at a `path`, a `legacy` boolean map) and per-record keys behind an `index` key. Every row is
// checked by SQL; the key the index does not list is in the quarantine, not in the table.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { Server, launchBrowser, newDevice, openPage, serverBinary, userName } from './harness.mjs';

const SPEC = {
  ferry_spec: 1,
  app: 'layouts-e2e',
  version: '1',
  kinds: [
    {
      name: 'items',
      source: { array: 'pantry-store', path: '/state/items' },
      id: { from: 'id', scope: 'global', legacy_column: 'legacy_id' },
      table: 'pantry_items',
      conflict: 'overwrite',
      fields: [
        { from: 'name', column: 'name', type: 'string', required: true },
        { from: 'stocked', column: 'stocked', type: 'boolean', required: true, legacy: { yes: true, no: false, 1: true, 0: false } },
      ],
    },
    {
      name: 'settings',
      source: { object: 'pantry-store', path: '/state/settings' },
      id: { from: '$singleton', scope: 'global' },
      table: 'pantry_settings',
      conflict: 'overwrite',
      fields: [{ from: 'unit', column: 'unit', type: 'string', required: true }],
    },
    {
      name: 'recipes',
      source: { prefix: 'recipe:', index: 'recipes.index' },
      id: { from: '$key_suffix', scope: 'device', legacy_column: 'legacy_id' },
      table: 'recipes',
      conflict: 'overwrite',
      fields: [{ from: 'title', column: 'title', type: 'string', required: true }],
    },
  ],
};

const server = new Server();
let browser;

before(async () => {
  const specPath = path.join(server.dir, 'layouts.json');
  const migrations = path.join(server.dir, 'migrations');
  mkdirSync(migrations);
  writeFileSync(specPath, JSON.stringify(SPEC, null, 2));
  const ddl = execFileSync(serverBinary(), ['spec', 'ddl', specPath], { encoding: 'utf8' });
  writeFileSync(path.join(migrations, '0001_tables.sql'), ddl);
  server.env.FERRY_SPEC = specPath;
  server.env.FERRY_APP_MIGRATIONS = migrations;
  await server.start();
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await server.dispose();
});

test('layouts: a nested state container and an index with per-record keys migrate, the unlisted key is quarantined', async () => {
  const session = await server.token(userName('layouts'));
  const context = await newDevice(browser);
  const page = await openPage(context, `${server.url}/readyz`);
  await page.evaluate(() => {
    localStorage.setItem('pantry-store', JSON.stringify({
      state: {
        items: [{ id: 'rice', name: 'Rice', stocked: 'yes' }, { id: 'salt', name: 'Salt', stocked: 0 }, { id: 'oil', name: 'Oil', stocked: true }],
        settings: { unit: 'metric' },
      },
      version: 3,
    }));
    localStorage.setItem('recipes.index', JSON.stringify(['1', 2]));
    localStorage.setItem('recipe:1', JSON.stringify({ title: 'Soup' }));
    localStorage.setItem('recipe:2', JSON.stringify({ title: 'Bread' }));
    localStorage.setItem('recipe:3', JSON.stringify({ title: 'Deleted long ago' }));
  });
  const result = await page.evaluate(async (token) => {
    const { autoMigrate } = await import('/pkg/auto.js');
    return autoMigrate({ server: location.origin, getToken: async () => token });
  }, session.token);
  assert.equal(result.status, 'migrated', JSON.stringify(result));

  const user = session.user_id;
  assert.deepEqual(
    server.sql(`SELECT legacy_id, name, stocked FROM pantry_items WHERE user_id = '${user}' ORDER BY legacy_id`),
    [{ legacy_id: 'oil', name: 'Oil', stocked: true }, { legacy_id: 'rice', name: 'Rice', stocked: true }, { legacy_id: 'salt', name: 'Salt', stocked: false }],
  );
  assert.deepEqual(server.sql(`SELECT unit FROM pantry_settings WHERE user_id = '${user}'`), [{ unit: 'metric' }]);
  assert.deepEqual(
    server.sql(`SELECT legacy_id, title FROM recipes WHERE user_id = '${user}' ORDER BY legacy_id`),
    [{ legacy_id: '1', title: 'Soup' }, { legacy_id: '2', title: 'Bread' }],
  );
  const quarantined = server.sql(`SELECT kind, key, raw_value, reasons::text AS reasons FROM ferry_quarantine WHERE user_id = '${user}'`);
  assert.equal(quarantined.length, 1, JSON.stringify(quarantined));
  assert.equal(quarantined[0].kind, 'recipes');
  assert.equal(quarantined[0].key, 'recipe:3');
  assert.match(quarantined[0].raw_value, /Deleted long ago/);
  assert.match(quarantined[0].reasons, /not listed in index key .*recipes\.index/);
  assert.equal(await page.evaluate(() => localStorage.getItem('recipe:3')), JSON.stringify({ title: 'Deleted long ago' }), 'the app data is untouched');

  // Delisting a recipe in the app changes the index key's fingerprint: the next run looks again.
  await page.evaluate(() => localStorage.setItem('recipes.index', JSON.stringify(['1'])));
  const again = await page.evaluate(async (token) => {
    const { autoMigrate } = await import('/pkg/auto.js');
    return autoMigrate({ server: location.origin, getToken: async () => token });
  }, session.token);
  assert.notEqual(again.status, 'nothing_to_do', JSON.stringify(again));
  assert.equal(server.count(`SELECT count(*) FROM ferry_quarantine WHERE user_id = '${user}' AND key = 'recipe:2'`), 1);
  assert.deepEqual(page.errors, []);
  await context.close();
});
