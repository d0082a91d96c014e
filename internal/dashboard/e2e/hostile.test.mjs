// An upstream that answers <script> and <img onerror> in its body and
// headers: the call pages show the payloads as text and no script runs.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  env, PAYLOADS, launch, newPage, assertClean, ui, where, signIn, title, table, shot, stepper,
} from './lib.mjs';

const F = env.fixtures;

test('hostile upstream content is shown as text and runs nothing', async (t) => {
  const context = await launch(t);
  const page = await newPage(context);
  const step = stepper(t, page);
  await step('sign in', () => signIn(page, env.adminKey));

  for (const id of F.hostile) {
    await step(`call ${id}`, async () => {
      await page.goto(ui(`/ui/calls/${id}`));
      assert.equal(where(page), `/ui/calls/${id}`);
      assert.equal(await title(page), `Call ${id}`);
      // Give an injected <img onerror> its chance: the page and its images
      // have loaded, and nothing is waiting on the network.
      await page.waitForLoadState('networkidle');

      assert.equal(await page.evaluate(() => typeof window.__xss), 'undefined', 'no injected script ran');
      const dom = await page.evaluate(() => ({
        scripts: [...document.scripts].map((s) => s.src || `inline: ${s.textContent.slice(0, 80)}`),
        images: [...document.images].map((i) => i.getAttribute('src')),
        handlers: [...document.querySelectorAll('*')].flatMap((el) =>
          [...el.attributes].filter((a) => /^on/i.test(a.name)).map((a) => `${el.tagName} ${a.name}`)),
      }));
      for (const s of dom.scripts) {
        assert.match(s, /^http:\/\/[^/]+\/ui\/static\//, `only the dashboard's own scripts: ${dom.scripts}`);
      }
      assert.deepEqual(dom.images.filter((s) => s === 'x'), [], 'no injected <img>');
      assert.deepEqual(dom.handlers, [], 'no element has an on* attribute');
      assert.deepEqual(page.requests.filter((u) => /\/x$/.test(u)), [], 'nothing fetched the <img src=x>');

      // The payloads are on the page, as text: in the body's <pre> and in
      // the response headers' table.
      const pre = (await page.locator('main pre').allTextContents()).join('\n');
      for (const p of PAYLOADS) {
        assert.ok(pre.includes(p) || pre.includes(JSON.stringify(p).slice(1, -1)),
          `the body shows ${p} as text: ${pre.slice(0, 300)}`);
      }
      const text = await page.locator('main').innerText();
      for (const p of PAYLOADS) assert.ok(text.includes(p), `the headers show ${p} as text`);

      await shot(page, `hostile-${id}`);
      await assertClean(page); // no CSP violation: nothing was even tried
    });
  }

  await step('the calls table lists them without running anything', async () => {
    await page.goto(ui('/ui/calls'));
    const { rows } = await table(page, 'Calls');
    const listed = rows.map((r) => r['Correlation ID']);
    for (const id of F.hostile) assert.ok(listed.includes(id), `${id} is listed`);
    assert.equal(await page.evaluate(() => typeof window.__xss), 'undefined');
    await assertClean(page);
  });
});
