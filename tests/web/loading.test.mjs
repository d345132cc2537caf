// Bounded loading: the incremental SHA-256 that verifies a shard while it streams into the cache, and the
// one-line refusal of a WASM load the 4 GiB wasm32 heap cannot hold.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { Sha256 } from '../../web/engine/sha256.js';
import { checkWasmHeap, WASM_HEAP_BYTES } from '../../web/engine/loader.js';
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

test('wasm heap: a 1B int8 model fits at 2k context, not at 32k, and the error names the sizes and what fits', () => {
  const weights = [{ path: 'onnx/model_q4_wasm.onnx_data', size: 1_500_000_000, sha256: 'x' }];
  checkWasmHeap(llama1b(2048), 'q4', weights);
  assert.throws(() => checkWasmHeap(llama1b(32768), 'q4', weights), (e) => {
    assert.ok(e instanceof OutOfMemoryError);
    assert.match(e.message, /llama-1b-shaped \(q4\) needs about 7\.90 GiB of WASM memory \(1\.40 GiB of weights \+ 6\.00 GiB of KV cache at its 32768-token context\)/);
    assert.match(e.message, /fits with a context of at most \d+ tokens/);
    assert.ok(e.data.fit_context > 2048 && e.data.fit_context < 32768);
    assert.equal(e.data.heap_bytes, WASM_HEAP_BYTES);
    return true;
  });
  const huge = [{ path: 'w', size: 5 * 2 ** 30, sha256: 'y' }];
  assert.throws(() => checkWasmHeap(llama1b(2048), 'q4', huge), /needs about \d\.\d\d GiB .*a model of at most 0\.\d\dB parameters fits at this context; use a WebGPU device for this one$/);
});
