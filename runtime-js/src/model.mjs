// @ts-check
/**
 * EarlyExitModel: run a staged early-exit bundle with ONNX Runtime, leaving at the first confident
 * exit. The platform-neutral core of the Node (`node.mjs`) and browser (`browser.mjs`) entry
 * points, which only add how files are read and hashed and which `ort` module runs them.
 *
 * Same semantics as `hapi_onnx.runtime.EarlyExitModel` (the reference):
 * - one session per stage; stage j returns exit j's class, confidence and probabilities and the
 *   tensor carried to stage j+1;
 * - a sample leaves at the first stage whose confidence reaches the stage threshold (`leaves` in
 *   `manifest.mjs`: float32 `>=`, as `hapi_onnx.choice.leaves`); the last stage decides every
 *   sample still running;
 * - a batch runs each stage on the samples still undecided only (compaction); results come back
 *   in input order; batches run in chunks of {@link MAX_CHUNK} samples (of 1 where the model's graph
 *   fixes its batch at 1: manifest input shape [1, ...]).
 */
import { BundleError } from './errors.mjs';
import { MANIFEST_NAME, leaves, parseManifest } from './manifest.mjs';

/** Samples run through the stages together at most (as in Python); larger inputs go chunk by chunk. */
export const MAX_CHUNK = 256;

/**
 * @typedef {import('./manifest.mjs').Manifest} Manifest
 * @typedef {import('./manifest.mjs').StageSpec} StageSpec
 *
 * @typedef {object} BundleSource Where a bundle's files come from: one per platform.
 * @property {string} origin The bundle's location, for messages.
 * @property {(file: string) => Promise<Uint8Array | null>} read The bytes of a file inside the
 *   bundle (`manifest.json`, `stages/...`); null when it does not exist.
 * @property {(bytes: Uint8Array) => Promise<string>} sha256 Lowercase hex sha256 of bytes.
 *
 * @typedef {object} LoadOptions
 * @property {string[]} [executionProviders] ONNX Runtime execution providers, in order of
 *   preference. Defaults to the platform's CPU one (`cpu` in Node, `wasm` in the browser).
 * @property {object} [sessionOptions] Other `InferenceSession.create` options for every stage
 *   (e.g. `{intraOpNumThreads: 1}`).
 *
 * @typedef {object} ImageBatch float32[N, C, H, W] images; an `ort.Tensor` of type float32 is one.
 * @property {Float32Array} data Row-major values.
 * @property {ReadonlyArray<number>} dims `[N, C, H, W]`.
 *
 * @typedef {object} Prediction What the model decided for each sample, in input order.
 * @property {Int32Array} classes Top-1 class.
 * @property {Float32Array} confidences Max probability at the exit taken.
 * @property {Int32Array} exitIndex Stage each sample left at (0-based; the last stage is the
 *   original classifier). Name it with `model.exitNames[i]`.
 * @property {Float32Array | null} probs `[N * numClasses]` probabilities at the exit taken
 *   (row-major), when asked for.
 *
 * @typedef {Prediction & {stage: number, leaves: Uint8Array}} StageResult One step of
 *   `progressive`: every sample's answer at `stage`; `leaves[i]` is 1 where sample i's
 *   confidence reaches the stage's threshold (all 1 at the last stage).
 */

/** @param {unknown} value */
const show = (value) => (Array.isArray(value) ? `[${value.join(', ')}]` : String(value));

export class EarlyExitModel {
  /** @type {Manifest} */ #manifest;
  /** @type {any} */ #ort;
  /** @type {any[]} */ #sessions;
  /** @type {number[]} */ #thresholds;

  /**
   * Use `EarlyExitModel.load` of the Node or browser entry point (or {@link EarlyExitModel.open}).
   * @param {Manifest} manifest @param {any} ort @param {any[]} sessions
   */
  constructor(manifest, ort, sessions) {
    this.#manifest = manifest;
    this.#ort = ort;
    this.#sessions = sessions;
    this.#thresholds = manifest.stages.slice(0, -1).map((s) => /** @type {number} */ (s.threshold));
  }

