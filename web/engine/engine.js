// The runtime: a loaded bundle, its KV cache, and the prefill/decode loop behind the public calls
// (chat completions, token scoring and greedy generation for the evaluation suite, encode/decode).
//
// Dependencies (onnxruntime-web, the tokenizer and template libraries, navigator.gpu, the log tap)
// are passed in by worker.js; nothing here reads globals except fetch/caches through cache.js.

import { AbortedError, ContextFullError, InvalidRequestError, NotLoadedError } from './errors.js';
import { loadBundle } from './loader.js';
import { headDim } from './manifest.js';
import { AppendKvCache, FixedKvCache, GrowingKvCache, kvCacheMode } from './kv_cache.js';
import { Sampler, argmax, logSumExp } from './sampler.js';
import { IncrementalDecoder, StopStringMatcher } from './stopping.js';
import { TextTokenizer } from './tokenizer.js';
import { ChatTemplate } from './chat_template.js';
import { makeChunk, makeUsage, makeUsageChunk, normalizeRequest } from './openai.js';
import { configureOrt } from './session.js';

/**
 * @typedef {{loadOrt: (provider: 'webgpu'|'wasm') => Promise<any>, Tokenizer: any, Template: any, gpu: any,
 *            logTap: import('./session.js').LogTap,
 *            store: import('./cache.js').ModelStore, now: () => number, wasmPaths: string,
 *            hardwareConcurrency: number, crossOriginIsolated: boolean}} EngineDeps
 * @typedef {{max_tokens: number, sampler: {sample: (l: Float32Array, h: number[]) => number},
 *            stopIds: Set<number>, signal?: AbortSignal}} GenerateOptions
 * @typedef {{token: number, stop: 'eos'|'length'|null}} Step
 */

/** Prompt tokens fed per run during prefill; bounds the logits buffer to PREFILL_CHUNK x vocab floats. */
const PREFILL_CHUNK = 256;

export class Engine {
  /** @param {EngineDeps} deps */
  constructor(deps) {
    this.deps = deps;
    /** @type {any} */
    this.loaded = null;
    /** @type {Set<any>} onnxruntime-web modules already configured (the WebGPU and the CPU-only build) */
    this.configured = new Set();
    /** @type {{numThreads?: number, debug?: boolean}} */
    this.ortOptions = {};
    /** @type {GrowingKvCache|FixedKvCache|AppendKvCache|null} */
    this.cache = null;
    this.requestCount = 0;
  }

  // ------------------------------------------------------------------------------------------
  // Loading

  /**
   * @param {string} bundleUrl @param {import('./loader.js').LoadOptions & {numThreads?: number, debug?: boolean}} options
   * @param {import('./loader.js').LoadHooks} hooks
   */
  async load(bundleUrl, options, hooks) {
    await this.unload();
    this.ortOptions = options;
    const deps = { ...this.deps, getOrt: (/** @type {'webgpu'|'wasm'} */ p) => this.getOrt(p) };
    const l = await loadBundle(deps, bundleUrl, options, hooks);
    const json = (/** @type {string} */ p) => JSON.parse(new TextDecoder().decode(l.files.get(p)));
    const tokInfo = l.manifest.tokenizer;
    const tokenizerConfig = tokInfo.config_file ? json(tokInfo.config_file) : {};
    const tokenizer = new TextTokenizer(this.deps.Tokenizer, json(tokInfo.file), tokenizerConfig, tokInfo);
    const template = new ChatTemplate(this.deps.Template, tokenizerConfig.chat_template, {
      bos_token: tokenizer.specialToken('bos_token'), eos_token: tokenizer.specialToken('eos_token'),
    });
    const v = l.manifest.variants[l.choice.variant];
    const shape = {
      numLayers: l.manifest.config.num_hidden_layers, numKvHeads: l.manifest.config.num_key_value_heads,
      headDim: headDim(l.manifest), dtype: /** @type {'float16'|'float32'} */ (v.kv_dtype === 'float16' ? 'float16' : 'float32'),
    };
    // The WASM graph is a different file without GroupQueryAttention: only the variant's own graph can share.
    const shareBuffer = v.past_present_share_buffer === true && l.session.graphFile === v.model;
    const append = v.wasm_kv_cache === 'append' && l.session.graphFile === v.wasm_model;
    const mode = kvCacheMode({ provider: l.session.provider, shareBuffer, append, requested: options.kvCache });
    const limit = l.manifest.context_length;
    this.cache = mode === 'fixed' ? await FixedKvCache.create(l.session.ort, shape, { limit })
      : mode === 'append' ? new AppendKvCache(l.session.ort, shape, { limit }) : new GrowingKvCache(l.session.ort, shape);
    if (this.cache instanceof FixedKvCache && this.cache.limit < l.manifest.context_length) { // the engine enforces manifest.context_length
      l.contextLimitReason = `capped at ${this.cache.limit} of ${l.manifest.context_length} tokens: one KV buffer of the full context ` +
        "exceeds this GPU's largest storage buffer";
      l.manifest.context_length = this.cache.limit;
    }
    l.files.clear(); // the session holds its own copy of the weights
    this.loaded = { ...l, tokenizer, template };
    if (hooks.onProgress) hooks.onProgress({ stage: 'ready', loaded_bytes: 0, total_bytes: 0, bytes_per_s: 0, from_cache: l.fromCache, text: 'Ready' });
    return this.runtimeInfo();
  }

