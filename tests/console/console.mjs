// Drives the Switchyard console in Debian's headless Chromium (playwright-core) against a running
// switchyard seeded with the demo events; run by tests/tests/console.rs, which passes:
//   CONSOLE_BASE      http://127.0.0.1:PORT
//   ADMIN_TOKEN       the admin token
//   EXPECT_SINKS      comma-separated sink names the table must show
//   ROLLOUT_SINK      the sink whose dial is moved
//   RANGE_START/END   the KPI date range (YYYY-MM-DD)
//   SCREENSHOT_DIR    where screenshots go
// Prints one JSON line of findings; exits non-zero on the first failed check.
import { chromium } from 'playwright-core';
import { mkdirSync } from 'node:fs';
import path from 'node:path';

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
const base = env('CONSOLE_BASE');
const token = env('ADMIN_TOKEN');
const expectedSinks = env('EXPECT_SINKS').split(',');
const rolloutSink = env('ROLLOUT_SINK');
const start = env('RANGE_START');
const end = env('RANGE_END');
const shots = env('SCREENSHOT_DIR');
mkdirSync(shots, { recursive: true });

function check(condition, message) {
  if (!condition) throw new Error('check failed: ' + message);
}

async function adminSinks(request) {
  const response = await request.get(base + '/admin/sinks', { headers: { Authorization: 'Bearer ' + token } });
  check(response.ok(), 'GET /admin/sinks ' + response.status());
  return (await response.json()).sinks;
}

async function waitFor(what, probe, timeoutMs = 15000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value) return value;
    if (Date.now() > deadline) throw new Error('timed out waiting for ' + what);
    await new Promise((r) => setTimeout(r, 200));
  }
}

