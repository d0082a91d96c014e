// The operator's walk through the dashboard (issue 11): sign in, see the
// calls, filter the failed ones, open one and read its attempts, replay it
// and follow the links between the call and its replay, cancel a call,
// redeliver a webhook, bulk replay the failed calls with a dry run first,
// look at the other pages, sign out.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  env, launch, newPage, assertClean, ui, where, signIn, submit, follow, title, table,
  fields, navLinks, shot, stepper, api,
} from './lib.mjs';

const F = env.fixtures;
const CALL_COLUMNS = ['Correlation ID', 'Status', 'Integration', 'Method', 'Path', 'Attempts', 'HTTP', 'Error', 'Created'];
const NOT_FOUND = [/Failed to load resource: the server responded with a status of 404/];

/** The field whose link points at the call id, as [term, href]. */
function linkTo(f, id) {
  return Object.entries(f.links).find(([, href]) => href.endsWith(`/ui/calls/${id}`));
}

test('the walk', async (t) => {
  const started = Date.now();
  const context = await launch(t);
  const page = await newPage(context);
  const step = stepper(t, page);
  let session; // the session cookie, to try it again after signing out
  let replayID; // the replay of F.failed[0]

  await step('/ui/ sends a visitor who is not signed in to the login page', async () => {
    await page.goto(ui('/ui/'));
    assert.equal(where(page), '/ui/login');
    await page.goto(ui('/ui/calls'));
    assert.equal(where(page), '/ui/login', 'a page of the dashboard sends a visitor to the login page');
    await shot(page, '01-login');
    await assertClean(page);
  });

  await step('sign in', async () => {
    await signIn(page, env.adminKey);
    const cookies = await context.cookies(ui('/ui/'));
    session = cookies.find((c) => c.name === 'callq_session');
    assert.ok(session, `a callq_session cookie; cookies: ${cookies.map((c) => c.name).join(', ')}`);
    assert.equal(session.httpOnly, true, 'the session cookie is HttpOnly');
    assert.equal(session.sameSite, 'Strict', 'the session cookie is SameSite=Strict');
    assert.equal(session.path, '/ui/');
    assert.ok(!session.value.includes(env.adminKey), 'the cookie is not the key');
    const html = await page.content();
    assert.ok(!html.includes(env.adminKey), 'the key is nowhere in the page');
    assert.deepEqual(await page.evaluate(() => [localStorage.length, sessionStorage.length]), [0, 0],
      'nothing in localStorage or sessionStorage');
    const nav = await navLinks(page);
    for (const name of ['Calls', 'Failed', 'Overview', 'Integrations', 'Credentials']) {
      assert.ok(nav.includes(name), `the nav links to ${name}: ${JSON.stringify(nav)}`);
    }
    await page.getByRole('button', { name: 'Sign out', exact: true }).waitFor();
    assert.ok((await page.locator('body').innerText()).includes(F.tenant), `the tenant ${F.tenant} is shown`);
    await assertClean(page);
  });

  await step('the calls page: headers, every call of the tenant and none of another', async () => {
    const res = await page.goto(ui('/ui/calls'));
    assert.equal(res.status(), 200);
    const h = res.headers();
    const csp = h['content-security-policy'] || '';
    assert.match(csp, /default-src 'self'/);
    assert.match(csp, /frame-ancestors 'none'/);
    assert.doesNotMatch(csp, /unsafe-inline/);
    assert.equal(h['x-content-type-options'], 'nosniff');
    assert.match(h['cache-control'] || '', /no-store/);
    assert.equal(await title(page), 'Calls');

    const { headers, rows } = await table(page, 'Calls');
    assert.deepEqual(headers, CALL_COLUMNS);
    const byID = Object.fromEntries(rows.map((r) => [r['Correlation ID'], r]));
    for (const id of [...F.succeeded, ...F.failed, F.queued, F.webhook, ...F.hostile]) {
      assert.ok(byID[id], `call ${id} is listed: ${Object.keys(byID).join(', ')}`);
      assert.equal(byID[id].links['Correlation ID'], `/ui/calls/${id}`);
    }
    for (const id of F.other) assert.ok(!byID[id], `tenant B's call ${id} is not listed`);
    for (const id of F.failed) {
      assert.equal(byID[id].Status, 'failed');
      assert.equal(byID[id].HTTP, '500');
      assert.equal(byID[id].Attempts, '2/2');
    }
    assert.equal(byID[F.queued].Status, 'queued');
    await shot(page, '02-calls');
    if (env.readmeScreenshot) {
      await page.screenshot({ path: env.readmeScreenshot }); // the viewport: what the README shows
    }
    await assertClean(page);
  });

  await step('the calls table refreshes by itself', async () => {
    await page.evaluate(() => { window.__sameDocument = true; });
    const id = `refresh-${Date.now()}`;
    const res = await api('POST', '/v1/calls', env.adminKey, {
      integration: F.refresh.integration, method: 'GET', path: F.refresh.path, correlation_id: id,
    });
    assert.equal(res.status, 202, JSON.stringify(res.body));
    // Every 5 s while visible: the row shows up without a reload.
    await page.getByRole('link', { name: id, exact: true }).waitFor({ timeout: 12_000 });
    assert.equal(await page.evaluate(() => window.__sameDocument), true, 'the page was not reloaded');
    await assertClean(page);
  });

  await step('filter the failed calls', async () => {
    await page.getByLabel('Status', { exact: true }).selectOption('failed');
    await submit(page, 'Apply');
    const u = new URL(page.url());
    assert.equal(u.pathname, '/ui/calls');
    assert.equal(u.searchParams.get('status'), 'failed', 'the filter is in the URL');
    const { rows } = await table(page, 'Calls');
    assert.deepEqual(rows.map((r) => r['Correlation ID']).sort(), [...F.failed].sort());
    for (const r of rows) assert.equal(r.Status, 'failed');
    // The URL is the view: loading it again keeps the filter.
    await page.reload();
    assert.equal(await page.getByLabel('Status', { exact: true }).inputValue(), 'failed');
    await shot(page, '03-calls-failed');
    await assertClean(page);
  });

  await step('open a failed call and read its attempts', async () => {
    const id = F.failed[0];
    await follow(page, id, page.getByRole('table', { name: 'Calls' }));
    assert.equal(where(page), `/ui/calls/${id}`);
    assert.equal(await title(page), `Call ${id}`);
    const f = await fields(page);
    assert.equal(f.status, 'failed', `the status field: ${JSON.stringify(f)}`);
    const { headers, rows } = await table(page, 'Attempts');
    assert.deepEqual(headers, ['Attempt', 'Started', 'Duration', 'Status', 'Error', 'Note']);
    assert.equal(rows.length, 2, `two attempts: ${JSON.stringify(rows)}`);
    assert.deepEqual(rows.map((r) => r.Attempt), ['1', '2']);
    for (const r of rows) {
      assert.match(r.Status, /500/);
      assert.notEqual(r.Started, '');
    }
    await page.getByRole('heading', { name: 'Response' }).waitFor();
    await page.getByRole('heading', { name: 'Webhook' }).waitFor();
    assert.equal(await page.getByRole('button', { name: 'Cancel', exact: true }).count(), 0,
      'a finished call has no Cancel');
    await shot(page, '04-call-failed');
    await assertClean(page);
  });

  await step('replay it, and follow the links between the call and its replay', async () => {
    const id = F.failed[0];
    await submit(page, 'Replay');
    const path = new URL(page.url()).pathname; // it may carry a notice (?done=replayed)
    assert.match(path, /^\/ui\/calls\/[^/]+$/, 'Replay leads to the new call');
    replayID = decodeURIComponent(path.slice('/ui/calls/'.length));
    assert.notEqual(replayID, id);
    assert.equal(await title(page), `Call ${replayID}`);
    const f = await fields(page);
    const back = linkTo(f, id);
    assert.ok(back, `the replay links to ${id}: ${JSON.stringify(f)}`);
    assert.match(back[0], /replay/i, `the link is the replay_of field: ${back[0]}`);
    await shot(page, '05-replay');

    await follow(page, id, page.locator('main'));
    assert.equal(where(page), `/ui/calls/${id}`);
    const g = await fields(page);
    const forth = linkTo(g, replayID);
    assert.ok(forth, `the call links to its replay ${replayID}: ${JSON.stringify(g)}`);
    assert.match(forth[0], /replay/i, `the link is the replayed_by field: ${forth[0]}`);

    await follow(page, replayID, page.locator('main'));
    assert.equal(where(page), `/ui/calls/${replayID}`);
    await assertClean(page);
  });

  await step('cancel a call that has not run yet', async () => {
    await page.goto(ui(`/ui/calls/${F.queued}`));
    assert.equal((await fields(page)).status, 'queued');
    assert.equal(await page.getByRole('button', { name: 'Replay', exact: true }).count(), 0,
      'an unfinished call has no Replay');
    await submit(page, 'Cancel');
    if (new URL(page.url()).pathname !== `/ui/calls/${F.queued}`) await page.goto(ui(`/ui/calls/${F.queued}`));
    assert.equal((await fields(page)).status, 'canceled');
    await shot(page, '06-call-canceled');
    await assertClean(page);
  });

  await step('redeliver a webhook', async () => {
    await page.goto(ui(`/ui/calls/${F.webhook}`));
    await page.getByRole('heading', { name: 'Webhook' }).waitFor();
    const res = await submit(page, 'Redeliver webhook');
    assert.ok(!res || res.status() < 400, `Redeliver webhook answered ${res && res.status()}`);
    await shot(page, '07-webhook-redelivered');
    await assertClean(page);
    // The Go test checks that the receiver got the delivery again.
  });

  await step('bulk replay on the Failed page: a dry run, then the confirmation', async () => {
    await follow(page, 'Failed', page.locator('nav'));
    assert.equal(new URL(page.url()).pathname, '/ui/failed');
    if (!new URL(page.url()).searchParams.get('since')) {
      await page.goto(ui('/ui/failed?since=1h'));
    }
    const { rows } = await table(page, 'Calls');
    const listed = rows.map((r) => r['Correlation ID']);
    for (const id of F.failed) assert.ok(listed.includes(id), `failed call ${id} listed: ${listed}`);
    for (const r of rows) assert.equal(r.Status, 'failed');

    await submit(page, 'Count replays');
    const main = page.locator('main');
    const dry = (await main.innerText()).match(/(\d+) calls? would be replayed/);
    assert.ok(dry, 'the dry run says how many calls would be replayed');
    const n = Number(dry[1]);
    // The call replayed one by one above is skipped, and so is its replay.
    assert.equal(n, F.failed.length - 1, `${n} calls would be replayed`);
    await shot(page, '08-failed-dry-run');

    await submit(page, new RegExp(`^Replay ${n} calls?$`));
    const done = (await main.innerText()).match(/Replayed (\d+) calls?/);
    assert.ok(done, 'the result says how many calls were replayed');
    assert.equal(Number(done[1]), n);
    const links = await main.locator('a[href^="/ui/calls/"]').count();
    assert.ok(links >= n, `the result links to the ${n} replays (${links} links)`);
    await shot(page, '09-failed-replayed');
    await assertClean(page);
  });

  await step('overview, integrations, credentials', async () => {
    await follow(page, 'Overview', page.locator('nav'));
    assert.equal(new URL(page.url()).pathname, '/ui/overview');
    for (const caption of ['By status', 'By integration', 'Queues']) await table(page, caption);
    const chart = page.locator('svg[role="img"][aria-label="Finished calls per minute by status"]');
    await chart.waitFor();
    assert.ok(await chart.locator('rect').count() > 0, 'the chart has bars');
    await shot(page, '10-overview');
    await assertClean(page);

    await follow(page, 'Integrations', page.locator('nav'));
    assert.equal(new URL(page.url()).pathname, '/ui/integrations');
    const text = await page.locator('main').innerText();
    for (const name of F.integrations) assert.ok(text.includes(name), `integration ${name} is listed`);
    assert.ok(text.includes('Circuit'), 'a Circuit column');
    await shot(page, '11-integrations');
    await assertClean(page);

    await follow(page, 'Credentials', page.locator('nav'));
    assert.equal(new URL(page.url()).pathname, '/ui/credentials');
    const creds = await page.locator('main').innerText();
    assert.ok(creds.includes(F.credential.ref), 'the credential is listed');
    assert.ok(creds.includes(F.credential.field), 'its field name is listed');
    assert.ok(!(await page.content()).includes(F.credential.value), 'its value is nowhere in the page');
    await shot(page, '12-credentials');
    await assertClean(page);
  });

  await step('sign out', async () => {
    await submit(page, 'Sign out');
    await page.goto(ui('/ui/calls'));
    assert.equal(where(page), '/ui/login', 'signed out, /ui/calls sends you to the login page');
    // The session is gone on the server too, not only from the browser.
    await context.addCookies([session]);
    await page.goto(ui('/ui/calls'));
    assert.equal(where(page), '/ui/login', 'the old session cookie no longer signs in');
    await shot(page, '13-signed-out');
    await assertClean(page);
  });

  t.diagnostic(`the walk took ${((Date.now() - started) / 1000).toFixed(1)}s`);
});
