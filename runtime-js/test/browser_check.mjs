/**
 * Drive the example page in headless Chromium (the system's, through playwright-core) and print
 * what it did as one JSON object; tests/test_runtime_js.py compares it with the Python runtime.
 *
 * node runtime-js/test/browser_check.mjs PLAN.json, where the plan is
 *   {"page": URL of examples/web/ with ?bundle=...&samples=..., "screenshot": PNG path,
 *    "sample": index of the digit to click, "broken": {"name": bundle URL, ...},
 *    "chromium": executable (default /usr/bin/chromium)}
 * and the output is
 *   {"batch": {classes, exits, confidences}, "single": {class, exit, confidence, stages},
 *    "drawn": the answer for a "7" drawn with the mouse,
 *    "errors": {"name": message, ...}, "console": [page errors and console errors]}
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';

const FLAGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];
const TIMEOUT_MS = 60_000;
/** A "7" as one pen stroke, in drawing-pad pixels (280 x 280). */
const SEVEN = [[70, 50], [210, 50], [120, 240]];

/**
 * Draw one stroke on the pad with the mouse; resolves with the page's answer for it.
 * @param {import('playwright-core').Page} page @param {number[][]} stroke
 */
async function draw(page, stroke) {
  await page.click('#clear');
  await page.evaluate(() => { globalThis.hapiDemo.last = null; });
  const box = await page.locator('#pad').boundingBox();
  if (!box) throw new Error('the drawing pad is not visible');
  const [[x0, y0], ...rest] = stroke;
  await page.mouse.move(box.x + x0, box.y + y0);
  await page.mouse.down();
  for (const [x, y] of rest) await page.mouse.move(box.x + x, box.y + y, { steps: 10 });
  await page.mouse.up();
  await page.waitForFunction(() => globalThis.hapiDemo.last !== null || globalThis.hapiDemo.status === 'error');
  return page.evaluate(() => globalThis.hapiDemo.last);
}

const plan = JSON.parse(await readFile(process.argv[2], 'utf8'));
const profile = await mkdtemp(path.join(os.tmpdir(), 'hapi-chromium-'));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: plan.chromium ?? '/usr/bin/chromium',
  headless: true,
  args: FLAGS,
  viewport: { width: 1100, height: 900 },
});
/** @type {string[]} */
const messages = [];
try {
  const page = context.pages()[0] ?? (await context.newPage());
  page.setDefaultTimeout(TIMEOUT_MS);
  page.on('pageerror', (err) => messages.push(`pageerror: ${err.message}`));
  page.on('console', (msg) => {
    if (msg.type() === 'error') messages.push(`console: ${msg.text()}`);
  });

  /** Open the page on `url`; resolves with the page's status once it stops loading. @param {string} url */
  const open = async (url) => {
    await page.goto(url);
    await page.waitForFunction(() => globalThis.hapiDemo && globalThis.hapiDemo.status !== 'loading');
    return page.evaluate(() => ({ status: globalThis.hapiDemo.status, error: globalThis.hapiDemo.error }));
  };

  const result = { batch: null, single: null, drawn: null, errors: /** @type {Record<string, any>} */ ({}), console: messages };
  const state = await open(plan.page);
  if (state.status !== 'ready') throw new Error(`the page did not load its bundle: ${state.error}`);
  await page.click('#classify-all');
  await page.waitForFunction(() => globalThis.hapiDemo.batch !== null || globalThis.hapiDemo.status === 'error');
  result.batch = await page.evaluate(() => globalThis.hapiDemo.batch);
  await page.click(`#sample-${plan.sample ?? 0}`);
  await page.waitForFunction(() => globalThis.hapiDemo.last !== null || globalThis.hapiDemo.status === 'error');
  result.single = await page.evaluate(() => globalThis.hapiDemo.last);
  await page.screenshot({ path: plan.screenshot, fullPage: true });
  result.drawn = await draw(page, SEVEN);
  for (const [name, url] of Object.entries(plan.broken ?? {})) {
    const base = new URL(plan.page);
    base.searchParams.set('bundle', url);
    result.errors[name] = await open(base.href);
  }
  process.stdout.write(`${JSON.stringify(result)}\n`);
} finally {
  await context.close();
  await rm(profile, { recursive: true, force: true });
}