  /**
   * The onnxruntime-web build for a provider (WebGPU build, or the CPU-only build whose kernel set is
   * complete), configured once before its first session.
   * @param {'webgpu'|'wasm'} provider
   */
  async getOrt(provider) {
    const ort = await this.deps.loadOrt(provider);
    if (!this.configured.has(ort)) {
      const d = this.deps;
      const o = this.ortOptions;
      const threads = o.numThreads || (d.crossOriginIsolated ? Math.max(1, Math.min(4, d.hardwareConcurrency || 1)) : 1);
      configureOrt(ort, { wasmPaths: d.wasmPaths, numThreads: threads, debug: !!o.debug });
      d.logTap.verbose = !!o.debug;
      this.configured.add(ort);
    }
    return ort;
  }

  /** @returns {import('./protocol.js').RuntimeInfo} */
  runtimeInfo() {
    const l = this.need();
    return {
      model: l.manifest.name, variant: l.choice.variant, graph_file: l.session.graphFile, requested_provider: l.session.requested,
      execution_provider: l.session.provider, placement: l.session.placement.counts,
      placement_ops: l.session.placement.ops, placement_log: l.session.placement.lines,
      adapter: l.adapter, adapter_probe: l.adapterProbe, fallback_reason: l.fallbackReason,
      context_length: l.manifest.context_length, context_limit_reason: l.contextLimitReason, vocab_size: l.manifest.config.vocab_size,
      bos_token_id: l.tokenizer.bosId, eos_token_ids: l.tokenizer.eosIds, add_bos_token: l.tokenizer.addBos,
      has_chat_template: !l.template.isFallback, load_s: l.loadS, from_cache: l.fromCache, weights_streamed: l.weightsStreamed,
      num_threads: l.session.ort.env.wasm.numThreads, cross_origin_isolated: this.deps.crossOriginIsolated,
      ort_version: l.session.ort.env.versions && l.session.ort.env.versions.web,
      kv_cache: /** @type {GrowingKvCache|FixedKvCache|AppendKvCache} */ (this.cache).info(),
    };
  }

  async unload() {
    if (this.cache) this.cache.release();
    if (this.loaded) await this.loaded.session.release();
    this.loaded = null;
    this.cache = null;
  }

  need() {
    if (!this.loaded) throw new NotLoadedError('no model is loaded; call load(bundleUrl) first');
    return this.loaded;
  }

  // ------------------------------------------------------------------------------------------
  // Tokens

  /** @param {string} text @param {{add_special_tokens?: boolean}} opts */
  encode(text, opts) {
    if (typeof text !== 'string') throw new InvalidRequestError('encode(text): text must be a string');
    return this.need().tokenizer.encode(text, opts);
  }

  /** @param {number[]} ids @param {{skip_special_tokens?: boolean}} opts */
  decode(ids, opts) {
    return this.need().tokenizer.decode(checkIds(ids, 'ids', this.need().manifest.config.vocab_size), opts);
  }

  /** @param {{role: string, content: string}[]} messages @returns {{text: string, ids: number[]}} */
  applyChatTemplate(messages) {
    const { tokenizer, template } = this.need();
    const text = template.render(normalizeRequest({ messages }).messages);
    const ids = template.isFallback ? tokenizer.encodePrompt(text) : tokenizer.encode(text);
    return { text, ids };
  }

  resetChat() {
    if (this.cache) this.cache.reset();
    return null;
  }

