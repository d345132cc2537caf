// Bundle files through the browser Cache API, verified against manifest.json (size + sha256).
//
// A file is looked up under "<url>?sha256=<hex>", so a re-converted bundle never reads stale bytes;
// cached bytes are hashed again on read and dropped if they do not match. Downloads stream through
// a reader so progress can be reported; a file that fails its check is never cached.

import { BundleNotFoundError, ChecksumError } from './errors.js';

export const CACHE_NAME = 'webllama-models-v1';

/** @typedef {import('./manifest.js').FileEntry} FileEntry */
/** @typedef {{bytes: number, fromCache: boolean}} ByteEvent */

/** @param {ArrayBuffer|Uint8Array} data @returns {Promise<string>} lowercase hex sha256 */
export async function sha256Hex(data) {
  const digest = await crypto.subtle.digest('SHA-256', /** @type {BufferSource} */ (data));
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, '0')).join('');
}

/**
 * @param {Uint8Array} bytes @param {FileEntry} entry @param {string} url
 * @returns {Promise<void>} throws ChecksumError on a size or sha256 mismatch
 */
export async function verify(bytes, entry, url) {
  if (bytes.byteLength !== entry.size) {
    throw new ChecksumError(
      `${entry.path}: size ${bytes.byteLength} bytes, manifest.json says ${entry.size}; the bundle at ${url} is corrupt or was ` +
      'modified after conversion: convert it again (or clear the model cache)', { file: entry.path, expected_size: entry.size, size: bytes.byteLength });
  }
  const found = await sha256Hex(bytes);
  if (found !== entry.sha256) {
    throw new ChecksumError(
      `checksum mismatch for ${entry.path}: sha256 ${found.slice(0, 16)}…, manifest.json says ${entry.sha256.slice(0, 16)}…; ` +
      'the file is corrupt or was modified after conversion: convert the bundle again', { file: entry.path, expected: entry.sha256, found });
  }
}

export class ModelStore {
  /** @param {{cacheName?: string, useCache?: boolean}} [opts] */
  constructor(opts = {}) {
    this.cacheName = opts.cacheName || CACHE_NAME;
    this.useCache = opts.useCache !== false && typeof caches !== 'undefined';
  }

  /**
   * The verified bytes of one bundle file, from the cache or the network.
   * @param {string} baseUrl bundle URL ending in '/' @param {FileEntry} entry
   * @param {{onBytes?: (e: ByteEvent) => void, signal?: AbortSignal}} [opts]
   * @returns {Promise<{bytes: Uint8Array, fromCache: boolean}>}
   */
  async get(baseUrl, entry, opts = {}) {
    const url = new URL(entry.path, baseUrl).href;
    const key = `${url}?sha256=${entry.sha256}`;
    const cache = this.useCache ? await caches.open(this.cacheName) : null;
    const hit = cache ? await cache.match(key) : undefined;
    if (hit && cache) {
      const bytes = new Uint8Array(await hit.arrayBuffer());
      try {
        await verify(bytes, entry, url);
        if (opts.onBytes) opts.onBytes({ bytes: bytes.byteLength, fromCache: true });
        return { bytes, fromCache: true };
      } catch {
        await cache.delete(key); // stale or damaged: fetch again
      }
    }
    const bytes = await download(url, entry, opts);
    await verify(bytes, entry, url);
    if (cache) {
      // Best effort: the bytes are verified and in memory, so a full quota (or Chromium's "Unexpected internal
      // error" for a put of several hundred MB) costs the next load a download, not this load its model.
      try {
        await cache.put(key, new Response(/** @type {BodyInit} */ (/** @type {unknown} */ (bytes)), {
          headers: { 'Content-Type': 'application/octet-stream', 'Content-Length': String(bytes.byteLength) },
        }));
      } catch (e) {
        console.warn(`webllama: could not cache ${entry.path} (${/** @type {Error} */ (e).message}); it will be downloaded again next time`);
      }
    }
    return { bytes, fromCache: false };
  }

  /** Delete every cached model file. @returns {Promise<boolean>} */
  async clear() {
    return typeof caches !== 'undefined' ? caches.delete(this.cacheName) : false;
  }

  /** Bytes held in the cache (sum of Content-Length). @returns {Promise<number>} */
  async usage() {
    if (!this.useCache || !(await caches.has(this.cacheName))) return 0;
    const cache = await caches.open(this.cacheName);
    let total = 0;
    for (const req of await cache.keys()) {
      const r = await cache.match(req);
      total += Number((r && r.headers.get('Content-Length')) || 0);
    }
    return total;
  }
}

/**
 * Stream one file into a buffer of the manifest's size, reporting progress.
 * @param {string} url @param {FileEntry} entry
 * @param {{onBytes?: (e: ByteEvent) => void, signal?: AbortSignal}} opts
 * @returns {Promise<Uint8Array>}
 */
async function download(url, entry, opts) {
  let resp;
  try {
    resp = await fetch(url, { signal: opts.signal, cache: 'no-store' });
  } catch (e) {
    throw new BundleNotFoundError(`cannot download ${url}: ${/** @type {Error} */ (e).message}; is the server running?`, { url });
  }
  if (!resp.ok || !resp.body) {
    throw new BundleNotFoundError(`cannot download ${url}: HTTP ${resp.status}; the bundle is incomplete`, { url, status: resp.status });
  }
  const out = new Uint8Array(entry.size);
  const reader = resp.body.getReader();
  let offset = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    if (offset + value.byteLength > out.byteLength) {
      await reader.cancel();
      throw new ChecksumError(`${entry.path}: the server sent more than the ${entry.size} bytes manifest.json lists; convert the bundle again`,
        { file: entry.path, expected_size: entry.size });
    }
    out.set(value, offset);
    offset += value.byteLength;
    if (opts.onBytes) opts.onBytes({ bytes: value.byteLength, fromCache: false });
  }
  return offset === out.byteLength ? out : out.subarray(0, offset);
}
