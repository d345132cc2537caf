// Past key/value tensors kept between runs, and the token ids they hold. Three layouts, one interface
// (feeds / fetches / reserve / update / trim / reset / release), chosen per session by `kvCacheMode`:
//
// GrowingKvCache (graphs whose present.* is the whole cache: optimum exports, older WASM graphs): each run's
// `present.*` outputs become the next run's `past_key_values.*` (on WebGPU left on the GPU as gpu-buffer
// outputs, the replaced ones disposed). The cache is re-allocated every step, one position longer.
//
// AppendKvCache (WASM graphs whose manifest entry says `wasm_kv_cache: "append"`): the graph's present.* are the
// new positions only and its past inputs may hold spare, masked slots (converter/quant/unfuse_attention.py). One
// JS buffer per tensor, (1, kv_heads, capacity, head_dim), fed whole; each run's new positions are copied in
// after the held ones. Why: onnxruntime-web's WASM build copies every output out of its heap into a new array
// on each run (it has no heap-resident outputs), so a whole-cache present costs a pass over the cache and an
// allocation of its size per token. Capacity is the held length rounded up to APPEND_STEP, grown and shrunk
// by `reserve` (the spare slots are fed and attended as masked scores, so a doubling would cost up to 2x the
// attention, and a stale large capacity would slow every short chat after a long one).
//
// FixedKvCache (WebGPU, graphs whose manifest variant says `past_present_share_buffer`): one GPU buffer per
// tensor of shape (1, kv_heads, capacity, head_dim), bound as both the past input and the present output of
// every run. onnxruntime's GroupQueryAttention sees the same buffer on both sides and writes only the new
// positions in place (its past_present_share_buffer mode); attention reads the real length from
// attention_mask, so positions past it are never read. Capacity doubles (one copy per growth, never per
// step) up to the context length, or to the most positions one GPU buffer may hold (the device's
// maxStorageBufferBindingSize / maxBufferSize; `maxPositions`, which the engine applies as the context length).
// A growth the GPU cannot allocate throws OutOfMemoryError and keeps the cache as it was. Trimming to a prefix
// only shortens the held length.

import { OutOfMemoryError } from './errors.js';
import { PROVIDERS } from './session.js';

/**
 * @typedef {{numLayers: number, numKvHeads: number, headDim: number, dtype: 'float32'|'float16'}} KvShape
 */

/** GPUBufferUsage.STORAGE | COPY_SRC | COPY_DST (the constants are not defined in every worker scope). */
const KV_BUFFER_USAGE = 0x80 | 0x04 | 0x08;

/** First capacity of a fixed cache; doubled as the context grows. */
export const INITIAL_CAPACITY = 256;

/** An appended cache's capacity grows in steps of this many positions (converter/ort_model.py APPEND_STEP). */
export const APPEND_STEP = 256;

/**
 * Which cache a session gets.
 * @param {{provider: string, shareBuffer: boolean, append?: boolean, requested?: 'auto'|'fixed'|'growing'}} o
 *   provider: the session's effective provider ('webgpu+wasm': ORT keeps shape arithmetic on the CPU, the
 *   attention runs on the GPU); shareBuffer: the graph the session runs supports it; append: the graph's
 *   present.* are the new positions only (the manifest's `wasm_kv_cache: "append"`), which only AppendKvCache reads
 * @returns {'fixed'|'growing'|'append'}
 */
export function kvCacheMode(o) {
  if (o.append) {
    if (o.requested && o.requested !== 'auto') {
      throw new Error(`kvCache "${o.requested}" does not fit this graph: its present outputs are the new positions only ` +
        '(an appended cache, wasm_kv_cache "append"); use kvCache "auto"');
    }
    return 'append';
  }
  // the cache lives in device buffers: only a provider whose outputs may stay on the device can hold it
  const lead = /** @type {keyof typeof PROVIDERS} */ (o.provider.split('+')[0]);
  const possible = lead in PROVIDERS && PROVIDERS[lead].deviceOutputs && o.shareBuffer;
  const requested = o.requested || 'auto';
  if (requested === 'fixed' && !possible) {
    throw new Error(`kvCache "fixed" needs a WebGPU session on a graph with past_present_share_buffer (this one: ${o.provider}` +
      `${o.shareBuffer ? '' : ', graph without GroupQueryAttention'}); use kvCache "auto"`);
  }
  return requested === 'growing' || !possible ? 'growing' : 'fixed';
}

/** @param {KvShape} shape @returns {number} bytes per element */
const elementBytes = (shape) => (shape.dtype === 'float16' ? 2 : 4);

class KvCacheBase {
  /** @param {any} ort @param {KvShape} shape */
  constructor(ort, shape) {
    this.ort = ort;
    this.shape = shape;
    /** @type {number[]} token ids whose keys/values are held, in order */
    this.tokens = [];
  }