  // ------------------------------------------------------------------------------------------
  // Model runs

  /**
   * Feed `ids` after what the cache holds; returns logits rows for the fed positions (all or only the last).
   * @param {number[]} ids @param {{allRows?: boolean}} [opts]
   * @returns {Promise<Float32Array[]>} one (vocab) row per returned position
   */
  async forward(ids, opts = {}) {
    const l = this.need();
    const cache = /** @type {GrowingKvCache|FixedKvCache|AppendKvCache} */ (this.cache);
    /** @type {Float32Array[]} */
    const rows = [];
    for (let start = 0; start < ids.length; start += PREFILL_CHUNK) {
      const chunk = ids.slice(start, start + PREFILL_CHUNK);
      const isLast = start + PREFILL_CHUNK >= ids.length;
      await cache.reserve(chunk.length);
      const out = await l.session.run({ ...this.tokenFeeds(chunk, cache.length), ...cache.feeds() }, cache.fetches());
      cache.update(out, chunk);
      if (opts.allRows || isLast) rows.push(...(await logitsRows(out.logits, opts.allRows ? 0 : chunk.length - 1)));
      if (out.logits.location === 'gpu-buffer') out.logits.dispose();
    }
    return rows;
  }

  /** @param {number[]} chunk @param {number} past */
  tokenFeeds(chunk, past) {
    const ort = this.need().session.ort;
    const n = chunk.length;
    const mask = new BigInt64Array(past + n).fill(1n);
    const pos = BigInt64Array.from({ length: n }, (_, i) => BigInt(past + i));
    return {
      input_ids: new ort.Tensor('int64', BigInt64Array.from(chunk, (t) => BigInt(t)), [1, n]),
      attention_mask: new ort.Tensor('int64', mask, [1, past + n]),
      position_ids: new ort.Tensor('int64', pos, [1, n]),
    };
  }

  /**
   * Make the cache hold a prefix of `ids` (reusing what it can, at most `maxReuse` tokens) and return the rest.
   * @param {number[]} ids @param {number} maxReuse
   */
  async reuse(ids, maxReuse) {
    const cache = /** @type {GrowingKvCache|FixedKvCache|AppendKvCache} */ (this.cache);
    const keep = Math.min(cache.commonPrefix(ids), maxReuse);
    await cache.trim(keep);
    return { reused: keep, rest: ids.slice(keep) };
  }

  /** @param {number} promptLen @param {number} maxTokens */
  checkContext(promptLen, maxTokens) {
    const ctx = this.need().manifest.context_length;
    if (promptLen + maxTokens > ctx) {
      throw new ContextFullError(
        `context full: the prompt has ${promptLen} tokens and max_tokens is ${maxTokens}, ${promptLen + maxTokens} > ` +
        `context length ${ctx}; shorten the conversation (or start a new chat) or lower max_tokens`,
        { prompt_tokens: promptLen, max_tokens: maxTokens, context_length: ctx });
    }
  }

  /**
   * Prefill then decode; yields one step per new token. The last token is not fed back, so the cache
   * ends holding prompt + generated[:-1].
   * @param {number[]} promptIds @param {GenerateOptions} o @param {{prefill_s: number, reused: number}} stats
   * @returns {AsyncGenerator<Step>}
   */
  async *steps(promptIds, o, stats) {
    const { reused, rest } = await this.reuse(promptIds, promptIds.length - 1);
    stats.reused = reused;
    const t0 = this.deps.now();
    let [logits] = await this.forward(rest);
    stats.prefill_s = (this.deps.now() - t0) / 1000;
    const history = promptIds.slice();
    for (let n = 1; ; n++) {
      const token = o.sampler.sample(logits, history);
      history.push(token);
      const stop = o.stopIds.has(token) ? 'eos' : n >= o.max_tokens ? 'length' : null;
      yield { token, stop };
      if (stop) return;
      await nextTask(); // lets a queued CANCEL message run: see nextTask
      if (o.signal && o.signal.aborted) return;
      [logits] = await this.forward([token]);
    }
  }

  // ------------------------------------------------------------------------------------------
  // Evaluation entry points

