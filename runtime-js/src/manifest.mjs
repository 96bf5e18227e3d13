// @ts-check
/**
 * The bundle manifest (`manifest.json`): validation of its decoded JSON, mirroring
 * `hapi_onnx/runtime/manifest.py` (the spec) check for check, with the same messages.
 *
 * Thresholds live only in the stages; a threshold is a finite number >= 0 held as the float32
 * value it compares as (`hapi_onnx/choice.py`).
 */
import { BundleError } from './errors.mjs';

export const KIND = 'hapi-onnx bundle';
/** The manifest format versions this runtime reads (`format_version` of the Python writer). */
export const FORMAT_VERSIONS = Object.freeze([2]);
export const MANIFEST_NAME = 'manifest.json';
export const EXIT_RULE = 'confidence >= threshold';
export const SUPPORTED_DTYPES = Object.freeze(['float32']);
/** The largest manifest read, as the Python reader's bound. */
export const MAX_MANIFEST_BYTES = 64 << 20;
// A stage file is stages/<plain name>.onnx: no folders, no "..", nothing absolute.
const STAGE_FILE_PATTERN = /^stages\/[A-Za-z0-9_][A-Za-z0-9_.-]*\.onnx$/;
const SHA256_PATTERN = /^[0-9a-f]{64}$/;
const FLOAT32_MAX = 3.4028234663852886e38;
const REBUILD = 'The bundle is malformed; rebuild it with `hapi-onnx bundle`.';

/**
 * @typedef {object} InputSpec The image input of stage 0.
 * @property {string} name Input tensor name.
 * @property {ReadonlyArray<number | null>} shape `[null, C, H, W]`; null where any size is accepted.
 *   The batch is null, or 1 where the model's graph fixes it: such a bundle runs one sample per call.
 * @property {string} dtype Element type, `float32`.
 *
 * @typedef {object} StageSpec One stage file and how the runtime wires it.
 * @property {string} name The exit this stage ends at (`exit<k>`, or `final`).
 * @property {string} file Path inside the bundle, `stages/<name>.onnx`.
 * @property {string} sha256 Lowercase hex sha256 of the file's bytes.
 * @property {string} input The stage's one input: the image, or the previous stage's carried tensor.
 * @property {string | null} carried Output carried to the next stage; null for the last stage.
 * @property {{class: string, confidence: string, probs: string}} outputs Decision output names:
 *   int64[N] class, float32[N] confidence, float32[N, C] probabilities.
 * @property {number | null} threshold Float32 value; leave when confidence >= it. Null for the last stage.
 *
 * @typedef {object} Manifest The validated contents of `manifest.json`.
 * @property {number} formatVersion
 * @property {InputSpec} input
 * @property {number} numClasses
 * @property {ReadonlyArray<string> | null} labels Class names, index = class id, if known.
 * @property {object | null} preprocessing What the input expects, as the bundle describes it.
 * @property {object | null} design Summary of the design (predicted metrics, constraints).
 * @property {object} provenance Source fingerprint, hapi-onnx version, creation time.
 * @property {ReadonlyArray<StageSpec>} stages In execution order; the last is the final classifier.
 * @property {CertifiedPath | null} path The certified path to the shipped design, if recorded.
 *
 * @typedef {object} CertifiedPath The designs from the full model (not listed) to the shipped one,
 *   safest first, certified for one drop budget (`path` of `manifest.py`).
 * @property {ReadonlyArray<ReadonlyArray<number>>} steps One float32 threshold per intermediate
 *   stage for each design; the last is the stages' thresholds.
 * @property {number | null} budgetPp The accuracy-drop budget, points (null: only a floor).
 * @property {string} reference `labels` or `final`.
 * @property {number} level The certificate's probability.
 */

/** @param {string} where @param {string} message */
function fail(where, message) {
  return new BundleError(`Bundle manifest ${where}: ${message} ${REBUILD}`);
}

