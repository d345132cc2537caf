// onnxruntime-web behind one small module: environment setup, WebGPU adapter probe, session
// creation on one execution provider, placement check from ORT's verbose log, one run at a time.
//
// Which EP really runs is read from ORT's own log ("Node placements" / "All nodes placed on [...]"),
// captured by a LogTap while the session is created, never inferred from what was requested.

import { SessionError } from './errors.js';

/**
 * The one provider table, the JavaScript half of evalsuite/devices.py (tests/web/test_js_units.py checks both
 * name the same providers): per provider of ours, what onnxruntime-web is given as its execution provider,
 * the EP names its placement log uses, whether outputs may stay on the device (gpu-buffer), and the order
 * in which a mixed placement is named (the GPU first).
 * @type {Readonly<Record<'webgpu'|'wasm', {executionProvider: any, ortEps: string[], deviceOutputs: boolean, rank: number}>>}
 */
export const PROVIDERS = Object.freeze({
  webgpu: Object.freeze({ executionProvider: Object.freeze({ name: 'webgpu' }), ortEps: ['WebGpuExecutionProvider', 'JsExecutionProvider'], deviceOutputs: true, rank: 0 }),
  wasm: Object.freeze({ executionProvider: 'wasm', ortEps: ['CPUExecutionProvider'], deviceOutputs: false, rank: 1 }),
});

/** ORT EP names -> our provider names, from PROVIDERS. */
export const EP_NAMES = Object.freeze(/** @type {Record<string, string>} */ (Object.fromEntries(
  Object.entries(PROVIDERS).flatMap(([p, d]) => d.ortEps.map((ep) => [ep, p])))));

const ORT_LINE = /\[[VIWEF]:onnxruntime:/;

/**
 * Tees console output so ORT's log lines (written through emscripten's console binding) can be read.
 * Install it before onnxruntime-web initializes. ORT lines are forwarded to the real console only in
 * verbose mode (a WebGPU session logs every kernel launch at INFO).
 */
export class LogTap {
  /** @param {Console} target */
  constructor(target) {
    this.target = target;
    /** @type {string[] | null} */
    this.recording = null;
    this.verbose = false;
  }

  install() {
    for (const level of /** @type {const} */ (['log', 'info', 'warn', 'error', 'debug'])) {
      const original = this.target[level].bind(this.target);
      this.target[level] = (...args) => {
        const line = args.map(String).join(' ');
        const fromOrt = ORT_LINE.test(line);
        if (fromOrt && this.recording) this.recording.push(line);
        if (!fromOrt || this.verbose || /\[[EF]:onnxruntime:/.test(line)) original(...args);
      };
    }
    return this;
  }

  start() { this.recording = []; }

  /** @returns {string[]} the ORT lines seen since start() */
  stop() {
    const lines = this.recording || [];
    this.recording = null;
    return lines;
  }
}

/**
 * @typedef {{counts: Record<string, number>, ops: Record<string, string[]>, lines: string[]}} Placement
 *
 * Parse ORT's "Node placements" block.
 * @param {string[]} lines
 * @returns {Placement}
 */
export function parsePlacement(lines) {
  /** @type {Record<string, number>} */
  const counts = {};
  /** @type {Record<string, string[]>} */
  const ops = {};
  const kept = [];
  let current = null;
  for (const line of lines) {
    const m = /(?:All nodes|Node\(s\)) placed on \[(\w+)\]\. Number of nodes: (\d+)/.exec(line);
    if (m) {
      current = m[1];
      counts[current] = (counts[current] || 0) + Number(m[2]);
      ops[current] = ops[current] || [];
      kept.push(line.replace(/^.*?\] /, '').trim());
      continue;
    }
    const node = current && /VerifyEachNodeIsAssignedToAnEp\]\s+(\S+) \(([^)]*)\)/.exec(line);
    if (node && current) ops[current].push(node[1]);
  }
  return { counts, ops, lines: kept };
}

/**
 * The provider that really runs the model: 'webgpu', 'wasm', or 'webgpu+wasm' when both hold nodes
 * (ORT keeps small shape computations on CPU on purpose).
 * @param {Placement} p @returns {string}
 */
export function effectiveProvider(p) {
  const names = [...new Set(Object.keys(p.counts).filter((ep) => p.counts[ep] > 0).map((ep) => EP_NAMES[ep] || ep))];
  if (names.length === 0) return 'unknown';
  const rank = (/** @type {string} */ n) => (n in PROVIDERS ? PROVIDERS[/** @type {'webgpu'|'wasm'} */ (n)].rank : Infinity);
  return names.sort((a, b) => rank(a) - rank(b) || a.localeCompare(b)).join('+');
}

/**
 * Set onnxruntime-web's environment once, before the first session.
 * @param {any} ort @param {{wasmPaths: string, numThreads: number, debug?: boolean}} o
 */
