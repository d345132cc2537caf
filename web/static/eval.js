// window.webllama: the low-level engine API for the evaluation suite (Playwright page.evaluate).
// Optional auto-load: /eval.html?bundle=/bundles/NAME/&device=wasm&variant=q4
import { createEngine, clearModelCache } from '../engine/client.js';

const statusEl = /** @type {HTMLElement} */ (document.getElementById('status'));
const infoEl = /** @type {HTMLElement} */ (document.getElementById('info'));

/** @type {import('../engine/client.js').WebLlamaEngine | null} */
let engine = null;

function need() {
  if (!engine) throw new Error('call webllama.load(bundleUrl, options) first');
  return engine;
}

/** @param {string} text */
function setStatus(text) { statusEl.textContent = text; }

const api = {
  version: 1,
  /** @param {string} bundleUrl @param {object} [options] {variant, device: 'auto'|'webgpu'|'wasm', numThreads} */
  async load(bundleUrl, options = {}) {
    if (engine) engine.terminate();
    engine = null;
    api.progress = [];
    setStatus(`loading ${bundleUrl}`);
    try {
      engine = await createEngine(bundleUrl, { ...options, initProgressCallback: (p) => { api.progress.push(p); setStatus(p.text); } });
    } catch (e) {
      setStatus(`error: ${e.name}: ${e.message}`);
      throw e;
    }
    const info = await engine.runtimeInfo();
    infoEl.textContent = JSON.stringify(info, null, 2);
    setStatus(`ready: ${info.model} ${info.variant} on ${info.execution_provider}`);
    return info;
  },
  /** @type {any[]} */
  progress: [],
  /** @param {{context: number[], continuation: number[]}[]} batch */
  scoreTokens: (batch) => need().scoreTokens(batch),
  /** @param {number[]} ids @param {{max_tokens?: number, stop_token_ids?: number[], ignore_eos?: boolean}} [opts] */
  generateTokens: (ids, opts) => need().generateTokens(ids, opts),
  /** @param {string} text @param {{add_special_tokens?: boolean}} [opts] */
  encode: (text, opts) => need().encode(text, opts),
  /** @param {number[]} ids @param {{skip_special_tokens?: boolean}} [opts] */
  decode: (ids, opts) => need().decode(ids, opts),
  /** @param {{role: string, content: string}[]} messages */
  applyChatTemplate: (messages) => need().applyChatTemplate(messages),
  /** Non-streaming chat completion (OpenAI shape). @param {any} request */
  chat: (request) => need().chat.completions.create({ ...request, stream: false }),
  /** Streaming chat completion collected as an array of chunks. @param {any} request */
  async chatChunks(request) {
    const out = [];
    for await (const c of await need().chat.completions.create({ ...request, stream: true })) out.push(c);
    return out;
  },
  runtimeInfo: () => need().runtimeInfo(),
  resetChat: () => need().resetChat(),
  clearCache: () => clearModelCache(),
  async unload() { if (engine) { await engine.unload(); engine.terminate(); engine = null; } },
};

/** @type {any} */ (window).webllama = api;

const params = new URLSearchParams(location.search);
const bundle = params.get('bundle');
/** @type {any} */ (window).webllamaReady = bundle
  ? api.load(bundle, { device: params.get('device') || 'auto', variant: params.get('variant') || undefined }).catch((e) => ({ error: `${e.name}: ${e.message}` }))
  : Promise.resolve(null);
setStatus(bundle ? `loading ${bundle}` : 'idle: call webllama.load(bundleUrl)');
