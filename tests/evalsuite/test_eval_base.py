"""The shared scoring math of WebllamaLM, on a fake bigram model (no real model needed)."""

from __future__ import annotations

import numpy as np
import pytest
from eval_fakes import FakeLM
from lm_eval.api.instance import Instance
from lm_eval.api.model import CachingLM


def _ll_req(ctx: str, cont: str) -> Instance:
    return Instance(request_type="loglikelihood", doc={}, arguments=(ctx, cont), idx=0)


def _logp(lm: FakeLM, prev: int, tok: int) -> float:
    row = lm.table[prev].astype(np.float64)
    return float(row[tok] - row.max() - np.log(np.exp(row - row.max()).sum()))


def _expected(lm: FakeLM, ctx: list[int], cont: list[int]) -> tuple[float, bool]:
    seq = (ctx + cont)[-(lm.max_length + 1) :]
    ll, greedy = 0.0, True
    for pos in range(len(seq) - len(cont), len(seq)):
        ll += _logp(lm, seq[pos - 1], seq[pos])
        greedy &= int(np.argmax(lm.table[seq[pos - 1]])) == seq[pos]
    return ll, greedy


REQS = [
    ("Question: what?\nAnswer:", " yes"),
    ("Hi", " there, friend"),
    ("A longer context here.", " x"),
    ("Q", " no"),
    ("", "starts empty"),
]


def test_loglikelihood_matches_manual_computation():
    lm = FakeLM(batch_size=3)
    got = lm.loglikelihood([_ll_req(c, x) for c, x in REQS])
    for (ctx, cont), (ll, greedy) in zip(REQS, got, strict=True):
        if ctx:
            c, x = lm._encode_pair(ctx, cont)
        else:  # empty context: the prefix (BOS) token conditions the continuation
            c, x = [lm.prefix_token_id], lm.tok_encode(cont, add_special_tokens=False)
        want_ll, want_greedy = _expected(lm, c, x)
        assert ll == pytest.approx(want_ll, abs=1e-6)
        assert greedy == want_greedy


def test_batching_and_padding_do_not_change_scores():
    one = FakeLM(batch_size=1).loglikelihood([_ll_req(c, x) for c, x in REQS])
    many = FakeLM(batch_size=8).loglikelihood([_ll_req(c, x) for c, x in REQS])
    assert one == many  # bigram model: exact, and NaN-padded positions never reach a score


def test_greedy_flag_true_for_the_models_own_continuation():
    lm = FakeLM()
    ctx = lm.tok_encode("Go")
    cont, prev = [], ctx[-1]
    for _ in range(3):
        prev = int(np.argmax(lm.table[prev]))
        cont.append(prev)
    ((ll, greedy),) = lm._loglikelihood_tokens([(None, ctx, cont)], disable_tqdm=True)
    assert greedy and ll == pytest.approx(_expected(lm, ctx, cont)[0])


def test_long_context_is_left_truncated_like_hf():
    lm = FakeLM(max_length=16)
    ctx, cont = "x" * 40 + "abc", " end"
    ((ll, _),) = lm.loglikelihood([_ll_req(ctx, cont)])
    c, x = lm._encode_pair(ctx, cont)
    assert ll == pytest.approx(_expected(lm, c, x)[0])


def test_rolling_loglikelihood_covers_every_token_once():
    lm = FakeLM(max_length=8, batch_size=2)
    text = "The quick brown fox jumps over the lazy dog. " * 3
    (total,) = lm.loglikelihood_rolling([Instance(request_type="loglikelihood_rolling", doc={}, arguments=(text,), idx=0)])
    toks = [lm.prefix_token_id] + lm.tok_encode(text)
    want = sum(_logp(lm, a, b) for a, b in zip(toks[:-1], toks[1:], strict=True))
    assert total == pytest.approx(want, abs=1e-6)  # bigram: disjoint windows = exact full-text log-likelihood


def _gen_req(ctx: str, **kw) -> Instance:
    return Instance(request_type="generate_until", doc={}, arguments=(ctx, kw), idx=0)


def test_generate_until_respects_max_gen_toks_and_stop_strings():
    lm = FakeLM()
    free = lm.generate_until([_gen_req("Hello", until=[], max_gen_toks=12, do_sample=False)])[0]
    assert 0 < len(free) <= 12
    stop = free[3:5]
    cut = lm.generate_until([_gen_req("Hello", until=[stop], max_gen_toks=12, do_sample=False)])[0]
    assert cut == free.split(stop)[0]
    assert len(lm.generate_until([_gen_req("Hello", until=["\n\n"], max_gen_toks=3, do_sample=False)])[0]) <= 3


def test_generate_until_groups_by_gen_kwargs_and_keeps_order():
    lm = FakeLM(batch_size=2)
    reqs = [_gen_req(p, until=["."], max_gen_toks=n, do_sample=False) for p, n in [("a", 4), ("bb", 8), ("c", 4), ("dd", 8), ("e", 4)]]
    out = lm.generate_until(reqs)
    singles = [lm.generate_until([r])[0] for r in reqs]
    assert out == singles


def test_results_go_to_the_cache_as_they_are_computed(tmp_path):
    """add_partial writes each answer at once: what an interrupted run resumes from."""
    lm = FakeLM(batch_size=1, fail_after=2)
    cached = CachingLM(lm, str(tmp_path / "c.db"))
    with pytest.raises(KeyboardInterrupt):
        cached.loglikelihood([_ll_req(c, x) for c, x in REQS])
    assert len(cached.dbdict) == 2
    lm.fail_after, lm.calls = None, 0
    full = cached.loglikelihood([_ll_req(c, x) for c, x in REQS])
    assert lm.calls == len(REQS) - 2
    assert full == FakeLM().loglikelihood([_ll_req(c, x) for c, x in REQS])
