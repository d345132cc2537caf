// Main-thread side of the worker RPC: id correlation, streamed chunks, AbortSignal -> CANCEL.
//
// `port` is anything with postMessage and addEventListener('message') (a Worker, a MessagePort).

import { Kind } from './protocol.js';
import { AbortedError, fromWire } from './errors.js';

/**
 * @typedef {{postMessage: (m: any) => void, addEventListener: (t: string, f: (e: any) => void) => void,
 *            start?: () => void}} Port
 * @typedef {{onChunk?: (chunk: any) => void, signal?: AbortSignal}} CallOptions
 * @typedef {{resolve: (v: any) => void, reject: (e: Error) => void, onChunk?: (c: any) => void}} Pending
 */

export class RpcClient {
  /** @param {Port} port */
  constructor(port) {
    this.port = port;
    this.nextId = 1;
    /** @type {Map<number, Pending>} */
    this.pending = new Map();
    /** @type {Error | null} set by close(): every later call rejects with it instead of waiting forever */
    this.closed = null;
    port.addEventListener('message', (e) => this.onMessage(e.data));
    if (port.start) port.start();
  }

  /**
   * Call `method` in the worker; chunks go to onChunk; resolves with the DONE payload.
   * @param {string} method @param {unknown[]} args @param {CallOptions} [opts]
   * @returns {Promise<any>}
   */
  call(method, args, opts = {}) {
    if (this.closed) return Promise.reject(this.closed);
    const id = this.nextId++;
    const { signal, onChunk } = opts;
    if (signal && signal.aborted) return Promise.reject(new AbortedError(`${method} aborted before it started`));
    return new Promise((resolve, reject) => {
      const onAbort = () => this.port.postMessage({ kind: Kind.CANCEL, id, payload: null });
      if (signal) signal.addEventListener('abort', onAbort, { once: true });
      const cleanup = () => signal && signal.removeEventListener('abort', onAbort);
      this.pending.set(id, {
        resolve: (v) => { cleanup(); resolve(v); },
        reject: (e) => { cleanup(); reject(e); },
        onChunk,
      });
      this.port.postMessage({ kind: Kind.CALL, id, payload: { method, args } });
    });
  }

  /**
   * Call a streaming method and iterate its chunks; the iterator ends at DONE and throws on ERROR.
   * Breaking out of the loop cancels the call.
   * @param {string} method @param {unknown[]} args @param {{signal?: AbortSignal}} [opts]
   * @returns {AsyncIterable<any>}
   */
  stream(method, args, opts = {}) {
    const queue = new AsyncQueue();
    const controller = new AbortController();
    const forward = () => controller.abort();
    if (opts.signal) opts.signal.addEventListener('abort', forward, { once: true });
    this.call(method, args, { signal: controller.signal, onChunk: (c) => queue.push(c) })
      .then(() => queue.close(), (e) => queue.fail(e))
      .finally(() => opts.signal && opts.signal.removeEventListener('abort', forward));
    return queue.iterable(() => controller.abort());
  }

  /** @param {import('./protocol.js').Message} msg */
  onMessage(msg) {
    const p = msg && this.pending.get(msg.id);
    if (!p) return;
    if (msg.kind === Kind.CHUNK) {
      if (p.onChunk) p.onChunk(msg.payload);
    } else if (msg.kind === Kind.DONE) {
      this.pending.delete(msg.id);
      p.resolve(msg.payload);
    } else if (msg.kind === Kind.ERROR) {
      this.pending.delete(msg.id);
      p.reject(fromWire(msg.payload));
    }
  }

  /** Reject every call in flight (the worker died). @param {Error} err */
  failAll(err) {
    for (const p of this.pending.values()) p.reject(err);
    this.pending.clear();
  }

  /** The worker is gone for good: reject the calls in flight and every later one with `err`. @param {Error} err */
  close(err) {
    this.closed = err;
    this.failAll(err);
  }
}

/** A push/pull queue turned into an async iterable (one consumer). */
export class AsyncQueue {
  constructor() {
    /** @type {any[]} */
    this.items = [];
    /** @type {((r: IteratorResult<any>) => void) | null} */
    this.wake = null;
    this.done = false;
    /** @type {Error | null} */
    this.error = null;
  }

  /** @param {any} item */
  push(item) { this.items.push(item); this.notify(); }
  close() { this.done = true; this.notify(); }
  /** @param {Error} err */
  fail(err) { this.error = err; this.done = true; this.notify(); }

  notify() {
    if (this.wake) { const w = this.wake; this.wake = null; w(/** @type {any} */ (null)); }
  }

  /** @returns {Promise<IteratorResult<any>>} */
  async next() {
    for (;;) {
      if (this.items.length) return { value: this.items.shift(), done: false };
      if (this.error) { const e = this.error; this.error = null; throw e; }
      if (this.done) return { value: undefined, done: true };
      await new Promise((resolve) => { this.wake = resolve; });
    }
  }

  /** @param {() => void} onReturn called when the consumer stops early @returns {AsyncIterable<any>} */
  iterable(onReturn) {
    return {
      [Symbol.asyncIterator]: () => ({
        next: () => this.next(),
        return: async () => { if (!this.done) onReturn(); this.done = true; return { value: undefined, done: true }; },
      }),
    };
  }
}