  /**
   * Greedy generation from token ids (no template, no BOS added): the browser twin of
   * converter.ort_model.OrtModel.greedy. Returns the new ids; a stop token is included when hit.
   * @param {number[]} promptIds @param {{max_tokens?: number, stop_token_ids?: number[], ignore_eos?: boolean}} opts
   * @param {{signal?: AbortSignal}} ctx
   */
  async generateTokens(promptIds, opts, ctx) {
    const l = this.need();
    const ids = checkIds(promptIds, 'promptIds', l.manifest.config.vocab_size);
    if (ids.length === 0) throw new InvalidRequestError('generateTokens: promptIds is empty; start with the BOS token');
    const maxTokens = opts.max_tokens ?? 32;
    if (!Number.isInteger(maxTokens) || maxTokens < 1) {
      throw new InvalidRequestError(`generateTokens: max_tokens ${JSON.stringify(maxTokens)} is not a positive integer; give 1 or more`);
    }
    this.checkContext(ids.length, maxTokens);
    const stopIds = new Set([...(opts.ignore_eos ? [] : l.tokenizer.eosIds), ...(opts.stop_token_ids || [])]);
    const sampler = { sample: (/** @type {Float32Array} */ logits) => argmax(logits) };
    const out = [];
    const stats = { prefill_s: 0, reused: 0 };
    for await (const step of this.steps(ids, { max_tokens: maxTokens, sampler, stopIds, signal: ctx.signal }, stats)) {
      out.push(step.token);
    }
    if (ctx.signal && ctx.signal.aborted) throw new AbortedError('generateTokens aborted');
    return out;
  }

  /**
   * Sum of log-softmax of each continuation token given its context, and whether every continuation
   * token was the argmax (lm-eval's loglikelihood). Contexts sharing a prefix reuse the KV cache.
   * @param {{context: number[], continuation: number[]}[]} batch @param {{signal?: AbortSignal}} ctx
   * @returns {Promise<{logprob: number, logprobs: number[], greedy: boolean}[]>}
   */
  async scoreTokens(batch, ctx) {
    const l = this.need();
    if (!Array.isArray(batch)) throw new InvalidRequestError('scoreTokens(batch): batch must be an array of {context, continuation}');
    const results = [];
    for (const [i, item] of batch.entries()) {
      if (ctx.signal && ctx.signal.aborted) throw new AbortedError(`scoreTokens aborted after ${i} of ${batch.length} items`);
      results.push(await this.scoreOne(item, i, l.manifest));
    }
    return results;
  }

  /** @param {{context: number[], continuation: number[]}} item @param {number} i @param {any} m */
  async scoreOne(item, i, m) {
    const context = checkIds(item && item.context, `batch[${i}].context`, m.config.vocab_size);
    const cont = checkIds(item && item.continuation, `batch[${i}].continuation`, m.config.vocab_size);
    if (context.length === 0 || cont.length === 0) {
      throw new InvalidRequestError(`batch[${i}]: context and continuation must be non-empty (prefix BOS/EOT to an empty context)`);
    }
    const all = context.concat(cont);
    this.checkContext(all.length - 1, 0);
    const { reused, rest } = await this.reuse(all.slice(0, -1), context.length - 1);
    const rows = await this.forward(rest, { allRows: true });
    const logprobs = [];
    let greedy = true;
    for (let k = 0; k < cont.length; k++) {
      const row = rows[context.length - 1 + k - reused];
      const { logZ, argmax: best } = logSumExp(row);
      logprobs.push(row[cont[k]] - logZ);
      greedy = greedy && best === cont[k];
    }
    return { logprob: logprobs.reduce((a, b) => a + b, 0), logprobs, greedy };
  }

  // ------------------------------------------------------------------------------------------
  // Chat completions

