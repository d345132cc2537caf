// Loading a bundle: manifest.json -> variant choice -> verified files (Cache API) -> session on
// WebGPU, falling back to WASM when there is no adapter or the WebGPU session fails.

import { BundleNotFoundError, OutOfMemoryError, SessionError, StorageQuotaError, WebllamaError } from './errors.js';
import { headDim, parseManifest, pickVariant, variantFiles, variantGraph } from './manifest.js';
import { createSession, probeAdapter } from './session.js';
import { BlobFile } from './cache.js';

/**
 * @typedef {import('./manifest.js').Manifest} Manifest
 * @typedef {import('./protocol.js').LoadProgress} LoadProgress
 * @typedef {{variant?: string, device?: 'auto'|'webgpu'|'wasm', unpackInt4?: boolean, kvCache?: 'auto'|'fixed'|'growing'}} LoadOptions
 *   unpackInt4: on WASM, run an int4 variant's dequantize-at-load graph when the bundle has one (default true)
 *   kvCache: 'auto' (default) a fixed-capacity cache written in place where the session can (WebGPU on a
 *   graph with past_present_share_buffer, see kv_cache.js), the appended one on a WASM graph made for it, else the
 *   growing one; 'growing' forces the latter (not on an appended graph)
 * @typedef {{getOrt: (provider: 'webgpu'|'wasm') => Promise<any>, gpu: any, logTap: import('./session.js').LogTap,
 *            store: import('./cache.js').ModelStore, now: () => number}} LoaderDeps
 * @typedef {{onProgress?: (p: LoadProgress) => void, signal?: AbortSignal}} LoadHooks
 */

/** @param {string} url @returns {string} the bundle's base URL, ending in '/' */
export function bundleBase(url) {
  const u = new URL(url, self.location.href);
  if (u.pathname.endsWith('/manifest.json')) u.pathname = u.pathname.slice(0, -'manifest.json'.length);
  if (!u.pathname.endsWith('/')) u.pathname += '/';
  u.search = '';
  return u.href;
}

/** @param {string} base @param {AbortSignal} [signal] @returns {Promise<Manifest>} */
export async function fetchManifest(base, signal) {
  const url = base + 'manifest.json';
  let resp;
  try {
    resp = await fetch(url, { cache: 'no-cache', signal });
  } catch (e) {
    throw new BundleNotFoundError(`cannot fetch ${url}: ${/** @type {Error} */ (e).message}`, { url });
  }
  if (!resp.ok) {
    throw new BundleNotFoundError(`no bundle at ${base}: ${url} answered HTTP ${resp.status}; check the model URL or start ` +
      '`webllama serve` with that bundle', { url, status: resp.status });
  }
  let json;
  try {
    json = await resp.json();
  } catch {
    throw new BundleNotFoundError(`${url} is not JSON; is this a webllama bundle?`, { url });
  }
  return parseManifest(json, url);
}

/** Byte counter that turns per-chunk events into LoadProgress with a smoothed rate. */
class ProgressTracker {
  /** @param {number} total @param {(p: LoadProgress) => void} emit @param {() => number} now */
  constructor(total, emit, now) {
    this.total = total;
    this.emit = emit;
    this.now = now;
    this.loaded = 0;
    this.rate = 0; // bytes/s, smoothed
    this.lastT = now();
    this.lastBytes = 0;
    this.lastEmit = -Infinity;
  }

  /** @param {string} file @param {{bytes: number, fromCache: boolean}} e */
  add(file, e) {
    this.loaded += e.bytes;
    const t = this.now();
    if (!e.fromCache && t - this.lastT >= 250) {
      const inst = ((this.loaded - this.lastBytes) / (t - this.lastT)) * 1000;
      this.rate = this.rate ? 0.6 * this.rate + 0.4 * inst : inst;
      this.lastT = t;
      this.lastBytes = this.loaded;
    }
    if (t - this.lastEmit >= 100 || this.loaded >= this.total) {
      this.lastEmit = t;
      this.report(e.fromCache ? 'cache' : 'download', file, e.fromCache);
    }
  }

