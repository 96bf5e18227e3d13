// @ts-check
/**
 * The library API on real data, printed as JSON for tests/test_runtime_js.py to compare with the
 * Python runtime: predict with probabilities, and progressive.
 *
 * node runtime-js/test/api_check.mjs BUNDLE_DIR IMAGES.npy
 */
import { readFile } from 'node:fs/promises';
import { EarlyExitModel, parseNpy } from '../src/node.mjs';

const [bundle, images] = process.argv.slice(2);
const x = parseNpy(new Uint8Array(await readFile(images)));
const model = await EarlyExitModel.load(bundle);
const pred = await model.predict(x, { returnProbs: true });
const steps = [];
for await (const step of model.progressive(x)) {
  steps.push({ stage: step.stage, classes: [...step.classes], confidences: [...step.confidences],
    exits: [...step.exitIndex], probs: Array.from(step.probs ?? []), leaves: [...step.leaves] });
}
await model.release();
process.stdout.write(`${JSON.stringify({
  exit_names: model.exitNames, thresholds: model.thresholds,
  predict: { classes: [...pred.classes], exits: [...pred.exitIndex], confidences: [...pred.confidences], probs: Array.from(pred.probs ?? []) },
  progressive: steps,
})}\n`);
