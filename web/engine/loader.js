// Loading a bundle: manifest.json -> variant choice -> verified files (Cache API) -> session on
// WebGPU, falling back to WASM when there is no adapter or the WebGPU session fails.

import { BundleNotFoundError, SessionError, WebllamaError } from './errors.js';
import { parseManifest, pickVariant, variantFiles, variantGraph } from './manifest.js';
import { createSession, probeAdapter } from './session.js';

/**
 * @typedef {import('./manifest.js').Manifest} Manifest
 * @typedef {import('./protocol.js').LoadProgress} LoadProgress
 * @typedef {{variant?: string, device?: 'auto'|'webgpu'|'wasm', unpackInt4?: boolean}} LoadOptions
 *   unpackInt4: on WASM, run an int4 variant's dequantize-at-load graph when the bundle has one (default true)
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

/**
 * Fetch (or read from cache) and verify every file of a variant.
 * @param {LoaderDeps} deps @param {string} base @param {Manifest} m @param {string} variant @param {LoadHooks} hooks
 * @param {'webgpu'|'wasm'} [provider] @param {boolean} [unpackInt4]
 * @returns {Promise<{files: Map<string, Uint8Array>, fromCache: boolean}>}
 */
export async function fetchVariant(deps, base, m, variant, hooks, provider = 'webgpu', unpackInt4 = true) {
  const entries = variantFiles(m, variant, provider, unpackInt4);
  const total = entries.reduce((s, f) => s + f.size, 0);
  const tracker = new ProgressTracker(total, hooks.onProgress || (() => {}), deps.now);
  const files = new Map();
  let allCached = true;
  for (const entry of entries) {
    const got = await deps.store.get(base, entry, { signal: hooks.signal, onBytes: (e) => tracker.add(entry.path, e) });
    files.set(entry.path, got.bytes);
    allCached = allCached && got.fromCache;
  }
  return { files, fromCache: allCached };
}

/**
 * Create the session for the chosen variant.
 * @param {LoaderDeps} deps @param {Manifest} m @param {string} variant @param {'webgpu'|'wasm'} provider
 * @param {Map<string, Uint8Array>} files @param {boolean} [unpackInt4]
 */
export async function openSession(deps, m, variant, provider, files, unpackInt4 = true) {
  const v = m.variants[variant];
  const graph = variantGraph(m, variant, provider, unpackInt4);
  const dir = graph.model.includes('/') ? graph.model.slice(0, graph.model.lastIndexOf('/') + 1) : '';
  const externalData = (v.external_data || []).map((p) => ({
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
  return { base, manifest, choice, session, files: fetched.files, adapter: choice.provider === 'webgpu' ? probe.info : null,
    adapterProbe: probe.info, fallbackReason, fromCache: fetched.fromCache, loadS: (deps.now() - t0) / 1000 };
}

/** @param {LoadProgress['stage']} stage @param {string} text @returns {LoadProgress} */
function stageEvent(stage, text) {
  return { stage, loaded_bytes: 0, total_bytes: 0, bytes_per_s: 0, from_cache: false, text };
}
