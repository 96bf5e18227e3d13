// @ts-check
/**
 * JS runtime benchmark: the bundle against the full model under Node (onnxruntime-node), batch 1,
 * one thread, on the demo's held-out test set; next to the same measurement by the Python runtime
 * in the same run (hapi_onnx.evaluate.evaluate_bundle, device cpu-1t).
 *
 * Each runtime times bundle and full model per image, interleaved (alternating which goes first),
 * the first 20 images left out as warm-up, so each speed-up is a ratio measured side by side.
 * Also times one ORT call on a one-element Identity graph in each runtime: the fixed cost the
 * bundle pays once per stage it runs.
 *
 * Usage: node bench/bench_js.mjs [WORKDIR]   (default work/demo, written by `make demo`;
 * PYTHON defaults to .venv/bin/python)
 */
import { spawnSync } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { EarlyExitModel, ort, parseNpy } from '../runtime-js/src/node.mjs';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const WORK = path.resolve(process.argv[2] ?? path.join(REPO, 'work', 'demo'));
const PYTHON = process.env.PYTHON ?? path.join(REPO, '.venv', 'bin', 'python');
const WARMUP = 20;
const ONE_THREAD = { intraOpNumThreads: 1, interOpNumThreads: 1, executionMode: /** @type {'sequential'} */ ('sequential'), graphOptimizationLevel: /** @type {'all'} */ ('all') };
const CALLS = 2000;

// The Python side: writes the test images, the full model and an Identity graph for Node, then
// measures the Python runtime the way `hapi-onnx evaluate` does.
const PY = `
import json, sys, time
from pathlib import Path
import numpy as np, onnx, onnxruntime as ort
from onnx import TensorProto, helper
from hapi_onnx.data import load_dataset
from hapi_onnx.evaluate import evaluate_bundle, full_model_for_bundle
from hapi_onnx.runtime import EarlyExitModel

work, out = Path(sys.argv[1]), Path(sys.argv[2])
data = load_dataset(work / "data" / "test.npz")
np.save(out / "x.npy", data.x)
bundle = work / "model.hapi"
manifest = EarlyExitModel.load(bundle).manifest
(out / "full.onnx").write_bytes(full_model_for_bundle(work / "model.onnx", manifest.provenance))
io = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 1]) for n in ("a", "b")]
graph = helper.make_graph([helper.make_node("Identity", ["a"], ["b"])], "identity", io[:1], io[1:])
identity = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
identity.ir_version = 8
(out / "identity.onnx").write_bytes(identity.SerializeToString())
report = evaluate_bundle(bundle, data, device="cpu-1t", full_model=work / "model.onnx")
options = ort.SessionOptions()
options.intra_op_num_threads = options.inter_op_num_threads = 1
session = ort.InferenceSession(identity.SerializeToString(), options, providers=["CPUExecutionProvider"])
feed = {"a": np.zeros((1, 1), np.float32)}
for _ in range(200):
    session.run(None, feed)
t0 = time.perf_counter_ns()
for _ in range(${CALLS}):
    session.run(None, feed)
call_us = (time.perf_counter_ns() - t0) / ${CALLS} / 1e3
print(json.dumps({
    "version": ort.__version__, "y": data.y.tolist(), "exit_counts": report.exit_counts,
    "bundle_ms": report.latency.mean_ms, "full_ms": report.full_latency.mean_ms,
    "accuracy": report.accuracy, "full_accuracy": report.full_accuracy, "call_us": call_us,
}))
`;

/** @param {number[]} values */
const mean = (values) => values.reduce((a, b) => a + b, 0) / values.length;

/** @param {Float32Array} scores @param {number} c */
function argmax(scores, c) {
  let best = 0;
  for (let k = 1; k < c; k++) if (scores[k] > scores[best]) best = k;
  return best;
}