  /**
   * Read a bundle from `source`, verify the manifest and every stage's sha256, and open one
   * session per stage, each from the very bytes that were verified.
   *
   * @template {typeof EarlyExitModel} T
   * @this {T}
   * @param {BundleSource} source How to read and hash the bundle's files.
   * @param {any} ort The `onnxruntime-node` or `onnxruntime-web` module.
   * @param {LoadOptions} [options]
   * @returns {Promise<InstanceType<T>>}
   * @throws {BundleError} when the manifest is missing, malformed or of another format version,
   *   a stage file is missing or does not match its sha256, ONNX Runtime cannot load a stage, or
   *   a stage's inputs/outputs contradict the manifest.
   */
  static async open(source, ort, options = {}) {
    const { executionProviders, sessionOptions = {} } = options;
    if (executionProviders !== undefined && (!Array.isArray(executionProviders) || executionProviders.length === 0)) {
      throw new BundleError(
        `executionProviders must be a non-empty list of provider names, e.g. ['cpu']. Got ${JSON.stringify(executionProviders)} instead.`,
      );
    }
    const { origin } = source;
    const manifestBytes = await source.read(MANIFEST_NAME);
    if (manifestBytes === null) {
      throw new BundleError(
        `Bundle '${origin}' has no ${MANIFEST_NAME}. Is this a bundle written by \`hapi-onnx bundle\`?`,
      );
    }
    const manifest = parseManifest(manifestBytes);
    const blobs = [];
    for (const stage of manifest.stages) {
      const bytes = await source.read(stage.file);
      if (bytes === null) {
        throw new BundleError(
          `Bundle '${origin}': stage file '${stage.file}' is missing. Rebuild the bundle with \`hapi-onnx bundle\`.`,
        );
      }
      const digest = await source.sha256(bytes);
      if (digest !== stage.sha256) {
        throw new BundleError(
          `Bundle '${origin}': stage file '${stage.file}' does not match the sha256 in the manifest ` +
            `(expected ${stage.sha256.slice(0, 12)}..., got ${digest.slice(0, 12)}...). The bundle was ` +
            'modified or corrupted; rebuild it with `hapi-onnx bundle`.',
        );
      }
      blobs.push(bytes);
    }
    const sessions = [];
    try {
      for (const [i, stage] of manifest.stages.entries()) {
        try {
          sessions.push(await ort.InferenceSession.create(blobs[i], { ...sessionOptions, executionProviders }));
        } catch (err) {
          throw new BundleError(
            `Bundle '${origin}': ONNX Runtime cannot load stage '${stage.file}': ${/** @type {Error} */ (err).message}`,
          );
        }
      }
      checkStageIo(origin, manifest, sessions);
    } catch (err) {
      await Promise.all(sessions.map((s) => s.release()));
      throw err;
    }
    return /** @type {InstanceType<T>} */ (new this(manifest, ort, sessions));
  }

  /** The bundle's validated manifest. */
  get manifest() {
    return this.#manifest;
  }

  /** Exit name of each stage, `final` last. */
  get exitNames() {
    return this.#manifest.stages.map((s) => s.name);
  }

