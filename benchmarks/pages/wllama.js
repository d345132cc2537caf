// wllama (npm @wllama/wllama, llama.cpp compiled to wasm) on a GGUF file served at /gguf/<name>; its
// wasm served locally from /bench_modules/wllama/ (no CDN). wllama 3.x takes text prompts only, so the
// driver sends text and prefill timings are normalized by the prompt length wllama reports (prompt_n).
import { Wllama } from '/bench_modules/wllama/index.js';
import { now, pageMemory } from './common.js';

const PATHS = { default: '/bench_modules/wllama/wasm/wllama.wasm' };
/** @type {any} */
let w = null;
let nCtx = 2048;

async function drop() {
  if (w) await w.exit();
  w = null;
}

/** @param {{ggufUrl: string, numThreads: number, nCtx: number}} o @param {boolean} cache */
async function open(o, cache) {
  const inst = new Wllama(PATHS, { suppressNativeLog: true, allowOffline: false });
  await inst.loadModelFromUrl(o.ggufUrl, { n_threads: o.numThreads, n_ctx: o.nCtx, n_batch: 512, useCache: cache });
  return inst;
}

/** @param {string} prompt @param {number} n */
async function complete(prompt, n) {
  const t0 = now();
  const r = await w.createCompletion({ prompt, max_tokens: n, temperature: 0, ignore_eos: true, cache_prompt: false, stream: false });
  const s = (now() - t0) / 1000;
  const t = r.timings || {};
  return { s, prompt_n: t.prompt_n, predicted_n: t.predicted_n, prompt_ms: t.prompt_ms, predicted_ms: t.predicted_ms };
}

window.benchRuntime = {
  name: 'wllama',
  /** @param {{ggufUrl: string, numThreads: number, nCtx: number}} o */
  async load(o) {
    await drop();
    nCtx = o.nCtx;
    let t0 = now();
    w = await open(o, false);
    const loadS = (now() - t0) / 1000;
    await drop();
    w = await open(o, true); // fills wllama's cache (OPFS) ...
    await drop();
    t0 = now();
    w = await open(o, true); // ... and reads it back
    const cachedS = (now() - t0) / 1000;
    return { load_s: loadS, load_cached_s: cachedS,
      info: { execution_provider: 'wasm', multithread: w.isMultithread(), num_threads: w.getNumThreads(), n_ctx: nCtx,
        cross_origin_isolated: self.crossOriginIsolated } };
  },
  /** Text prompt -> {s, prompt_n, ...} */
  prefillText: (/** @type {string} */ prompt) => complete(prompt, 1),
  async decodeText(/** @type {string} */ prompt, /** @type {number} */ n) {
    const all = await complete(prompt, n + 1);
    const first = await complete(prompt, 1);
    return { s: Math.max(1e-9, all.s - first.s), all, first };
  },
  memory: pageMemory,
  close: drop,
};
