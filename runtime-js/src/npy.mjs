// @ts-check
/** Read float32 images from a NumPy `.npy` file's bytes (no dependency; Node and browser alike). */
import { BundleError } from './errors.mjs';

const MAGIC = [0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59]; // "\x93NUMPY"
/** The longest header numpy reads (`max_header_size`), as the Python side refuses longer ones. */
export const MAX_HEADER = 10000;

/**
 * Parse a little-endian float32, C-order `.npy` array.
 *
 * @param {Uint8Array} bytes The file's bytes.
 * @param {string} [source] What the bytes are, for messages. Defaults to "the .npy file".
 * @returns {{data: Float32Array, dims: number[]}} The values (a copy) and the shape.
 * @throws {BundleError} when it is not a `.npy` file, not float32, Fortran-ordered or truncated.
 */
export function parseNpy(bytes, source = 'the .npy file') {
  if (bytes.length < 10 || MAGIC.some((b, i) => bytes[i] !== b)) {
    throw new BundleError(`${source} is not a NumPy .npy file (no \\x93NUMPY magic). Save images with numpy.save.`);
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const major = bytes[6];
  const [lengthAt, lengthSize] = major === 1 ? [8, 2] : [8, 4];
  const headerLength = lengthSize === 2 ? view.getUint16(lengthAt, true) : view.getUint32(lengthAt, true);
  if (headerLength > MAX_HEADER) {
    throw new BundleError(
      `${source} has a ${headerLength}-byte header, more than the ${MAX_HEADER} numpy reads; it is damaged. ` +
        'Save images with numpy.save.',
    );
  }
  const start = lengthAt + lengthSize;
  const header = new TextDecoder('latin1').decode(bytes.subarray(start, start + headerLength));
  const descr = /'descr':\s*'([^']*)'/.exec(header)?.[1];
  const fortran = /'fortran_order':\s*(True|False)/.exec(header)?.[1];
  const shapeText = /'shape':\s*\(([^)]*)\)/.exec(header)?.[1];
  if (descr !== '<f4' || fortran !== 'False' || shapeText === undefined) {
    throw new BundleError(
      `${source} must hold a little-endian float32 C-order array. Got header ${header.trim()} instead. ` +
        'Save it with numpy.save(path, np.ascontiguousarray(x, dtype=np.float32)).',
    );
  }
  const dims = shapeText.split(',').map((d) => d.trim()).filter((d) => d !== '').map(Number);
  if (!dims.every((d) => Number.isSafeInteger(d) && d >= 0)) {
    throw new BundleError(`${source} declares the shape (${shapeText}); sizes must be whole numbers >= 0.`);
  }
  const count = dims.reduce((a, b) => a * b, 1);
  const offset = start + headerLength;
  if (bytes.length - offset !== count * 4) {
    throw new BundleError(
      `${source} is truncated or padded: shape (${dims.join(', ')}) needs ${count * 4} bytes of data. Got ${bytes.length - offset} instead.`,
    );
  }
  const data = new Float32Array(count);
  new Uint8Array(data.buffer).set(bytes.subarray(offset));
  return { data, dims };
}
