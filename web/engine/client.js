// Main-thread API in WebLLM's style. The engine runs in a Web Worker; this file only talks RPC.
//
//   const engine = await createEngine('/bundles/stories260K/', {initProgressCallback: (p) => ...});
//   const stream = await engine.chat.completions.create({messages, stream: true, max_tokens: 64});
//   for await (const chunk of stream) text += chunk.choices[0]?.delta?.content ?? '';
//
// Low-level calls for the evaluation suite: scoreTokens, generateTokens, encode, decode.

import { Method } from './protocol.js';
import { RpcClient } from './rpc.js';
import { InternalError, NotLoadedError } from './errors.js';
import { collectCompletion, normalizeRequest } from './openai.js';
import { CACHE_NAME, ModelStore } from './cache.js';

export * from './errors.js';

/**
 * @typedef {object} EngineOptions
 * @property {string} [variant]          force a variant (q4, q4f16, fp16, fp32)
 * @property {'auto'|'webgpu'|'wasm'} [device]  auto (default): WebGPU when an adapter runs the variant, else WASM
 * @property {number} [numThreads]       WASM threads (default: min(4, cores) when cross-origin isolated)
 * @property {boolean} [debug]           forward onnxruntime's verbose log to the console
 * @property {(p: import('./protocol.js').LoadProgress) => void} [initProgressCallback]
 * @property {string|URL} [workerUrl]    where worker.js is served (default: next to this file)
 */

/**
 * Start a worker and load a bundle in it.
 * @param {string} bundleUrl e.g. '/bundles/stories260K/' (or its manifest.json URL; relative to the page)
 * @param {EngineOptions} [options]
 * @returns {Promise<WebLlamaEngine>}
 */
export async function createEngine(bundleUrl, options = {}) {
  const engine = new WebLlamaEngine(options);
  try {
    await engine.reload(bundleUrl, options);
  } catch (e) {
    engine.terminate();
    throw e;
  }
  return engine;
}

/** Delete every model file kept in the Cache API. @returns {Promise<boolean>} */
export function clearModelCache() {
  return new ModelStore().clear();
}

/** Bytes of model files kept in the Cache API. @returns {Promise<number>} */
export function modelCacheUsage() {
  return new ModelStore().usage();
}

export { CACHE_NAME };

export class WebLlamaEngine {
  /** @param {EngineOptions} [options] */
  constructor(options = {}) {
    this.worker = new Worker(options.workerUrl || new URL('./worker.js', import.meta.url), { type: 'module' });
    this.rpc = new RpcClient(this.worker);
    this.worker.addEventListener('error', (e) => this.rpc.failAll(new InternalError(`the engine worker failed: ${e.message || 'script error'}`)));
    /** @type {import('./protocol.js').RuntimeInfo|null} */
    this.info = null;
    /** @type {AbortController|null} */
    this.active = null;
    this.chat = { completions: { create: (/** @type {any} */ req, /** @type {{signal?: AbortSignal}} */ o) => this.createCompletion(req, o) } };
  }

  /**
   * Load (or switch to) a bundle. A relative `bundleUrl` is relative to the page (not to the worker).
   * @param {string} bundleUrl @param {EngineOptions} [options]
   */
  async reload(bundleUrl, options = {}) {
    const { initProgressCallback, workerUrl, ...loadOptions } = options;
    const url = typeof location === 'undefined' ? String(bundleUrl) : new URL(String(bundleUrl), location.href).href;
    this.info = await this.rpc.call(Method.LOAD, [url, loadOptions], { onChunk: initProgressCallback });
    return this.info;
  }

  /**
   * OpenAI chat.completions.create: an async iterable of chunks when stream is true, else one completion.
   * @param {any} request @param {{signal?: AbortSignal}} [opts]
   */
  async createCompletion(request, opts = {}) {
    normalizeRequest(request); // fail fast on the main thread with the same errors
    const controller = new AbortController();
    if (opts.signal) opts.signal.addEventListener('abort', () => controller.abort(), { once: true });
    this.active = controller;
    const chunks = this.rpc.stream(Method.CHAT, [request], { signal: controller.signal });
    return request.stream ? chunks : collectCompletion(chunks);
  }

  /** Stop the generation in flight; it ends with finish_reason 'abort'. */
  interruptGenerate() {
    if (this.active) this.active.abort();
  }

  /** @param {{context: number[], continuation: number[]}[]} batch */
  scoreTokens(batch) { return this.rpc.call(Method.SCORE, [batch]); }
  /** @param {number[]} promptIds @param {{max_tokens?: number, stop_token_ids?: number[], ignore_eos?: boolean}} [opts] */
  generateTokens(promptIds, opts = {}) { return this.rpc.call(Method.GENERATE, [promptIds, opts]); }
  /** @param {string} text @param {{add_special_tokens?: boolean}} [opts] @returns {Promise<number[]>} */
  encode(text, opts = {}) { return this.rpc.call(Method.ENCODE, [text, opts]); }
  /** @param {number[]} ids @param {{skip_special_tokens?: boolean}} [opts] @returns {Promise<string>} */
  decode(ids, opts = {}) { return this.rpc.call(Method.DECODE, [ids, opts]); }
  /** @param {{role: string, content: string}[]} messages @returns {Promise<{text: string, ids: number[]}>} */
  applyChatTemplate(messages) { return this.rpc.call(Method.APPLY_TEMPLATE, [messages]); }
  resetChat() { return this.rpc.call(Method.RESET, []); }
  /** @returns {Promise<import('./protocol.js').RuntimeInfo>} */
  runtimeInfo() { return this.rpc.call(Method.INFO, []); }
  unload() { return this.rpc.call(Method.UNLOAD, []); }

  /** Stop the worker. Every call in flight, and every later one, rejects with NotLoadedError. */
  terminate() {
    this.rpc.close(new NotLoadedError('the engine was terminated; create a new one with createEngine()'));
    if (this.active) this.active.abort();
    this.worker.terminate();
  }
}
