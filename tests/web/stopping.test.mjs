import { test } from 'node:test';
import assert from 'node:assert/strict';
import { IncrementalDecoder, StopStringMatcher } from '../../web/engine/stopping.js';

test('stop strings are cut and never streamed, even across deltas', () => {
  const m = new StopStringMatcher(['END']);
  assert.deepEqual(m.push('abc E'), { emit: 'abc ', stopped: false });
  assert.deepEqual(m.push('N'), { emit: '', stopped: false });
  assert.deepEqual(m.push('Dxyz'), { emit: '', stopped: true });
  assert.equal(m.flush(), '');
});

test('a false start is released', () => {
  const m = new StopStringMatcher(['END']);
  assert.equal(m.push('E').emit, '');
  assert.equal(m.push('x').emit, 'Ex');
  assert.equal(m.push('EN').emit, '');
  assert.equal(m.flush(), 'EN');
});

test('earliest of several stops wins', () => {
  const m = new StopStringMatcher(['\n\n', 'User:']);
  assert.deepEqual(m.push('hi User: x\n\n'), { emit: 'hi ', stopped: true });
});

test('no stops: everything passes', () => {
  const m = new StopStringMatcher([]);
  assert.deepEqual(m.push('abc'), { emit: 'abc', stopped: false });
});

test('incremental decoding waits for complete characters', () => {
  // A fake byte-level decoder: ids are UTF-8 bytes.
  const dec = new IncrementalDecoder((ids) => new TextDecoder().decode(new Uint8Array(ids)));
  const bytes = Array.from(new TextEncoder().encode('aé€'));
  const out = bytes.map((b) => dec.push(b));
  assert.deepEqual(out, ['a', '', 'é', '', '', '€']);
  assert.equal(dec.flush(), '');
});
