// @ts-check
/**
 * The drift monitor's state machine, mirroring `hapi_onnx/runtime/monitor.py` (the spec; its
 * module docstring states the rules and why the bounds hold): the path a bundle's monitor moves
 * along, each audit's record (at which positions the sample would have left early with another
 * answer than the final one), and the controller that turns records into a position. Given the
 * same records, it takes the same positions as the Python controller.
 *
 * Not yet here: the audits themselves (picking samples and completing them off the caller's
 * path) around `EarlyExitModel.predict`.
 */
import { BundleError } from './errors.mjs';
import { leaves } from './manifest.mjs';

/** Steps of the path derived for a bundle that records none (after the full model). */
export const DERIVED_STEPS = 16;
/** A threshold no confidence reaches: the full model. */
export const NEVER = 2.0;

/**
 * The positions (row 0 the full model, the last the shipped design), the budget, and whether the
 * path is the manifest's certified one.
 *
 * @param {import('./manifest.mjs').Manifest} manifest
 * @param {number | null} [budget] A budget (fraction) instead of the bundle's.
 * @returns {{rows: number[][], budget: number, certified: boolean}}
 * @throws {BundleError} when no budget is given and the bundle records none.
 */
export function monitorPath(manifest, budget = null) {
  const design = manifest.stages.slice(0, -1).map((s) => /** @type {number} */ (s.threshold));
  /** @type {number[][]} */
  let steps;
  const recorded = manifest.path ? manifest.path.budgetPp
    : (/** @type {any} */ (manifest.design ?? {}).constraints ?? {}).max_accuracy_drop;
  const path = manifest.path && manifest.path.steps[manifest.path.steps.length - 1].every((t, j) => t === design[j])
    ? manifest.path : null; // thresholds edited after the search: the certified path does not lead to them
  if (path) {
    steps = path.steps.map((s) => [...s]);
  } else {
    steps = [];
    for (let i = 1; i <= DERIVED_STEPS; i++) {
      steps.push(design.map((t) => (t > 1 ? t : t + ((1 - t) * (DERIVED_STEPS - i)) / DERIVED_STEPS)));
    }
  }
  if (budget === null) {
    if (typeof recorded !== 'number') {
      throw new BundleError(
        'This bundle records no accuracy-drop budget to monitor against: give one (a fraction of samples).',
      );
    }
    budget = recorded / 100;
  }
  const rows = [design.map(() => NEVER), ...steps].map((row) => row.map(Math.fround));
  const kept = rows.filter((row, i) => i === 0 || row.some((t, j) => t !== rows[i - 1][j]));
  return { rows: kept, budget, certified: Boolean(path) };
}

/**
 * One audited sample's record: for each position, whether it leaves early with another answer
 * than the final classifier's.
 *
 * @param {number[][]} rows Float32 thresholds per position.
 * @param {ArrayLike<number>} classes Every stage's class. @param {ArrayLike<number>} confidences
 *   Every stage's float32 confidence.
 * @returns {boolean[]}
 */
export function disagreements(rows, classes, confidences) {
  const last = classes.length - 1;
  return rows.map((row) => {
    for (let j = 0; j < last; j++) {
      if (leaves(confidences[j], row[j])) return classes[j] !== classes[last];
    }
    return false;
  });
}

/** Bernoulli relative entropy kl(p, q) (q clipped into (0, 1); 0 log 0 = 0). @param {number} p @param {number} q */
function kl(p, q) {
  q = Math.min(Math.max(q, 1e-15), 1 - 1e-15);
  return (p > 0 ? p * Math.log(p / q) : 0) + (p < 1 ? (1 - p) * Math.log((1 - p) / (1 - q)) : 0);
}

/** Audit records in, a position on the path out (see `Controller` in monitor.py). */
export class Controller {
  /**
   * @param {number} positions Positions on the path, the full model included.
   * @param {number} budget Largest acceptable disagreement rate. @param {number} level Probability
   *   that every bound read holds. @param {number} window Audits the bounds look back over.
   * @param {boolean} [trustCertificate] Start at and keep the shipped design until evidence against it.
   */
  constructor(positions, budget, level, window, trustCertificate = true) {
    this.last = positions - 1;
    this.budget = budget;
    this.delta = 1 - level;
    this.trust = trustCertificate;
    this.position = trustCertificate ? this.last : 0;
    this.audits = 0;
    this.windowSize = window;
    /** @type {boolean[][]} */
    this.window = [];
    this.counts = new Array(positions).fill(0);
  }

  /** log(1 / delta_k,t) of each position's bound after the audits so far (the union bound). */
  logTerms() {
    const t = Math.max(this.audits, 1);
    const now = this.delta / (t * (t + 1));
    if (!this.trust) return this.counts.map(() => Math.log(Math.max(this.last, 1) / now));
    const terms = this.counts.map(() => Math.log((2 * Math.max(this.last - 1, 1)) / now));
    terms[this.last] = Math.log(2 / now);
    return terms;
  }

  /** Take one audit's record (a flag per position) and return the position to use now. @param {ArrayLike<boolean>} record */
  update(record) {
    if (record.length !== this.counts.length) {
      throw new BundleError(`an audit record needs one flag per position (${this.counts.length}). Got ${record.length}.`);
    }
    if (this.window.length === this.windowSize) {
      const old = /** @type {boolean[]} */ (this.window.shift());
      old.forEach((x, k) => { this.counts[k] -= x ? 1 : 0; });
    }
    const flags = Array.from(record, Boolean);
    this.window.push(flags);
    flags.forEach((x, k) => { this.counts[k] += x ? 1 : 0; });
    this.audits += 1;
    const b = this.budget;
    const k = this.last;
    const n = this.window.length;
    const terms = this.logTerms();
    const p = this.counts.map((c) => c / n);
    const evidence = p.map((q, i) => n * kl(q, b) - terms[i]);
    const below = p.map((q, i) => i === 0 || (q <= b && evidence[i] >= 0));
    let verified = 0;
    for (let i = 0; i < k; i++) if (below[i]) verified = i;
    const aboveK = p[k] > b && evidence[k] > 0;
    if (!this.trust) this.position = below[k] ? k : verified;
    else if (this.position === k) this.position = aboveK ? verified : k;
    else this.position = !aboveK && p[k] <= b ? k : verified;
    return this.position;
  }
}
