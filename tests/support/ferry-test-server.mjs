// A scripted stand-in for the ingest server (docs/http-api.md), for the wasm-bindgen browser
// tests of the `ferry` crate. Routes live under /t/<run>/<mode>/v1/...: <run> isolates a test's
// state (stored batches survive a mode change, like a real server across a reload), <mode>
// picks the faults:
//   ok          answer normally
//   flaky       the first POST of every batch number gets 503
//   split       batches of more than one record get 413
//   flaky-split both (413 first)
//   retry-after the first POST of every batch number gets 429 with Retry-After: 1
//   down        every batch after number 0 gets 503
//   poison      every batch after number 0 gets the same 500 internal (a server fault)
// POST .../v1/migrations/<id>/rollback marks the migration rolled back: its batches and its
// verification get 409 migration_rolled_back. POST .../v1/migrations/<id>/verify compares the
// browser's tallies with the report and marks the migration verified.
// GET /t/<run>/log lists what was received.
//
// Usage: node tests/support/ferry-test-server.mjs [-- command args...]
// With a command, the server starts, runs it (FERRY_TEST_SERVER set), stops, and exits with
// the command's status.
import http from 'node:http';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';

// A valid record's content hash as ferry-core's `pipeline::hash_record` computes it with an id:
// SHA-256 of kind, NUL, the id's 16 bytes, NUL, the raw text; its first 16 bytes in hex. The
// kind stands for its table's identity: the tests' spec (taskboard) shares no table. The
// verification compares these with the browser's own hashes, so a drift fails the tests.
// `ferry-batch/2` records carry no hash (the header's digest covers them); `/1` ones do.
const contentHash = (r) => r.hash ?? createHash('sha256')
  .update(r.kind).update(Buffer.from([0]))
  .update(Buffer.from(r.id.replaceAll('-', ''), 'hex')).update(Buffer.from([0]))
  .update(r.raw.json ?? r.raw.text, 'utf8')
  .digest().subarray(0, 16).toString('hex');

const port = Number(process.env.FERRY_TEST_PORT || 8787);
const runs = new Map();
const state = (run) => {
  if (!runs.has(run)) runs.set(run, { batches: new Map(), attempts: new Map(), log: [], rolledBack: new Set(), verified: new Set() });
  return runs.get(run);
};
const cors = {
  'Access-Control-Allow-Origin': '*',
  'Access-Control-Allow-Headers': 'authorization, content-type, x-ferry-backup-id',
  'Access-Control-Allow-Methods': 'GET, POST, OPTIONS',
  'Access-Control-Expose-Headers': 'Retry-After',
};
const send = (res, status, body, extra = {}) => {
  res.writeHead(status, { 'Content-Type': 'application/json', ...cors, ...extra });
  res.end(JSON.stringify(body));
};
const fail = (res, status, code, message, extra) =>
  send(res, status, { error: { code, message, details: {} } }, extra);
const xor = (acc, hex) => {
  for (let i = 0; i < 16; i++) acc[i] ^= parseInt(hex.slice(2 * i, 2 * i + 2), 16);
};

