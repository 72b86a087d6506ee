// Firefox and WebKit for the cross-browser e2e tests (issue 14 §6), behind one small driver:
// Firefox ESR through puppeteer-core over WebDriver BiDi, WebKitGTK's MiniBrowser through
// WebKitWebDriver (started here under xvfb-run on a free loopback port, stopped on close) and
// selenium-webdriver. Both browsers come from Debian packages (scripts/setup.sh).
//
//   const b = await launch('firefox' | 'webkit');
//   const device = await b.newDevice();        // a fresh profile
//   const tab = await device.newTab(url);      // goto, eval, click, waitFor, reload, shot, close
//   await b.close();
//
// Page code runs through `eval(fn, arg)`: `fn` is a function serialised to source, called in
// the page with one JSON argument. Requests are read in the page from the Resource Timing
// entries (both browsers); page errors are collected where the driver reports them (Firefox).

import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import path from 'node:path';
import { ARTIFACTS } from './harness.mjs';

const FIREFOX = process.env.FIREFOX ?? '/usr/bin/firefox-esr';
const WEBKIT_DRIVER = process.env.WEBKIT_DRIVER ?? '/usr/bin/WebKitWebDriver';
const MINIBROWSER = process.env.MINIBROWSER ?? '/usr/lib/x86_64-linux-gnu/webkit2gtk-4.1/MiniBrowser';
const XVFB_RUN = '/usr/bin/xvfb-run';

function need(file, what) {
  if (!existsSync(file)) throw new Error(`${what} is missing: ${file} does not exist (run scripts/setup.sh, which installs firefox-esr, webkit2gtk-driver and xvfb)`);
}

/** Polls `check()` until it returns a truthy value; the error names `what` and the last value. */
export async function until(check, what, timeout = 120_000) {
  const end = Date.now() + timeout;
  let last;
  for (;;) {
    last = await check();
    if (last) return last;
    if (Date.now() > end) throw new Error(`timed out after ${timeout} ms waiting for ${what} (last: ${JSON.stringify(last)?.slice(0, 200)})`);
    if (process.env.E2E_LOG) console.error(`waiting for ${what}`);
    await sleep(200);
  }
}

let shots = 0;
function shotFile(name) {
  mkdirSync(ARTIFACTS, { recursive: true });
  return path.join(ARTIFACTS, `x${String(++shots).padStart(2, '0')}-${name}.png`);
}

const freePort = () => new Promise((resolve, reject) => {
  const s = createServer();
  s.once('error', reject);
  s.listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => resolve(port)); });
});

