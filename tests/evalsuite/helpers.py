"""Shared helpers for the evalsuite backend tests."""

from __future__ import annotations

import math
from pathlib import Path

FAST_GEN = {"max_gen_toks": 16}  # keeps gsm8k cheap; the stop-string logic is the same


def evaluate(lm, out: Path, data_dir: Path, tasks, limit=2, backend="native", model="m"):
    from webllama.evalsuite.run import EvalRequest, run_eval

    req = EvalRequest(
        model=str(model),
        backend=backend,
        tasks=tuple(tasks),
        output=str(out),
        limit=limit,
        data_dir=str(data_dir),
        gen_kwargs=FAST_GEN,
        bootstrap_iters=0,
    )
    results = run_eval(req, lm)
    results["_out"] = str(out)
    return results


def scores(results: dict) -> dict[tuple[str, int, str], object]:
    """(task, doc_id, filter) -> filtered response (lls, greedy flags or text) for every logged sample."""
    out = {}
    for task, rows in results["samples"].items():
        for r in rows:
            out[(task, r["doc_id"], r["filter"])] = r["filtered_resps"]
    return out


def close(a, b, rel=1e-4, abs_=1e-3) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(close(x, y, rel, abs_) for x, y in zip(a, b, strict=True))
    if isinstance(a, bool) or isinstance(b, bool) or isinstance(a, str) or isinstance(b, str):
        return a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(float(a), float(b), rel_tol=rel, abs_tol=abs_)
    return a == b


def choice(resp):
    """What a sample answered: the picked choice (multiple choice), the greedy flag (loglikelihood), the
    text (generation); None for a bare log-likelihood (perplexity), which only `close` can compare."""
    if isinstance(resp, list) and resp and isinstance(resp[0], (list, tuple)):
        if len(resp) > 1:
            lls = [float(x[0]) for x in resp]
            return lls.index(max(lls))
        return bool(resp[0][1])
    if isinstance(resp, list) and resp and isinstance(resp[0], str):
        return resp
    if isinstance(resp, str):
        return resp
    return None
