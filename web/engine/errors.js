// Errors shared by the engine (worker) and the client (main thread).
//
// Each failure a user can meet has its own class with an actionable message. Errors cross the worker
// boundary as {name, message, data} (toWire) and are rebuilt as the same class (fromWire), so
// `err instanceof ChecksumError` works on the main thread.

export class WebllamaError extends Error {
  /** @param {string} message @param {Record<string, unknown>} [data] */
  constructor(message, data = {}) {
    super(message);
    this.name = new.target.name;
    /** @type {Record<string, unknown>} */
    this.data = data;
  }
}

/** The bundle URL does not answer, or manifest.json is missing / not a webllama bundle. */
export class BundleNotFoundError extends WebllamaError {}
/** manifest.json has an unknown schema_version or lacks a field the engine needs. */
export class ManifestError extends WebllamaError {}
/** A downloaded or cached file does not match the size/sha256 listed in manifest.json. */
export class ChecksumError extends WebllamaError {}
/** No variant of the bundle can run here (e.g. only q4f16 and no shader-f16), or a forced one is absent. */
export class VariantError extends WebllamaError {}
/** onnxruntime-web could not create a session on any execution provider. */
export class SessionError extends WebllamaError {}
/** The device ran out of memory (GPU buffer or wasm heap). */
export class OutOfMemoryError extends WebllamaError {}
/** The browser's storage quota cannot hold the model's files (Cache API). */
export class StorageQuotaError extends WebllamaError {}
/** Prompt + requested output do not fit in manifest.context_length. */
export class ContextFullError extends WebllamaError {}
/** A request is malformed (OpenAI field types/ranges). */
export class InvalidRequestError extends WebllamaError {}
/** A method was called before load() finished, or after unload(). */
export class NotLoadedError extends WebllamaError {}
/** The caller aborted (AbortSignal / interrupt()). */
export class AbortedError extends WebllamaError {}
/** Anything the engine did not expect; carries the original name and stack in data. */
export class InternalError extends WebllamaError {}

export const ERROR_CLASSES = Object.freeze({
  WebllamaError, BundleNotFoundError, ManifestError, ChecksumError, VariantError, SessionError,
  OutOfMemoryError, StorageQuotaError, ContextFullError, InvalidRequestError, NotLoadedError, AbortedError, InternalError,
});

/** @typedef {{name: string, message: string, data: Record<string, unknown>}} WireError */

/**
 * Serialize any thrown value for postMessage; unknown errors become InternalError.
 * @param {unknown} err
 * @returns {WireError}
 */
export function toWire(err) {
  if (err instanceof WebllamaError) {
    return { name: err.name, message: err.message, data: structuredSafe(err.data) };
  }
  const e = /** @type {any} */ (err);
  const message = e && e.message ? String(e.message) : String(err);
  if (isOutOfMemory(message)) {
    return toWire(new OutOfMemoryError(
      `out of memory: ${message}. Pick a smaller variant/model or close other tabs using the GPU.`));
  }
  return { name: 'InternalError', message, data: { original_name: e && e.name, stack: e && e.stack } };
}

/**
 * Rebuild the error class from its wire form.
 * @param {WireError} wire
 * @returns {WebllamaError}
 */
export function fromWire(wire) {
  const Cls = ERROR_CLASSES[/** @type {keyof typeof ERROR_CLASSES} */ (wire.name)] || InternalError;
  const err = new Cls(wire.message, wire.data || {});
  if (!(wire.name in ERROR_CLASSES)) err.data = { ...err.data, original_name: wire.name };
  return err;
}

/** @param {string} message */
export function isOutOfMemory(message) {
  return /out of memory|OutOfMemory|Array buffer allocation failed|Failed to allocate|ENOMEM|createBuffer.*(size|exceed)/i
    .test(message);
}

/** @param {Record<string, unknown>} data */
function structuredSafe(data) {
  try {
    return structuredClone(data);
  } catch {
    return JSON.parse(JSON.stringify(data, (_k, v) => (typeof v === 'bigint' ? Number(v) : v)));
  }
}
