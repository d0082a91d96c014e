// Another tenant's key sees none of the tenant's calls, and a producer key
// sees no credentials.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  env, launch, newPage, assertClean, ui, where, signIn, table, navLinks, shot, stepper,
} from './lib.mjs';

const F = env.fixtures;
const tenantCalls = () => [...F.succeeded, ...F.failed, F.queued, F.webhook, ...F.hostile];

test("tenant B's key sees none of tenant A's calls", async (t) => {
  const context = await launch(t);
  const page = await newPage(context);
  const step = stepper(t, page);
  await step('sign in', () => signIn(page, env.otherKey));

  await step('the calls page lists only its own calls', async () => {
    const { rows } = await table(page, 'Calls');
    assert.deepEqual(rows.map((r) => r['Correlation ID']).sort(), [...F.other].sort());
    const html = await page.content();
    for (const id of tenantCalls()) assert.ok(!html.includes(id), `${id} is nowhere on the page`);
    await shot(page, 'tenant-b-calls');
    await assertClean(page);
  });

  await step('the Failed page lists none of them', async () => {
    await page.goto(ui('/ui/failed?since=1h'));
    const html = await page.content();
    for (const id of F.failed) assert.ok(!html.includes(id), `${id} is nowhere on the page`);
    await assertClean(page);
  });

  await step("tenant A's call URL is a 404", async () => {
    for (const id of [F.failed[0], F.succeeded[0]]) {
      const res = await page.goto(ui(`/ui/calls/${id}`));
      assert.equal(res.status(), 404, `GET /ui/calls/${id} as tenant B`);
      assert.equal(where(page), `/ui/calls/${id}`);
      const main = await page.locator('body').innerText();
      assert.ok(!main.includes('/status/500') && !main.includes('Attempts'), 'nothing of the call is shown');
    }
    await shot(page, 'tenant-b-404');
    await assertClean(page, [/status of 404/]);
  });
});

test('a producer key has no Credentials link and gets 403 there', async (t) => {
  const context = await launch(t);
  const page = await newPage(context);
  await signIn(page, env.producerKey);
  const nav = await navLinks(page);
  for (const name of ['Calls', 'Failed', 'Overview', 'Integrations']) {
    assert.ok(nav.includes(name), `the nav links to ${name}: ${JSON.stringify(nav)}`);
  }
  assert.ok(!nav.includes('Credentials'), `no Credentials link for a producer: ${JSON.stringify(nav)}`);
  // A producer of the same tenant sees the tenant's calls.
  const { rows } = await table(page, 'Calls');
  assert.ok(rows.some((r) => r['Correlation ID'] === F.failed[0]));
  await assertClean(page);

  const res = await page.goto(ui('/ui/credentials'));
  assert.equal(res.status(), 403);
  assert.ok(!(await page.content()).includes(F.credential.ref), 'no credential is shown');
  await shot(page, 'producer-credentials-403');
  await assertClean(page, [/status of 403/]);
});
