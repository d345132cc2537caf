import { test } from 'node:test';
import assert from 'node:assert/strict';
import { normalizeRequest, makeChunk, makeUsage, collectCompletion, makeUsageChunk } from '../../web/engine/openai.js';
import { InvalidRequestError } from '../../web/engine/errors.js';

const msgs = [{ role: 'user', content: 'hi' }];

test('defaults follow OpenAI', () => {
  const r = normalizeRequest({ messages: msgs });
  assert.equal(r.stream, false);
  assert.equal(r.max_tokens, null);
  assert.deepEqual(r.stop, []);
  assert.equal(r.sampling.temperature, 1);
  assert.equal(r.sampling.top_p, 1);
  assert.equal(r.sampling.top_k, 0);
  assert.equal(r.sampling.seed, null);
});

test('fields are carried over', () => {
  const r = normalizeRequest({ messages: msgs, stream: true, max_tokens: 5, temperature: 0, top_p: 0.9, top_k: 3, seed: 1, stop: 'END', repetition_penalty: 1.2 });
  assert.equal(r.max_tokens, 5);
  assert.deepEqual(r.stop, ['END']);
  assert.equal(r.sampling.top_k, 3);
  assert.equal(r.sampling.repetition_penalty, 1.2);
  assert.equal(normalizeRequest({ messages: msgs, max_completion_tokens: 7 }).max_tokens, 7);
});

test('content parts are joined', () => {
  const r = normalizeRequest({ messages: [{ role: 'user', content: [{ type: 'text', text: 'a' }, { type: 'text', text: 'b' }] }] });
  assert.equal(r.messages[0].content, 'ab');
});

test('bad requests fail with InvalidRequestError naming the field', () => {
  const bad = [
    [{}, /messages/], [{ messages: [] }, /messages/], [{ messages: [{ role: 'bot', content: 'x' }] }, /role/],
    [{ messages: msgs, temperature: 3 }, /temperature/], [{ messages: msgs, top_p: 0 }, /top_p/],
    [{ messages: msgs, max_tokens: 0 }, /max_tokens/], [{ messages: msgs, max_tokens: 1.5 }, /max_tokens/],
    [{ messages: msgs, n: 2 }, /n=2/], [{ messages: msgs, stop: [''] }, /stop/], [{ messages: msgs, stream: 'yes' }, /stream/],
    [{ messages: [{ role: 'user', content: 3 }] }, /content/],
  ];
  for (const [req, re] of bad) {
    assert.throws(() => normalizeRequest(req), (e) => e instanceof InvalidRequestError && re.test(e.message), JSON.stringify(req));
  }
});

test('usage reports prefill and decode rates', () => {
  const u = makeUsage({ prompt_tokens: 10, cached_prompt_tokens: 4, completion_tokens: 5, prefill_s: 0.5, decode_s: 2, time_to_first_token_s: 0.6, e2e_s: 2.6 });
  assert.equal(u.total_tokens, 15);
  assert.equal(u.extra.prefill_tokens, 6);
  assert.equal(u.extra.prefill_tokens_per_s, 12);
  assert.equal(u.extra.decode_tokens, 4);
  assert.equal(u.extra.decode_tokens_per_s, 2);
  assert.equal(u.prompt_tokens_details.cached_tokens, 4);
});

test('chunks fold into a completion', async () => {
  const meta = { id: 'x', created: 1, model: 'm' };
  async function* gen() {
    yield makeChunk(meta, { role: 'assistant', content: '' });
    yield makeChunk(meta, { content: 'Hel' });
    yield makeChunk(meta, { content: 'lo' });
    yield makeChunk(meta, {}, 'length');
    yield makeUsageChunk(meta, { total_tokens: 3 });
  }
  const c = await collectCompletion(gen());
  assert.equal(c.object, 'chat.completion');
  assert.equal(c.choices[0].message.content, 'Hello');
  assert.equal(c.choices[0].finish_reason, 'length');
  assert.deepEqual(c.usage, { total_tokens: 3 });
});
