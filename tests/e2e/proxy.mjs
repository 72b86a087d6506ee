// A small fault-injecting HTTP proxy for the end-to-end tests: it sits between the browser and
// the real ingest server on loopback, forwards every request (the page, the wasm bundle and the
// API), and on command injects one network fault at a time:
//
//   dropResponses: Map n→how  the n-th POST /v1/batches (1-based) is forwarded, the server
//                             answers (and commits), then the answer is lost: "reset" cuts
//                             the connection before any byte of it (Chromium may then resend
//                             the request by itself on a reused connection), "truncate" sends
//                             the head and half the body, then cuts (only the app can retry)
//   delayMs, delayPaths       answers to matching paths are held that long before they are
//                             written (the server has already answered and committed)
//   bytesPerSecond            answers to matching paths trickle out at that rate
//   stall(path regex)         the next matching request is held (forwarded only on release())
//   refuse                    every connection is cut at once, open ones too ("offline")
//   maxBatchBytes             POST /v1/batches with a larger body is answered 413 by the proxy,
//                             never forwarded
//
// Every fault is bounded: delays are fixed, stalls end on release() or close(), and close()
// cuts all connections. `log` records each /v1/ exchange ({ method, path, bytes, status,
// outcome, sha }) so a test can tell what really happened on the wire.

import http from 'node:http';
import { createHash } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';

const BATCHES = '/v1/batches';

export class FaultProxy {
  /** `upstream`: the server's origin, e.g. http://127.0.0.1:4242. */
  constructor(upstream) {
    this.upstream = new URL(upstream);
    this.url = null;
    this.log = [];
    this.batchPosts = 0;
    this.sockets = new Set();
    this.stalls = [];
    this.reset();
  }

  /** Back to a transparent proxy (releases held requests). */
  reset() {
    this.dropResponses = new Map();
    this.delayMs = 0;
    this.bytesPerSecond = 0;
    this.delayPaths = /^\/v1\//;
    this.refuse = false;
    this.maxBatchBytes = Infinity;
    for (const s of this.stalls) s.release();
    this.stalls = [];
  }

  /** Changes fault settings: `proxy.set({ delayMs: 3000 })`. */
  set(options) {
    for (const [k, v] of Object.entries(options)) {
      if (!(k in this) || typeof this[k] === 'function') throw new Error(`FaultProxy has no setting ${k}`);
      this[k] = v;
    }
    if (options.refuse) for (const s of this.sockets) s.destroy();
    return this;
  }

  /**
   * Holds the next request whose path matches `re` until the returned handle's `release()`;
   * `handle.arrived` resolves when such a request came in.
   */
  stall(re) {
    let arrive;
    let release;
    const handle = {
      re,
      taken: false,
      arrived: new Promise((r) => { arrive = r; }),
      released: new Promise((r) => { release = r; }),
      arrive: (info) => arrive(info),
      release: () => release(),
    };
    this.stalls.push(handle);
    return handle;
  }

  /** Exchanges of `POST /v1/batches` so far (arrived at the proxy). */
  batches() { return this.log.filter((e) => e.method === 'POST' && e.path === BATCHES); }

