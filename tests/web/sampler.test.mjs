import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Sampler, argmax, makeRng, applyPenalties, topCandidates, nucleus, softmax, logSumExp } from '../../web/engine/sampler.js';

const params = (o = {}) => ({ temperature: 1, top_p: 1, top_k: 0, repetition_penalty: 1, presence_penalty: 0, frequency_penalty: 0, seed: 42, ...o });

test('argmax takes the first maximum, like numpy', () => {
  assert.equal(argmax([0, 3, 3, 1]), 1);
  assert.equal(argmax(new Float32Array([-5, -1, -2])), 1);
});

test('greedy at temperature 0 ignores the rng', () => {
  const s = new Sampler(params({ temperature: 0, seed: null }));
  assert.equal(s.sample(new Float32Array([0.1, 2, 0.3]), []), 1);
});

test('seeded sampling is reproducible and seeds differ', () => {
  const logits = new Float32Array(Array.from({ length: 50 }, (_, i) => Math.sin(i)));
  const run = (seed) => { const s = new Sampler(params({ seed })); return Array.from({ length: 20 }, () => s.sample(logits, [])); };
  assert.deepEqual(run(7), run(7));
  assert.notDeepEqual(run(7), run(8));
});

test('rng is uniform enough', () => {
  const r = makeRng(1);
  let sum = 0;
  for (let i = 0; i < 10000; i++) { const x = r(); assert.ok(x >= 0 && x < 1); sum += x; }
  assert.ok(Math.abs(sum / 10000 - 0.5) < 0.02);
});

test('top-k 1 is greedy', () => {
  const s = new Sampler(params({ top_k: 1 }));
  for (let i = 0; i < 10; i++) assert.equal(s.sample(new Float32Array([1, 5, 4.9]), []), 1);
});

test('top-p keeps the smallest nucleus', () => {
  const probs = softmax([10, 9, 0, -5]);
  assert.equal(nucleus(probs, 0.5), 1);
  assert.equal(nucleus(probs, 0.99), 2);
  assert.equal(nucleus(probs, 1), 4);
  const s = new Sampler(params({ top_p: 0.5 }));
  for (let i = 0; i < 20; i++) assert.equal(s.sample(new Float32Array([10, 9, 0, -5]), []), 0);
});

test('candidates are sorted by logit with stable ties', () => {
  assert.deepEqual(topCandidates([1, 3, 3, 0], 0), [1, 2, 0, 3]);
  assert.deepEqual(topCandidates([1, 3, 3, 0], 2), [1, 2]);
});

test('repetition penalty divides positive and multiplies negative logits (HF)', () => {
  const out = applyPenalties(new Float32Array([2, -2, 1]), [0, 1, 1], params({ repetition_penalty: 2 }));
  assert.deepEqual(Array.from(out), [1, -4, 1]);
  const pf = applyPenalties(new Float32Array([0, 0]), [1, 1], params({ presence_penalty: 0.5, frequency_penalty: 0.25 }));
  assert.deepEqual(Array.from(pf), [0, -1]);
});

test('a strong repetition penalty changes the greedy choice', () => {
  const s = new Sampler(params({ temperature: 0, repetition_penalty: 10 }));
  assert.equal(s.sample(new Float32Array([5, 4]), [0]), 1);
});

test('logSumExp matches the direct formula', () => {
  const row = [1, 2, 3];
  const direct = Math.log(Math.exp(1) + Math.exp(2) + Math.exp(3));
  const r = logSumExp(row);
  assert.ok(Math.abs(r.logZ - direct) < 1e-12);
  assert.equal(r.argmax, 2);
});
