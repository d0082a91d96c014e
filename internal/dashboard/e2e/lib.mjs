// Shared helpers of the dashboard's browser tests: the environment the Go
// test (cmd/callq/browser_test.go, TestBrowserDashboard) sets, launching
// Debian's chromium through playwright-core, and reading the pages the way
// COMMON11's DOM contract describes them (labels, button names, captions).
//
// The tests are not meant to run on their own: the Go test starts Redis,
// `callq api`, a worker and the upstreams, creates the calls and keys, and
// passes them here in CALLQ_E2E_* variables.

import { chromium } from 'playwright-core';
import assert from 'node:assert/strict';
import { mkdtemp, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

function required(name) {
  const v = process.env[name];
  if (!v) {
    throw new Error(`${name} is not set: these tests are run by the Go test TestBrowserDashboard ` +
      '(go test ./cmd/callq -run TestBrowserDashboard -v), which sets it');
  }
  return v;
}

/** What the Go test set up. Keys are test keys of a throw-away Redis. */
export const env = {
  url: required('CALLQ_E2E_URL').replace(/\/$/, ''),
  adminKey: required('CALLQ_E2E_ADMIN_KEY'), // tenant A, admin
  producerKey: required('CALLQ_E2E_PRODUCER_KEY'), // tenant A, producer
  otherKey: required('CALLQ_E2E_OTHER_KEY'), // tenant B, admin
  /**
   * The calls, by correlation ID: tenant, other (tenant B's), succeeded,
   * failed (originals, each with two attempts), queued (due in an hour),
   * webhook (a succeeded call with a webhook), hostile (calls whose upstream
   * answered the payloads), payloads, integrations, refresh (a call to make
   * while the calls page is open), credential (ref, field and value).
   */
  fixtures: JSON.parse(required('CALLQ_E2E_FIXTURES')),
  chromium: process.env.CALLQ_E2E_CHROMIUM || '/usr/bin/chromium',
  tmp: process.env.CALLQ_E2E_TMP || tmpdir(),
  screenshots: process.env.CALLQ_E2E_SCREENSHOTS || '',
  // Set only when CALLQ_UPDATE_SCREENSHOT=1: where the calls page's
  // screenshot for the README goes (internal/dashboard/screenshot.png).
  readmeScreenshot: process.env.CALLQ_E2E_README_SCREENSHOT || '',
};

/**
 * The payloads the hostile upstream answers in its body and headers: a
 * <script> and an <img onerror>, each setting window.__xss.
 */
export const PAYLOADS = env.fixtures.payloads;

// The machine's network is closed: without the background-networking
// flags chromium keeps trying to reach Google's hosts.
const FLAGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

/**
 * Launches chromium with a fresh user-data-dir (so a fresh cookie jar) and
 * returns its context; closed when the test t ends. Every page of it records
 * CSP violations (window.__csp), console errors and page errors.
 */
export async function launch(t) {
  const dir = await mkdtemp(join(env.tmp, 'chromium-profile-'));
  const context = await chromium.launchPersistentContext(dir, {
    executablePath: env.chromium,
    headless: true,
    args: FLAGS,
    viewport: { width: 1280, height: 800 },
    timeout: 30_000,
  });
  t.after(() => context.close());
  context.setDefaultTimeout(10_000);
  context.setDefaultNavigationTimeout(10_000);
  // Runs before the page's own scripts and, added through the DevTools
  // protocol, is not itself subject to the page's CSP.
  await context.addInitScript(() => {
    window.__csp = [];
    document.addEventListener('securitypolicyviolation', (e) => {
      window.__csp.push(`${e.violatedDirective} blocked ${e.blockedURI || 'inline'} (${e.sourceFile}:${e.lineNumber})`);
    });
  });
  return context;
}

/**
 * A page of context whose console errors, page errors and requests are
 * recorded in page.problems and page.requests.
 */
export async function newPage(context) {
  const page = await context.newPage();
  page.problems = [];
  page.requests = [];
  page.on('console', (m) => {
    if (m.type() !== 'error') return;
    const at = m.location().url;
    // The browser asks for /favicon.ico by itself; the dashboard has none.
    if (at && new URL(at).pathname === '/favicon.ico') return;
    page.problems.push(`console: ${m.text()}${at ? ` (${at})` : ''}`);
  });
  page.on('pageerror', (e) => page.problems.push(`pageerror: ${e.message}`));
  page.on('request', (r) => page.requests.push(r.url()));
  return page;
}

/**
 * Fails if page logged a console error or a page error or saw a CSP
 * violation; expected is a list of RegExps for errors the step caused on
 * purpose (a 404 page's "Failed to load resource"). Clears the record.
 */
export async function assertClean(page, expected = []) {
  const csp = await page.evaluate(() => window.__csp || []);
  assert.deepEqual(csp, [], `CSP violations on ${page.url()}`);
  const problems = page.problems.filter((p) => !expected.some((re) => re.test(p)));
  assert.deepEqual(problems, [], `console or page errors on ${page.url()}`);
  page.problems.length = 0;
}

/** Path p of the dashboard. */
export const ui = (p) => env.url + p;

/** The path of page's URL, with its query. */
export function where(page) {
  const u = new URL(page.url());
  return u.pathname + u.search;
}

/** Signs in with key on the login form; ends on /ui/calls. */
export async function signIn(page, key) {
  await page.goto(ui('/ui/login'));
  await page.getByLabel('API key', { exact: true }).fill(key);
  await Promise.all([
    page.waitForURL((u) => u.pathname === '/ui/calls'),
    page.getByRole('button', { name: 'Sign in', exact: true }).click(),
  ]);
}

/**
 * Clicks the button named name (a string, matched exactly, or a RegExp) and
 * waits for the navigation it causes; returns the navigation's response.
 */
export async function submit(page, name, scope = page) {
  const [res] = await Promise.all([
    page.waitForNavigation(),
    scope.getByRole('button', { name, exact: true }).click(),
  ]);
  return res;
}

/** Clicks the link named name and waits for the navigation it causes. */
export async function follow(page, name, scope = page) {
  await Promise.all([
    page.waitForNavigation(),
    scope.getByRole('link', { name, exact: true }).first().click(),
  ]);
}

/** The text of the page's h1. */
export async function title(page) {
  return (await page.locator('h1').first().innerText()).trim();
}

/**
 * The table whose caption is caption, as {headers, rows}: rows are objects
 * from header text to cell text, with links: the href of each cell's link.
 */
export async function table(page, caption) {
  const loc = page.locator('table').filter({ has: page.locator('caption', { hasText: caption }) }).first();
  await loc.waitFor();
  return loc.evaluate((t) => {
    const text = (el) => (el ? el.textContent.replace(/\s+/g, ' ').trim() : '');
    const head = t.tHead ? t.tHead.rows[0] : t.rows[0];
    const headers = [...head.cells].map(text);
    const bodyRows = t.tBodies.length ? [...t.tBodies].flatMap((b) => [...b.rows]) : [...t.rows].slice(1);
    const rows = bodyRows
      .filter((r) => r.cells.length === headers.length) // not an "empty" row spanning the table
      .map((r) => {
        const row = { links: {} };
        [...r.cells].forEach((c, i) => {
          row[headers[i]] = text(c);
          const a = c.querySelector('a[href]');
          if (a) row.links[headers[i]] = a.getAttribute('href');
        });
        return row;
      });
    return { headers, rows };
  });
}

/**
 * The record fields of a call page: its <dl>s' terms (lower case) to their
 * definitions' text, and the hrefs of links in them. The first <dl> is the
 * record; a term of a later one (the response's Status) does not replace
 * the record's.
 */
export async function fields(page) {
  return page.locator('main').evaluate((main) => {
    const out = { links: {} };
    for (const dt of main.querySelectorAll('dl dt')) {
      let dd = dt.nextElementSibling;
      while (dd && dd.tagName !== 'DD') dd = dd.nextElementSibling;
      if (!dd) continue;
      const k = dt.textContent.replace(/\s+/g, ' ').trim().toLowerCase();
      if (k in out) continue;
      out[k] = dd.textContent.replace(/\s+/g, ' ').trim();
      const a = dd.querySelector('a[href]');
      if (a) out.links[k] = a.getAttribute('href');
    }
    return out;
  });
}

/** The nav's link names. */
export async function navLinks(page) {
  return page.locator('nav').first().getByRole('link').allInnerTexts().then((l) => l.map((s) => s.trim()));
}

/**
 * Saves a full-page screenshot of page as NAME.png in the screenshots
 * directory (the Go test's temp dir), and returns its path.
 */
export async function shot(page, name) {
  if (!env.screenshots) return '';
  await mkdir(env.screenshots, { recursive: true });
  const path = join(env.screenshots, `${name}.png`);
  await page.screenshot({ path, fullPage: true });
  return path;
}

/**
 * Returns step(name, fn): a subtest of t that is skipped once an earlier
 * step failed (the steps of a walk build on each other; waiting out every
 * later step's timeouts only hides the first failure), and that saves a
 * screenshot of page as FAILED-name when it fails.
 */
export function stepper(t, page) {
  let failed = '';
  return (name, fn) => t.test(name, { skip: failed ? `"${failed}" failed` : false }, async () => {
    try {
      await fn();
    } catch (err) {
      failed = name;
      await shot(page, `FAILED-${name.replace(/[^A-Za-z0-9]+/g, '-').slice(0, 60)}`).catch(() => {});
      throw err;
    }
  });
}

/** The API, with a key: for setting up state the browser then sees. */
export async function api(method, path, key, body) {
  const res = await fetch(env.url + path, {
    method,
    headers: { Authorization: `Bearer ${key}`, 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null };
}