  async start() {
    this.server = http.createServer((req, res) => this.handle(req, res).catch((e) => {
      this.log.push({ method: req.method, path: req.url, outcome: `proxy error: ${e.message}` });
      if (!res.headersSent) { res.writeHead(502, { 'Content-Type': 'text/plain' }); res.end(`proxy: ${e.message}`); } else res.destroy();
    }));
    this.server.keepAliveTimeout = 5_000;
    this.server.on('connection', (socket) => {
      if (this.refuse) { socket.destroy(); return; }
      this.sockets.add(socket);
      socket.once('close', () => this.sockets.delete(socket));
    });
    await new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(0, '127.0.0.1', resolve);
    });
    this.url = `http://127.0.0.1:${this.server.address().port}`;
    this.agent = new http.Agent({ keepAlive: true, maxSockets: 16 });
    return this;
  }

  async close() {
    this.reset();
    for (const s of this.sockets) s.destroy();
    this.agent?.destroy();
    if (this.server) await new Promise((resolve) => this.server.close(() => resolve()));
    this.server = null;
  }

  async handle(req, res) {
    const chunks = [];
    for await (const c of req) chunks.push(c);
    const body = Buffer.concat(chunks);
    const path = new URL(req.url, 'http://x').pathname;
    const api = path.startsWith('/v1/');
    const entry = { method: req.method, path, bytes: body.length, status: null, outcome: 'forwarded', at: Date.now() };
    if (api) {
      entry.sha = createHash('sha256').update(body).digest('hex').slice(0, 16);
      this.log.push(entry);
    }
    let nth = 0;
    if (req.method === 'POST' && path === BATCHES) {
      nth = ++this.batchPosts;
      entry.nth = nth;
      if (body.length > this.maxBatchBytes) {
        entry.status = 413;
        entry.outcome = 'refused by the proxy: too large';
        const text = JSON.stringify({ error: { code: 'payload_too_large', message: `batch of ${body.length} bytes is over the proxy's limit of ${this.maxBatchBytes}` } });
        res.writeHead(413, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(text) });
        res.end(text);
        return;
      }
    }
    const stall = this.stalls.find((s) => !s.taken && s.re.test(path));
    if (stall) {
      stall.taken = true;
      entry.outcome = 'stalled';
      stall.arrive(entry);
      await stall.released;
    }

    // Forward, and read the whole answer: from here on, the server has done its work.
    const headers = { ...req.headers, host: this.upstream.host };
    delete headers.connection;
    const upstream = await new Promise((resolve, reject) => {
      const out = http.request({ host: this.upstream.hostname, port: this.upstream.port, method: req.method, path: req.url,
        headers: { ...headers, 'content-length': String(body.length) }, agent: this.agent }, resolve);
      out.once('error', reject);
      out.end(body);
    });
    const answer = [];
    for await (const c of upstream) answer.push(c);
    const payload = Buffer.concat(answer);
    entry.status = upstream.statusCode;
    if (api && /json/.test(upstream.headers['content-type'] ?? '') && payload.length < 4_000_000) {
      try { const j = JSON.parse(payload.toString('utf8')); if (typeof j.replay === 'boolean') entry.replay = j.replay; } catch { /* not JSON */ }
    }

    const drop = nth ? this.dropResponses.get(nth) : undefined;
    if (drop === 'reset') {
      entry.outcome = 'answer dropped after the server committed';
      req.socket.destroy();
      return;
    }
    if (api && this.delayMs && this.delayPaths.test(path)) {
      entry.delayedMs = this.delayMs;
      await sleep(this.delayMs);
    }
    if (req.socket.destroyed) { entry.outcome = 'the browser gave up before the answer'; return; }
    const out = { ...upstream.headers };
    delete out.connection;
    delete out['keep-alive'];
    delete out['transfer-encoding'];
    out['content-length'] = String(payload.length);
    res.writeHead(upstream.statusCode, out);
    if (drop === 'truncate') {
      entry.outcome = 'answer cut short after the server committed';
      res.write(payload.subarray(0, payload.length >> 1));
      await sleep(50);
      req.socket.destroy();
      return;
    }
    if (drop) throw new Error(`unknown drop mode ${drop}`);
    const rate = api && this.delayPaths.test(path) ? this.bytesPerSecond : 0;
    if (!rate) { res.end(payload); return; }
    // Trickle: a tenth of the rate every 100 ms.
    entry.throttled = rate;
    const step = Math.max(1, Math.floor(rate / 10));
    for (let i = 0; i < payload.length; i += step) {
      if (res.destroyed || req.socket.destroyed) { entry.outcome = 'the browser gave up during the answer'; return; }
      res.write(payload.subarray(i, i + step));
      await sleep(100);
    }
    res.end();
  }
}
