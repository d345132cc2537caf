// Worker side of the RPC: a dispatch table from method name to an engine call, error serialization,
// streaming of async iterables as CHUNK messages, and CANCEL -> AbortSignal. No business logic.
//
// Calls that run the model are queued one at a time (WASM/WebGPU sessions cannot run concurrently and
// they share the KV cache); pure calls (encode, decode, info) answer at once.

import { Kind, Method } from './protocol.js';
import { InvalidRequestError, toWire } from './errors.js';

/**
 * @typedef {{signal: AbortSignal, emit: (chunk: any) => void}} CallContext
 * @typedef {(engine: any, args: any[], ctx: CallContext) => any} Route
 */

/** @type {Readonly<Record<string, Route>>} */
const ROUTES = Object.freeze({
  [Method.LOAD]: (e, [url, options], ctx) => e.load(url, options || {}, { onProgress: ctx.emit, signal: ctx.signal }),
  [Method.CHAT]: (e, [request], ctx) => e.chatCompletion(request, { signal: ctx.signal }),
  [Method.SCORE]: (e, [batch], ctx) => e.scoreTokens(batch, { signal: ctx.signal }),
  [Method.GENERATE]: (e, [ids, options], ctx) => e.generateTokens(ids, options || {}, { signal: ctx.signal }),
  [Method.ENCODE]: (e, [text, options]) => e.encode(text, options || {}),
  [Method.DECODE]: (e, [ids, options]) => e.decode(ids, options || {}),
  [Method.APPLY_TEMPLATE]: (e, [messages]) => e.applyChatTemplate(messages),
  [Method.RESET]: (e) => e.resetChat(),
  [Method.INFO]: (e) => e.runtimeInfo(),
  [Method.UNLOAD]: (e) => e.unload(),
});

const UNQUEUED = new Set([Method.ENCODE, Method.DECODE, Method.APPLY_TEMPLATE, Method.INFO]);

export class Handler {
  /** @param {any} engine @param {{postMessage: (m: any) => void}} port */
  constructor(engine, port) {
    this.engine = engine;
    this.port = port;
    /** @type {Map<number, AbortController>} */
    this.inFlight = new Map();
    /** @type {Promise<unknown>} */
    this.tail = Promise.resolve();
    this.onmessage = (/** @type {MessageEvent} */ ev) => { this.handle(ev.data); };
  }

  /** @param {import('./protocol.js').Message} msg @returns {Promise<void>} */
  handle(msg) {
    if (!msg || typeof msg !== 'object') return Promise.resolve();
    if (msg.kind === Kind.CANCEL) {
      const c = this.inFlight.get(msg.id);
      if (c) c.abort();
      return Promise.resolve();
    }
    if (msg.kind !== Kind.CALL) return Promise.resolve();
    const controller = new AbortController();
    this.inFlight.set(msg.id, controller);
    const run = () => this.run(msg.id, msg.payload, controller.signal);
    const method = msg.payload && msg.payload.method;
    const done = UNQUEUED.has(method) ? run() : (this.tail = this.tail.then(run, run));
    return /** @type {Promise<void>} */ (done);
  }

  /** @param {number} id @param {{method: string, args: any[]}} payload @param {AbortSignal} signal */
  async run(id, payload, signal) {
    const post = (/** @type {string} */ kind, /** @type {any} */ p) => this.port.postMessage({ kind, id, payload: p });
    try {
      const route = ROUTES[payload.method];
      if (!route) {
        throw new InvalidRequestError(`unknown method '${payload.method}'; expected one of ${Object.keys(ROUTES).join(', ')}`);
      }
      let result = await route(this.engine, payload.args || [], { signal, emit: (c) => post(Kind.CHUNK, c) });
      if (result && typeof result[Symbol.asyncIterator] === 'function') {
        for await (const chunk of result) post(Kind.CHUNK, chunk);
        result = null;
      }
      post(Kind.DONE, result === undefined ? null : result);
    } catch (err) {
      post(Kind.ERROR, toWire(err));
    } finally {
      this.inFlight.delete(id);
    }
  }
}