/** @param {unknown} value */
function show(value) {
  if (value === undefined) return 'undefined';
  const text = JSON.stringify(value);
  return text.length > 200 ? `${text.slice(0, 200)}...` : text;
}

/** @param {unknown} value @returns {value is Record<string, unknown>} */
function isObject(value) {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/**
 * `data[key]`, required; null allowed when `optional`.
 * @param {Record<string, unknown>} data @param {string} key @param {(v: unknown) => boolean} ok
 * @param {string} what @param {string} where @param {boolean} [optional]
 * @returns {any}
 */
function get(data, key, ok, what, where, optional = false) {
  if (!(key in data)) throw fail(where, `field '${key}' is missing.`);
  const value = data[key];
  if (value === null && optional) return null;
  if (!ok(value)) throw fail(where, `field '${key}' must be ${what}. Got ${show(value)} instead.`);
  return value;
}

/** @param {Record<string, unknown>} data @param {string} key @param {string} where @param {boolean} [optional] */
function name(data, key, where, optional = false) {
  const value = get(data, key, (v) => typeof v === 'string', 'a non-empty string', where, optional);
  if (value === '') throw fail(where, `field '${key}' must be a non-empty string. Got '' instead.`);
  return /** @type {string} */ (value);
}

const isPositiveInt = (/** @type {unknown} */ v) => Number.isInteger(v) && /** @type {number} */ (v) >= 1;

/** @param {unknown} data @returns {InputSpec} */
function inputSpec(data) {
  const where = "'input'";
  if (!isObject(data)) throw fail(where, `must be an object. Got ${show(data)} instead.`);
  const inputName = name(data, 'name', where);
  const shape = get(data, 'shape', Array.isArray, 'a list of dimensions', where);
  if (shape.length !== 4 || !shape.every((/** @type {unknown} */ d) => d === null || isPositiveInt(d))) {
    throw fail(where, `'shape' must be 4 dimensions, each a positive int or null. Got ${show(shape)}.`);
  }
  const dtype = get(data, 'dtype', (v) => typeof v === 'string', 'a dtype name', where);
  if (!SUPPORTED_DTYPES.includes(dtype)) {
    throw fail(where, `'dtype' must be one of ${show(SUPPORTED_DTYPES)}. Got ${show(dtype)} instead.`);
  }
  const batch = shape[0] === 1 ? 1 : null;
  return Object.freeze({ name: inputName, shape: Object.freeze([batch, ...shape.slice(1)]), dtype });
}

/**
 * The one threshold rule: a finite number >= 0 (above 1 never exits), held as its float32 value.
 * Mirrors `check_threshold` in `hapi_onnx/choice.py`.
 * @param {unknown} value @param {string} [what]
 * @returns {number}
 * @throws {BundleError} when it is not a finite number >= 0.
 */
export function checkThreshold(value, what = 'threshold') {
  if (typeof value !== 'number' || !Number.isFinite(value) || value < 0 || value > FLOAT32_MAX) {
    throw new BundleError(
      `${what} must be a finite number >= 0 (a confidence in [0, 1]; above 1 never exits). ` +
        `Got ${show(value)} instead.`,
    );
  }
  return Math.fround(value);
}

/**
 * The exit rule: whether a sample with this confidence leaves at a stage with this threshold,
 * `confidence >= threshold` compared in float32 (a NaN confidence never leaves). The one copy in
 * JS, mirroring `leaves` in `hapi_onnx/choice.py`.
 * @param {number} confidence @param {number} threshold
 */
export function leaves(confidence, threshold) {
  return Math.fround(confidence) >= Math.fround(threshold);
}

/** @param {unknown} data @param {number} index @returns {StageSpec} */
function stageSpec(data, index) {
  const where = `stage ${index}`;
  if (!isObject(data)) throw fail(where, `must be an object. Got ${show(data)} instead.`);
  const file = name(data, 'file', where);
  if (!STAGE_FILE_PATTERN.test(file) || file.includes('..')) {
    throw fail(where, `'file' must be a plain 'stages/<name>.onnx' path. Got ${show(file)} instead.`);
  }
  const digest = get(data, 'sha256', (v) => typeof v === 'string', 'a hex sha256', where);
  if (!SHA256_PATTERN.test(digest)) {
    throw fail(where, `'sha256' must be 64 lowercase hex digits. Got ${show(digest)} instead.`);
  }
  const outputs = get(data, 'outputs', isObject, 'an object with class/confidence/probs', where);
  const raw = get(data, 'threshold', (v) => typeof v === 'number', 'a number or null', where, true);
  const stageName = name(data, 'name', where);
  let threshold = null;
  if (raw !== null) {
    try {
      threshold = checkThreshold(raw, `threshold of '${stageName}'`);
    } catch (err) {
      throw fail(where, /** @type {Error} */ (err).message);
    }
  }
  return Object.freeze({
    name: stageName,
    file,
    sha256: digest,
    input: name(data, 'input', where),
    carried: name(data, 'carried', where, true),
    outputs: Object.freeze({
      class: name(outputs, 'class', `${where} outputs`),
      confidence: name(outputs, 'confidence', `${where} outputs`),
      probs: name(outputs, 'probs', `${where} outputs`),
    }),
    threshold,
  });
}

/**
 * Stages chain input -> carried -> input, thresholds on all but the last, files and names unique.
 * @param {InputSpec} input @param {ReadonlyArray<StageSpec>} stages
 */
function checkWiring(input, stages) {
  const files = stages.map((s) => s.file);
  if (new Set(files).size !== files.length) throw fail("'stages'", `each stage needs its own file. Got ${show(files)}.`);
  let expected = input.name;
  const last = stages.length - 1;
  stages.forEach((stage, i) => {
    const where = `stage ${i} ('${stage.name}')`;
    if (stage.input !== expected) {
      throw fail(where, `'input' must be '${expected}' (what the previous stage carries). Got '${stage.input}' instead.`);
    }
    if (i < last) {
      if (stage.threshold === null || stage.carried === null) {
        throw fail(where, "an intermediate stage needs a 'threshold' and a 'carried' output.");
      }
      expected = stage.carried;
    } else if (stage.threshold !== null || stage.carried !== null) {
      throw fail(where, "the last stage decides every remaining sample: its 'threshold' and 'carried' must be null.");
    }
  });
  const names = stages.map((s) => s.name);
  if (new Set(names).size !== names.length) {
    throw fail("'stages'", `A design's exits must be distinct. Got ${show(names)} instead.`);
  }
}

/**
 * Decode and validate `manifest.json`.
 *
 * @param {Uint8Array} bytes The file's bytes.
 * @returns {Manifest} The validated manifest (frozen).
 * @throws {BundleError} when it is not UTF-8 JSON, not a hapi-onnx bundle manifest of a version
 *   in {@link FORMAT_VERSIONS}, or any field is missing, of the wrong type or inconsistent.
 */
export function parseManifest(bytes) {
  const source = `The bundle's ${MANIFEST_NAME}`;
  if (bytes.length > MAX_MANIFEST_BYTES) {
    throw new BundleError(`${source} is larger than ${MAX_MANIFEST_BYTES >> 20} MiB; it is not a hapi-onnx artifact.`);
  }
  let data;
  try {
    data = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes));
  } catch (err) {
    throw new BundleError(`${source} is not valid JSON (${/** @type {Error} */ (err).message}). ${REBUILD}`);
  }
  if (!isObject(data) || data.kind !== KIND) {
    const got = isObject(data) ? show(data.kind) : Array.isArray(data) ? 'a list' : typeof data;
    throw new BundleError(`${source} is not a ${KIND} file. Got kind ${got} instead.`);
  }
  if (!FORMAT_VERSIONS.includes(/** @type {number} */ (data.format_version))) {
    throw new BundleError(
      `${source} has ${KIND} format_version ${show(data.format_version)}; this runtime reads ` +
        `version ${FORMAT_VERSIONS.join(' or ')}. Rebuild the bundle with a hapi-onnx that writes it, ` +
        'or use the runtime-js release that matches your hapi-onnx.',
    );
  }
  const where = 'top level';
  const rule = get(data, 'exit_rule', (v) => typeof v === 'string', `'${EXIT_RULE}'`, where);
  if (rule !== EXIT_RULE) throw fail(where, `'exit_rule' must be '${EXIT_RULE}'. Got ${show(rule)} instead.`);
  const numClasses = get(data, 'num_classes', Number.isInteger, 'a positive int', where);
  if (numClasses < 1) throw fail(where, `'num_classes' must be a positive int. Got ${numClasses} instead.`);
  const labels = get(data, 'labels', Array.isArray, 'a list of strings or null', where, true);
  if (labels !== null && (labels.length !== numClasses || !labels.every((/** @type {unknown} */ x) => typeof x === 'string'))) {
    throw fail(where, `'labels' must be ${numClasses} strings (one per class). Got ${show(labels)}.`);
  }
  const rawStages = get(data, 'stages', Array.isArray, 'a non-empty list', where);
  if (rawStages.length === 0) throw fail(where, "'stages' must list at least the final stage. Got [] instead.");
  const stages = Object.freeze(rawStages.map(stageSpec));
  const manifest = Object.freeze({
    formatVersion: /** @type {number} */ (data.format_version),
    input: inputSpec(data.input),
    numClasses,
    labels: labels === null ? null : Object.freeze([...labels]),
    preprocessing: get(data, 'preprocessing', isObject, 'an object or null', where, true),
    design: get(data, 'design', isObject, 'an object or null', where, true),
    provenance: get(data, 'provenance', isObject, 'an object', where),
    stages,
    path: certifiedPath(data.path ?? null, stages),
  });
  checkWiring(manifest.input, stages);
  return manifest;
}