async function main() {
  const tmp = await mkdtemp(path.join(os.tmpdir(), 'bench-js-'));
  try {
    const py = spawnSync(PYTHON, ['-c', PY, WORK, tmp], { encoding: 'utf8', maxBuffer: 1 << 26 });
    if (py.status !== 0) throw new Error(`the Python side failed (is ${WORK} built by \`make demo\`?):\n${py.stderr}`);
    const python = JSON.parse(py.stdout);

    const x = parseNpy(new Uint8Array(await readFile(path.join(tmp, 'x.npy'))));
    const [n, ...sample] = x.dims;
    const size = x.data.length / n;
    const model = await EarlyExitModel.load(path.join(WORK, 'model.hapi'), { sessionOptions: ONE_THREAD });
    const full = await ort.InferenceSession.create(path.join(tmp, 'full.onnx'), { ...ONE_THREAD, executionProviders: ['cpu'] });
    const c = model.manifest.numClasses;
    const [fullIn, fullOut] = [full.inputNames[0], full.outputNames[0]];

    /** @type {number[]} */ const bundleMs = [];
    /** @type {number[]} */ const fullMs = [];
    /** @type {number[]} */ const exits = [];
    let [right, fullRight] = [0, 0];
    for (let i = 0; i < n; i++) {
      const data = x.data.subarray(i * size, (i + 1) * size);
      const runBundle = async () => {
        const t0 = process.hrtime.bigint();
        const pred = await model.predict({ data, dims: [1, ...sample] });
        bundleMs.push(Number(process.hrtime.bigint() - t0) / 1e6);
        exits.push(pred.exitIndex[0]);
        right += Number(pred.classes[0] === python.y[i]);
      };
      const runFull = async () => {
        const t0 = process.hrtime.bigint();
        const out = await full.run({ [fullIn]: new ort.Tensor('float32', data, [1, ...sample]) }, [fullOut]);
        fullMs.push(Number(process.hrtime.bigint() - t0) / 1e6);
        fullRight += Number(argmax(/** @type {Float32Array} */ (out[fullOut].data), c) === python.y[i]);
      };
      if (i % 2 === 0) {
        await runBundle();
        await runFull();
      } else {
        await runFull();
        await runBundle();
      }
    }
    const identity = await ort.InferenceSession.create(path.join(tmp, 'identity.onnx'), { ...ONE_THREAD, executionProviders: ['cpu'] });
    const feed = { a: new ort.Tensor('float32', new Float32Array(1), [1, 1]) };
    for (let k = 0; k < 200; k++) await identity.run(feed);
    const t0 = process.hrtime.bigint();
    for (let k = 0; k < CALLS; k++) await identity.run(feed);
    const callUs = Number(process.hrtime.bigint() - t0) / CALLS / 1e3;

    const node = { bundle: mean(bundleMs.slice(WARMUP)), full: mean(fullMs.slice(WARMUP)) };
    const counts = model.exitNames.map((_, j) => exits.filter((e) => e === j).length);
    const stagesRun = mean(exits.map((e) => e + 1));
    const row = (/** @type {string[]} */ cells) => cells.map((s, k) => (k ? s.padStart(13) : s.padEnd(32))).join('');
    console.log(`bench_js: bundle vs full model, batch 1, one thread, ${n} test images of ${WORK} (first ${WARMUP} are warm-up)`);
    console.log(row(['runtime', 'bundle (ms)', 'full (ms)', 'speed-up', 'acc bundle', 'acc full', 'call (us)']));
    console.log(row([`Node, onnxruntime-node ${ort.env.versions.node}`, node.bundle.toFixed(4), node.full.toFixed(4),
      `x${(node.full / node.bundle).toFixed(2)}`, (right / n).toFixed(4), (fullRight / n).toFixed(4), callUs.toFixed(1)]));
    console.log(row([`Python, onnxruntime ${python.version}`, python.bundle_ms.toFixed(4), python.full_ms.toFixed(4),
      `x${(python.full_ms / python.bundle_ms).toFixed(2)}`, python.accuracy.toFixed(4), python.full_accuracy.toFixed(4),
      python.call_us.toFixed(1)]));
    console.log(`exits (Node): ${model.exitNames.map((name, j) => `${name} ${counts[j]}`).join(', ')}; ` +
      `Python: ${python.exit_counts.join(', ')}; ${stagesRun.toFixed(2)} stage calls per image on average`);
    console.log('call (us): one session run of a 1-element Identity graph, the fixed cost paid once per stage run');
    await model.release();
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
}

await main();
