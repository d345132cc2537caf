// Our engine (web/engine/client.js, served by web/server.py) behind the benchmark interface:
//   load(opts) -> {load_s, load_cached_s, info}; prefill(ids) -> s; decode(ids, n) -> s; memory() -> {...}
// The engine's generateTokens does prefill + decode in one call, so prefill is timed as a 1-token
// generation and decode as (n+1 tokens) - (1 token), each from an empty KV cache (resetChat).
import { createEngine } from '/engine/client.js';
import { clearCaches, now, pageMemory, seconds } from './common.js';

/** @type {any} */
let engine = null;

async function drop() {
  if (engine) { await engine.unload(); engine.terminate(); }
  engine = null;
}

/** @param {number[]} ids @param {number} n */
async function generate(ids, n) {
  await engine.resetChat();
  const r = await seconds(() => engine.generateTokens(ids, { max_tokens: n, ignore_eos: true }));
  if (r.out.length !== n) throw new Error(`generateTokens returned ${r.out.length} tokens, expected ${n}`);
  return r.s;
}

window.benchRuntime = {
  name: 'webllama',
  /** @param {{bundleUrl: string, variant?: string, device: string, numThreads: number, unpackInt4?: boolean, kvCache?: string}} o */
  async load(o) {
    const cold = await this.loadOnce(o, true);
    const warm = await this.loadOnce(o, false); // files now come from the cache
    return { load_s: cold.load_s, load_cached_s: warm.load_s, info: { ...warm.info, cold_from_cache: cold.info.from_cache } };
  },
  /**
   * One load (the previous engine dropped first; `cold`: the caches cleared, so the files are downloaded), for
   * memory measurements that take each load's peak on its own (benchmarks/wasm_memory.py): back to back, as in
   * load(), the terminated worker's heap may still be held while the next one fills.
   * @param {{bundleUrl: string, variant?: string, device: string, numThreads: number, unpackInt4?: boolean, kvCache?: string}} o
   * @param {boolean} cold
   */
  async loadOnce(o, cold) {
    await drop();
    if (cold) await clearCaches();
    const opts = { variant: o.variant, device: o.device, numThreads: o.numThreads, unpackInt4: o.unpackInt4 !== false, kvCache: o.kvCache || 'auto' };
    const t0 = now();
    engine = await createEngine(o.bundleUrl, opts);
    const loadS = (now() - t0) / 1000;
    const info = await engine.runtimeInfo();
    delete info.placement_log;
    delete info.placement_ops;
    return { load_s: loadS, info };
  },
  unload: drop,
  /** @param {number[]} ids */
  prefill: (ids) => generate(ids, 1),
  /** @param {number[]} ids @param {number} n */
  async decode(ids, n) {
    const all = await generate(ids, n + 1);
    const first = await generate(ids, 1);
    return Math.max(1e-9, all - first);
  },
  /**
   * Seconds for n decode steps after a prompt, prefill excluded: the prompt is prefilled by a 1-token generation,
   * then the next call reuses the whole cached prompt and feeds one token per step (no prefill noise).
   * @param {number[]} ids @param {number} n
   */
  async decodeOnly(ids, n) {
    await engine.resetChat();
    const first = await engine.generateTokens(ids, { max_tokens: 1, ignore_eos: true });
    const r = await seconds(() => engine.generateTokens(ids.concat(first), { max_tokens: n, ignore_eos: true }));
    return r.s;
  },
  /** Greedy ids after a prompt, from an empty KV cache. @param {number[]} ids @param {number} n */
  async tokens(ids, n) {
    await engine.resetChat();
    return engine.generateTokens(ids, { max_tokens: n, ignore_eos: true });
  },
  memory: pageMemory,
  close: drop,
};
