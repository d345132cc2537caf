import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseManifest, pickVariant, variantFiles, variantGraph } from '../../web/engine/manifest.js';
import { ManifestError, VariantError } from '../../web/engine/errors.js';
import { APPEND_STEP, AppendKvCache, FixedKvCache, GrowingKvCache, kvCacheMode, maxPositions } from '../../web/engine/kv_cache.js';

function manifest(variants = ['fp32', 'q4', 'q4f16']) {
  const v = {};
  const files = [{ path: 'tokenizer.json', size: 1, sha256: 'a' }, { path: 'tokenizer_config.json', size: 1, sha256: 'b' }];
  for (const n of variants) {
    const base = `onnx/model${n === 'fp32' ? '' : '_' + n}.onnx`;
    v[n] = { model: base, external_data: [base + '_data'], requires_webgpu_features: n.endsWith('f16') ? ['shader-f16'] : [], kv_dtype: 'float32' };
    files.push({ path: base, size: 2, sha256: 'c' }, { path: base + '_data', size: 3, sha256: 'd' });
  }
  return {
    format: 'webllama-bundle', schema_version: 1, name: 't', context_length: 64,
    config: { num_hidden_layers: 2, num_key_value_heads: 2, vocab_size: 10, hidden_size: 8, num_attention_heads: 2, head_dim: 4 },
    tokenizer: { file: 'tokenizer.json', config_file: 'tokenizer_config.json', eos_token_ids: [2] }, variants: v, files,
  };
}

test('valid manifests parse; broken ones name the problem', () => {
  assert.equal(parseManifest(manifest(), 'u').name, 't');
  assert.throws(() => parseManifest({ ...manifest(), schema_version: 2 }, 'u'), (e) => e instanceof ManifestError && /schema_version 2/.test(e.message));
  assert.throws(() => parseManifest({ ...manifest(), format: 'x' }, 'u'), ManifestError);
  const m = manifest();
  m.files = m.files.filter((f) => f.path !== 'onnx/model_q4.onnx_data');
  assert.throws(() => parseManifest(m, 'u'), /model_q4.onnx_data is not in files/);
});

test('variant choice follows the adapter', () => {
  const m = manifest();
  assert.deepEqual(pickVariant(m, { gpuFeatures: ['shader-f16'] }).variant, 'q4f16');
  assert.deepEqual(pickVariant(m, { gpuFeatures: [] }), { variant: 'q4', provider: 'webgpu', reason: 'best variant for this WebGPU adapter' });
  assert.equal(pickVariant(m, { gpuFeatures: null }).provider, 'wasm');
  assert.equal(pickVariant(m, { gpuFeatures: null }).variant, 'q4');
  assert.equal(pickVariant(manifest(['fp32']), { gpuFeatures: [] }).variant, 'fp32');
  assert.equal(pickVariant(m, { gpuFeatures: ['shader-f16'], device: 'wasm' }).provider, 'wasm');
});

test('forced variants', () => {
  const m = manifest();
  assert.deepEqual(pickVariant(m, { variant: 'fp32', gpuFeatures: [] }).variant, 'fp32');
  assert.equal(pickVariant(m, { variant: 'q4f16', gpuFeatures: [] }).provider, 'wasm');
  assert.throws(() => pickVariant(m, { variant: 'fp16', gpuFeatures: [] }), VariantError);
  assert.throws(() => pickVariant(m, { device: 'webgpu', gpuFeatures: null }), VariantError);
});

test('variant files: tokenizer first, then graph and weights', () => {
  assert.deepEqual(variantFiles(manifest(), 'q4').map((f) => f.path),
    ['tokenizer.json', 'tokenizer_config.json', 'onnx/model_q4.onnx', 'onnx/model_q4.onnx_data']);
});