  /** Confidence thresholds (float32 values) of the intermediate stages. */
  get thresholds() {
    return [...this.#thresholds];
  }

  /** Number of stages (session calls on the longest path). */
  get numStages() {
    return this.#sessions.length;
  }

  /** Class names, if the bundle has them. */
  get labels() {
    return this.#manifest.labels;
  }

  /** Release every stage's session; the model cannot predict afterwards. */
  async release() {
    await Promise.all(this.#sessions.map((s) => s.release()));
    this.#sessions = [];
  }

  /**
   * Classify a batch, each sample leaving at its first confident exit.
   *
   * @param {ImageBatch} input float32[N, C, H, W] images, preprocessed as the manifest describes.
   * @param {{returnProbs?: boolean}} [options] `returnProbs`: also return the probabilities at
   *   each sample's exit. Defaults to false.
   * @returns {Promise<Prediction>} In input order.
   * @throws {BundleError} when `input` is not float32 data of the bundle's input shape, or holds
   *   NaN or infinite values.
   */
  async predict(input, { returnProbs = false } = {}) {
    const [n, ...sample] = this.#checkInput(input);
    const size = sample.reduce((a, b) => a * b, 1);
    const c = this.#manifest.numClasses;
    const result = {
      classes: new Int32Array(n),
      confidences: new Float32Array(n),
      exitIndex: new Int32Array(n),
      probs: returnProbs ? new Float32Array(n * c) : null,
    };
    const chunk = this.#perCall(n);
    for (let start = 0; start < n; start += chunk) {
      const rows = Math.min(chunk, n - start);
      const data = input.data.subarray(start * size, (start + rows) * size);
      await this.#predictChunk(new this.#ort.Tensor('float32', data, [rows, ...sample]), start, result);
    }
    return result;
  }

  /**
   * The refined prediction after each stage, every sample running on to the final one unless the
   * caller stops iterating (which stops computing: stage j+1 runs only when asked for).
   *
   * @param {ImageBatch} input float32[N, C, H, W] images.
   * @returns {AsyncGenerator<StageResult>} After stage j: every sample's class, confidence and
   *   probabilities at exit j (`exitIndex` is j for all), and which samples would leave there.
   * @throws {BundleError} as {@link EarlyExitModel.predict}.
   */
  async *progressive(input) {
    const dims = this.#checkInput(input);
    const n = dims[0];
    const rows = this.#manifest.input.shape[0] === 1 ? 1 : n; // a graph fixing its batch at 1: one per call
    const size = input.data.length / n;
    /** @type {any[]} */
    let current = [];
    for (let start = 0; start < n; start += rows) {
      const data = input.data.subarray(start * size, (start + rows) * size);
      current.push(new this.#ort.Tensor('float32', data, [rows, ...dims.slice(1)]));
    }
    for (const [j, session] of this.#sessions.entries()) {
      const stage = this.#manifest.stages[j];
      const last = j === this.#sessions.length - 1;
      const fetches = [stage.outputs.class, stage.outputs.confidence, stage.outputs.probs];
      /** @type {any[]} */
      const outs = [];
      for (const part of current) {
        outs.push(await session.run({ [stage.input]: part }, last ? fetches : [...fetches, stage.carried]));
      }
      const joined = (/** @type {string} */ name) => outs.flatMap((out) => Array.from(out[name].data));
      const confidences = Float32Array.from(joined(stage.outputs.confidence));
      const leaving = new Uint8Array(n);
      for (let r = 0; r < n; r++) leaving[r] = last || leaves(confidences[r], this.#thresholds[j]) ? 1 : 0;
      yield {
        stage: j,
        classes: Int32Array.from(joined(stage.outputs.class), Number),
        confidences,
        exitIndex: new Int32Array(n).fill(j),
        probs: Float32Array.from(joined(stage.outputs.probs)),
        leaves: leaving,
      };
      if (!last) current = outs.map((out) => out[/** @type {string} */ (stage.carried)]);
    }
  }

  /** Samples per session call: 1 where the model's graph fixes the batch at 1. @param {number} n */
  #perCall(n) {
    return this.#manifest.input.shape[0] === 1 ? 1 : Math.min(n, MAX_CHUNK);
  }

  /**
   * Run one chunk stage by stage on the undecided samples; write rows `offset...` of `result`.
   * @param {any} x float32 tensor of the chunk @param {number} offset @param {Prediction} result
   */
  async #predictChunk(x, offset, result) {
    const stages = this.#manifest.stages;
    const c = this.#manifest.numClasses;
    let active = Int32Array.from({ length: x.dims[0] }, (_, i) => offset + i); // sample of each row
    let current = x;
    for (const [j, session] of this.#sessions.entries()) {
      const stage = stages[j];
      const last = j === stages.length - 1;
      const fetches = [stage.outputs.class, stage.outputs.confidence];
      if (result.probs) fetches.push(stage.outputs.probs);
      if (!last) fetches.push(/** @type {string} */ (stage.carried));
      const out = await session.run({ [stage.input]: current }, fetches);
      const classes = out[stage.outputs.class].data;
      const confs = out[stage.outputs.confidence].data;
      const probs = result.probs ? out[stage.outputs.probs].data : null;
      const threshold = this.#thresholds[j];
      const keep = [];
      for (let r = 0; r < active.length; r++) {
        if (last || leaves(confs[r], threshold)) {
          const i = active[r];
          result.classes[i] = Number(classes[r]);
          result.confidences[i] = confs[r];
          result.exitIndex[i] = j;
          if (probs) /** @type {Float32Array} */ (result.probs).set(probs.subarray(r * c, (r + 1) * c), i * c);
        } else {
          keep.push(r);
        }
      }
      if (last || keep.length === 0) return;
      const carried = out[/** @type {string} */ (stage.carried)];
      if (keep.length < active.length) {
        current = this.#takeRows(carried, keep);
        active = Int32Array.from(keep, (r) => active[r]);
      } else {
        current = carried;
      }
    }
  }

  /** The rows `rows` of a tensor (along axis 0), as a new tensor. @param {any} t @param {number[]} rows */
  #takeRows(t, rows) {
    const size = t.data.length / t.dims[0];
    const data = new t.data.constructor(rows.length * size);
    rows.forEach((r, k) => data.set(t.data.subarray(r * size, (r + 1) * size), k * size));
    return new this.#ort.Tensor(t.type, data, [rows.length, ...t.dims.slice(1)]);
  }

  /**
   * The dims of a valid input, or BundleError.
   * @param {ImageBatch} input @returns {number[]}
   */
  #checkInput(input) {
    const spec = this.#manifest.input;
    const expected = `(${spec.shape.map((d) => (d === null ? 'N' : d)).join(', ')})`;
    const data = /** @type {any} */ (input)?.data;
    const dims = /** @type {any} */ (input)?.dims;
    if (!(data instanceof Float32Array) || !Array.isArray(dims)) {
      const got = data && data.constructor ? `data ${data.constructor.name}` : typeof input;
      throw new BundleError(
        `predict expects float32 images {data: Float32Array, dims: [N, C, H, W]} of shape ${expected} ` +
          `(an ort.Tensor of type float32 is one). Got ${got} instead. Convert with Float32Array.from(values).`,
      );
    }
    const bad = dims.length !== spec.shape.length
      || dims.some((d, i) => !Number.isInteger(d) || (i > 0 && spec.shape[i] !== null && d !== spec.shape[i]));
    if (bad || dims[0] < 1) {
      throw new BundleError(`predict expects input of shape ${expected} with N >= 1. Got shape (${show(dims)}) instead.`);
    }
    const size = dims.reduce((a, b) => a * b, 1);
    if (data.length !== size) {
      throw new BundleError(
        `predict got ${data.length} values for shape (${show(dims)}), which needs ${size}. Pass dims that match the data.`,
      );
    }
    let nonFinite = 0;
    for (let k = 0; k < size; k++) if (!Number.isFinite(data[k])) nonFinite++;
    if (nonFinite) {
      throw new BundleError(
        `predict got ${nonFinite} NaN or infinite input value(s); an early exit cannot decide on them. ` +
          'Clean or drop those samples.',
      );
    }
    return [...dims];
  }
}

