// @ts-check
/**
 * The monitor's state machine on recorded inputs, printed as JSON for tests/test_runtime_monitor.py
 * to compare with the Python monitor: positions taken on recorded audit streams, the path of a
 * bundle (its certified one, and the one derived when the manifest records none), and the records
 * of recorded stage outputs.
 *
 * node runtime-js/test/monitor_check.mjs CASES.json
 * CASES.json: {streams: [{positions, budget, level, window, trust, records}], bundle, plain,
 *   budget, classes, confidences}
 */
import { readFile } from 'node:fs/promises';
import { Controller, disagreements, monitorPath, parseManifest } from '../src/node.mjs';

const cases = JSON.parse(await readFile(process.argv[2], 'utf-8'));
const manifest = async (/** @type {string} */ dir) => parseManifest(new Uint8Array(await readFile(`${dir}/manifest.json`)));
const streams = cases.streams.map((/** @type {any} */ s) => {
  const controller = new Controller(s.positions, s.budget, s.level, s.window, s.trust);
  return s.records.map((/** @type {number[]} */ r) => controller.update(r.map(Boolean)));
});
const path = monitorPath(await manifest(cases.bundle));
const derived = monitorPath(await manifest(cases.plain), cases.budget);
const records = cases.classes.map((/** @type {number[]} */ c, /** @type {number} */ i) =>
  disagreements(path.rows, c, cases.confidences[i]));
process.stdout.write(`${JSON.stringify({ streams, path, derived, records })}\n`);