test('int4 on WASM runs the WASM graph: its own int8 shards, or (older bundles) the same weight files', () => {
  const m = manifest();
  m.variants.q4.wasm_model = 'onnx/model_q4_wasm.onnx';
  assert.throws(() => parseManifest(m, 'u'), /model_q4_wasm.onnx is not in files/);
  m.files.push({ path: 'onnx/model_q4_wasm.onnx', size: 2, sha256: 'e' });
  parseManifest(m, 'u');
  const q4 = ['onnx/model_q4.onnx_data'];
  assert.deepEqual(variantGraph(m, 'q4', 'wasm'), { model: 'onnx/model_q4_wasm.onnx', unpacked: true, externalData: q4 });
  assert.deepEqual(variantGraph(m, 'q4', 'webgpu'), { model: 'onnx/model_q4.onnx', unpacked: false, externalData: q4 });
  assert.deepEqual(variantGraph(m, 'q4', 'wasm', false), { model: 'onnx/model_q4.onnx', unpacked: false, externalData: q4 });
  assert.deepEqual(variantGraph(m, 'fp32', 'wasm'), { model: 'onnx/model.onnx', unpacked: false, externalData: ['onnx/model.onnx_data'] });
  assert.deepEqual(variantFiles(m, 'q4', 'wasm').map((f) => f.path),
    ['tokenizer.json', 'tokenizer_config.json', 'onnx/model_q4_wasm.onnx', 'onnx/model_q4.onnx_data']);
  m.variants.q4.wasm_external_data = ['onnx/model_q4_wasm.onnx_data'];
  assert.throws(() => parseManifest(m, 'u'), /model_q4_wasm.onnx_data is not in files/);
  m.files.push({ path: 'onnx/model_q4_wasm.onnx_data', size: 4, sha256: 'f' });
  parseManifest(m, 'u');
  assert.deepEqual(variantFiles(m, 'q4', 'wasm').map((f) => f.path),
    ['tokenizer.json', 'tokenizer_config.json', 'onnx/model_q4_wasm.onnx', 'onnx/model_q4_wasm.onnx_data']);
  assert.deepEqual(variantFiles(m, 'q4', 'webgpu').map((f) => f.path),
    ['tokenizer.json', 'tokenizer_config.json', 'onnx/model_q4.onnx', 'onnx/model_q4.onnx_data']);
});

class FakeTensor {
  constructor(type, data, dims) { Object.assign(this, { type, data, dims, location: 'cpu' }); }
  async getData() { return this.data; }
}

test('kv cache: prefix, update, trim', async () => {
  const kv = new GrowingKvCache({ Tensor: FakeTensor }, { numLayers: 1, numKvHeads: 2, headDim: 2, dtype: 'float32' });
  assert.deepEqual(kv.past['past_key_values.0.key'].dims, [1, 2, 0, 2]);
  // (1, H=2, L=3, D=2): head h, position p, dim d -> value 100h + 10p + d
  const data = Float32Array.from({ length: 12 }, (_, i) => 100 * Math.floor(i / 6) + 10 * Math.floor((i % 6) / 2) + (i % 2));
  kv.update({ 'present.0.key': new FakeTensor('float32', data, [1, 2, 3, 2]), 'present.0.value': new FakeTensor('float32', data, [1, 2, 3, 2]) }, [5, 6, 7]);
  assert.equal(kv.length, 3);
  assert.equal(kv.commonPrefix([5, 6, 9]), 2);
  await kv.trim(2);
  const t = kv.past['past_key_values.0.key'];
  assert.deepEqual(t.dims, [1, 2, 2, 2]);
  assert.deepEqual(Array.from(t.data), [0, 1, 10, 11, 100, 101, 110, 111]);
  assert.deepEqual(kv.tokens, [5, 6]);
  await kv.trim(0);
  assert.equal(kv.length, 0);
});

// A GPUDevice stand-in holding buffers as bytes: enough to check what the fixed cache asks the GPU to do.
class FakeGpuBuffer {
  constructor(size) { this.bytes = new Uint8Array(size); this.size = size; this.destroyed = false; }
  destroy() { this.destroyed = true; }
}
function fakeDevice() {
  const submitted = [];
  return {
    submitted,
    createBuffer: ({ size, usage }) => { assert.equal(size % 16, 0); assert.ok(usage & 0x80); return new FakeGpuBuffer(size); },
    createCommandEncoder: () => {
      const ops = [];
      return {
        copyBufferToBuffer: (src, so, dst, doff, n) => ops.push(() => { assert.ok(!src.destroyed); dst.bytes.set(src.bytes.subarray(so, so + n), doff); }),
        finish: () => ops,
      };
    },
    queue: { submit: (cmds) => { for (const ops of cmds) for (const op of ops) op(); submitted.push(cmds.length); } },
  };
}
const fakeOrt = { Tensor: { fromGpuBuffer: (buffer, { dataType, dims }) => ({ buffer, type: dataType, dims, location: 'gpu-buffer' }) } };