// -- load-time check: the stage files are what the manifest says (as the Python runtime) -----------

/**
 * Each stage session's real inputs and outputs are what the manifest says they are: names,
 * element types, ranks and static dimensions (manifest.json is not hashed; the stage files are).
 * @param {string} origin @param {Manifest} manifest @param {any[]} sessions
 */
function checkStageIo(origin, manifest, sessions) {
  /** @param {number} i @param {string | null} problem */
  const refuse = (i, problem) => {
    if (problem === null) return;
    const stage = manifest.stages[i];
    throw new BundleError(
      `Bundle manifest does not match stage ${i} ('${stage.name}', '${stage.file}') of '${origin}': ` +
        `${problem} Rebuild the bundle with \`hapi-onnx bundle\` (or restore its original manifest.json).`,
    );
  };
  sessions.forEach((session, i) => refuse(i, stageMismatch(manifest, i, session)));
  for (let i = 0; i + 1 < sessions.length; i++) refuse(i, carriedMismatch(manifest.stages[i], sessions[i], sessions[i + 1], i + 1));
}

/** @param {any} session @param {'input' | 'output'} kind @returns {Map<string, any>} name -> metadata (or {}) */
function metadata(session, kind) {
  const names = kind === 'input' ? session.inputNames : session.outputNames;
  const meta = (kind === 'input' ? session.inputMetadata : session.outputMetadata) ?? [];
  return new Map(names.map((/** @type {string} */ n, /** @type {number} */ k) => [n, meta[k] ?? {}]));
}

