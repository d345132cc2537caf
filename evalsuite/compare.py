"""Compare two runs item by item: scores with stderr, delta, agreement and a paired significance test.

Pure functions over what `webllama eval` writes (results.json + samples/<task>.jsonl):
- binary per-item metrics (acc, acc_norm, exact_match): McNemar's exact test on the discordant pairs;
- anything else (truthfulqa_mc2 acc, perplexities, bits_per_byte): a paired bootstrap of the task's
  aggregate (same resampled items in both runs), two-sided percentile p-value.
Agreement is the share of items where both runs made the same prediction: the chosen answer for
multiple choice, the greedy flag for loglikelihood, the (filtered) text for generation; none for perplexity.
Groups (mmlu) pool the items of their subtasks, which equals lm-eval's size-weighted group mean.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from webllama.evalsuite.errors import RunMismatch

BOOTSTRAP_ITERS = 2000
SKIP_KEYS = {"alias", "name", "sample_len", " "}


@dataclass(frozen=True)
class MetricComparison:
    task: str
    metric: str  # "acc,none"
    a: float | None
    a_stderr: float | None
    b: float | None
    b_stderr: float | None
    delta: float | None  # b - a
    n: int  # paired items
    agreement: float | None
    test: str | None  # "mcnemar-exact" | "paired-bootstrap"
    p_value: float | None


# ------------------------------------------------------------------------------------------- statistics


def mcnemar_exact(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided exact McNemar p-value for paired binary outcomes (binomial test on discordant pairs)."""
    n01 = int(np.sum((a == 1) & (b == 0)))
    n10 = int(np.sum((a == 0) & (b == 1)))
    n = n01 + n10
    if n == 0:
        return 1.0
    k = min(n01, n10)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2.0**n
    return min(1.0, 2.0 * tail)


def _agg_mean(x: np.ndarray) -> float:
    return float(np.mean(x))


def _agg_perplexity(x: np.ndarray) -> float:
    return float(math.exp(-np.mean(x)))


def _agg_weighted_perplexity(x: np.ndarray) -> float:
    return float(math.exp(-x[:, 0].sum() / x[:, 1].sum()))


def _agg_bits_per_byte(x: np.ndarray) -> float:
    return float(-x[:, 0].sum() / x[:, 1].sum() / math.log(2))


AGGREGATIONS = {
    "perplexity": _agg_perplexity,
    "word_perplexity": _agg_weighted_perplexity,
    "byte_perplexity": _agg_weighted_perplexity,
    "bits_per_byte": _agg_bits_per_byte,
}


def paired_bootstrap(a: np.ndarray, b: np.ndarray, agg, iters: int = BOOTSTRAP_ITERS, seed: int = 0) -> float:
    """Two-sided p-value that agg(b) - agg(a) differs from 0, resampling the same items in both runs."""
    rng = np.random.default_rng(seed)
    n = len(a)
    deltas = np.empty(iters)
    for i in range(iters):
        idx = rng.integers(0, n, n)
        deltas[i] = agg(b[idx]) - agg(a[idx])
    if np.all(deltas == 0):
        return 1.0
    return float(min(1.0, 2.0 * min(np.mean(deltas <= 0), np.mean(deltas >= 0))))


# ------------------------------------------------------------------------------------------- per-item data


def _prediction(filtered):
    """What the model 'answered' for one sample, comparable across runs; None for pure scores."""
    if isinstance(filtered, list) and filtered and isinstance(filtered[0], list | tuple):
        if len(filtered) > 1:  # multiple choice: [(ll, greedy), ...] -> argmax
            return int(np.argmax([float(x[0]) for x in filtered]))
        return bool(filtered[0][1])  # loglikelihood: greedy flag
    if isinstance(filtered, list) and len(filtered) == 1 and isinstance(filtered[0], str):
        return filtered[0]
    if isinstance(filtered, str):
        return filtered
    return None