test('fixed kv cache: one buffer bound as past and present, doubling keeps every head\'s positions', async () => {
  const device = fakeDevice();
  const shape = { numLayers: 1, numKvHeads: 2, headDim: 4, dtype: 'float32' };
  const kv = new FixedKvCache(fakeOrt, device, shape, { limit: 10, capacity: 2 });
  await kv.allocate(kv.firstCapacity);
  assert.deepEqual(kv.feeds()['past_key_values.0.key'].dims, [1, 2, 2, 4]);
  assert.equal(kv.fetches()['present.0.value'], kv.feeds()['past_key_values.0.value']); // the same tensor both ways
  await kv.reserve(2);
  assert.equal(kv.capacity, 2);
  // the "run" writes positions 0, 1 of both heads: value 100h + 10p + d
  const write = (cap, n) => {
    const f = new Float32Array(kv.buffers['past_key_values.0.key'].bytes.buffer);
    for (let h = 0; h < 2; h++) for (let p = 0; p < n; p++) for (let d = 0; d < 4; d++) f[(h * cap + p) * 4 + d] = 100 * h + 10 * p + d;
  };
  write(2, 2);
  kv.update({}, [7, 8]);
  const old = kv.buffers['past_key_values.0.key'];
  await kv.reserve(1); // 3 > 2: grows to 4, copies 2 positions per head
  assert.equal(kv.capacity, 4);
  assert.equal(kv.growths, 1);
  assert.ok(old.destroyed);
  const f = new Float32Array(kv.buffers['past_key_values.0.key'].bytes.buffer);
  assert.deepEqual(Array.from(f.subarray(0, 8)), [0, 1, 2, 3, 10, 11, 12, 13]);
  assert.deepEqual(Array.from(f.subarray(16, 24)), [100, 101, 102, 103, 110, 111, 112, 113]); // head 1 starts at capacity 4
  await kv.reserve(7); // 2 + 7 = 9 -> 8 would not hold it -> 16, capped at the context length 10
  assert.equal(kv.capacity, 10);
  await assert.rejects(kv.reserve(9), /exceed the context length 10/);
  await kv.trim(1);
  assert.deepEqual(kv.tokens, [7]);
  assert.equal(kv.capacity, 10); // trimming never reallocates
  kv.release();
  assert.equal(Object.keys(kv.buffers).length, 0);
});

test('fixed kv cache: the device limits cap the positions, a refused growth keeps the cache and names the size', async () => {
  const shape = { numLayers: 2, numKvHeads: 8, headDim: 64, dtype: 'float32' };
  const device = { ...fakeDevice(), limits: { maxStorageBufferBindingSize: 2 ** 27, maxBufferSize: 2 ** 30 } };
  assert.equal(maxPositions(device, shape), 65536); // 128 MiB / (8 heads x 64 x 4 B)
  let failNext = false;
  const scopes = [];
  device.pushErrorScope = (f) => scopes.push(f);
  device.popErrorScope = async () => { scopes.pop(); const e = failNext ? { message: 'Out of memory' } : null; failNext = false; return e; };
  const ort = { ...fakeOrt, env: { webgpu: { device: Promise.resolve(device) } } };
  const kv = await FixedKvCache.create(ort, shape, { limit: 131072, capacity: 4 });
  assert.equal(kv.limit, 65536);
  assert.equal(kv.capacity, 4);
  kv.update({}, [1, 2, 3]);
  const before = kv.buffers['past_key_values.1.value'];
  failNext = true;
  await assert.rejects(kv.reserve(2), (e) => e.name === 'OutOfMemoryError' && /8 positions need 0 MiB of GPU memory/.test(e.message));
  assert.equal(kv.capacity, 4);
  assert.equal(kv.buffers['past_key_values.1.value'], before);
  assert.ok(!before.destroyed);
  await kv.reserve(2); // the GPU has room again
  assert.equal(kv.capacity, 8);
  assert.deepEqual(scopes, []);
});