  /**
   * OpenAI-style streaming chat completion: yields chat.completion.chunk objects, then a usage chunk.
   * @param {any} request @param {{signal?: AbortSignal}} ctx
   * @returns {AsyncGenerator<any>}
   */
  async *chatCompletion(request, ctx) {
    const l = this.need();
    const t0 = this.deps.now();
    const req = normalizeRequest(request);
    const { ids } = this.applyChatTemplate(req.messages);
    const ctxLen = l.manifest.context_length;
    const maxTokens = req.max_tokens ?? Math.max(1, ctxLen - ids.length);
    this.checkContext(ids.length, maxTokens);
    const meta = { id: `chatcmpl-${++this.requestCount}-${Math.floor(t0)}`, created: Math.floor(Date.now() / 1000), model: req.model || l.manifest.name };
    const stopIds = new Set([...(req.ignore_eos ? [] : l.tokenizer.eosIds), ...req.stop_token_ids]);
    const detok = new IncrementalDecoder((/** @type {number[]} */ x) => l.tokenizer.decode(x, { skip_special_tokens: true }));
    const matcher = new StopStringMatcher(req.stop);
    const stats = { prefill_s: 0, reused: 0 };
    let finish = 'length';
    let count = 0;
    let tFirst = 0;
    // Tokens decoded after the stop reached this engine: what Stop can promise whatever the machine's load (the
    // caller's own count also includes the chunks still in flight between the worker and its page).
    /** @type {number | null} */
    let countAtStop = null;
    if (ctx.signal) ctx.signal.addEventListener('abort', () => { countAtStop = count; }, { once: true });
    yield makeChunk(meta, { role: 'assistant', content: '' });
    const gen = this.steps(ids, { max_tokens: maxTokens, sampler: new Sampler(req.sampling), stopIds, signal: ctx.signal }, stats);
    for await (const step of gen) {
      count++;
      if (count === 1) tFirst = this.deps.now();
      if (step.stop === 'eos') { finish = 'stop'; break; }
      const { emit, stopped } = matcher.push(detok.push(step.token));
      if (emit) yield makeChunk(meta, { content: emit });
      if (stopped) { finish = 'stop'; break; }
      if (ctx.signal && ctx.signal.aborted) { finish = 'abort'; break; }
    }
    if (finish === 'length' && ctx.signal && ctx.signal.aborted) finish = 'abort'; // steps() saw it first
    const tail = matcher.stopped ? '' : matcher.push(detok.flush()).emit + matcher.flush();
    if (tail) yield makeChunk(meta, { content: tail });
    yield makeChunk(meta, {}, finish);
    const tEnd = this.deps.now();
    yield makeUsageChunk(meta, makeUsage({
      prompt_tokens: ids.length, cached_prompt_tokens: stats.reused, completion_tokens: count,
      prefill_s: stats.prefill_s, decode_s: count > 1 ? (tEnd - tFirst) / 1000 : 0,
      time_to_first_token_s: ((tFirst || tEnd) - t0) / 1000, e2e_s: (tEnd - t0) / 1000,
    }, { execution_provider: l.session.provider, variant: l.choice.variant,
      ...(countAtStop === null ? {} : { tokens_after_stop: count - countAtStop }) }));
  }
}

/**
 * @param {any} ids @param {string} name @param {number} vocab @returns {number[]}
 */
function checkIds(ids, name, vocab) {
  if (!Array.isArray(ids) && !ArrayBuffer.isView(ids)) throw new InvalidRequestError(`${name} must be an array of token ids`);
  const out = Array.from(/** @type {ArrayLike<number>} */ (ids), Number);
  for (const t of out) {
    if (!Number.isInteger(t) || t < 0 || t >= vocab) throw new InvalidRequestError(`${name}: token id ${t} is outside [0, ${vocab})`);
  }
  return out;
}

/**
 * Rows of a (1, T, V) logits tensor as float32 copies, from row `from` on.
 * @param {any} t @param {number} from @returns {Promise<Float32Array[]>}
 */
async function logitsRows(t, from) {
  const [, rows, vocab] = t.dims;
  const data = await t.getData();
  const bits = data instanceof Uint16Array; // float16 without Float16Array support: raw IEEE half bits
  const out = [];
  for (let r = from; r < rows; r++) {
    const row = data.subarray(r * vocab, (r + 1) * vocab);
    out.push(bits ? Float32Array.from(row, halfToFloat) : Float32Array.from(row));
  }
  return out;
}

/** @param {number} h IEEE half-precision bits @returns {number} */
export function halfToFloat(h) {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const f = h & 0x3ff;
  if (e === 0) return s * 2 ** -14 * (f / 1024);
  if (e === 31) return f ? NaN : s * Infinity;
  return s * 2 ** (e - 15) * (1 + f / 1024);
}

/**
 * Resolve on a new task of the worker's event loop. onnxruntime-web's WASM run settles through microtasks
 * only, so a decode loop that never leaves them keeps the worker's message queue (and a CANCEL from
 * Stop or an AbortSignal) waiting until max_tokens; a posted message is queued behind that CANCEL.
 * @returns {Promise<void>}
 */
function nextTask() {
  if (typeof MessageChannel === 'undefined') return new Promise((resolve) => setTimeout(resolve, 0));
  return new Promise((resolve) => {
    const ch = new MessageChannel();
    ch.port1.onmessage = () => { ch.port1.close(); resolve(); };
    ch.port2.postMessage(null);
  });
}
