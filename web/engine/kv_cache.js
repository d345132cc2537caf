// Past key/value tensors kept between runs, and the token ids they hold.
//
// On WebGPU the tensors are the previous run's `present.*` outputs left on the GPU (gpu-buffer) and
// fed straight back as `past_key_values.*`; the replaced ones are disposed. Trimming to a shorter
// prefix (a new chat turn that diverges, or scoring another continuation) downloads, slices on the
// CPU and feeds CPU tensors, which ORT uploads again on the next run.

/**
 * @typedef {{numLayers: number, numKvHeads: number, headDim: number, dtype: 'float32'|'float16'}} KvShape
 */

export class KvCache {
  /** @param {any} ort @param {KvShape} shape */
  constructor(ort, shape) {
    this.ort = ort;
    this.shape = shape;
    /** @type {number[]} token ids whose keys/values are held, in order */
    this.tokens = [];
    /** @type {Record<string, any>} past_key_values.{i}.{key|value} -> ort.Tensor (1, n_kv_heads, len, head_dim) */
    this.past = this.empty();
  }

  get length() { return this.tokens.length; }

  /** @returns {string[]} */
  names() {
    const out = [];
    for (let i = 0; i < this.shape.numLayers; i++) out.push(`past_key_values.${i}.key`, `past_key_values.${i}.value`);
    return out;
  }

  /** @returns {string[]} the matching present.* output names */
  presentNames() {
    return this.names().map((n) => n.replace('past_key_values.', 'present.'));
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

  /** @param {number[]} ids @returns {number} length of the common prefix of ids and the held tokens */
  commonPrefix(ids) {
    const n = Math.min(ids.length, this.tokens.length);
    let i = 0;
    while (i < n && ids[i] === this.tokens[i]) i++;
    return i;
  }

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
}

/** @param {Record<string, any>} tensors */
function disposeAll(tensors) {
  for (const t of Object.values(tensors)) {
    if (t && t.location === 'gpu-buffer' && typeof t.dispose === 'function') t.dispose();
  }
}
