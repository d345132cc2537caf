"""compare: McNemar exact, paired bootstrap, pooling of groups, the table."""

from __future__ import annotations

import math

import numpy as np
import pytest
from webllama.evalsuite.compare import _agg_weighted_perplexity, compare_runs, mcnemar_exact, paired_bootstrap, to_table


def test_mcnemar_exact_known_values():
    # 0 vs 6 discordant pairs: p = 2 * 0.5**6
    a = np.array([1] * 6 + [0] * 4)
    b = np.array([0] * 6 + [0] * 4)
    assert mcnemar_exact(a, b) == pytest.approx(2 * 0.5**6)
    assert mcnemar_exact(a, a) == 1.0
    # 3 vs 5 discordant: p = 2 * P(X <= 3), X ~ Bin(8, .5) = 2 * 93/256
    a = np.array([1, 1, 1, 0, 0, 0, 0, 0])
    b = np.array([0, 0, 0, 1, 1, 1, 1, 1])
    assert mcnemar_exact(a, b) == pytest.approx(2 * 93 / 256)


def test_paired_bootstrap_detects_a_shift_and_not_noise():
    rng = np.random.default_rng(1)
    a = rng.normal(size=200)
    assert paired_bootstrap(a, a + 0.5, np.mean) < 0.01
    assert paired_bootstrap(a, a + rng.normal(scale=1e-3, size=200), np.mean) > 0.01
    assert paired_bootstrap(a, a.copy(), np.mean) == 1.0
    pairs = np.array([[-10.0, 5], [-20.0, 8]])
    assert _agg_weighted_perplexity(pairs) == pytest.approx(math.exp(30 / 13))


def _run(acc: list[int], ppl_ll: list[float], mc2: list[float]):
    results = {
        "results": {
            "arc_easy": {"alias": "arc_easy", "acc,none": float(np.mean(acc)), "acc_stderr,none": 0.1},
            "wikitext": {"word_perplexity,none": 1.0, "word_perplexity_stderr,none": "N/A"},
            "truthfulqa_mc2": {"acc,none": float(np.mean(mc2)), "acc_stderr,none": 0.05},
            "mmlu": {"acc,none": float(np.mean(acc)), "acc_stderr,none": 0.1},
        },
        "group_subtasks": {"mmlu": ["mmlu_stem"], "mmlu_stem": ["mmlu_x"]},
    }
    samples = {
        "arc_easy": [
            {"doc_id": i, "filter": "none", "acc": v, "filtered_resps": [[-1.0, False], [-2.0 + v * 3, False]]}
            for i, v in enumerate(acc)
        ],
        "mmlu_x": [
            {"doc_id": i, "filter": "none", "acc": v, "filtered_resps": [[-1.0, False], [-2.0 + v * 3, False]]}
            for i, v in enumerate(acc)
        ],
        "wikitext": [
            {"doc_id": i, "filter": "none", "word_perplexity": [ll, 10], "filtered_resps": [ll]} for i, ll in enumerate(ppl_ll)
        ],
        "truthfulqa_mc2": [
            {"doc_id": i, "filter": "none", "acc": v, "filtered_resps": [[-1.0, False]] * 3} for i, v in enumerate(mc2)
        ],
    }
    return results, samples


def test_compare_runs_picks_the_right_test_per_metric():
    a = _run([1, 0, 1, 1, 0, 0], [-30.0, -40.0, -35.0], [0.2, 0.3, 0.4])
    b = _run([1, 1, 1, 1, 0, 1], [-31.0, -40.5, -36.0], [0.25, 0.35, 0.45])
    rows = {(r.task, r.metric): r for r in compare_runs(a, b)}
    arc = rows[("arc_easy", "acc,none")]
    assert arc.test == "mcnemar-exact" and arc.n == 6 and arc.delta == pytest.approx(2 / 6)
    assert arc.agreement == pytest.approx(4 / 6) and arc.p_value == pytest.approx(0.5)
    assert rows[("mmlu", "acc,none")].n == 6  # group: pooled subtask items
    wt = rows[("wikitext", "word_perplexity,none")]
    assert wt.test == "paired-bootstrap" and wt.agreement is None and wt.a_stderr is None
    assert rows[("truthfulqa_mc2", "acc,none")].test == "paired-bootstrap"
    table = to_table(list(rows.values()))
    assert "arc_easy" in table and "0.6667±0.1000" not in table.split("\n")[0]
