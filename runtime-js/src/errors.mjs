// @ts-check
/**
 * The one error type of the runtime for what a caller can cause: a missing, malformed or
 * tampered bundle, or a wrong input. Its message says what was expected, what was found and
 * how to fix it (the Python runtime's `HapiError`, same wording).
 */
export class BundleError extends Error {
  /** @param {string} message */
  constructor(message) {
    super(message);
    this.name = 'BundleError';
  }
}
