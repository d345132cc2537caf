// Chat page: UI only. Talks to the engine through client.js (which runs it in a Web Worker).
// URL parameters (handy for links and tests): ?model=ID&device=auto|webgpu|wasm&variant=q4&autoload=1
// Every URL is relative to the page, so the same files work under `webllama serve` and as a static site
// (`webllama site`), at any path of any static host.

import { createEngine, clearModelCache, modelCacheUsage } from '../engine/client.js';

const $ = (/** @type {string} */ id) => /** @type {any} */ (document.getElementById(id));
const ui = {
  model: $('model'), device: $('device'), load: $('load'), clearCache: $('clear-cache'), loading: $('loading'),
  progress: $('progress'), progressText: $('progress-text'), error: $('error'), status: $('status'),
  messages: $('messages'), form: $('chat-form'), prompt: $('prompt'), send: $('send'), stop: $('stop'),
  newChat: $('new-chat'), cacheUsage: $('cache-usage'),
};

/** Page state: the engine, the conversation, the runtime info of the loaded model. */
const state = {
  /** @type {import('../engine/client.js').WebLlamaEngine | null} */ engine: null,
  /** @type {{role: string, content: string}[]} */ history: [],
  /** @type {any} */ info: null,
  busy: false,
};

const fmt = {
  mb: (/** @type {number} */ b) => `${(b / 1048576).toFixed(1)} MB`,
  rate: (/** @type {number} */ x) => (x ? x.toFixed(1) : '–'),
  s: (/** @type {number} */ x) => `${(x * 1000).toFixed(0)} ms`,
};

/** @param {unknown} err */
function showError(err) {
  const e = /** @type {any} */ (err);
  const kind = e && e.name && e.name !== 'Error' ? `${e.name}: ` : '';
  ui.error.textContent = `${kind}${e && e.message ? e.message : String(err)}`;
  ui.error.hidden = false;
}

function clearError() { ui.error.hidden = true; ui.error.textContent = ''; }

/** @param {boolean} ready */
function setReady(ready) {
  ui.prompt.disabled = !ready || state.busy;
  ui.send.disabled = !ready || state.busy;
  ui.stop.disabled = !state.busy;
  ui.load.disabled = state.busy;
}

/**
 * How onnxruntime-web's WASM runs: threads need cross-origin isolation (COOP/COEP headers, which
 * `webllama serve` sends); a static host without them gets one thread.
 * @param {any} [info] RuntimeInfo once a model is loaded
 */
function threadMode(info) {
  const isolated = info ? info.cross_origin_isolated : window.crossOriginIsolated;
  const threads = info ? info.num_threads : (isolated ? 'auto' : 1);
  return `threads: ${threads} (${isolated ? 'cross-origin isolated' : 'no cross-origin isolation'})`;
}

function statusLine(/** @type {any} */ usage) {
  const i = state.info;
  if (!i) return `No model loaded. · ${threadMode()}`;
  const adapter = i.adapter ? `${i.adapter.vendor} ${i.adapter.architecture}`.trim() || 'unnamed adapter' : 'none';
  const parts = [
    `Model ${i.model} (${i.variant})`, `Provider: ${i.execution_provider}`, `Adapter: ${adapter}`, threadMode(i),
  ];
  if (i.fallback_reason && i.execution_provider === 'wasm') parts.push(`(${i.fallback_reason})`);
  if (usage) {
    const x = usage.extra;
    parts.push(`TTFT ${fmt.s(x.time_to_first_token_s)}`, `prefill ${fmt.rate(x.prefill_tokens_per_s)} tok/s`,
      `decode ${fmt.rate(x.decode_tokens_per_s)} tok/s`);
  }
  return parts.join(' · ');
}

async function listModels() {
  const resp = await fetch('api/models');
  const body = await resp.json();
  ui.model.replaceChildren(...body.data.map((/** @type {any} */ m) => {
    const opt = document.createElement('option');
    opt.value = m.url;
    opt.dataset.id = m.id;
    opt.textContent = `${m.name} (${Object.keys(m.variants).join(', ')})`;
    return opt;
  }));
  if (body.data.length === 0) showError('No bundles are served: start `webllama serve BUNDLE_DIR` or build the site with bundles.');
  return body.data;
}

/** @param {any} p LoadProgress */
function onProgress(p) {
  ui.loading.hidden = false;
  if (p.total_bytes) {
    ui.progress.max = p.total_bytes;
    ui.progress.value = p.loaded_bytes;
  }
  ui.progressText.textContent = p.text;
}

