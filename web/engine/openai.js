// OpenAI chat-completions request validation and response shaping. Pure: no engine, no DOM.
//
// normalizeRequest() is the only place request fields are checked; the engine trusts its output.

import { InvalidRequestError } from './errors.js';

/**
 * @typedef {{role: 'system'|'user'|'assistant'|'tool', content: string}} ChatMessage
 *
 * @typedef {object} SamplingParams
 * @property {number} temperature         0 = greedy
 * @property {number} top_p               (0, 1]; 1 = off
 * @property {number} top_k               0 = off
 * @property {number} repetition_penalty  1 = off (HF-style: divide positive logits, multiply negative ones)
 * @property {number} presence_penalty    OpenAI-style, subtracted once per seen token
 * @property {number} frequency_penalty   OpenAI-style, subtracted per occurrence
 * @property {number|null} seed           null = random
 *
 * @typedef {object} NormalizedRequest
 * @property {ChatMessage[]} messages
 * @property {boolean} stream
 * @property {number|null} max_tokens     null = up to the context length
 * @property {SamplingParams} sampling
 * @property {string[]} stop              stop strings (not included in the output)
 * @property {number[]} stop_token_ids    extra stop tokens (extension; EOS always stops unless ignore_eos)
 * @property {boolean} ignore_eos
 * @property {string} model
 */

export const ROLES = Object.freeze(['system', 'user', 'assistant', 'tool']);
const MAX_STOP = 16;

/**
 * Validate an OpenAI chat-completions request and fill defaults (OpenAI's: temperature 1, top_p 1).
 * @param {any} req
 * @returns {NormalizedRequest}
 */
export function normalizeRequest(req) {
  if (!req || typeof req !== 'object') throw new InvalidRequestError('request must be an object with a messages array');
  if (req.n !== undefined && req.n !== null && req.n !== 1) {
    throw new InvalidRequestError(`n=${req.n} is not supported: only one choice per request (n=1)`);
  }
  if (req.logprobs) throw new InvalidRequestError('logprobs are not supported in chat completions; use engine.scoreTokens()');
  const maxTokens = req.max_completion_tokens ?? req.max_tokens ?? null;
  return {
    messages: normalizeMessages(req.messages),
    stream: optBool(req.stream, 'stream', false),
    max_tokens: maxTokens === null ? null : intIn(maxTokens, 'max_tokens', 1, 1 << 24),
    sampling: normalizeSampling(req),
    stop: normalizeStop(req.stop),
    stop_token_ids: (req.stop_token_ids ?? []).map((/** @type {any} */ t) => intIn(t, 'stop_token_ids[]', 0, 1 << 30)),
    ignore_eos: optBool(req.ignore_eos, 'ignore_eos', false),
    model: typeof req.model === 'string' ? req.model : '',
  };
}

/** @param {any} req @returns {SamplingParams} */
export function normalizeSampling(req) {
  return {
    temperature: numIn(req.temperature ?? 1, 'temperature', 0, 2),
    top_p: numIn(req.top_p ?? 1, 'top_p', 0, 1, { openLow: true }),
    top_k: intIn(req.top_k ?? 0, 'top_k', 0, 1 << 30),
    repetition_penalty: numIn(req.repetition_penalty ?? 1, 'repetition_penalty', 0, 10, { openLow: true }),
    presence_penalty: numIn(req.presence_penalty ?? 0, 'presence_penalty', -2, 2),
    frequency_penalty: numIn(req.frequency_penalty ?? 0, 'frequency_penalty', -2, 2),
    seed: req.seed === undefined || req.seed === null ? null : intIn(req.seed, 'seed', -(2 ** 53), 2 ** 53),
  };
}

/** @param {any} messages @returns {ChatMessage[]} */
function normalizeMessages(messages) {
  if (!Array.isArray(messages) || messages.length === 0) {
    throw new InvalidRequestError('messages must be a non-empty array of {role, content}');
  }
  return messages.map((m, i) => {
    if (!m || !ROLES.includes(m.role)) {
      throw new InvalidRequestError(`messages[${i}].role must be one of ${ROLES.join(', ')}, got ${JSON.stringify(m && m.role)}`);
    }
    return { role: m.role, content: contentText(m.content, i) };
  });
}

/** OpenAI content may be a string or an array of {type: 'text', text} parts. @param {any} content @param {number} i */
function contentText(content, i) {
  if (typeof content === 'string') return content;
  if (Array.isArray(content)) {
    return content.map((p, j) => {
      if (p && p.type === 'text' && typeof p.text === 'string') return p.text;
      throw new InvalidRequestError(`messages[${i}].content[${j}]: only {type: 'text', text} parts are supported`);
    }).join('');
  }
  throw new InvalidRequestError(`messages[${i}].content must be a string, got ${typeof content}`);
}