test('kv cache mode: fixed only on WebGPU over a share-buffer graph', () => {
  assert.equal(kvCacheMode({ provider: 'webgpu', shareBuffer: true }), 'fixed');
  assert.equal(kvCacheMode({ provider: 'webgpu+wasm', shareBuffer: true }), 'fixed');
  assert.equal(kvCacheMode({ provider: 'webgpu', shareBuffer: true, requested: 'growing' }), 'growing');
  assert.equal(kvCacheMode({ provider: 'wasm', shareBuffer: true }), 'growing');
  assert.equal(kvCacheMode({ provider: 'webgpu', shareBuffer: false }), 'growing');
  assert.throws(() => kvCacheMode({ provider: 'wasm', shareBuffer: true, requested: 'fixed' }), /needs a WebGPU session/);
  assert.equal(kvCacheMode({ provider: 'wasm', shareBuffer: false, append: true }), 'append');
  assert.throws(() => kvCacheMode({ provider: 'wasm', shareBuffer: false, append: true, requested: 'growing' }), /new positions only/);
});

test('appended kv cache: whole buffers fed, new positions copied in after the held ones, steps of APPEND_STEP', async () => {
  const shape = { numLayers: 1, numKvHeads: 2, headDim: 2, dtype: 'float32' };
  const kv = new AppendKvCache({ Tensor: FakeTensor }, shape, { limit: APPEND_STEP + 10 });
  assert.equal(kv.fetches(), null);
  // (1, H=2, n, D=2): head h, position p (absolute), dim d -> value 100h + 10p + d + 1 (never 0: 0 is an empty slot)
  const present = (from, n) => {
    const d = Float32Array.from({ length: 2 * n * 2 }, (_, i) => 100 * Math.floor(i / (2 * n)) + 10 * (from + Math.floor((i % (2 * n)) / 2)) + (i % 2) + 1);
    return { 'present.0.key': new FakeTensor('float32', d, [1, 2, n, 2]), 'present.0.value': new FakeTensor('float32', d, [1, 2, n, 2]) };
  };
  const at = (h, p, d) => kv.buffers['past_key_values.0.key'][(h * kv.capacity + p) * 2 + d];
  await kv.reserve(3);
  assert.equal(kv.capacity, APPEND_STEP);
  assert.deepEqual(kv.feeds()['past_key_values.0.key'].dims, [1, 2, APPEND_STEP, 2]);
  kv.update(present(0, 3), [5, 6, 7]);
  await kv.reserve(1);
  kv.update(present(3, 1), [8]);
  assert.deepEqual([at(0, 0, 0), at(0, 3, 1), at(1, 2, 0), at(1, 3, 1), at(1, 4, 0)], [1, 32, 121, 132, 0]);
  assert.throws(() => kv.update(present(4, 2), [9]), /returned 2 positions for 1 fed tokens/);
  await kv.trim(2); // shorter held length, no copy: slot 2.. is overwritten next
  assert.equal(kv.capacity, APPEND_STEP);
  kv.update(present(2, 1), [9]);
  assert.deepEqual(kv.tokens, [5, 6, 9]);
  await kv.reserve(APPEND_STEP); // 3 + 256 > 256: the next step would be 512, capped at the context (266)
  assert.equal(kv.capacity, APPEND_STEP + 10);
  assert.equal(kv.growths, 1);
  assert.deepEqual([at(0, 0, 0), at(0, 2, 1), at(1, 1, 0), at(1, 3, 0)], [1, 22, 111, 0]); // held positions carried per head
  await assert.rejects(kv.reserve(APPEND_STEP + 8), /exceed the context length 266/);
  await kv.trim(1);
  await kv.reserve(1); // a short prefix: back to one step (every run feeds the whole capacity), the held position kept
  assert.deepEqual([kv.capacity, kv.growths, at(0, 0, 0), at(1, 0, 1)], [APPEND_STEP, 2, 1, 102]);
  kv.release();
  assert.equal(kv.capacity, 0);
});