  /** @param {LoadProgress['stage']} stage @param {string} file @param {boolean} fromCache */
  report(stage, file, fromCache) {
    const mb = (/** @type {number} */ b) => (b / 1048576).toFixed(2);
    if (!fromCache && this.rate === 0) this.rate = (this.loaded / Math.max(1, this.now() - this.lastT + 1)) * 1000;
    this.emit({
      stage, file, loaded_bytes: this.loaded, total_bytes: this.total, bytes_per_s: fromCache ? 0 : this.rate,
      from_cache: fromCache,
      text: `${fromCache ? 'Reading from cache' : 'Downloading'} ${file}: ${mb(this.loaded)} / ${mb(this.total)} MB` +
        (fromCache ? '' : ` at ${mb(this.rate)} MB/s`),
    });
  }
}

const GiB = 2 ** 30;
/** wasm32: one 4 GiB linear memory holds the weights, the KV cache, the activations and the runtime. */
export const WASM_HEAP_BYTES = 4 * GiB;
/** Heap the runtime and activations need besides the weights and the KV cache (measured: SmolLM2 ~0.3 GiB). */
const WASM_OVERHEAD_BYTES = 0.5 * GiB;

/** The shortest context a WASM load must hold (tokens); below that the model is refused rather than capped. */
export const MIN_WASM_CONTEXT = 256;

/**
 * The context length a WASM session can hold in the 4 GiB heap: the bundle's, or less when int8 weights + its
 * KV cache would not fit: 1 copy for an appended cache (the past fed in; its buffer lives outside the heap),
 * 3 for a growing one (past in, present out, and the attention's concatenation). Throws
 * OutOfMemoryError, with the numbers, when not even MIN_WASM_CONTEXT tokens fit.
 * @param {Manifest} m @param {string} variant @param {import('./manifest.js').FileEntry[]} weights
 * @param {boolean} [appended] the session runs the variant's appended-cache WASM graph
 * @returns {number}
 */
export function wasmContextLimit(m, variant, weights, appended = false) {
  const c = m.config;
  const wBytes = weights.reduce((s, f) => s + f.size, 0);
  const copies = appended ? 1 : 3;
  const kvPerToken = copies * 2 * c.num_hidden_layers * c.num_key_value_heads * headDim(m) * 4;
  const fitContext = Math.floor((WASM_HEAP_BYTES - WASM_OVERHEAD_BYTES - wBytes) / kvPerToken);
  const least = Math.min(m.context_length, MIN_WASM_CONTEXT);
  if (fitContext >= least) return Math.min(m.context_length, fitContext);
  const gib = (/** @type {number} */ b) => (b / GiB).toFixed(2);
  const perParam = wBytes / Math.max(1, /** @type {any} */ (m).num_parameters || 1);
  const fitParams = (WASM_HEAP_BYTES - WASM_OVERHEAD_BYTES - kvPerToken * least) / perParam;
  throw new OutOfMemoryError(
    `${m.name} (${variant}) needs about ${gib(wBytes + kvPerToken * least + WASM_OVERHEAD_BYTES)} GiB of WASM memory ` +
    `(${gib(wBytes)} GiB of weights + the KV cache of ${least} tokens + the runtime); the wasm32 heap holds 4 GiB: ` +
    `a model of at most ${(Math.max(0, fitParams) / 1e9).toFixed(2)}B parameters fits at these ${(perParam).toFixed(2)} bytes ` +
    'per parameter; use a WebGPU device for this one',
    { weight_bytes: wBytes, heap_bytes: WASM_HEAP_BYTES, fit_context: fitContext });
}

/**
 * Refuse, with the numbers, a download the origin's storage quota cannot hold (navigator.storage.estimate).
 * @param {LoaderDeps} deps @param {string} base @param {Manifest} m @param {import('./manifest.js').FileEntry[]} entries
 */