  get length() { return this.tokens.length; }

  /** @returns {string[]} */
  names() {
    const out = [];
    for (let i = 0; i < this.shape.numLayers; i++) out.push(`past_key_values.${i}.key`, `past_key_values.${i}.value`);
    return out;
  }

  /**
   * Take freshly allocated buffers (and their tensors) of `capacity` positions; every allocation after the first
   * counts as a growth (the fixed and appended caches).
   * @param {Record<string, any>} buffers @param {Record<string, any>} tensors @param {number} capacity
   */
  adopt(buffers, tensors, capacity) {
    const self = /** @type {any} */ (this);
    if (self.capacity > 0) self.growths++;
    Object.assign(self, { buffers, tensors, capacity });
  }

  /** @param {number[]} ids @returns {number} length of the common prefix of ids and the held tokens */
  commonPrefix(ids) {
    const n = Math.min(ids.length, this.tokens.length);
    let i = 0;
    while (i < n && ids[i] === this.tokens[i]) i++;
    return i;
  }
}

export class GrowingKvCache extends KvCacheBase {
  /** @param {any} ort @param {KvShape} shape */
  constructor(ort, shape) {
    super(ort, shape);
    /** @type {Record<string, any>} past_key_values.{i}.{key|value} -> ort.Tensor (1, n_kv_heads, len, head_dim) */
    this.past = this.empty();
  }

  /** @returns {Record<string, any>} zero-length past tensors */
  empty() {
    const { numKvHeads, headDim, dtype } = this.shape;
    const data = dtype === 'float16' ? new Uint16Array(0) : new Float32Array(0);
    /** @type {Record<string, any>} */
    const out = {};
    for (const n of this.names()) out[n] = new this.ort.Tensor(dtype, data, [1, numKvHeads, 0, headDim]);
    return out;
  }

  /** Nothing to reserve: every run allocates its present. @param {number} _n */
  async reserve(_n) {}

  /** @returns {Record<string, any>} the past_key_values.* feeds */
  feeds() { return this.past; }

  /** @returns {null} no pre-allocated outputs */
  fetches() { return null; }

  /**
   * Take a run's present.* outputs as the new past; `fed` are the tokens that run consumed.
   * @param {Record<string, any>} outputs @param {number[]} fed
   */
  update(outputs, fed) {
    const old = this.past;
    /** @type {Record<string, any>} */
    const next = {};
    for (const n of this.names()) next[n] = outputs[n.replace('past_key_values.', 'present.')];
    this.past = next;
    this.tokens = this.tokens.concat(fed);
    disposeAll(old);
  }

  /** Keep only the first n positions. @param {number} n */
  async trim(n) {
    if (n >= this.tokens.length) return;
    if (n === 0) { this.reset(); return; }
    const old = this.past;
    /** @type {Record<string, any>} */
    const next = {};
    for (const name of this.names()) next[name] = await this.slice(old[name], n);
    this.past = next;
    this.tokens = this.tokens.slice(0, n);
    disposeAll(old);
  }

  /** @param {any} t (1, H, L, D) @param {number} n @returns {Promise<any>} (1, H, n, D) on the CPU */
  async slice(t, n) {
    const [, heads, len, dim] = t.dims;
    const src = await t.getData();
    const Ctor = /** @type {any} */ (src.constructor);
    const dst = new Ctor(heads * n * dim);
    for (let h = 0; h < heads; h++) dst.set(src.subarray(h * len * dim, h * len * dim + n * dim), h * n * dim);
    return new this.ort.Tensor(t.type, dst, [1, heads, n, dim]);
  }

  reset() {
    disposeAll(this.past);
    this.past = this.empty();
    this.tokens = [];
  }

  release() { this.reset(); }

  /** @returns {{mode: 'growing', capacity: null, growths: null}} */
  info() { return { mode: 'growing', capacity: null, growths: null }; }
}

export class AppendKvCache extends KvCacheBase {
  /** @param {any} ort @param {KvShape} shape @param {{limit: number}} o limit: the context length */
  constructor(ort, shape, o) {
    super(ort, shape);
    this.limit = o.limit;
    this.capacity = 0;
    this.growths = 0;
    /** @type {Record<string, Float32Array|Uint16Array>} past name -> (1, H, capacity, D) */
    this.buffers = {};
    /** @type {Record<string, any>} past name -> ort.Tensor over that buffer */
    this.tensors = {};
  }

  /** @returns {{mode: 'append', capacity: number, growths: number}} */
  info() { return { mode: 'append', capacity: this.capacity, growths: this.growths }; }

