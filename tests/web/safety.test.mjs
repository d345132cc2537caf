// Issue 13 (integrity and safety), the pure parts: manifest paths that would leave the bundle are refused
// by the engine's parser, and a client whose worker is gone rejects every call instead of hanging.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseManifest, unsafePath } from '../../web/engine/manifest.js';
import { RpcClient } from '../../web/engine/rpc.js';
import { ManifestError, NotLoadedError } from '../../web/engine/errors.js';

function manifest(extraPath) {
  const files = [{ path: 'tokenizer.json', size: 1, sha256: 'a' }, { path: 'onnx/model_q4.onnx', size: 2, sha256: 'b' }];
  if (extraPath !== undefined) files.push({ path: extraPath, size: 3, sha256: 'c' });
  return {
    format: 'webllama-bundle', schema_version: 1, name: 't', context_length: 64,
    config: { num_hidden_layers: 1, num_key_value_heads: 1, vocab_size: 10 },
    tokenizer: { file: 'tokenizer.json' }, variants: { q4: { model: 'onnx/model_q4.onnx', external_data: [] } }, files,
  };
}

const BAD = ['../x', '../../etc/passwd', 'onnx/../../x', '/etc/passwd', 'C:/x', 'https://evil.example/x', 'a\\b', 'a\0b', '', 'a//b', './a'];

test('every path that could leave the bundle is refused by parseManifest', () => {
  assert.equal(parseManifest(manifest('onnx/model_q4.onnx_data'), 'u').name, 't');
  for (const p of BAD) {
    assert.ok(unsafePath(p), `accepted ${JSON.stringify(p)}`);
    assert.throws(() => parseManifest(manifest(p), 'u'), (e) => e instanceof ManifestError && /file path/.test(e.message), p);
  }
  assert.equal(unsafePath('onnx/model_q4.onnx_data_1'), null);
});

test('after close() (terminate) calls in flight and later calls reject at once', async () => {
  const sent = [];
  const port = { postMessage: (m) => sent.push(m), addEventListener: () => {} };
  const rpc = new RpcClient(port);
  const inFlight = rpc.call('generateTokens', [[1], {}]);
  rpc.close(new NotLoadedError('the engine was terminated; create a new one with createEngine()'));
  await assert.rejects(inFlight, NotLoadedError);
  await assert.rejects(rpc.call('encode', ['x']), /terminated/);
  const stream = rpc.stream('chatCompletion', [{}]);
  await assert.rejects(async () => { for await (const _ of stream) { /* nothing arrives */ } }, NotLoadedError);
  assert.equal(sent.length, 1); // nothing is posted to a dead worker
});