export async function checkQuota(deps, base, m, entries) {
  const storage = typeof navigator !== 'undefined' && navigator.storage;
  if (!deps.store.useCache || !storage || !storage.estimate) return;
  let missing = 0;
  for (const e of entries) if (!(await deps.store.has(base, e))) missing += e.size;
  if (missing === 0) return;
  if (storage.persist) await storage.persist().catch(() => false); // ask not to be evicted; best effort
  const { quota = Infinity, usage = 0 } = await storage.estimate();
  if (missing <= quota - usage) return;
  const mib = (/** @type {number} */ b) => (b / 2 ** 20).toFixed(0);
  throw new StorageQuotaError(
    `${m.name} needs ${mib(missing)} MiB more browser storage for its files (${mib(entries.reduce((s, e) => s + e.size, 0))} MiB in all), ` +
    `but this site may store only ${mib(Math.max(0, quota - usage))} MiB more (quota ${mib(quota)} MiB, used ${mib(usage)} MiB); ` +
    'free disk space or clear this site\'s data, or choose a model whose files fit',
    { missing_bytes: missing, quota_bytes: quota, usage_bytes: usage });
}

/**
 * The quota error of a failed put, restated for the whole model (browsers may report more quota than they
 * enforce, so checkQuota cannot catch every case before the download).
 * @param {Manifest} m @param {import('./manifest.js').FileEntry[]} entries @param {import('./manifest.js').FileEntry} entry
 * @param {StorageQuotaError} e
 */
function quotaError(m, entries, entry, e) {
  const mib = (/** @type {number} */ b) => (b / 2 ** 20).toFixed(0);
  return new StorageQuotaError(
    `${m.name} needs ${mib(entries.reduce((s, f) => s + f.size, 0))} MiB of browser storage for its files, and the browser refused ` +
    `to store ${entry.path} (${mib(entry.size)} MiB): the storage quota is full; free disk space or clear this site's data, then ` +
    'load again (finished files are kept), or choose a model whose files fit', e.data);
}

/**
 * Fetch (or read from cache) and verify every file of a variant. Weight shards come back as BlobFiles over
 * the cache (cache.js): onnxruntime-web reads them tensor by tensor, never as one JS copy.
 * @param {LoaderDeps} deps @param {string} base @param {Manifest} m @param {string} variant @param {LoadHooks} hooks
 * @param {'webgpu'|'wasm'} [provider] @param {boolean} [unpackInt4]
 * @returns {Promise<{files: Map<string, Uint8Array>, fromCache: boolean, contextLimit: number}>}
 */
export async function fetchVariant(deps, base, m, variant, hooks, provider = 'webgpu', unpackInt4 = true) {
  const entries = variantFiles(m, variant, provider, unpackInt4);
  const graph = variantGraph(m, variant, provider, unpackInt4);
  const shards = new Set(graph.externalData);
  const appended = graph.unpacked && m.variants[variant].wasm_kv_cache === 'append';
  const contextLimit = provider === 'wasm' ? wasmContextLimit(m, variant, entries.filter((e) => shards.has(e.path)), appended) : m.context_length;
  await checkQuota(deps, base, m, entries);
  const total = entries.reduce((s, f) => s + f.size, 0);
  const tracker = new ProgressTracker(total, hooks.onProgress || (() => {}), deps.now);
  const files = new Map();
  let allCached = true;
  for (const entry of entries) {
    const read = shards.has(entry.path) ? deps.store.getShard.bind(deps.store) : deps.store.get.bind(deps.store);
    const got = await read(base, entry, { signal: hooks.signal, onBytes: (e) => tracker.add(entry.path, e) })
      .catch((e) => { throw e instanceof StorageQuotaError ? quotaError(m, entries, entry, e) : e; });
    files.set(entry.path, got.bytes);
    allCached = allCached && got.fromCache;
  }
  return { files, fromCache: allCached, contextLimit };
}

/**
 * Create the session for the chosen variant.
 * @param {LoaderDeps} deps @param {Manifest} m @param {string} variant @param {'webgpu'|'wasm'} provider
 * @param {Map<string, Uint8Array>} files @param {boolean} [unpackInt4]
 */
