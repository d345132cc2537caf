import { test } from 'node:test';
import assert from 'node:assert/strict';
import { RpcClient } from '../../web/engine/rpc.js';
import { Handler } from '../../web/engine/handler.js';
import { ContextFullError, ChecksumError, InternalError, toWire, fromWire } from '../../web/engine/errors.js';

/** A mocked engine: no onnxruntime. */
class FakeEngine {
  constructor() { this.order = []; }
  async load(url, options, { onProgress }) {
    onProgress({ stage: 'download', loaded_bytes: 5, total_bytes: 10, text: 'half' });
    return { model: url, variant: options.variant || 'q4' };
  }
  async *chatCompletion(req, { signal }) {
    for (let i = 0; i < req.n_chunks; i++) {
      if (signal.aborted) { yield { finish: 'abort' }; return; }
      yield { i };
      await new Promise((r) => setTimeout(r, 5));
    }
  }
  async scoreTokens(batch) { this.order.push('score'); await new Promise((r) => setTimeout(r, 20)); return batch.map(() => ({ logprobs: [-1], greedy: true })); }
  async generateTokens() { this.order.push('generate'); return [1, 2, 3]; }
  encode(text) { return [...text].map((c) => c.charCodeAt(0)); }
  decode() { throw new ChecksumError('bad file', { file: 'x' }); }
  runtimeInfo() { throw new Error('boom'); }
}

function pair() {
  const { port1, port2 } = new MessageChannel();
  const engine = new FakeEngine();
  const handler = new Handler(engine, port2);
  port2.onmessage = handler.onmessage;
  const client = new RpcClient(port1);
  return { client, engine, close: () => { port1.close(); port2.close(); } };
}

test('calls resolve, progress streams as chunks', async () => {
  const { client, close } = pair();
  const chunks = [];
  const info = await client.call('load', ['/b/', { variant: 'fp32' }], { onChunk: (c) => chunks.push(c) });
  assert.deepEqual(info, { model: '/b/', variant: 'fp32' });
  assert.equal(chunks[0].text, 'half');
  assert.deepEqual(await client.call('encode', ['ab']), [97, 98]);
  close();
});

test('async generators stream; breaking out cancels', async () => {
  const { client, close } = pair();
  const all = [];
  for await (const c of client.stream('chatCompletion', [{ n_chunks: 3 }])) all.push(c);
  assert.deepEqual(all, [{ i: 0 }, { i: 1 }, { i: 2 }]);
  const ctrl = new AbortController();
  const got = [];
  for await (const c of client.stream('chatCompletion', [{ n_chunks: 1000 }], { signal: ctrl.signal })) {
    got.push(c);
    if (got.length === 2) ctrl.abort();
  }
  assert.ok(got.length < 1000);
  assert.deepEqual(got.at(-1), { finish: 'abort' });
  close();
});

test('errors keep their class across the boundary', async () => {
  const { client, close } = pair();
  await assert.rejects(client.call('decode', [[1]]), (e) => e instanceof ChecksumError && e.data.file === 'x');
  await assert.rejects(client.call('runtimeInfo', []), (e) => e instanceof InternalError && /boom/.test(e.message));
  await assert.rejects(client.call('nope', []), (e) => e.name === 'InvalidRequestError' && /unknown method/.test(e.message));
  close();
});

test('model calls run one at a time, in order', async () => {
  const { client, engine, close } = pair();
  await Promise.all([client.call('scoreTokens', [[{}]]), client.call('generateTokens', [[1]])]);
  assert.deepEqual(engine.order, ['score', 'generate']);
  close();
});

test('wire format round trip', () => {
  const e = fromWire(toWire(new ContextFullError('full', { context_length: 5 })));
  assert.ok(e instanceof ContextFullError);
  assert.equal(e.data.context_length, 5);
  const oom = fromWire(toWire(new RangeError('Array buffer allocation failed')));
  assert.equal(oom.name, 'OutOfMemoryError');
});
