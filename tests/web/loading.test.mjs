// Bounded loading: the incremental SHA-256 that verifies a shard while it streams into the cache, and the
// one-line refusal of a WASM load the 4 GiB wasm32 heap cannot hold.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { Sha256 } from '../../web/engine/sha256.js';
import { wasmContextLimit, WASM_HEAP_BYTES } from '../../web/engine/loader.js';
import { OutOfMemoryError } from '../../web/engine/errors.js';

test('sha256: chunked updates equal one-shot node:crypto for every padding case', () => {
  for (const n of [0, 1, 55, 56, 63, 64, 65, 119, 120, 1000, 100003]) {
    const data = new Uint8Array(crypto.randomBytes(n));
    const h = new Sha256();
    for (let i = 0, k = 1; i < n; i += k, k = (k * 7) % 97 + 1) h.update(data.subarray(i, Math.min(n, i + k)));
    assert.equal(h.hex(), crypto.createHash('sha256').update(data).digest('hex'), `length ${n}`);
  }
});

function llama1b(contextLength) {
  return {
    name: 'llama-1b-shaped', context_length: contextLength, num_parameters: 1_235_814_400,
    config: { num_hidden_layers: 16, num_key_value_heads: 8, num_attention_heads: 32, hidden_size: 2048, head_dim: 64, vocab_size: 128256 },
  };
}

test('wasm heap: a 1B int8 model keeps 2k context, a 32k one is capped to what fits, a 5 GiB one is refused naming what fits', () => {
  const weights = [{ path: 'onnx/model_q4_wasm.onnx_data', size: 1_440_000_000, sha256: 'x' }];
  assert.equal(wasmContextLimit(llama1b(2048), 'q4', weights), 2048);
  const capped = wasmContextLimit(llama1b(131072), 'q4', weights);
  assert.ok(capped > 8192 && capped < 16384, `${capped}`);  // (4 - 0.5 - 1.34 GiB) / 192 KiB per token
  const huge = [{ path: 'w', size: 5 * 2 ** 30, sha256: 'y' }];
  assert.throws(() => wasmContextLimit(llama1b(2048), 'q4', huge), (e) => {
    assert.ok(e instanceof OutOfMemoryError);
    assert.match(e.message, /^llama-1b-shaped \(q4\) needs about 5\.\d\d GiB of WASM memory \(5\.00 GiB of weights \+ the KV cache of 256 tokens/);
    assert.match(e.message, /the wasm32 heap holds 4 GiB: a model of at most 0\.\d\dB parameters fits at these 4\.34 bytes per parameter; use a WebGPU device for this one$/);
    assert.equal(e.data.heap_bytes, WASM_HEAP_BYTES);
    return true;
  });
});