export async function openSession(deps, m, variant, provider, files, unpackInt4 = true) {
  const graph = variantGraph(m, variant, provider, unpackInt4);
  const dir = graph.model.includes('/') ? graph.model.slice(0, graph.model.lastIndexOf('/') + 1) : '';
  const externalData = graph.externalData.map((p) => ({
    path: p.startsWith(dir) ? p.slice(dir.length) : p, data: /** @type {Uint8Array} */ (files.get(p)),
  }));
  const gpuOutputs = [];
  for (let i = 0; i < m.config.num_hidden_layers; i++) gpuOutputs.push(`present.${i}.key`, `present.${i}.value`);
  return createSession(await deps.getOrt(provider), {
    model: /** @type {Uint8Array} */ (files.get(graph.model)), externalData, provider, gpuOutputs, logTap: deps.logTap,
    foldDequantize: graph.unpacked, graphFile: graph.model,
  });
}

/**
 * The whole load: manifest, adapter probe, variant, files, session (WebGPU first, then WASM).
 * @param {LoaderDeps} deps @param {string} bundleUrl @param {LoadOptions} options @param {LoadHooks} hooks
 */
export async function loadBundle(deps, bundleUrl, options, hooks) {
  const t0 = deps.now();
  const emit = hooks.onProgress || (() => {});
  const base = bundleBase(bundleUrl);
  const manifest = await fetchManifest(base, hooks.signal);
  const probe = options.device === 'wasm' ? { info: null, reason: 'device "wasm" requested' } : await probeAdapter(deps.gpu);
  let choice = pickVariant(manifest, { variant: options.variant, device: options.device, gpuFeatures: probe.info && probe.info.features });
  let fallbackReason = choice.provider === 'wasm' ? probe.reason || choice.reason : null;
  const unpack = options.unpackInt4 !== false;
  let fetched = await fetchVariant(deps, base, manifest, choice.variant, hooks, choice.provider, unpack);
  emit(stageEvent('session', `Creating the ${choice.provider} session (${choice.variant})…`));
  let session;
  try {
    session = await openSession(deps, manifest, choice.variant, choice.provider, fetched.files, unpack);
  } catch (e) {
    if (choice.provider !== 'webgpu' || options.device === 'webgpu' || !(e instanceof SessionError)) throw e;
    fallbackReason = `WebGPU session failed: ${e.message}`;
    choice = pickVariant(manifest, { variant: options.variant, device: 'wasm', gpuFeatures: null });
    emit(stageEvent('session', `WebGPU failed, creating a WASM session (${choice.variant})…`));
    fetched = await fetchVariant(deps, base, manifest, choice.variant, hooks, 'wasm', unpack);
    session = await openSession(deps, manifest, choice.variant, 'wasm', fetched.files, unpack);
  }
  if (session.provider === 'unknown') throw new WebllamaError('onnxruntime-web logged no node placement; cannot tell which execution provider runs the model');
  // weightsStreamed: every weight shard reached onnxruntime-web as a cache-backed BlobFile (no whole JS copy)
  const shards = variantGraph(manifest, choice.variant, session.requested, unpack).externalData;
  const weightsStreamed = shards.length > 0 && shards.every((p) => fetched.files.get(p) instanceof BlobFile);
  let contextLimitReason = null;
  if (fetched.contextLimit < manifest.context_length) { // the engine enforces manifest.context_length
    contextLimitReason = `capped at ${fetched.contextLimit} of ${manifest.context_length} tokens: the KV cache of the full ` +
      'context does not fit the 4 GiB WASM heap next to the weights';
    manifest.context_length = fetched.contextLimit;
  }
  return { base, manifest, choice, session, files: fetched.files, weightsStreamed, contextLimitReason, adapter: choice.provider === 'webgpu' ? probe.info : null,
    adapterProbe: probe.info, fallbackReason, fromCache: fetched.fromCache, loadS: (deps.now() - t0) / 1000 };
}

/** @param {LoadProgress['stage']} stage @param {string} text @returns {LoadProgress} */
function stageEvent(stage, text) {
  return { stage, loaded_bytes: 0, total_bytes: 0, bytes_per_s: 0, from_cache: false, text };
}