  /** Buffers of `capacity` positions, the held ones carried over head by head. @param {number} capacity */
  allocate(capacity) {
    const { numKvHeads: H, headDim: D, dtype } = this.shape;
    const held = this.tokens.length;
    /** @type {Record<string, Float32Array|Uint16Array>} */
    const buffers = {};
    /** @type {Record<string, any>} */
    const tensors = {};
    for (const name of this.names()) {
      // zeros, not garbage: the spare slots' scores are masked, but NaN there would survive the mask
      const b = dtype === 'float16' ? new Uint16Array(H * capacity * D) : new Float32Array(H * capacity * D);
      const old = this.buffers[name];
      if (old && held > 0) for (let h = 0; h < H; h++) b.set(old.subarray(h * this.capacity * D, (h * this.capacity + held) * D), h * capacity * D);
      buffers[name] = b;
      tensors[name] = new this.ort.Tensor(dtype, b, [1, H, capacity, D]);
    }
    this.adopt(buffers, tensors, capacity);
  }

  /**
   * Hold exactly the next multiple of APPEND_STEP at or above the held + n positions (capped at the context): grown
   * when full, and shrunk after a reset or a trim to a short prefix, because every run feeds, and attends over, the
   * whole capacity (a 128-token chat after a 2048-token one would otherwise decode at the long one's speed).
   * @param {number} n
   */
  async reserve(n) {
    const need = this.tokens.length + n;
    if (need > this.limit) throw new Error(`KV cache: ${need} positions exceed the context length ${this.limit}`);
    const capacity = Math.min(Math.ceil(need / APPEND_STEP) * APPEND_STEP, this.limit);
    if (capacity !== this.capacity) this.allocate(capacity);
  }

  /** @returns {Record<string, any>} the past_key_values.* feeds: the whole buffers */
  feeds() { return this.tensors; }

  /** @returns {null} present.* (the new positions) are returned by the run */
  fetches() { return null; }

  /**
   * Copy each present.* (1, H, n, D), the positions `fed` produced, in after the held ones.
   * @param {Record<string, any>} outputs @param {number[]} fed
   */
  update(outputs, fed) {
    const { numKvHeads: H, headDim: D } = this.shape;
    const held = this.tokens.length;
    const n = fed.length;
    for (const name of this.names()) {
      const t = outputs[name.replace('past_key_values.', 'present.')];
      if (t.dims[2] !== n) throw new Error(`${name}: the run returned ${t.dims[2]} positions for ${n} fed tokens (is this graph's cache appended?)`);
      const src = /** @type {Float32Array|Uint16Array} */ (t.data);
      const dst = this.buffers[name];
      for (let h = 0; h < H; h++) dst.set(src.subarray(h * n * D, (h + 1) * n * D), (h * this.capacity + held) * D);
    }
    this.tokens = this.tokens.concat(fed);
  }

  /** Keep the first n positions: later slots are masked until overwritten (or dropped by the next reserve). @param {number} n */
  async trim(n) { if (n < this.tokens.length) this.tokens = this.tokens.slice(0, n); }

  reset() { this.tokens = []; }

  release() {
    this.tokens = [];
    this.buffers = {};
    this.tensors = {};
    this.capacity = 0;
  }
}

export class FixedKvCache extends KvCacheBase {
  /**
   * @param {any} ort @param {any} device the GPUDevice onnxruntime-web runs on
   * @param {KvShape} shape @param {{limit: number, capacity?: number}} o limit: the context length
   */
  constructor(ort, device, shape, o) {
    super(ort, shape);
    this.device = device;
    this.limit = o.limit;
    this.capacity = 0;
    this.growths = 0;
    /** @type {Record<string, any>} past name -> GPUBuffer */
    this.buffers = {};
    /** @type {Record<string, any>} past name -> ort.Tensor over that buffer, (1, H, capacity, D) */
    this.tensors = {};
    this.firstCapacity = Math.max(1, Math.min(o.capacity || INITIAL_CAPACITY, o.limit));
  }

  /**
   * @param {any} ort onnxruntime-web after a WebGPU session was created on it
   * @param {KvShape} shape @param {{limit: number, capacity?: number}} o limit: the context length, lowered to
   *   maxPositions(device) when one buffer of it would exceed the device's limits
   */
  static async create(ort, shape, o) {
    const device = await ort.env.webgpu.device;
    if (!device) throw new Error('onnxruntime-web exposes no WebGPU device (env.webgpu.device) for the KV cache');
    const cache = new FixedKvCache(ort, device, shape, { ...o, limit: Math.min(o.limit, maxPositions(device, shape)) });
    await cache.allocate(cache.firstCapacity);
    return cache;
  }

  get elementBytes() { return elementBytes(this.shape); }

  /** @returns {{mode: 'fixed', capacity: number, growths: number}} */
  info() { return { mode: 'fixed', capacity: this.capacity, growths: this.growths }; }