const server = http.createServer((req, res) => {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    if (req.method === 'OPTIONS') { res.writeHead(204, cors); return res.end(); }
    const body = Buffer.concat(chunks);
    const m = req.url.match(/^\/t\/([^/]+)\/(?:log$|([^/]+)(\/v1\/.*)$)/);
    if (!m) return fail(res, 404, 'not_found', req.url);
    const st = state(m[1]);
    if (!m[3]) return send(res, 200, st.log);
    const [mode, path] = [m[2], m[3]];
    const entry = { method: req.method, path, sequence: null, records: 0, status: 0 };
    st.log.push(entry);
    const reply = (status, payload, extra) => { entry.status = status; send(res, status, payload, extra); };
    const refuse = (status, code, extra) => {
      entry.status = status; fail(res, status, code, `scripted ${code}`, extra);
    };
    if (!(req.headers.authorization || '').startsWith('Bearer ') || req.headers.authorization === 'Bearer expired')
      return refuse(401, 'unauthorized');
    if (req.method === 'POST' && path === '/v1/batches') {
      let batch;
      try { batch = JSON.parse(body.toString('utf8')); } catch (e) { return refuse(400, 'bad_batch'); }
      const { migration_id: mid, sequence: seq } = batch.header;
      const items = [...batch.records, ...(batch.rejected || [])];
      Object.assign(entry, { sequence: seq, records: items.length });
      const key = `${mid}/${seq}`;
      const attempt = (st.attempts.get(key) || 0) + 1;
      st.attempts.set(key, attempt);
      if (mode.includes('split') && items.length > 1) return refuse(413, 'payload_too_large');
      if (mode.includes('flaky') && attempt === 1) return refuse(503, 'unavailable');
      if (mode === 'retry-after' && attempt === 1) return refuse(429, 'rate_limited', { 'Retry-After': '1' });
      if (mode === 'down' && seq > 0) return refuse(503, 'unavailable');
      if (mode === 'poison' && seq > 0) return refuse(500, 'internal');
      if (st.rolledBack.has(mid)) return refuse(409, 'migration_rolled_back');
      const text = body.toString('utf8');
      const stored = st.batches.get(key);
      if (stored && stored.text !== text) return refuse(409, 'idempotency_conflict');
      st.batches.set(key, { mid, text, batch });
      const outcomes = [
        ...batch.records.map((r) => ({ id: r.id, hash: contentHash(r), kind: r.kind, outcome: stored ? 'unchanged' : 'inserted', reasons: [] })),
        ...(batch.rejected || []).map((r) => ({ id: null, hash: r.hash, kind: r.kind, outcome: 'quarantined', reasons: r.reasons.map((n) => n.message) })),
      ];
      return reply(200, { migration_id: mid, sequence: seq, replay: !!stored, outcomes, counts: {} });
    }
    const report = (id) => {
      const kinds = {};
      let batches = 0;
      for (const { mid, batch } of st.batches.values()) {
        if (mid !== id) continue;
        batches++;
        const hashes = [...batch.records.map(contentHash), ...(batch.rejected || []).map((r) => r.hash)];
        for (const [i, r] of [...batch.records, ...(batch.rejected || [])].entries()) {
          const k = (kinds[r.kind] ||= { received: 0, acc: new Array(16).fill(0) });
          k.received++; xor(k.acc, hashes[i]);
        }
      }
      const out = {};
      for (const [k, v] of Object.entries(kinds))
        out[k] = { received: v.received, checksum: v.acc.map((b) => b.toString(16).padStart(2, '0')).join(''), outcomes: {} };
      const status = st.rolledBack.has(id) ? 'rolled_back' : st.verified.has(id) ? 'verified' : 'running';
      return { migration_id: id, status, batches, kinds: out };
    };
    const mig = path.match(/^\/v1\/migrations\/([^/]+)(\/rollback|\/verify)?$/);
    if (req.method === 'GET' && mig && !mig[2]) return reply(200, report(mig[1]));
    if (req.method === 'POST' && mig && mig[2] === '/rollback') {
      const already = st.rolledBack.has(mig[1]);
      st.rolledBack.add(mig[1]);
      return reply(200, { restored: 0, already_rolled_back: already });
    }
    if (req.method === 'POST' && mig && mig[2] === '/verify') {
      const r = report(mig[1]);
      if (r.status === 'rolled_back') return refuse(409, 'migration_rolled_back');
      let sent;
      try { sent = JSON.parse(body.toString('utf8')).kinds; } catch (e) { return refuse(422, 'invalid_body'); }
      const same = (a, b) => Object.keys(a).length === Object.keys(b).length && Object.entries(a).every(
        ([k, t]) => b[k] && b[k].received === t.received && b[k].checksum === t.checksum.toLowerCase());
      if (!same(sent, r.kinds)) return refuse(409, 'verification_mismatch');
      st.verified.add(mig[1]);
      return reply(200, { ...r, status: 'verified' });
    }
    if (req.method === 'POST' && path === '/v1/backups')
      return reply(200, { id: req.headers['x-ferry-backup-id'], size: body.length });
    // A server that answers late (`stall`: headers after 3 s) or whose body trickles in
    // (`trickle`: headers at once, then a byte every 100 ms for 3 s): a client timeout must
    // bound both.
    if (req.method === 'GET' && path === '/v1/conflicts' && mode === 'stall') {
      setTimeout(() => { if (!res.destroyed) reply(200, []); }, 3000);
      return;
    }
    if (req.method === 'GET' && path === '/v1/conflicts' && mode === 'trickle') {
      entry.status = 200;
      res.writeHead(200, { ...cors, 'Content-Type': 'application/json' });
      res.write('[');
      let sent = 0;
      const timer = setInterval(() => {
        if (res.destroyed || ++sent >= 30) { clearInterval(timer); if (!res.destroyed) res.end(']'); return; }
        res.write(' ');
      }, 100);
      return;
    }
    if (req.method === 'GET' && path === '/v1/conflicts') return reply(200, []);
    return refuse(404, 'not_found');
  });
});

server.listen(port, '127.0.0.1', () => {
  const dash = process.argv.indexOf('--');
  if (dash < 0) { console.log(`ferry test server on http://127.0.0.1:${port}`); return; }
  const [cmd, ...args] = process.argv.slice(dash + 1);
  const child = spawn(cmd, args, { stdio: 'inherit', env: { ...process.env, FERRY_TEST_SERVER: `http://127.0.0.1:${port}` } });
  child.on('exit', (code, signal) => { server.close(); process.exit(code ?? (signal ? 1 : 0)); });
});
