#!/usr/bin/env node
// @ts-check
/**
 * node runtime-js/cli.mjs BUNDLE_DIR IMAGES.npy [--batch N] [--threads N]
 *
 * Runs a hapi-onnx bundle on float32 N x C x H x W images and prints one JSON object on stdout:
 * {"classes": [...], "exits": [...], "confidences": [...], "exit_names": [...]} ("exits" are exit
 * indices; name them with "exit_names"). A user error prints one "error: ..." line on stderr and
 * exits with status 2.
 */
import { readFile, stat } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { BundleError, EarlyExitModel, parseNpy } from './src/node.mjs';

const USAGE = 'usage: node runtime-js/cli.mjs BUNDLE_DIR IMAGES.npy [--batch N] [--threads N]';

/** @param {string | undefined} text @param {string} flag */
function positiveInt(text, flag) {
  if (text === undefined) return undefined;
  const value = Number(text);
  if (!Number.isInteger(value) || value < 1) {
    throw new BundleError(`${flag} must be a positive integer. Got '${text}' instead. ${USAGE}`);
  }
  return value;
}

/** @param {string[]} argv */
async function main(argv) {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: { batch: { type: 'string' }, threads: { type: 'string' }, help: { type: 'boolean', short: 'h' } },
    });
  } catch (err) {
    throw new BundleError(`${/** @type {Error} */ (err).message}. ${USAGE}`);
  }
  const { values, positionals } = parsed;
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    return;
  }
  if (positionals.length !== 2) {
    throw new BundleError(`expected BUNDLE_DIR and IMAGES.npy. Got ${JSON.stringify(positionals)} instead. ${USAGE}`);
  }
  const [bundle, images] = positionals;
  const batch = positiveInt(values.batch, '--batch');
  const threads = positiveInt(values.threads, '--threads');
  let bytes;
  try {
    if (!(await stat(images)).isFile()) throw new Error('not a regular file'); // a FIFO would block the read
    bytes = await readFile(images);
  } catch (err) {
    throw new BundleError(`cannot read images '${images}': ${/** @type {Error} */ (err).message}.`);
  }
  const x = parseNpy(new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength), `'${images}'`);
  const sessionOptions = threads ? { intraOpNumThreads: threads, interOpNumThreads: 1 } : {};
  const model = await EarlyExitModel.load(bundle, { sessionOptions });
  const n = x.dims[0];
  const size = x.data.length / Math.max(n, 1);
  const step = batch ?? Math.max(n, 1);
  const out = { classes: /** @type {number[]} */ ([]), exits: /** @type {number[]} */ ([]), confidences: /** @type {number[]} */ ([]) };
  for (let start = 0; start < n || start === 0; start += step) {
    const rows = Math.min(step, n - start);
    const pred = await model.predict({ data: x.data.subarray(start * size, (start + rows) * size), dims: [rows, ...x.dims.slice(1)] });
    out.classes.push(...pred.classes);
    out.exits.push(...pred.exitIndex);
    out.confidences.push(...pred.confidences);
  }
  await model.release();
  process.stdout.write(`${JSON.stringify({ ...out, exit_names: model.exitNames })}\n`);
}

try {
  await main(process.argv.slice(2));
} catch (err) {
  if (!(err instanceof BundleError)) throw err;
  process.stderr.write(`error: ${err.message.replace(/\s*\n\s*/g, ' ')}\n`);
  process.exitCode = 2;
}
