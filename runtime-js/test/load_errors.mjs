// @ts-check
/**
 * Load each bundle directory given and print {dir: the BundleError's message, or null when it
 * loads} as one JSON object (any other error is a bug and is thrown).
 *
 * node runtime-js/test/load_errors.mjs DIR...
 */
import { BundleError, EarlyExitModel } from '../src/node.mjs';

/** @type {Record<string, string | null>} */
const out = {};
for (const dir of process.argv.slice(2)) {
  try {
    await (await EarlyExitModel.load(dir)).release();
    out[dir] = null;
  } catch (err) {
    if (!(err instanceof BundleError)) throw err;
    out[dir] = err.message;
  }
}
process.stdout.write(`${JSON.stringify(out)}\n`);