def _items(samples: list[dict], metric: str) -> dict:
    """(doc_id, filter) -> (metric value, prediction) for the samples of one task and metric name."""
    name, _, filt = metric.partition(",")
    out = {}
    for s in samples:
        if s.get("filter", "none") != filt or name not in s:
            continue
        out[(s["doc_id"], filt)] = (s[name], _prediction(s.get("filtered_resps")))
    return out


def _pooled(task: str, results: dict, samples: dict, metric: str) -> dict:
    names = [task] if task in samples else _leaves(task, results)
    out = {}
    for t in names:
        out.update({(t, *k): v for k, v in _items(samples.get(t, []), metric).items()})
    return out


def _leaves(group: str, results: dict) -> list[str]:
    subs = results.get("group_subtasks", {}).get(group, [])
    out = []
    for s in subs:
        out += _leaves(s, results) if s in results.get("group_subtasks", {}) else [s]
    return out


# ------------------------------------------------------------------------------------------- comparison


def compare_metric(task: str, metric: str, res_a: tuple, res_b: tuple) -> MetricComparison:
    (ra, sa), (rb, sb) = res_a, res_b
    va, vb = ra["results"][task].get(metric), rb["results"][task].get(metric)
    err_key = metric.replace(",", "_stderr,", 1)
    ia, ib = _pooled(task, ra, sa, metric), _pooled(task, rb, sb, metric)
    keys = sorted(set(ia) & set(ib), key=str)
    agreement, test, p = None, None, None
    if keys:
        preds = [(ia[k][1], ib[k][1]) for k in keys]
        if all(x is not None for x, _ in preds):
            agreement = float(np.mean([x == y for x, y in preds]))
        test, p = _significance(metric.partition(",")[0], [ia[k][0] for k in keys], [ib[k][0] for k in keys])
    return MetricComparison(
        task,
        metric,
        _num(va),
        _num(ra["results"][task].get(err_key)),
        _num(vb),
        _num(rb["results"][task].get(err_key)),
        None if _num(va) is None or _num(vb) is None else _num(vb) - _num(va),
        len(keys),
        agreement,
        test,
        p,
    )


def _significance(name: str, a: list, b: list) -> tuple[str, float]:
    xa, xb = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if xa.ndim == 1 and np.isin(xa, (0, 1)).all() and np.isin(xb, (0, 1)).all():
        return "mcnemar-exact", mcnemar_exact(xa, xb)
    return "paired-bootstrap", paired_bootstrap(xa, xb, AGGREGATIONS.get(name, _agg_mean))


def _num(v) -> float | None:
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def compare_runs(run_a: tuple[dict, dict], run_b: tuple[dict, dict]) -> list[MetricComparison]:
    """Every (task, metric) the two runs share, in task order."""
    ta, tb = run_a[0]["results"], run_b[0]["results"]
    common = [t for t in ta if t in tb]
    if not common:
        raise RunMismatch(f"the runs share no task (A: {', '.join(ta)}; B: {', '.join(tb)})")
    out = []
    for task in common:
        for metric in ta[task]:
            if metric in SKIP_KEYS or "_stderr," in metric or "," not in metric or metric not in tb[task]:
                continue
            out.append(compare_metric(task, metric, run_a, run_b))
    return out


def to_table(rows: list[MetricComparison]) -> str:
    head = ("task", "metric", "A", "B", "delta", "n", "agree", "test", "p")
    lines = [head]
    for r in rows:
        lines.append(
            (
                r.task,
                r.metric,
                _pm(r.a, r.a_stderr),
                _pm(r.b, r.b_stderr),
                _f(r.delta, "+.4f"),
                str(r.n),
                _f(r.agreement, ".3f"),
                r.test or "-",
                _f(r.p_value, ".4g"),
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines)


def _f(v, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def _pm(v, err) -> str:
    return "-" if v is None else (f"{v:.4f}" if err is None else f"{v:.4f}±{err:.4f}")


def to_json(rows: list[MetricComparison]) -> list[dict]:
    return [asdict(r) for r in rows]
