// @ts-check
/**
 * Node entry point: bundles from a `MODEL.hapi/` directory, hashed with `node:crypto`, run with
 * `onnxruntime-node`.
 *
 * @example
 * import { EarlyExitModel } from 'hapi-onnx-runtime';
 * const model = await EarlyExitModel.load('work/demo/model.hapi');
 * const pred = await model.predict({ data: images, dims: [n, 1, 28, 28] });  // images: Float32Array
 * pred.classes, pred.confidences, pred.exitIndex
 */
import './telemetry.mjs'; // before onnxruntime-node starts
import { createHash } from 'node:crypto';
import { lstat, readFile } from 'node:fs/promises';
import path from 'node:path';
import * as ort from 'onnxruntime-node';
import { BundleError } from './errors.mjs';
import { EarlyExitModel as Core } from './model.mjs';

export { BundleError } from './errors.mjs';
export { FORMAT_VERSIONS, parseManifest } from './manifest.mjs';
export { MAX_CHUNK } from './model.mjs';
export { Controller, disagreements, monitorPath } from './monitor.mjs';
export { parseNpy } from './npy.mjs';
export { ort };

const ZIP_HINT =
  'The JavaScript runtime reads bundle directories (MODEL.hapi/) only, not zip bundles: unzip it ' +
  '(`unzip MODEL.hapi.zip -d MODEL.hapi`) or write a directory with `hapi-onnx bundle ... -o MODEL.hapi`.';

/**
 * Files of a bundle directory; symlinks are refused, as the Python runtime does.
 * @param {string} dir @returns {import('./model.mjs').BundleSource}
 */
export function directorySource(dir) {
  return {
    origin: dir,
    async read(file) {
      const parts = file.split('/');
      const full = path.join(dir, ...parts);
      let stat;
      for (let k = 1; k <= parts.length; k++) {
        // every component under the bundle: a linked stages/ folder is refused like a linked stage file
        const part = parts.slice(0, k).join('/');
        try {
          stat = await lstat(path.join(dir, ...parts.slice(0, k)));
        } catch (err) {
          if (/** @type {NodeJS.ErrnoException} */ (err).code === 'ENOENT') return null;
          throw new BundleError(`Bundle '${dir}': cannot read '${file}': ${/** @type {Error} */ (err).message}.`);
        }
        if (stat.isSymbolicLink()) {
          const what = k === parts.length ? 'is a symlink' : `lies in '${part}', a symlink`;
          throw new BundleError(`Bundle '${dir}': '${file}' ${what}. Rebuild the bundle with \`hapi-onnx bundle\`.`);
        }
      }
      if (!stat?.isFile()) {
        throw new BundleError(`Bundle '${dir}': '${file}' is not a file. Rebuild the bundle with \`hapi-onnx bundle\`.`);
      }
      const buffer = await readFile(full);
      return new Uint8Array(buffer.buffer, buffer.byteOffset, buffer.byteLength);
    },
    async sha256(bytes) {
      return createHash('sha256').update(bytes).digest('hex');
    },
  };
}

export class EarlyExitModel extends Core {
  /**
   * Verify a bundle directory (manifest and every stage's sha256) and open one session per stage.
   *
   * @param {string} dir The `MODEL.hapi` directory written by `hapi-onnx bundle`.
   * @param {import('./model.mjs').LoadOptions} [options] Providers default to `['cpu']`.
   * @returns {Promise<EarlyExitModel>}
   * @throws {BundleError} when the directory is missing or a zip, or the bundle is malformed,
   *   of another format version or tampered with (see `EarlyExitModel.open`).
   */
  static async load(dir, options = {}) {
    let stat;
    try {
      stat = await lstat(dir);
    } catch {
      throw new BundleError(`Bundle '${dir}' does not exist. Build one with \`hapi-onnx bundle\`.`);
    }
    if (!stat.isDirectory()) {
      throw new BundleError(`Bundle '${dir}' is not a directory. ${ZIP_HINT}`);
    }
    return this.open(directorySource(dir), ort, { executionProviders: ['cpu'], ...options });
  }
}
