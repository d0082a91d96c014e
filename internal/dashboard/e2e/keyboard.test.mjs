// The login form with the keyboard only, and a bad key.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { env, launch, newPage, assertClean, ui, where, shot } from './lib.mjs';

/** Presses Tab until the focused element satisfies is (at most 20 times). */
async function tabTo(page, what, is) {
  for (let i = 0; i < 20; i++) {
    await page.keyboard.press('Tab');
    if (await page.evaluate(is)) return;
  }
  assert.fail(`Tab never reached ${what}`);
}

test('keyboard: Tab reaches the key and Sign in, Enter submits', async (t) => {
  const context = await launch(t);
  const page = await newPage(context);
  await page.goto(ui('/ui/login'));
  await tabTo(page, 'the API key input', () => document.activeElement && document.activeElement.id === 'key');
  await page.keyboard.type(env.adminKey);
  await tabTo(page, 'the Sign in button', () => {
    const el = document.activeElement;
    return el && el.tagName === 'BUTTON' && el.textContent.trim() === 'Sign in';
  });
  await Promise.all([
    page.waitForURL((u) => u.pathname === '/ui/calls'),
    page.keyboard.press('Enter'),
  ]);
  assert.equal(where(page), '/ui/calls');
  await shot(page, 'keyboard-signed-in');
  await assertClean(page);
});

test('a bad key: the form again, with an alert, 401', async (t) => {
  const context = await launch(t);
  const page = await newPage(context);
  await page.goto(ui('/ui/login'));
  await page.getByLabel('API key', { exact: true }).fill('cq_not-a-key');
  const [res] = await Promise.all([
    page.waitForNavigation(),
    page.getByRole('button', { name: 'Sign in', exact: true }).click(),
  ]);
  assert.equal(res.status(), 401);
  assert.equal((await page.getByRole('alert').innerText()).trim(), 'That API key is not valid.');
  await page.getByLabel('API key', { exact: true }).waitFor();
  assert.ok(!(await page.content()).includes('cq_not-a-key'), 'the key typed is not echoed');
  await shot(page, 'login-bad-key');
  await assertClean(page, [/status of 401/]);
});
