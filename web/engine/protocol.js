// Wire protocol between the main thread (client.js / rpc.js) and the worker (handler.js).
//
// Every message is {kind, id, payload}. A call is answered by zero or more CHUNK messages (streamed
// tokens, download progress) and then exactly one DONE or ERROR. CANCEL aborts the call with that id.

/** @enum {string} */
export const Kind = Object.freeze({
  CALL: 'call', // main -> worker  payload: {method: string, args: unknown[]}
  CANCEL: 'cancel', // main -> worker  payload: null
  CHUNK: 'chunk', // worker -> main  payload: one streamed item
  DONE: 'done', // worker -> main  payload: the call's return value
  ERROR: 'error', // worker -> main  payload: WireError {name, message, data}
});

/** Methods the worker answers; the handler's dispatch table and the client use these names. */
export const Method = Object.freeze({
  LOAD: 'load', // (bundleUrl, options) chunks: LoadProgress; done: RuntimeInfo
  CHAT: 'chatCompletion', // (request) chunks: ChatCompletionChunk; done: null
  SCORE: 'scoreTokens', // ([{context, continuation}]) done: [{logprobs, greedy}]
  GENERATE: 'generateTokens', // (promptIds, {max_tokens, stop_token_ids}) done: int[]
  ENCODE: 'encode', // (text, {add_special_tokens}) done: int[]
  DECODE: 'decode', // (ids, {skip_special_tokens}) done: string
  APPLY_TEMPLATE: 'applyChatTemplate', // (messages) done: {text, ids}
  RESET: 'resetChat', // () done: null; drops the KV cache
  INFO: 'runtimeInfo', // () done: RuntimeInfo
  UNLOAD: 'unload', // () done: null
});

/**
 * @typedef {{kind: string, id: number, payload: any}} Message
 *
 * @typedef {object} LoadProgress
 * @property {'download'|'cache'|'verify'|'session'|'ready'} stage
 * @property {string} [file]            bundle-relative path of the file in flight
 * @property {number} loaded_bytes      bytes received so far (all files)
 * @property {number} total_bytes       bytes of all files of the chosen variant
 * @property {number} bytes_per_s       recent download rate (0 when read from cache)
 * @property {boolean} from_cache       the current file came from the Cache API
 * @property {string} text              human-readable one-liner
 *
 * @typedef {object} RuntimeInfo
 * @property {string} model             manifest.name
 * @property {string} variant           q4 | q4f16 | fp16 | fp32
 * @property {string} graph_file        the bundle's graph file the session runs (an int4 variant's `wasm_model` on WASM)
 * @property {string} requested_provider  webgpu | wasm
 * @property {string} execution_provider  the EP that really runs the heavy nodes (from ORT's placement log)
 * @property {Record<string, number>} placement  EP name -> node count, from the verbose log
 * @property {Record<string, string[]>} placement_ops  EP name -> the op types placed there
 * @property {string[]} placement_log   the raw placement lines
 * @property {{vendor: string, architecture: string, description: string, features: string[]}|null} adapter
 * @property {string|null} fallback_reason  why WebGPU was not used, if it was not
 * @property {{vendor: string, architecture: string, description: string, features: string[]}|null} adapter_probe  the adapter found, used or not
 * @property {number} vocab_size
 * @property {number|null} bos_token_id
 * @property {number[]} eos_token_ids
 * @property {boolean} add_bos_token
 * @property {boolean} has_chat_template
 * @property {boolean} weights_streamed  every weight shard reached onnxruntime-web as a cache-backed BlobFile
 * @property {number} num_threads     onnxruntime-web's WASM threads
 * @property {boolean} cross_origin_isolated
 * @property {string} [ort_version]   onnxruntime-web's version
 * @property {number} context_length
 * @property {string|null} context_limit_reason  why the engine caps the context below the manifest's, if it does
 * @property {number} load_s
 * @property {boolean} from_cache       every file came from the Cache API
 * @property {{mode: 'fixed'|'growing'|'append', capacity: number|null, growths: number|null}} kv_cache  the KV cache layout
 *   (kv_cache.js): fixed = GPU buffers written in place, capacity positions, re-allocated `growths` times so far
 */
