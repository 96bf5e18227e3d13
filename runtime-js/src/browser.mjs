// @ts-check
/**
 * Browser entry point: bundles fetched from a URL, hashed with Web Crypto, run with
 * `onnxruntime-web` (import it under that name: a bundler resolves it, or an import map does,
 * see examples/web/index.html).
 *
 * @example
 * import { EarlyExitModel } from 'hapi-onnx-runtime/browser';
 * const model = await EarlyExitModel.load('/models/model.hapi/');
 * const pred = await model.predict({ data: pixels, dims: [1, 1, 28, 28] });
 */
import * as ort from 'onnxruntime-web';
import { BundleError } from './errors.mjs';
import { EarlyExitModel as Core } from './model.mjs';

export { BundleError } from './errors.mjs';
export { FORMAT_VERSIONS, parseManifest } from './manifest.mjs';
export { MAX_CHUNK } from './model.mjs';
export { Controller, disagreements, monitorPath } from './monitor.mjs';
export { parseNpy } from './npy.mjs';
export { ort };

/**
 * Files of a bundle served over HTTP(S) at `base` (a URL ending in `/`).
 * @param {URL} base @returns {import('./model.mjs').BundleSource}
 */
export function urlSource(base) {
  const subtle = globalThis.crypto?.subtle;
  if (!subtle) {
    throw new BundleError(
      `Cannot verify bundle '${base}': Web Crypto (crypto.subtle) is unavailable because the page ` +
        'is not a secure context. Serve the page over https or from localhost.',
    );
  }
  return {
    origin: base.href,
    async read(file) {
      const url = new URL(file, base);
      let response;
      try {
        response = await fetch(url);
      } catch (err) {
        throw new BundleError(`Bundle '${base}': cannot fetch '${file}': ${/** @type {Error} */ (err).message}.`);
      }
      if (response.status === 404 || response.status === 410) return null;
      if (!response.ok) {
        throw new BundleError(`Bundle '${base}': cannot fetch '${file}': HTTP ${response.status} ${response.statusText}.`);
      }
      return new Uint8Array(await response.arrayBuffer());
    },
    async sha256(bytes) {
      const digest = new Uint8Array(await subtle.digest('SHA-256', /** @type {Uint8Array<ArrayBuffer>} */ (bytes)));
      return Array.from(digest, (b) => b.toString(16).padStart(2, '0')).join('');
    },
  };
}

export class EarlyExitModel extends Core {
  /**
   * Fetch and verify a bundle (manifest and every stage's sha256) and open one session per stage.
   *
   * @param {string | URL} url The bundle directory's URL (`.../model.hapi/`), relative to the page.
   * @param {import('./model.mjs').LoadOptions} [options] Providers default to `['wasm']`.
   * @returns {Promise<EarlyExitModel>}
   * @throws {BundleError} when the URL is a zip bundle, a file cannot be fetched, or the bundle is
   *   malformed, of another format version or tampered with (see `EarlyExitModel.open`).
   */
  static async load(url, options = {}) {
    const base = new URL(url, globalThis.location?.href);
    if (base.pathname.endsWith('.zip')) {
      throw new BundleError(
        `Bundle '${base}' is a zip. The JavaScript runtime reads bundle directories (MODEL.hapi/) only: ` +
          'serve the unzipped directory (`unzip MODEL.hapi.zip -d MODEL.hapi`).',
      );
    }
    if (!base.pathname.endsWith('/')) base.pathname += '/';
    return this.open(urlSource(base), ort, { executionProviders: ['wasm'], ...options });
  }
}
