// Greedy ids of a bundle's WASM graph in Node with onnxruntime-web's own wasm build (no browser): tells a
// browser/engine problem from an onnxruntime-web one. Weights are read tensor by tensor from the shard files
// (the same duck-typed Uint8Array the engine's BlobFile is).
//   node benchmarks/llama1b_node_ortweb.mjs BUNDLE '[1, 400, 30]' 5   -> prints the ids
import * as ort from '/work/main/web/node_modules/onnxruntime-web/dist/ort.node.min.mjs';
import fs from 'fs';
ort.env.wasm.numThreads = 2;
const dir = process.argv[2] + '/onnx/';
const m = JSON.parse(fs.readFileSync(process.argv[2] + '/manifest.json'));
const v = m.variants.q4;
class LazyFile extends Uint8Array {
  constructor(path) { super(0); this.fd = fs.openSync(path, 'r'); this.size = fs.fstatSync(this.fd).size; }
  get byteLength() { return this.size; }
  subarray(a, b) { const out = new Uint8Array(b - a); fs.readSync(this.fd, out, 0, b - a, a); return out; }
}
const s = await ort.InferenceSession.create(fs.readFileSync(process.argv[2] + '/' + v.wasm_model), {executionProviders: ['wasm'], graphOptimizationLevel: 'all',
  externalData: v.wasm_external_data.map((p) => ({ path: p.split('/').pop(), data: new LazyFile(process.argv[2] + '/' + p) }))});
const prompt = JSON.parse(process.argv[3]); const n = Number(process.argv[4]);
const c = m.config; const L = c.num_hidden_layers, H = c.num_key_value_heads, D = c.head_dim;
let past = {}; for (let i = 0; i < L; i++) for (const k of ['key', 'value']) past[`past_key_values.${i}.${k}`] = new ort.Tensor('float32', new Float32Array(0), [1, H, 0, D]);
let ids = prompt, len = 0; const out = [];
for (let t = 0; t < n; t++) {
  const feeds = { input_ids: new ort.Tensor('int64', BigInt64Array.from(ids, BigInt), [1, ids.length]),
    attention_mask: new ort.Tensor('int64', new BigInt64Array(len + ids.length).fill(1n), [1, len + ids.length]),
    position_ids: new ort.Tensor('int64', BigInt64Array.from(ids, (_, i) => BigInt(len + i)), [1, ids.length]), ...past };
  const r = await s.run(feeds);
  const V = r.logits.dims[2]; const row = r.logits.data.subarray((ids.length - 1) * V, ids.length * V);
  let best = 0; for (let j = 1; j < V; j++) if (row[j] > row[best]) best = j;
  out.push(best); len += ids.length; ids = [best];
  past = {}; for (let i = 0; i < L; i++) for (const k of ['key', 'value']) past[`past_key_values.${i}.${k}`] = r[`present.${i}.${k}`];
}
console.log(JSON.stringify(out));