/** Shared tab methods built on eval/clickOne/goto of a driver-specific tab. */
function common(tab) {
  tab.waitFor = (fn, arg, what, timeout) => until(() => tab.eval(fn, arg), what ?? String(fn).slice(0, 120), timeout);
  // Selectors look into the page and into the open shadow root of Ferry's <ferry-migrate>
  // component (the demo's "Migrate my data", report, conflicts and backups live there).
  tab.waitForSelector = (selector, timeout) => tab.waitFor((s) => !!(document.querySelector(s)
    ?? document.querySelector('ferry-migrate')?.shadowRoot?.querySelector(s)), selector, selector, timeout);
  /** Clicks the button whose text is `text` inside `scope` (a selector) from the page itself. */
  tab.clickText = (scope, text) => tab.eval(([s, t]) => {
    const root = document.querySelector(s) ?? document.querySelector('ferry-migrate')?.shadowRoot?.querySelector(s);
    const b = [...((root?.shadowRoot ?? root)?.querySelectorAll('button') ?? [])].find((x) => x.textContent.trim() === t);
    if (!b) return false;
    b.click();
    return true;
  }, [scope, text]);
  /** The paths of fetch/XHR requests this page load made to the ingest server. */
  tab.apiRequests = () => tab.eval(() => performance.getEntriesByType('resource')
    .map((e) => new URL(e.name).pathname).filter((p) => /^\/(v1|dev)\//.test(p)));
  return tab;
}

async function launchFirefox() {
  need(FIREFOX, 'Firefox ESR');
  const { default: puppeteer } = await import('puppeteer-core');
  const browser = await puppeteer.launch({ browser: 'firefox', executablePath: FIREFOX, headless: true, protocolTimeout: 180_000 });
  return {
    name: 'firefox',
    async newDevice() {
      const context = await browser.createBrowserContext();
      return {
        async newTab(url) {
          // Each tab in a window of its own, in the foreground: Firefox loads a background tab
          // of one window only later (two tabs "opened at once" would then not run at once).
          const page = await context.newPage({ type: 'window' });
          await page.setViewport({ width: 1280, height: 900 });
          const tab = common({ errors: [] });
          page.on('pageerror', (e) => tab.errors.push(String(e)));
          tab.goto = async (u) => { await page.goto(u, { waitUntil: 'load', timeout: 120_000 }); };
          tab.navigate = (u) => page.evaluate((x) => { setTimeout(() => location.assign(x), 0); }, u);
          tab.eval = (fn, arg) => page.evaluate(`(${fn})(${JSON.stringify(arg ?? null)})`);
          tab.click = async (selector) => { await page.waitForSelector(selector, { timeout: 60_000 }); await page.click(selector); };
          tab.select = (selector, value) => page.select(selector, value);
          tab.type = (selector, text) => page.type(selector, text);
          tab.reload = async () => { await page.reload({ waitUntil: 'load', timeout: 120_000 }); };
          tab.shot = async (name) => { const file = shotFile(name); await page.screenshot({ path: file }); return file; };
          tab.close = () => page.close();
          if (url) await tab.goto(url);
          return tab;
        },
        close: () => context.close(),
      };
    },
    close: () => browser.close(),
  };
}

async function launchWebKit() {
  need(WEBKIT_DRIVER, 'WebKitWebDriver (package webkit2gtk-driver)');
  need(MINIBROWSER, 'WebKitGTK MiniBrowser');
  need(XVFB_RUN, 'xvfb-run (package xvfb)');
  const { Builder } = await import('selenium-webdriver');
  const port = await freePort();
  const child = spawn(XVFB_RUN, ['-a', '-s', '-screen 0 1400x1000x24', WEBKIT_DRIVER, `--port=${port}`, '--host=127.0.0.1'],
    { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  const log = [];
  child.stdout.on('data', (c) => log.push(String(c)));
  child.stderr.on('data', (c) => log.push(String(c)));
  const stop = async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((r) => child.once('exit', r));
    try { process.kill(-child.pid, 'SIGTERM'); } catch { /* gone */ }
    if (await Promise.race([exited.then(() => 'ok'), sleep(10_000, 'timeout')]) === 'timeout') {
      try { process.kill(-child.pid, 'SIGKILL'); } catch { /* gone */ }
    }
  };
  try {
    await until(async () => {
      if (child.exitCode !== null) throw new Error(`WebKitWebDriver exited (${child.exitCode}): ${log.join('').slice(-2000)}`);
      try { return (await fetch(`http://127.0.0.1:${port}/status`)).ok; } catch { return false; }
    }, `WebKitWebDriver on port ${port}`, 60_000);
  } catch (e) { await stop(); throw e; }
  const caps = { browserName: 'MiniBrowser', 'webkitgtk:browserOptions': { binary: MINIBROWSER, args: ['--automation'] } };
  return {
    name: 'webkit',
    async newDevice() {
      const d = await new Builder().usingServer(`http://127.0.0.1:${port}`).withCapabilities(caps).build();
      await d.manage().window().setRect({ width: 1280, height: 900 });
      await d.manage().setTimeouts({ script: 120_000, pageLoad: 120_000 });
      // One session drives one tab at a time: every call switches to its tab, one call at a time.
      let queue = Promise.resolve();
      let current = await d.getWindowHandle();
      let first = true;
      const on = (handle, work) => {
        const next = queue.then(async () => {
          if (current !== handle) { await d.switchTo().window(handle); current = handle; }
          return work();
        });
        queue = next.catch(() => {});
        return next;
      };
      return {
        async newTab(url) {
          let handle;
          if (first) { first = false; handle = current; } else {
            handle = await on(current, async () => { await d.switchTo().newWindow('tab'); current = await d.getWindowHandle(); return current; });
          }
          const tab = common({ errors: [] });
          tab.goto = (u) => on(handle, () => d.get(u));
          tab.navigate = (u) => on(handle, () => d.executeScript('setTimeout(() => location.assign(arguments[0]), 0)', u));
          tab.eval = (fn, arg) => on(handle, () => d.executeScript(`return (${fn})(arguments[0])`, arg ?? null));
          tab.click = async (selector) => {
            await tab.waitForSelector(selector, 60_000);
            const { By } = await import('selenium-webdriver');
            // WebKitWebDriver refuses a click on an element still being laid out (page load
            // under load: ElementNotInteractableError); the page's own click is the same event.
            return on(handle, async () => {
              try {
                await (await d.findElement(By.css(selector))).click();
              } catch (e) {
                if (e?.name !== 'ElementNotInteractableError') throw e;
                await d.executeScript('document.querySelector(arguments[0]).click()', selector);
              }
            });
          };
          tab.select = (selector, value) => tab.eval(([s, v]) => {
            const el = document.querySelector(s);
            el.value = v;
            el.dispatchEvent(new Event('change', { bubbles: true }));
            el.dispatchEvent(new Event('input', { bubbles: true }));
          }, [selector, value]);
          tab.type = async (selector, text) => {
            const { By } = await import('selenium-webdriver');
            return on(handle, async () => (await d.findElement(By.css(selector))).sendKeys(text));
          };
          tab.reload = () => on(handle, () => d.navigate().refresh());
          tab.shot = (name) => on(handle, async () => { const file = shotFile(name); writeFileSync(file, Buffer.from(await d.takeScreenshot(), 'base64')); return file; });
          tab.close = () => on(handle, () => d.close());
          if (url) await tab.goto(url);
          return tab;
        },
        close: () => d.quit(),
      };
    },
    close: stop,
  };
}

/** Launches `name` ('firefox' or 'webkit'); throws a clear error when the browser is missing. */
export function launch(name) {
  if (name === 'firefox') return launchFirefox();
  if (name === 'webkit') return launchWebKit();
  throw new Error(`unknown browser ${JSON.stringify(name)} (firefox or webkit)`);
}