async function loadModel() {
  clearError();
  if (state.engine) state.engine.terminate();
  state.engine = null;
  state.info = null;
  state.history = [];
  ui.messages.replaceChildren();
  setReady(false);
  const url = ui.model.value;
  if (!url) { showError('No model selected.'); return; }
  const params = new URLSearchParams(location.search);
  try {
    state.engine = await createEngine(url, {
      device: ui.device.value, variant: params.get('variant') || undefined, initProgressCallback: onProgress,
    });
    state.info = await state.engine.runtimeInfo();
    ui.progressText.textContent = state.info.from_cache ? 'Loaded from the browser cache.' : `Downloaded and cached (${fmt.mb(ui.progress.max)}).`;
    ui.status.textContent = statusLine(null);
    setReady(true);
    ui.prompt.focus();
  } catch (e) {
    ui.status.textContent = statusLine(null);
    showError(e);
  }
  refreshCacheUsage();
}

/** @param {string} role @param {string} text */
function addMessage(role, text) {
  const div = document.createElement('div');
  div.className = `msg ${role}`;
  div.textContent = text;
  ui.messages.append(div);
  div.scrollIntoView({ block: 'end' });
  return div;
}

function requestFromSettings() {
  const num = (/** @type {string} */ id) => Number($(id).value);
  const seed = $('seed').value.trim();
  const stops = $('stop_strings').value.split(',').map((/** @type {string} */ s) => s.trim()).filter(Boolean);
  const system = $('system').value.trim();
  return {
    messages: [...(system ? [{ role: 'system', content: system }] : []), ...state.history],
    stream: true, max_tokens: num('max_tokens'), temperature: num('temperature'), top_p: num('top_p'),
    top_k: num('top_k'), repetition_penalty: num('repetition_penalty'), seed: seed === '' ? undefined : Number(seed),
    stop: stops.length ? stops : undefined,
  };
}

/** @param {string} text */
async function send(text) {
  if (!state.engine || state.busy || !text.trim()) return;
  clearError();
  state.history.push({ role: 'user', content: text });
  addMessage('user', text);
  const bubble = addMessage('assistant', '');
  bubble.classList.add('streaming');
  state.busy = true;
  setReady(true);
  let reply = '';
  try {
    const stream = await state.engine.chat.completions.create(requestFromSettings());
    for await (const chunk of stream) {
      const delta = chunk.choices[0] && chunk.choices[0].delta && chunk.choices[0].delta.content;
      if (delta) { reply += delta; bubble.textContent = reply; bubble.scrollIntoView({ block: 'end' }); }
      if (chunk.usage) showUsage(bubble, chunk.usage);
    }
    state.history.push({ role: 'assistant', content: reply });
  } catch (e) {
    state.history.pop();
    showError(e);
  } finally {
    bubble.classList.remove('streaming');
    state.busy = false;
    setReady(true);
  }
}

/** @param {HTMLElement} bubble @param {any} usage */
function showUsage(bubble, usage) {
  ui.status.textContent = statusLine(usage);
  const meta = document.createElement('span');
  meta.className = 'meta';
  meta.textContent = `${usage.completion_tokens} tokens · decode ${fmt.rate(usage.extra.decode_tokens_per_s)} tok/s`;
  if (usage.extra.tokens_after_stop !== undefined) {
    meta.textContent += ' · stopped';
    meta.dataset.tokensAfterStop = String(usage.extra.tokens_after_stop);
  }
  bubble.append(meta);
}

async function refreshCacheUsage() {
  try {
    ui.cacheUsage.textContent = `Model cache: ${fmt.mb(await modelCacheUsage())}`;
  } catch {
    ui.cacheUsage.textContent = '';
  }
}

function bindEvents() {
  ui.load.addEventListener('click', loadModel);
  ui.form.addEventListener('submit', (/** @type {Event} */ e) => {
    e.preventDefault();
    const text = ui.prompt.value;
    ui.prompt.value = '';
    send(text);
  });
  ui.prompt.addEventListener('keydown', (/** @type {KeyboardEvent} */ e) => {
    if (e.key === 'Enter' && !e.shiftKey) { e.preventDefault(); ui.form.requestSubmit(); }
  });
  ui.stop.addEventListener('click', () => state.engine && state.engine.interruptGenerate());
  ui.newChat.addEventListener('click', () => {
    state.history = [];
    ui.messages.replaceChildren();
    if (state.engine) state.engine.resetChat();
  });
  ui.clearCache.addEventListener('click', async () => {
    if (!confirm('Delete the downloaded model files from this browser? The next load downloads them again.')) return;
    await clearModelCache();
    refreshCacheUsage();
  });
}

async function main() {
  bindEvents();
  ui.status.textContent = statusLine(null);
  const params = new URLSearchParams(location.search);
  if (params.get('device')) ui.device.value = params.get('device');
  try {
    const models = await listModels();
    const wanted = params.get('model');
    const hit = models.find((/** @type {any} */ m) => m.id === wanted || m.name === wanted);
    if (hit) ui.model.value = hit.url;
    if (params.get('autoload') && models.length) await loadModel();
  } catch (e) {
    showError(e);
  }
  refreshCacheUsage();
  /** @type {any} */ (window).chatReady = true;
}

main();
