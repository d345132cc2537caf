// Bundle files through the browser Cache API, verified against manifest.json (size + sha256).
//
// A file is looked up under "<url>?sha256=<hex>", so a re-converted bundle never reads stale bytes.
// Small files (graph, tokenizer) are read whole and hashed again on read. Weight shards are never held whole
// in JS memory: the download streams into the cache through a hashing TransformStream that errors the
// put when the size or sha256 is wrong (so a cache entry exists only for verified bytes), and the session
// reads the cached, disk-backed Blob one tensor at a time (BlobFile). A reload finds every finished shard in
// the cache and downloads only the missing ones.

import { BundleNotFoundError, ChecksumError, StorageQuotaError } from './errors.js';
import { Sha256 } from './sha256.js';

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

  /**
   * A weight shard as a Uint8Array onnxruntime-web can mount as external data without a full JS copy: a
   * BlobFile over the stored file (or, without storage, the downloaded bytes). Shards live in the origin
   * private file system, named by sha256 (Chromium's Cache API refuses puts of a few hundred MB); the Cache API
   * is the fallback where OPFS is missing.
   * @param {string} baseUrl @param {FileEntry} entry
   * @param {{onBytes?: (e: ByteEvent) => void, signal?: AbortSignal}} [opts]
   * @returns {Promise<{bytes: Uint8Array, fromCache: boolean}>}
   */
  async getShard(baseUrl, entry, opts = {}) {
    if (!this.useCache || typeof FileReaderSync === 'undefined') return this.get(baseUrl, entry, opts);
    const url = new URL(entry.path, baseUrl).href;
    const dir = await this.shardDir();
    let blob = dir ? await storedFile(dir, entry) : await this.cachedBlob(url, entry);
    const fromCache = !!blob;
    if (blob && opts.onBytes) opts.onBytes({ bytes: entry.size, fromCache: true });
    if (!blob) {
      await (dir ? streamToFile(dir, url, entry, opts) : streamToCache(await caches.open(this.cacheName), shardKey(url, entry), url, entry, opts));
      blob = dir ? await storedFile(dir, entry) : await this.cachedBlob(url, entry);
    }
    if (!blob) {
      throw new ChecksumError(`${entry.path}: the stored copy is missing or has the wrong size after download; load the model again`,
        { file: entry.path });
    }
    return { bytes: new BlobFile(blob), fromCache };
  }

  /** @returns {Promise<FileSystemDirectoryHandle|null>} this store's OPFS folder, or null without OPFS */
  async shardDir() {
    try {
      const root = await navigator.storage.getDirectory();
      return await root.getDirectoryHandle(this.cacheName, { create: true });
    } catch {
      return null;
    }
  }

  /** @param {string} url @param {FileEntry} entry @returns {Promise<Blob|null>} the Cache API copy, if whole */
  async cachedBlob(url, entry) {
    const cache = await caches.open(this.cacheName);
    const hit = await cache.match(shardKey(url, entry));
    const blob = hit ? await hit.blob() : null;
    if (blob && blob.size === entry.size) return blob;
    if (hit) await cache.delete(shardKey(url, entry));
    return null;
  }

  /** @param {string} baseUrl @param {FileEntry} entry @returns {Promise<boolean>} whether the file is stored */
  async has(baseUrl, entry) {
    if (!this.useCache) return false;
    const url = new URL(entry.path, baseUrl).href;
    const dir = await this.shardDir();
    if (dir && (await storedFile(dir, entry))) return true;
    return !!(await (await caches.open(this.cacheName)).match(shardKey(url, entry)));
  }

  /** Delete every cached model file (Cache API and OPFS). @returns {Promise<boolean>} */
  async clear() {
    if (await this.shardDir()) await (await navigator.storage.getDirectory()).removeEntry(this.cacheName, { recursive: true });
    return typeof caches !== 'undefined' ? caches.delete(this.cacheName) : false;
  }

  /** Bytes held in the cache (sum of Content-Length). @returns {Promise<number>} */
  async usage() {
    if (!this.useCache) return 0;
    let total = 0;
    const dir = await this.shardDir();
    if (dir) for await (const h of /** @type {any} */ (dir).values()) if (h.kind === 'file') total += (await h.getFile()).size;
    if (!(await caches.has(this.cacheName))) return total;
    const cache = await caches.open(this.cacheName);
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
  const resp = await request(url, opts.signal);
  const out = new Uint8Array(entry.size);
  const reader = /** @type {ReadableStream<Uint8Array>} */ (resp.body).getReader();
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

/**
 * A cached Blob seen as a Uint8Array by onnxruntime-web's external-data loader, which reads only `byteLength`
 * and `subarray(begin, end)` (one call per tensor, copied straight into the wasm heap or a GPU buffer). Each
 * subarray is read synchronously from the disk-backed Blob (FileReaderSync: workers only), so JS holds one
 * tensor at a time instead of the whole shard. The typed array itself is empty.
 */
export class BlobFile extends Uint8Array {
  /** @param {Blob} blob */
  constructor(blob) {
    super(0);
    this.blob = blob;
  }

  get byteLength() { return this.blob.size; }

  get length() { return this.blob.size; }

  /** @param {number} [begin] @param {number} [end] @returns {Uint8Array<ArrayBuffer>} */
  subarray(begin = 0, end = this.blob.size) {
    return new Uint8Array(new FileReaderSync().readAsArrayBuffer(this.blob.slice(begin, end)));
  }
}

/** @param {string} url @param {FileEntry} entry */
function shardKey(url, entry) {
  return `${url}?sha256=${entry.sha256}`;
}

/** @param {FileSystemDirectoryHandle} dir @param {FileEntry} entry @returns {Promise<File|null>} the stored file, if whole */
async function storedFile(dir, entry) {
  try {
    const file = await (await dir.getFileHandle(entry.sha256)).getFile();
    return file.size === entry.size ? file : null;
  } catch {
    return null;
  }
}

/**
 * Download one file into OPFS (named by its sha256), hashing it on the way. The writable commits only when the
 * stream ends verified; any failure aborts it, so a stored file is always a whole, verified one.
 * @param {FileSystemDirectoryHandle} dir @param {string} url @param {FileEntry} entry
 * @param {{onBytes?: (e: ByteEvent) => void, signal?: AbortSignal}} opts
 */
async function streamToFile(dir, url, entry, opts) {
  const resp = await request(url, opts.signal);
  const v = verifying(entry, url, opts);
  const handle = await dir.getFileHandle(entry.sha256, { create: true });
  try {
    await /** @type {ReadableStream} */ (resp.body).pipeThrough(v.stream).pipeTo(await /** @type {any} */ (handle).createWritable());
  } catch (e) {
    await dir.removeEntry(entry.sha256).catch(() => undefined);
    throw storeError(e, v.failure(), entry, url, opts);
  }
}

/**
 * A TransformStream that counts, hashes and reports the bytes of `entry` and errors at the end unless they
 * match manifest.json; failure() is the ChecksumError it raised, if any.
 * @param {FileEntry} entry @param {string} url @param {{onBytes?: (e: ByteEvent) => void}} opts
 */
function verifying(entry, url, opts) {
  const hasher = new Sha256();
  let seen = 0;
  /** @type {Error|null} */
  let failure = null;
  const fail = (/** @type {Error} */ e) => { failure = e; throw e; };
  const stream = new TransformStream({
    transform(chunk, ctl) {
      seen += chunk.byteLength;
      if (seen > entry.size) {
        fail(new ChecksumError(`${entry.path}: the server sent more than the ${entry.size} bytes manifest.json lists; convert the bundle again`,
          { file: entry.path, expected_size: entry.size }));
      }
      hasher.update(chunk);
      if (opts.onBytes) opts.onBytes({ bytes: chunk.byteLength, fromCache: false });
      ctl.enqueue(chunk);
    },
    flush() {
      if (seen !== entry.size) {
        fail(new ChecksumError(`${entry.path}: size ${seen} bytes, manifest.json says ${entry.size}; the bundle at ${url} is corrupt or ` +
          'was modified after conversion: convert it again', { file: entry.path, expected_size: entry.size, size: seen }));
      }
      const found = hasher.hex();
      if (found !== entry.sha256) {
        fail(new ChecksumError(`checksum mismatch for ${entry.path}: sha256 ${found.slice(0, 16)}…, manifest.json says ${entry.sha256.slice(0, 16)}…; ` +
          'the file is corrupt or was modified after conversion: convert the bundle again', { file: entry.path, expected: entry.sha256, found }));
      }
    },
  });
  return { stream, failure: () => failure };
}

/**
 * The error to report for a failed store: the checksum failure, a full quota, or the download itself.
 * @param {unknown} e @param {Error|null} failure @param {FileEntry} entry @param {string} url @param {{signal?: AbortSignal}} opts
 */
function storeError(e, failure, entry, url, opts) {
  if (failure) return failure;
  const err = /** @type {Error} */ (e);
  if (err && err.name === 'QuotaExceededError') {
    return new StorageQuotaError(`cannot store ${entry.path} (${(entry.size / 2 ** 20).toFixed(0)} MiB) in the browser's storage: the ` +
      'quota is full; free disk space or clear other sites\' data, then load again (finished shards are kept)', { file: entry.path });
  }
  if (opts.signal && opts.signal.aborted) return err;
  return new BundleNotFoundError(`download of ${url} failed: ${err && err.message}; load again to resume (finished shards are kept)`, { url });
}

/**
 * Download one file straight into the cache, hashing it on the way; the put fails (and nothing is stored)
 * when the bytes do not match the manifest.
 * @param {Cache} cache @param {string} key @param {string} url @param {FileEntry} entry
 * @param {{onBytes?: (e: ByteEvent) => void, signal?: AbortSignal}} opts
 */
async function streamToCache(cache, key, url, entry, opts) {
  const resp = await request(url, opts.signal);
  const v = verifying(entry, url, opts);
  try {
    await cache.put(key, new Response(/** @type {ReadableStream} */ (resp.body).pipeThrough(v.stream), {
      headers: { 'Content-Type': 'application/octet-stream', 'Content-Length': String(entry.size) },
    }));
  } catch (e) {
    await cache.delete(key);
    throw storeError(e, v.failure(), entry, url, opts);
  }
}

/** @param {string} url @param {AbortSignal} [signal] @returns {Promise<Response>} */
async function request(url, signal) {
  let resp;
  try {
    resp = await fetch(url, { signal, cache: 'no-store' });
  } catch (e) {
    throw new BundleNotFoundError(`cannot download ${url}: ${/** @type {Error} */ (e).message}; is the server running?`, { url });
  }
  if (!resp.ok || !resp.body) {
    throw new BundleNotFoundError(`cannot download ${url}: HTTP ${resp.status}; the bundle is incomplete`, { url, status: resp.status });
  }
  return resp;
}