/**
 * The optional `path`, checked as `CertifiedPath.from_dict` checks it.
 * @param {unknown} data @param {ReadonlyArray<StageSpec>} stages @returns {CertifiedPath | null}
 */
function certifiedPath(data, stages) {
  if (data === null) return null;
  const where = "'path'";
  if (!isObject(data)) throw fail(where, `must be an object. Got ${show(data)} instead.`);
  const thresholds = stages.slice(0, -1).map((s) => s.threshold);
  const raw = get(data, 'steps', Array.isArray, 'a list of threshold lists', where);
  /** @type {(ReadonlyArray<number> | null)[]} */
  const steps = raw.map((/** @type {unknown} */ step) => {
    if (!Array.isArray(step) || step.length !== thresholds.length) return null;
    return Object.freeze(step.map((/** @type {unknown} */ t) => checkThreshold(t, 'a path threshold')));
  });
  if (steps.length === 0 || steps.includes(null)) {
    throw fail(where, `'steps' must be a non-empty list of lists of ${thresholds.length} thresholds ` +
      `(one per intermediate stage). Got ${show(raw)}.`);
  }
  const budgetPp = get(data, 'budget_pp', (v) => typeof v === 'number', 'a number of points or null', where, true);
  const reference = get(data, 'reference', (v) => typeof v === 'string', "'labels' or 'final'", where);
  const level = get(data, 'level', (v) => typeof v === 'number', 'a probability', where);
  if ((budgetPp !== null && !(budgetPp >= 0 && budgetPp <= 100)) || !['labels', 'final'].includes(reference) ||
      !(level > 0 && level < 1)) {
    throw fail(where, "needs budget_pp in [0, 100] or null, reference 'labels' or 'final' and level in (0, 1). " +
      `Got ${show(budgetPp)}, ${show(reference)}, ${show(level)}.`);
  }
  return Object.freeze({ steps: Object.freeze(/** @type {ReadonlyArray<number>[]} */ (steps)), budgetPp, reference, level });
}
