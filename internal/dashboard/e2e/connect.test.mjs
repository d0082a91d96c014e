// Connect sessions in a real browser: an end user follows a session's
// link, already fetched by a link preview, presses its button and goes
// through the OAuth2 dance (callq, the provider, callq's callback) back to
// the application; and fills in the hosted form of a bearer integration.
// No CSP violation, console error or page error on the way.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { env, launch, newPage, assertClean, shot, stepper } from './lib.mjs';

const C = env.fixtures.connect;

test('an end user connects an OAuth2 account, after a link preview', async (t) => {
  const context = await launch(t);
  const page = await newPage(context);
  const step = stepper(t, page);
  await step('a link preview fetches the link first and uses nothing up', async () => {
    // As a chat's unfurler or a mail scanner does: no cookies, no script.
    for (const method of ['GET', 'HEAD', 'GET']) {
      const res = await fetch(C.oauth, { method, redirect: 'manual', headers: { 'user-agent': 'Slackbot-LinkExpanding 1.0' } });
      assert.equal(res.status, 200, `${method} of the link`);
      assert.equal(res.headers.get('location'), null);
      await res.arrayBuffer();
    }
  });
  await step('the link shows a page whose button starts the dance', async () => {
    const res = await page.goto(C.oauth);
    assert.equal(res.status(), 200);
    const csp = res.headers()['content-security-policy'];
    assert.match(csp, /default-src 'none'/);
    assert.match(csp, /form-action 'self' /);
    assert.equal(res.headers()['cache-control'], 'no-store');
    assert.deepEqual(page.requests, [C.oauth], 'the page loads nothing but itself');
    assert.match(await page.locator('h1').innerText(), /^Connect /);
    await page.getByRole('button', { name: /^Continue to / }).waitFor();
    await shot(page, 'connect-oauth');
    await assertClean(page);
  });
  await step('the button goes to the provider and back to the app', async () => {
    page.requests.length = 0;
    await Promise.all([
      page.waitForURL((u) => u.origin === C.app),
      page.getByRole('button', { name: /^Continue to / }).click(),
    ]);
    const u = new URL(page.url());
    assert.equal(u.pathname, '/connected');
    assert.deepEqual(Object.fromEntries(u.searchParams), { credential: C.oauthRef, status: 'connected' });
    const hops = page.requests.map((r) => new URL(r).pathname);
    assert.ok(hops.includes('/authorize'), `the browser went to the provider: ${hops}`);
    assert.ok(hops.includes('/connect/callback'), `and back to callq's callback: ${hops}`);
    await assertClean(page);
  });
  await step('the link works once', async () => {
    const res = await page.goto(C.oauth);
    assert.equal(res.status(), 404);
    assert.match(await page.locator('h1').innerText(), /cannot be used/);
    await assertClean(page, [/status of 404/]);
  });
});

test('an end user fills in the hosted form', async (t) => {
  const context = await launch(t);
  const page = await newPage(context);
  const step = stepper(t, page);
  await step('the form has a labelled field and loads nothing', async () => {
    const res = await page.goto(C.form);
    assert.equal(res.status(), 200);
    assert.match(res.headers()['content-security-policy'], /default-src 'none'/);
    assert.deepEqual(page.requests, [C.form], 'the page loads nothing but itself');
    await page.getByLabel('API token (required)', { exact: true }).waitFor();
    await shot(page, 'connect-form');
    await assertClean(page);
  });
  await step('the value goes to callq and the browser to the app', async () => {
    await page.goto(C.form);
    await page.getByLabel('API token (required)', { exact: true }).fill(C.formValue);
    await Promise.all([
      page.waitForURL((u) => u.origin === C.app),
      page.getByRole('button', { name: 'Connect', exact: true }).click(),
    ]);
    const u = new URL(page.url());
    assert.deepEqual(Object.fromEntries(u.searchParams), { credential: C.formRef, status: 'connected' });
    assert.ok(!page.url().includes(C.formValue), 'the value is not in the redirect');
    await assertClean(page);
  });
});