const isStatic = (/** @type {unknown} */ d) => Number.isInteger(d) && /** @type {number} */ (d) >= 0;

/** @param {ReadonlyArray<unknown>} dims */
const showDims = (dims) => `[${dims.map((d, i) => (i === 0 && !isStatic(d) ? 'N' : isStatic(d) ? d : '?')).join(', ')}]`;

/**
 * Dims `got` contradict `want` (rank, or a static size on both sides); unknown metadata never does.
 * @param {any} got @param {ReadonlyArray<unknown>} want
 */
function dimsDiffer(got, want) {
  if (!Array.isArray(got)) return false;
  return got.length !== want.length || got.some((g, k) => isStatic(g) && isStatic(want[k]) && g !== want[k]);
}

/** @param {Manifest} manifest @param {number} i @param {any} session @returns {string | null} */
function stageMismatch(manifest, i, session) {
  const spec = manifest.stages[i];
  const inputs = metadata(session, 'input');
  const outputs = metadata(session, 'output');
  if (inputs.size !== 1 || !inputs.has(spec.input)) {
    return `'input' is '${spec.input}', but the stage file's inputs are ${JSON.stringify([...inputs.keys()])}.`;
  }
  /** @type {Record<string, string>} */
  const fields = {
    'outputs.class': spec.outputs.class,
    'outputs.confidence': spec.outputs.confidence,
    'outputs.probs': spec.outputs.probs,
  };
  if (spec.carried !== null) fields.carried = spec.carried;
  if (new Set(Object.values(fields)).size !== Object.keys(fields).length) {
    return `${Object.keys(fields).join(', ')} must name distinct outputs. Got ${JSON.stringify(fields)}.`;
  }
  const missing = Object.values(fields).filter((n) => !outputs.has(n));
  if (missing.length) {
    return `missing outputs ${JSON.stringify(missing)} (the stage file has ${JSON.stringify([...outputs.keys()].sort())}).`;
  }
  if (i === 0) {
    const arg = inputs.get(spec.input);
    const want = manifest.input;
    const wrongType = arg.type !== undefined && arg.type !== want.dtype;
    if (wrongType || dimsDiffer(arg.shape, want.shape)) {
      return `'input' '${spec.input}' is ${arg.type} ${showDims(arg.shape ?? [])} in the stage file, but the ` +
        `manifest's 'input' says ${want.dtype} ${showDims(want.shape)}.`;
    }
  }
  /** @type {[string, string, unknown[]][]} */
  const decision = [
    ['outputs.class', 'int64', ['N']],
    ['outputs.confidence', 'float32', ['N']],
    ['outputs.probs', 'float32', ['N', manifest.numClasses]],
  ];
  for (const [field, type, want] of decision) {
    const arg = outputs.get(fields[field]);
    if ((arg.type !== undefined && arg.type !== type) || dimsDiffer(arg.shape, want)) {
      const what = field === 'outputs.probs' ? ' (num_classes)' : '';
      return `${field} '${fields[field]}' is ${arg.type} ${showDims(arg.shape ?? [])} in the stage file; ` +
        `expected ${type} ${showDims(want)}${what}.`;
    }
  }
  return null;
}

/** @param {StageSpec} spec @param {any} session @param {any} following @param {number} j @returns {string | null} */
function carriedMismatch(spec, session, following, j) {
  const out = metadata(session, 'output').get(/** @type {string} */ (spec.carried));
  const [[name, next]] = metadata(following, 'input');
  if ((out.type !== undefined && out.type !== next.type) || (Array.isArray(next.shape) && dimsDiffer(out.shape, next.shape))) {
    return `'carried' '${spec.carried}' is ${out.type} ${showDims(out.shape ?? [])}, but stage ${j} reads ` +
      `'${name}' as ${next.type} ${showDims(next.shape ?? [])}.`;
  }
  return null;
}