  /** Bytes of every buffer together at `capacity` positions. @param {number} capacity */
  bytesAt(capacity) {
    const { numLayers, numKvHeads, headDim } = this.shape;
    return 2 * numLayers * numKvHeads * capacity * headDim * this.elementBytes;
  }

  /** Allocate buffers of `capacity` positions (all or none), carrying the held positions over (head by head: the
   * sequence axis is inside each head's slab). @param {number} capacity */
  async allocate(capacity) {
    const { numKvHeads: H, headDim: D, dtype } = this.shape;
    const row = D * this.elementBytes; // bytes per position per head
    const held = this.tokens.length;
    /** @type {Record<string, any>} */
    const buffers = {};
    // WebGPU reports allocation failure asynchronously, through an error scope
    const scoped = typeof this.device.pushErrorScope === 'function';
    if (scoped) this.device.pushErrorScope('out-of-memory');
    for (const name of this.names()) {
      buffers[name] = this.device.createBuffer({ size: Math.ceil((H * capacity * row) / 16) * 16, usage: KV_BUFFER_USAGE });
    }
    const oom = scoped ? await this.device.popErrorScope() : null;
    if (oom) {
      for (const b of Object.values(buffers)) b.destroy();
      throw new OutOfMemoryError(`KV cache: ${capacity} positions need ${mib(this.bytesAt(capacity))} of GPU memory and the ` +
        `GPU refused them (${oom.message}); start a new chat or send a shorter conversation`, { positions: capacity, bytes: this.bytesAt(capacity) });
    }
    /** @type {Record<string, any>} */
    const tensors = {};
    const encoder = held > 0 && this.capacity > 0 ? this.device.createCommandEncoder() : null;
    for (const name of this.names()) {
      if (encoder) for (let h = 0; h < H; h++) encoder.copyBufferToBuffer(this.buffers[name], h * this.capacity * row, buffers[name], h * capacity * row, held * row);
      tensors[name] = this.ort.Tensor.fromGpuBuffer(buffers[name], { dataType: dtype, dims: [1, H, capacity, D] });
    }
    if (encoder) this.device.queue.submit([encoder.finish()]);
    this.destroyBuffers();
    this.adopt(buffers, tensors, capacity);
  }

  /** Make room for n more positions (doubling, capped at the context length). @param {number} n */
  async reserve(n) {
    const need = this.tokens.length + n;
    if (need <= this.capacity) return;
    if (need > this.limit) throw new Error(`KV cache: ${need} positions exceed the context length ${this.limit}`);
    let cap = this.capacity || this.firstCapacity;
    while (cap < need) cap *= 2;
    await this.allocate(Math.min(cap, this.limit));
  }

  /** @returns {Record<string, any>} the past_key_values.* feeds: the buffers themselves */
  feeds() { return this.tensors; }

  /** @returns {Record<string, any>} present.* bound to the same buffers, so the run writes in place */
  fetches() {
    /** @type {Record<string, any>} */
    const out = {};
    for (const [name, t] of Object.entries(this.tensors)) out[name.replace('past_key_values.', 'present.')] = t;
    return out;
  }

  /** The run wrote its positions in place. @param {Record<string, any>} _outputs @param {number[]} fed */
  update(_outputs, fed) { this.tokens = this.tokens.concat(fed); }

  /** Keep the first n positions: later ones are overwritten by the next run, never read. @param {number} n */
  async trim(n) { if (n < this.tokens.length) this.tokens = this.tokens.slice(0, n); }

  reset() { this.tokens = []; }

  destroyBuffers() {
    for (const b of Object.values(this.buffers)) b.destroy();
    this.buffers = {};
    this.tensors = {};
  }

  release() {
    this.tokens = [];
    this.destroyBuffers();
    this.capacity = 0;
  }
}

/**
 * The most positions one KV buffer (1, kv_heads, positions, head_dim) may hold on `device`: a storage binding
 * cannot exceed maxStorageBufferBindingSize, a buffer maxBufferSize.
 * @param {any} device @param {KvShape} shape @returns {number}
 */
export function maxPositions(device, shape) {
  const l = device.limits || {};
  const bytes = Math.min(l.maxStorageBufferBindingSize || Infinity, l.maxBufferSize || Infinity);
  return Math.floor(bytes / (shape.numKvHeads * shape.headDim * elementBytes(shape)));
}

/** @param {number} b */
const mib = (b) => `${(b / 2 ** 20).toFixed(0)} MiB`;

/** @param {Record<string, any>} tensors */
function disposeAll(tensors) {
  for (const t of Object.values(tensors)) {
    if (t && t.location === 'gpu-buffer' && typeof t.dispose === 'function') t.dispose();
  }
}
