/**
 * Open one page in headless Chromium (the system's, through playwright-core) and print what it
 * reported, as one JSON object: tests/test_docs.py runs docs/your-model.md's web page with it.
 *
 * node runtime-js/test/page_check.mjs URL [CHROMIUM]
 *
 * The page sets `document.body.dataset.status` to "done" (and `globalThis.hapiResult`) or to
 * "error"; the output is {"status", "result", "text", "console"} (console errors, page errors).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';

const FLAGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];
const [url, executablePath = '/usr/bin/chromium'] = process.argv.slice(2);
const profile = await mkdtemp(path.join(os.tmpdir(), 'hapi-chromium-'));
const context = await chromium.launchPersistentContext(profile, { executablePath, headless: true, args: FLAGS });
/** @type {string[]} */
const messages = [];
try {
  const page = context.pages()[0] ?? (await context.newPage());
  page.setDefaultTimeout(60_000);
  page.on('pageerror', (err) => messages.push(`pageerror: ${err.message}`));
  page.on('console', (msg) => {
    if (msg.type() === 'error') messages.push(`console: ${msg.text()}`);
  });
  await page.goto(url);
  await page.waitForFunction(() => ['done', 'error'].includes(document.body.dataset.status ?? ''));
  const out = await page.evaluate(() => ({
    status: document.body.dataset.status,
    result: /** @type {any} */ (globalThis).hapiResult ?? null,
    text: document.body.innerText,
  }));
  process.stdout.write(`${JSON.stringify({ ...out, console: messages })}\n`);
} finally {
  await context.close();
  await rm(profile, { recursive: true, force: true });
}