export function configureOrt(ort, o) {
  ort.env.wasm.wasmPaths = o.wasmPaths;
  ort.env.wasm.numThreads = o.numThreads;
  ort.env.wasm.proxy = false; // we already are in a worker
  ort.env.logLevel = o.debug ? 'verbose' : 'warning';
}

/**
 * @typedef {{vendor: string, architecture: string, description: string, features: string[],
 *            max_buffer_size: number}} AdapterInfo
 *
 * @param {any} gpu navigator.gpu (undefined without WebGPU)
 * @returns {Promise<{info: AdapterInfo|null, reason: string|null}>}
 */
export async function probeAdapter(gpu) {
  if (!gpu) return { info: null, reason: 'navigator.gpu is undefined (WebGPU disabled or unsupported)' };
  let adapter = null;
  try {
    adapter = await gpu.requestAdapter();
  } catch (e) {
    return { info: null, reason: `requestAdapter failed: ${/** @type {Error} */ (e).message}` };
  }
  if (!adapter) return { info: null, reason: 'requestAdapter() returned null (no usable GPU)' };
  const i = adapter.info || {};
  return {
    info: {
      vendor: i.vendor || '', architecture: i.architecture || '', description: i.description || '',
      features: [...adapter.features].sort(), max_buffer_size: adapter.limits.maxBufferSize,
    },
    reason: null,
  };
}

export class Session {
  /**
   * @param {any} ort @param {any} session an ort.InferenceSession @param {'webgpu'|'wasm'} requested
   * @param {Placement} placement @param {string} [graphFile] the bundle's graph file this session runs
   */
  constructor(ort, session, requested, placement, graphFile = '') {
    this.ort = ort;
    this.graphFile = graphFile;
    this.session = session;
    this.requested = requested;
    this.placement = placement;
    this.provider = effectiveProvider(placement);
    /** @type {Promise<unknown>} */
    this.tail = Promise.resolve();
  }

  /** @returns {string[]} */
  get inputNames() { return this.session.inputNames; }
  /** @returns {string[]} */
  get outputNames() { return this.session.outputNames; }

  /**
   * Run once; calls are queued so only one run is in flight.
   * @param {Record<string, any>} feeds
   * @param {Record<string, any>|null} [bound] outputs written into pre-allocated tensors (the fixed KV cache);
   *   every other output is returned as onnxruntime allocates it
   * @returns {Promise<Record<string, any>>}
   */
  run(feeds, bound = null) {
    /** @type {Record<string, any>|null} */
    let fetches = null;
    if (bound) {
      fetches = {};
      for (const n of this.outputNames) fetches[n] = n in bound ? bound[n] : null;
    }
    const opts = { logSeverityLevel: 3 };
    const next = this.tail.then(() => (fetches ? this.session.run(feeds, fetches, opts) : this.session.run(feeds, opts)));
    this.tail = next.catch(() => undefined);
    return next;
  }

  async release() {
    await this.tail;
    await this.session.release();
  }
}

/**
 * Create a session on one provider; throws SessionError with ORT's message.
 * @param {any} ort
 * @param {{model: Uint8Array, externalData: {path: string, data: Uint8Array}[], provider: 'webgpu'|'wasm',
 *          gpuOutputs: string[], logTap: LogTap, foldDequantize?: boolean, graphFile?: string}} o
 *   foldDequantize: let constant folding evaluate DequantizeLinear of initializers (the WASM graph of an
 *   int4 variant dequantizes its weights once, at load; onnxruntime skips DequantizeLinear by default)
 * @returns {Promise<Session>}
 */
export async function createSession(ort, o) {
  /** @type {Record<string, string>} */
  const location = {};
  const ep = PROVIDERS[o.provider];
  if (ep.deviceOutputs) for (const name of o.gpuOutputs) location[name] = 'gpu-buffer';
  const options = {
    executionProviders: [typeof ep.executionProvider === 'string' ? ep.executionProvider : { ...ep.executionProvider }], // ORT may annotate it
    externalData: o.externalData,
    preferredOutputLocation: location,
    graphOptimizationLevel: 'all',
    logSeverityLevel: 0, // VERBOSE: the placement block is logged at this level
    logVerbosityLevel: 0,
    ...(o.foldDequantize ? { extra: { session: { disable_quant_qdq: '1' } } } : {}),
  };
  o.logTap.start();
  let session;
  try {
    session = await ort.InferenceSession.create(o.model, options);
  } catch (e) {
    const lines = o.logTap.stop();
    const err = lines.filter((l) => /\[[EF]:onnxruntime/.test(l)).slice(-3).join(' | ');
    throw new SessionError(`onnxruntime-web could not create a ${o.provider} session: ${/** @type {Error} */ (e).message}${err ? ' (' + err + ')' : ''}`,
      { provider: o.provider });
  }
  return new Session(ort, session, o.provider, parsePlacement(o.logTap.stop()), o.graphFile || '');
}
