// transformers.js (npm @huggingface/transformers, pinned in benchmarks/package.json) loading OUR bundle
// as a local model folder (/bundles/<slug>/: config.json, tokenizer*.json, onnx/model_<dtype>.onnx +
// external data), its onnxruntime-web wasm served locally from /bench_modules/ort/ (no CDN).
import { AutoModelForCausalLM, Tensor, env } from '/bench_modules/transformers/transformers.min.js';
import { clearCaches, now, pageMemory, seconds } from './common.js';

const DTYPES = { fp32: 'fp32', fp16: 'fp16', q4: 'q4', q4f16: 'q4f16' };
/** @type {any} */
let model = null;

async function drop() {
  if (model) await model.dispose();
  model = null;
}

/** @param {{slug: string, variant: string, device: string, numThreads: number}} o */
async function open(o) {
  return AutoModelForCausalLM.from_pretrained(o.slug, { dtype: DTYPES[o.variant] || o.variant, device: o.device });
}

/** @param {number[]} ids @param {number} n */
async function generate(ids, n) {
  const inputIds = new Tensor('int64', BigInt64Array.from(ids, (t) => BigInt(t)), [1, ids.length]);
  const mask = new Tensor('int64', new BigInt64Array(ids.length).fill(1n), [1, ids.length]);
  const r = await seconds(() => model.generate({ input_ids: inputIds, attention_mask: mask, max_new_tokens: n, min_new_tokens: n, do_sample: false }));
  const got = r.out.dims[1] - ids.length;
  if (got !== n) throw new Error(`transformers.js generated ${got} tokens, expected ${n}`);
  return r.s;
}

window.benchRuntime = {
  name: 'transformersjs',
  /** @param {{slug: string, variant: string, device: string, numThreads: number}} o */
  async load(o) {
    await drop();
    await clearCaches();
    env.allowRemoteModels = false;
    env.allowLocalModels = true;
    env.localModelPath = '/bundles/';
    env.useBrowserCache = true;
    env.backends.onnx.wasm.wasmPaths = '/bench_modules/ort/';
    env.backends.onnx.wasm.numThreads = o.numThreads;
    let t0 = now();
    model = await open(o);
    const loadS = (now() - t0) / 1000;
    await drop();
    t0 = now();
    model = await open(o);
    const cachedS = (now() - t0) / 1000;
    const cacheNames = typeof caches !== 'undefined' ? await caches.keys() : [];
    return { load_s: loadS, load_cached_s: cachedS,
      info: { execution_provider: o.device, num_threads: env.backends.onnx.wasm.numThreads, cache_names: cacheNames,
        cross_origin_isolated: self.crossOriginIsolated, versions: { transformers_js: env.version, ort_web: env.backends.onnx.versions && env.backends.onnx.versions.web } } };
  },
  prefill: (/** @type {number[]} */ ids) => generate(ids, 1),
  async decode(/** @type {number[]} */ ids, /** @type {number} */ n) {
    const all = await generate(ids, n + 1);
    const first = await generate(ids, 1);
    return Math.max(1e-9, all - first);
  },
  memory: pageMemory,
  close: drop,
};
