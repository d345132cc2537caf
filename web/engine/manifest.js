// manifest.json (schema_version 1, docs/CONTRACTS.md) validation and variant choice. Pure.

import { ManifestError, VariantError } from './errors.js';

export const SCHEMA_VERSION = 1;

/** Preference order when the engine chooses (first that can run wins). */
const PREFERENCE = Object.freeze({
  webgpu: ['q4f16', 'q4', 'fp16', 'fp32'],
  wasm: ['q4', 'fp32', 'q4f16', 'fp16'],
});

/**
 * @typedef {{path: string, size: number, sha256: string}} FileEntry
 * @typedef {{model: string, wasm_model?: string, wasm_external_data?: string[], external_data: string[],
 *            activation_dtype: string, kv_dtype: string,
 *            requires_webgpu_features: string[], bytes: number, past_present_share_buffer?: boolean,
 *            wasm_kv_cache?: 'append'}} Variant
 *   past_present_share_buffer: `model` attends with GroupQueryAttention, which writes in place into one buffer
 *   bound as past and present (kv_cache.js FixedKvCache); absent in older bundles = false
 *   wasm_kv_cache: "append" when `wasm_model`'s present.* are the new positions only (kv_cache.js AppendKvCache);
 *   absent = its present.* are the whole cache
 * @typedef {{name: string, context_length: number, config: Record<string, any>,
 *            tokenizer: {file: string, config_file: string, bos_token_id: number|null,
 *                        eos_token_ids: number[], add_bos_token: boolean, has_chat_template: boolean},
 *            variants: Record<string, Variant>, files: FileEntry[]}} Manifest
 * @typedef {{variant: string, provider: 'webgpu'|'wasm', reason: string}} Choice
 */

/**
 * Why `p` cannot name a file inside the bundle (the same rules as converter/manifest.py), or null.
 * A path is joined to the bundle URL: an absolute one, a `..`, a backslash or a NUL would leave it.
 * @param {unknown} p @returns {string|null}
 */
export function unsafePath(p) {
  if (typeof p !== 'string' || p === '') return 'is not a non-empty string';
  if (p.includes('\0')) return 'holds a NUL byte';
  if (p.includes('\\')) return 'holds a backslash';
  if (p.startsWith('/') || /^[A-Za-z][A-Za-z0-9+.-]*:/.test(p)) return 'is absolute';
  if (p.split('/').some((c) => c === '' || c === '.' || c === '..')) return "has a '..', '.' or empty component";
  return null;
}

/**
 * Check the fields the engine relies on; throws ManifestError naming the first problem.
 * @param {any} m parsed manifest.json @param {string} where URL, for messages
 * @returns {Manifest}
 */
export function parseManifest(m, where) {
  const fail = (/** @type {string} */ what) => {
    throw new ManifestError(`${where}: ${what}; re-convert the bundle with this webllama version`, { url: where });
  };
  if (!m || m.format !== 'webllama-bundle') fail(`format is ${JSON.stringify(m && m.format)}, expected "webllama-bundle"`);
  if (m.schema_version !== SCHEMA_VERSION) fail(`schema_version ${m.schema_version} is not supported (this engine reads ${SCHEMA_VERSION})`);
  if (!Number.isInteger(m.context_length) || m.context_length < 1) fail('context_length is missing');
  for (const k of ['num_hidden_layers', 'num_key_value_heads', 'vocab_size']) {
    if (!m.config || !Number.isInteger(m.config[k])) fail(`config.${k} is missing`);
  }
  if (!m.tokenizer || typeof m.tokenizer.file !== 'string') fail('tokenizer.file is missing');
  if (!m.variants || Object.keys(m.variants).length === 0) fail('variants is empty');
  if (!Array.isArray(m.files)) fail('files is missing');
  for (const f of m.files) {
    const why = unsafePath(f && f.path);
    if (why) fail(`file path ${JSON.stringify(f && f.path)} ${why}`);
  }
  const listed = new Set(m.files.map((/** @type {FileEntry} */ f) => f.path));
  for (const [name, v] of Object.entries(m.variants)) {
    for (const p of [v.model, ...(v.wasm_model ? [v.wasm_model] : []), ...(v.external_data || []), ...(v.wasm_external_data || [])]) {
      if (!listed.has(p)) fail(`variant ${name}: ${p} is not in files[]`);
    }
  }
  return m;
}