/** @param {any} stop @returns {string[]} */
function normalizeStop(stop) {
  if (stop === undefined || stop === null) return [];
  const list = Array.isArray(stop) ? stop : [stop];
  if (list.length > MAX_STOP) throw new InvalidRequestError(`stop has ${list.length} strings; at most ${MAX_STOP}`);
  for (const s of list) {
    if (typeof s !== 'string' || s.length === 0) throw new InvalidRequestError('stop must be a non-empty string or an array of them');
  }
  return list;
}

/** @param {any} v @param {string} name @param {boolean} dflt */
function optBool(v, name, dflt) {
  if (v === undefined || v === null) return dflt;
  if (typeof v !== 'boolean') throw new InvalidRequestError(`${name} must be a boolean, got ${JSON.stringify(v)}`);
  return v;
}

/** @param {any} v @param {string} name @param {number} lo @param {number} hi @param {{openLow?: boolean}} [o] */
function numIn(v, name, lo, hi, o = {}) {
  if (typeof v !== 'number' || !Number.isFinite(v) || v > hi || v < lo || (o.openLow && v === lo)) {
    throw new InvalidRequestError(`${name} must be a number in ${o.openLow ? '(' : '['}${lo}, ${hi}], got ${JSON.stringify(v)}`);
  }
  return v;
}

/** @param {any} v @param {string} name @param {number} lo @param {number} hi */
function intIn(v, name, lo, hi) {
  if (!Number.isInteger(v) || v < lo || v > hi) {
    throw new InvalidRequestError(`${name} must be an integer in [${lo}, ${hi}], got ${JSON.stringify(v)}`);
  }
  return v;
}

// ---------------------------------------------------------------------------------------------
// Responses

/**
 * @typedef {object} GenerationStats
 * @property {number} prompt_tokens
 * @property {number} cached_prompt_tokens  prompt tokens whose KV came from the previous turn
 * @property {number} completion_tokens
 * @property {number} prefill_s            time spent in the prefill run(s)
 * @property {number} decode_s             time spent decoding after the first token
 * @property {number} time_to_first_token_s
 * @property {number} e2e_s
 */

/** @param {GenerationStats} s @param {Record<string, unknown>} [extra] */
export function makeUsage(s, extra = {}) {
  const prefilled = s.prompt_tokens - s.cached_prompt_tokens;
  const decoded = Math.max(0, s.completion_tokens - 1);
  return {
    prompt_tokens: s.prompt_tokens,
    completion_tokens: s.completion_tokens,
    total_tokens: s.prompt_tokens + s.completion_tokens,
    prompt_tokens_details: { cached_tokens: s.cached_prompt_tokens },
    extra: {
      prefill_tokens: prefilled,
      decode_tokens: decoded,
      prefill_tokens_per_s: s.prefill_s > 0 ? prefilled / s.prefill_s : 0,
      decode_tokens_per_s: s.decode_s > 0 ? decoded / s.decode_s : 0,
      time_to_first_token_s: s.time_to_first_token_s,
      time_per_output_token_s: decoded > 0 ? s.decode_s / decoded : 0,
      e2e_latency_s: s.e2e_s,
      ...extra,
    },
  };
}

/** @param {{id: string, created: number, model: string}} meta @param {{role?: string, content?: string}} delta @param {string|null} finishReason */
export function makeChunk(meta, delta, finishReason = null) {
  return {
    id: meta.id, object: 'chat.completion.chunk', created: meta.created, model: meta.model,
    choices: [{ index: 0, delta, logprobs: null, finish_reason: finishReason }],
  };
}

/** The last chunk of a stream: no choices, the usage (as OpenAI's stream_options.include_usage). */
export function makeUsageChunk(/** @type {{id: string, created: number, model: string}} */ meta, /** @type {any} */ usage) {
  return { id: meta.id, object: 'chat.completion.chunk', created: meta.created, model: meta.model, choices: [], usage };
}

/** @param {{id: string, created: number, model: string}} meta @param {string} content @param {string} finishReason @param {any} usage */
export function makeCompletion(meta, content, finishReason, usage) {
  return {
    id: meta.id, object: 'chat.completion', created: meta.created, model: meta.model,
    choices: [{ index: 0, message: { role: 'assistant', content }, logprobs: null, finish_reason: finishReason }],
    usage,
  };
}

/**
 * Fold a stream of chunks into one chat.completion (what create({stream: false}) returns).
 * @param {AsyncIterable<any>} chunks
 */
export async function collectCompletion(chunks) {
  let content = '';
  let finish = 'stop';
  /** @type {any} */
  let last = null;
  let usage = null;
  for await (const c of chunks) {
    last = c;
    if (c.usage) usage = c.usage;
    for (const ch of c.choices) {
      if (ch.delta && ch.delta.content) content += ch.delta.content;
      if (ch.finish_reason) finish = ch.finish_reason;
    }
  }
  if (!last) throw new InvalidRequestError('the engine produced no output');
  return makeCompletion(last, content, finish, usage);
}