const findings = {};
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM_PATH || '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-dev-shm-usage'],
});
const consoleErrors = [];
try {
  // 1. A browser that sends the token itself (as a reverse proxy would): no prompt.
  const context = await browser.newContext({
    extraHTTPHeaders: { Authorization: 'Bearer ' + token },
    viewport: { width: 1440, height: 1000 },
  });
  const page = await context.newPage();
  // (Chromium also logs every 4xx answer as "Failed to load resource"; the error-state check below
  // provokes one on purpose.)
  page.on('console', (message) => {
    if (message.type() === 'error' && !message.text().startsWith('Failed to load resource')) consoleErrors.push(message.text());
  });
  page.on('pageerror', (error) => consoleErrors.push(String(error)));
  // Every request must stay on this server: the console works with no external network.
  const foreign = [];
  page.on('request', (request) => { if (!request.url().startsWith(base) && !request.url().startsWith('blob:')) foreign.push(request.url()); });
  await page.goto(`${base}/console?start=${start}&end=${end}`);

  await page.waitForSelector('#sinks-table tbody tr[data-sink]');
  const shown = await page.$$eval('#sinks-table tbody tr[data-sink]', (rows) => rows.map((r) => r.dataset.sink));
  check(JSON.stringify([...shown].sort()) === JSON.stringify([...expectedSinks].sort()), `sinks table shows ${shown}, expected ${expectedSinks}`);
  findings.sinks = shown;
  check(!(await page.isVisible('#token-dialog')), 'no token prompt when the browser sends the token');

  // KPI cards render from the seeded data.
  for (const card of ['active-users', 'events', 'sessions', 'funnel', 'retention']) {
    await page.waitForSelector(`#card-${card}[data-state=ready]`, { timeout: 20000 });
  }
  findings.activeUserPoints = await page.$$eval('#card-active-users circle.dot', (d) => d.length);
  findings.eventBars = await page.$$eval('#card-events rect.bar', (d) => d.length);
  findings.sessionPoints = await page.$$eval('#card-sessions circle.dot', (d) => d.length);
  findings.funnelSteps = await page.$$eval('#card-funnel .funnel-row', (rows) => rows.map((r) => r.dataset.step));
  findings.retentionCohorts = await page.$$eval('#card-retention tr[data-cohort]', (rows) => rows.length);
  findings.weekOverWeek = await page.textContent('#card-events .delta');
  check(findings.activeUserPoints > 0, 'active users chart has points');
  check(findings.eventBars > 0, 'events chart has bars');
  check(findings.sessionPoints > 0, 'session duration chart has points');
  check(findings.funnelSteps.join(',') === 'Signed Up,Activated,Purchased', 'funnel steps ' + findings.funnelSteps);
  check(findings.retentionCohorts > 0, 'retention table has cohorts');
  check(/week over week/.test(findings.weekOverWeek), 'week-over-week delta shown: ' + findings.weekOverWeek);
  await page.screenshot({ path: path.join(shots, '01-console-overview.png'), fullPage: true });

  // 2. Move the rollout dial, confirm, and see /admin/sinks reflect it.
  const row = `#sinks-table tr[data-sink="${rolloutSink}"]`;
  await page.fill(`${row} input.rollout-input`, '25');
  await page.click(`${row} button.apply`);
  await page.waitForSelector('#confirm-dialog[open]');
  findings.confirmText = await page.textContent('#confirm-text');
  check(findings.confirmText.includes('25%'), 'confirmation names the new percent: ' + findings.confirmText);
  await page.screenshot({ path: path.join(shots, '02-rollout-confirm.png') });
  await page.click('#confirm-ok');
  await waitFor('rollout 25% in /admin/sinks', async () =>
    (await adminSinks(page.request)).find((s) => s.name === rolloutSink)?.rollout.percent === 25);
  await waitFor('table shows 25%', async () => (await page.textContent(`${row} .rollout-percent`)) === '25%');

  // Cancelling changes nothing.
  await page.fill(`${row} input.rollout-input`, '80');
  await page.click(`${row} button.apply`);
  await page.waitForSelector('#confirm-dialog[open]');
  await page.click('#confirm-cancel');
  await new Promise((r) => setTimeout(r, 500));
  check((await adminSinks(page.request)).find((s) => s.name === rolloutSink).rollout.percent === 25, 'cancel keeps 25%');

  // The kill switch takes it to 0.
  await page.click(`${row} button.kill`);
  await page.waitForSelector('#confirm-dialog[open]');
  await page.click('#confirm-ok');
  await waitFor('rollout 0% in /admin/sinks', async () =>
    (await adminSinks(page.request)).find((s) => s.name === rolloutSink)?.rollout.percent === 0);
  await waitFor('audit log lists the changes', async () =>
    (await page.$$eval('#audit-table tbody tr', (rows) => rows.filter((r) => r.textContent.includes('rollout')).length)) >= 2);
  findings.auditRows = await page.$$eval('#audit-table tbody tr', (rows) => rows.map((r) => r.textContent));
  await page.screenshot({ path: path.join(shots, '03-after-kill-switch.png'), fullPage: true });

  // Reconciliation: the shadow sink is compared with its reference.
  await page.waitForSelector('#reconciliation-table tbody tr', { timeout: 15000 });
  findings.reconciliationRows = await page.$$eval('#reconciliation-table tbody tr', (rows) => rows.length);
  await page.fill('#threshold', '0');
  findings.highlightedAtZero = await page.$$eval('#reconciliation-table tbody tr.beyond', (rows) => rows.length);

  // Empty state: a range with no events says so instead of drawing empty charts.
  await page.fill('#range-start', '2001-01-01');
  await page.fill('#range-end', '2001-01-28');
  await page.click('#range-form button[type=submit]');
  await page.waitForSelector('#card-events[data-state=empty]');
  await page.waitForSelector('#card-active-users[data-state=empty]');
  findings.emptyText = await page.textContent('#card-events .chart');
  check(/No events/.test(findings.emptyText), 'empty state explained: ' + findings.emptyText);

  // Error state: a range the server refuses shows its message in the cards.
  await page.fill('#range-start', '2000-01-01');
  await page.fill('#range-end', end);
  await page.click('#range-form button[type=submit]');
  await page.waitForSelector('#card-events[data-state=error]');
  findings.errorText = await page.textContent('#card-events .state.error');
  check(/max_range_days/.test(findings.errorText), 'range error explained: ' + findings.errorText);
  await page.screenshot({ path: path.join(shots, '04-error-state.png'), fullPage: true });
  check(foreign.length === 0, 'requests left the server: ' + foreign.join(', '));
  await context.close();

  // 3. A browser without the token: the page asks once an API call answers 401.
  const bare = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const prompted = await bare.newPage();
  await prompted.goto(`${base}/console?start=${start}&end=${end}`);
  await prompted.waitForSelector('#token-dialog[open]');
  await prompted.screenshot({ path: path.join(shots, '05-token-prompt.png') });
  await prompted.fill('#token-input', token);
  await prompted.click('#token-form button');
  await prompted.waitForSelector('#sinks-table tbody tr[data-sink]');
  await prompted.waitForSelector('#card-funnel[data-state=ready]', { timeout: 20000 });
  findings.promptedThenLoaded = true;
  await bare.close();

  check(consoleErrors.length === 0, 'browser console errors: ' + consoleErrors.join(' | '));
  console.log(JSON.stringify({ ok: true, findings }));
} catch (error) {
  console.log(JSON.stringify({ ok: false, error: String(error && error.stack || error), findings, consoleErrors }));
  process.exitCode = 1;
} finally {
  await browser.close();
}