/** @param {Manifest} m */
export function headDim(m) {
  const c = m.config;
  return c.head_dim || c.hidden_size / c.num_attention_heads;
}

/**
 * Pick the variant and execution provider.
 * @param {Manifest} m
 * @param {{variant?: string, device?: 'auto'|'webgpu'|'wasm', gpuFeatures?: string[]|null}} opts
 *   gpuFeatures: the adapter's features, or null when there is no WebGPU adapter
 * @returns {Choice}
 */
export function pickVariant(m, opts) {
  const names = Object.keys(m.variants);
  const device = opts.device || 'auto';
  const gpu = device !== 'wasm' && opts.gpuFeatures ? new Set(opts.gpuFeatures) : null;
  if (device === 'webgpu' && !gpu) {
    throw new VariantError('device "webgpu" was requested but this browser has no WebGPU adapter; use device "auto" or "wasm"');
  }
  const runsOnGpu = (/** @type {string} */ n) => !!gpu && (m.variants[n].requires_webgpu_features || []).every((f) => gpu.has(f));
  if (opts.variant) {
    if (!names.includes(opts.variant)) {
      throw new VariantError(`variant "${opts.variant}" is not in this bundle; it has ${names.join(', ')}`);
    }
    const provider = runsOnGpu(opts.variant) ? 'webgpu' : 'wasm';
    return { variant: opts.variant, provider, reason: `forced by options; ${provider}${gpu && provider === 'wasm' ? ' (adapter lacks ' + missing(m, opts.variant, gpu) + ')' : ''}` };
  }
  if (gpu) {
    const best = PREFERENCE.webgpu.find((n) => names.includes(n) && runsOnGpu(n));
    if (best) return { variant: best, provider: 'webgpu', reason: `best variant for this WebGPU adapter` };
  }
  const best = PREFERENCE.wasm.find((n) => names.includes(n)) || names.sort()[0];
  return { variant: best, provider: 'wasm', reason: gpu ? 'no variant runs on this adapter' : 'no WebGPU adapter' };
}

/** @param {Manifest} m @param {string} name @param {Set<string>} gpu */
function missing(m, name, gpu) {
  return (m.variants[name].requires_webgpu_features || []).filter((f) => !gpu.has(f)).join(', ');
}

/**
 * The graph file (and its weight files) a variant runs on a provider. On WASM a quantized variant's
 * `wasm_model` (int8 weights for onnxruntime's WASM integer GEMM: it has no fast int4 MatMulNBits kernel, see
 * converter/quant/unpack.py; older bundles: the same int4 files dequantized at load) unless the caller opts out
 * with `unpackInt4: false`.
 * @param {Manifest} m @param {string} variant @param {'webgpu'|'wasm'} provider @param {boolean} [unpackInt4]
 * @returns {{model: string, unpacked: boolean, externalData: string[]}}
 */
export function variantGraph(m, variant, provider, unpackInt4 = true) {
  const v = m.variants[variant];
  const unpacked = provider === 'wasm' && unpackInt4 && typeof v.wasm_model === 'string';
  const externalData = (unpacked && v.wasm_external_data) || v.external_data || [];
  return { model: unpacked ? /** @type {string} */ (v.wasm_model) : v.model, unpacked, externalData };
}

/**
 * The files a variant needs on a provider, with their manifest entries, tokenizer files first.
 * @param {Manifest} m @param {string} variant @param {'webgpu'|'wasm'} [provider] @param {boolean} [unpackInt4]
 * @returns {FileEntry[]}
 */
export function variantFiles(m, variant, provider = 'webgpu', unpackInt4 = true) {
  const graph = variantGraph(m, variant, provider, unpackInt4);
  const wanted = [m.tokenizer.file, m.tokenizer.config_file, graph.model, ...graph.externalData].filter(Boolean);
  const byPath = new Map(m.files.map((f) => [f.path, f]));
  return wanted.map((p) => {
    const f = byPath.get(p);
    if (!f) throw new ManifestError(`${p} is required by variant ${variant} but not listed in manifest files[]`);
    return f;
  });
}
