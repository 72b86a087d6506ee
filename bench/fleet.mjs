// The operator dashboard's queries on a generated fleet (issue 16 §1): a real ferry-server on
// its embedded PostgreSQL (tests/e2e/harness.mjs), a fleet written straight into Ferry's
// bookkeeping tables by SQL (runs in every state over 72 hours, one ledger row per run,
// `--records` received records per user, every 50th quarantined, a fifth of the users with a
// quarantined record, and the per-user counts ingest keeps with them), then each `/admin/api`
// read timed over HTTP, and the `/admin` page in headless Chromium, best of `--runs`.
//
//   node bench/fleet.mjs [--users 100000] [--records 20] [--runs 3]
//
// Not a test: no timing fails it; a wrong count in an answer exits non-zero.

import { execFileSync } from 'node:child_process';
import { Server, launchBrowser } from '../tests/e2e/harness.mjs';

const arg = (name, fallback) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : fallback;
};
const USERS = arg('users', 100_000);
const PER = arg('records', 20);
const RUNS = arg('runs', 3);

const server = new Server();
await server.start();
try {
  const psql = (sql) => execFileSync('psql', ['-X', '-q', '-At', '-v', 'ON_ERROR_STOP=1', '-h', server.env.FERRY_PG_SOCKET_DIR,
    '-p', '5432', '-U', 'postgres', '-d', 'ferry', '-c', sql], { encoding: 'utf8', env: server.env, maxBuffer: 1 << 26 });
  let t = performance.now();
  psql(`
    CREATE TEMP TABLE u AS SELECT gen_random_uuid() AS user_id, gen_random_uuid() AS migration_id, i FROM generate_series(1, ${USERS}) i;
    INSERT INTO ferry_migration_runs (user_id, migration_id, started_at, status, finished_at, spec_app, spec_version, verified_at, verified_records, verified_batches, last_batch_at)
      SELECT user_id, migration_id, now() - (i % 72) * interval '1 hour',
             CASE WHEN i % 10 < 7 THEN 'verified' WHEN i % 10 = 9 THEN 'rolled_back' ELSE 'running' END,
             CASE WHEN i % 10 < 7 OR i % 10 = 9 THEN now() END, 'taskboard', '2026.11',
             CASE WHEN i % 10 < 7 THEN now() END, CASE WHEN i % 10 < 7 THEN ${PER} END, CASE WHEN i % 10 < 7 THEN 1 END,
             now() - (i % 72) * interval '1 hour' FROM u;
    INSERT INTO ferry_ingest_ledger (user_id, migration_id, sequence, request_hash, response, created_at)
      SELECT user_id, migration_id, 0, sha256(user_id::text::bytea), '{}'::jsonb, now() - (i % 72) * interval '1 hour' FROM u;
    -- One row per batch of up to 2,000 records, as ingest writes them (schema migration 0013).
    INSERT INTO ferry_received_batches (user_id, migration_id, sequence, kinds, hashes, outcomes, received_at)
      SELECT user_id, migration_id, (j - 1) / 2000, array_agg('tasks'::text), array_agg(substring(sha256((user_id::text || j)::bytea) from 1 for 16)),
             array_agg(CASE WHEN j % 50 = 0 THEN 'quarantined' ELSE 'inserted' END::text), now() - (i % 72) * interval '1 hour'
        FROM u, generate_series(1, ${PER}) j GROUP BY user_id, migration_id, i, (j - 1) / 2000;
    INSERT INTO ferry_quarantine (user_id, migration_id, kind, key, locator, raw_value, reasons)
      SELECT user_id, migration_id, 'tasks', 'tasks', '1', '{"title":"x","status":"bogus"}',
             jsonb_build_array('record "tasks"[1]: field ' || chr(96) || 'status' || chr(96) || ' is "bogus"') FROM u WHERE i % 5 = 0;
    -- What ingest keeps with those rows for the summary (schema migration 0012).
    INSERT INTO ferry_received_counts (user_id, migration_id, kind, outcome, hour_utc, records)
      SELECT user_id, migration_id, kind, outcome, date_trunc('hour', received_at AT TIME ZONE 'UTC'), count(*)
        FROM ferry_received GROUP BY 1, 2, 3, 4, 5;
    INSERT INTO ferry_quarantine_counts (user_id, kind, records)
      SELECT user_id, kind, count(*) FROM ferry_quarantine GROUP BY 1, 2;
    INSERT INTO ferry_rejection_counts (user_id, kind, field, reasons, records, example)
      SELECT q.user_id, q.kind, substring(r.reason from 'field ' || chr(96) || '([^' || chr(96) || ']*)' || chr(96)),
             count(*), count(DISTINCT q.id), min(r.reason)
        FROM ferry_quarantine q, LATERAL jsonb_array_elements_text(q.reasons) AS r(reason) GROUP BY 1, 2, 3;
    ANALYZE;`);
  console.log(`fleet: ${USERS.toLocaleString('en')} users, ${(USERS * PER).toLocaleString('en')} records, generated in ${((performance.now() - t) / 1000).toFixed(1)} s`);

  const get = async (path) => {
    let best = Infinity;
    let body;
    for (let r = 0; r < RUNS; r++) {
      t = performance.now();
      const response = await fetch(server.url + path, { headers: { Authorization: `Bearer ${server.env.FERRY_OPERATOR_TOKEN}` } });
      body = await response.json();
      if (!response.ok) throw new Error(`GET ${path}: ${response.status} ${JSON.stringify(body)}`);
      best = Math.min(best, performance.now() - t);
    }
    console.log(`GET ${path}: ${best.toFixed(0)} ms (best of ${RUNS})`);
    return body;
  };
  const summary = await get('/admin/api/summary');
  const received = summary.kinds.reduce((s, k) => s + k.received, 0);
  if (summary.users.started !== USERS || received !== USERS * PER) {
    throw new Error(`the summary counts ${summary.users.started} users and ${received} records, not ${USERS} and ${USERS * PER}`);
  }
  const page = await get('/admin/api/users?limit=50');
  if (page.users.length !== Math.min(50, USERS)) throw new Error(`a page of ${page.users.length} users`);
  await get(`/admin/api/users?limit=50&after=${page.next_after}`);
  for (const state of ['stalled', 'rolled_back']) await get(`/admin/api/users?state=${state}&limit=50`);
  await get(`/admin/api/users/${page.users[0].user_id}`);

  // The dashboard as the operator sees it: headless Chromium loads /admin signed in (the token
  // in the tab's sessionStorage) until the page says it has loaded everything.
  const browser = await launchBrowser();
  try {
    const tab = await browser.newPage();
    await tab.goto(`${server.url}/admin`);
    await tab.evaluate((token) => sessionStorage.setItem('ferry-operator-token', token), server.env.FERRY_OPERATOR_TOKEN);
    let best = Infinity;
    for (let r = 0; r < RUNS; r++) {
      t = performance.now();
      await tab.reload();
      await tab.waitForSelector('body[data-loaded=yes]', { timeout: 120_000 });
      best = Math.min(best, performance.now() - t);
    }
    const started = Number((await tab.locator('#states [data-state=started]').first().textContent()).replaceAll(',', ''));
    if (started !== USERS) throw new Error(`the dashboard shows ${started} users, not ${USERS}`);
    console.log(`/admin page load, signed in, until everything is shown: ${best.toFixed(0)} ms (best of ${RUNS})`);
  } finally {
    await browser.close();
  }
} finally {
  await server.dispose();
}
