// The Sampler, which takes logits and returns a token id. Pure: no onnxruntime, no DOM.
//
// Greedy (temperature 0) is argmax with the first index winning ties, exactly like numpy.argmax, so
// it matches converter.ort_model.OrtModel.greedy. Sampling applies, in order: repetition penalty
// (HF), presence/frequency penalty (OpenAI), temperature, top-k, top-p; a seeded RNG makes it
// reproducible.

/** @typedef {import('./openai.js').SamplingParams} SamplingParams */

/**
 * mulberry32: a small, fast 32-bit seeded PRNG; returns floats in [0, 1).
 * @param {number} seed
 * @returns {() => number}
 */
export function makeRng(seed) {
  let a = (Math.floor(seed) ^ 0x9e3779b9) >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** @param {ArrayLike<number>} logits @returns {number} index of the first maximum */
export function argmax(logits) {
  let best = 0;
  let bestVal = -Infinity;
  for (let i = 0; i < logits.length; i++) {
    if (logits[i] > bestVal) { bestVal = logits[i]; best = i; }
  }
  return best;
}

/**
 * log-softmax of one row, in float64 (for scoring).
 * @param {ArrayLike<number>} row
 * @returns {{logZ: number, max: number, argmax: number}} log-sum-exp, the max value and its first index
 */
export function logSumExp(row) {
  const best = argmax(row);
  const max = row[best];
  let sum = 0;
  for (let i = 0; i < row.length; i++) sum += Math.exp(row[i] - max);
  return { logZ: max + Math.log(sum), max, argmax: best };
}

export class Sampler {
  /** @param {SamplingParams} params */
  constructor(params) {
    this.params = params;
    const seed = params.seed === null ? Math.floor(Math.random() * 2 ** 32) : params.seed;
    this.rng = makeRng(seed);
  }

  /**
   * @param {Float32Array} logits  (vocab) of the last position; not modified
   * @param {ArrayLike<number>} history  prompt + generated ids (for the penalties)
   * @returns {number}
   */
  sample(logits, history) {
    const p = this.params;
    const penalized = needsPenalty(p) ? applyPenalties(logits, history, p) : logits;
    if (p.temperature === 0) return argmax(penalized);
    const candidates = p.top_k > 0 || p.top_p < 1
      ? topCandidates(penalized, p.top_k)
      : Array.from({ length: penalized.length }, (_, i) => i);
    const probs = softmax(candidates.map((i) => penalized[i] / p.temperature));
    const kept = nucleus(probs, p.top_p);
    return candidates[pick(probs.subarray(0, kept), this.rng())];
  }
}

/** @param {SamplingParams} p */
function needsPenalty(p) {
  return p.repetition_penalty !== 1 || p.presence_penalty !== 0 || p.frequency_penalty !== 0;
}

/**
 * @param {Float32Array} logits @param {ArrayLike<number>} history @param {SamplingParams} p
 * @returns {Float32Array} a penalized copy
 */
export function applyPenalties(logits, history, p) {
  const out = new Float32Array(logits);
  /** @type {Map<number, number>} */
  const counts = new Map();
  for (let i = 0; i < history.length; i++) counts.set(history[i], (counts.get(history[i]) || 0) + 1);
  for (const [tok, n] of counts) {
    if (tok < 0 || tok >= out.length) continue;
    let v = out[tok];
    if (p.repetition_penalty !== 1) v = v > 0 ? v / p.repetition_penalty : v * p.repetition_penalty;
    v -= p.presence_penalty + p.frequency_penalty * n;
    out[tok] = v;
  }
  return out;
}

/**
 * Candidate ids sorted by logit, descending (ties: lower id first); all of them when topK is 0.
 * @param {ArrayLike<number>} logits @param {number} topK @returns {number[]}
 */
export function topCandidates(logits, topK) {
  const ids = Array.from({ length: logits.length }, (_, i) => i);
  ids.sort((a, b) => (logits[b] - logits[a]) || (a - b));
  return topK > 0 && topK < ids.length ? ids.slice(0, topK) : ids;
}

/** @param {number[]} xs @returns {Float64Array} */
export function softmax(xs) {
  const max = xs.reduce((m, x) => (x > m ? x : m), -Infinity);
  const out = new Float64Array(xs.length);
  let sum = 0;
  for (let i = 0; i < xs.length; i++) { out[i] = Math.exp(xs[i] - max); sum += out[i]; }
  for (let i = 0; i < xs.length; i++) out[i] /= sum;
  return out;
}

/**
 * How many of the (descending) probabilities form the smallest prefix whose mass reaches topP.
 * @param {Float64Array} probs @param {number} topP @returns {number}
 */
export function nucleus(probs, topP) {
  if (topP >= 1) return probs.length;
  let mass = 0;
  for (let i = 0; i < probs.length; i++) {
    mass += probs[i];
    if (mass >= topP) return i + 1;
  }
  return probs.length;
}

/** Inverse-CDF draw over unnormalized weights. @param {Float64Array} weights @param {number} u in [0, 1) */
export function pick(weights, u) {
  let total = 0;
  for (let i = 0; i < weights.length; i++) total += weights[i];
  let acc = 0;
  const target = u * total;
  for (let i = 0; i < weights.length; i++) {
    acc += weights[i];
    if (target < acc) return i;
  }
  return weights.length - 1;
}
