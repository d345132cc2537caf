"""Runs: results/samples layout, the run record, resume after an interruption, and the CLI."""

from __future__ import annotations

import json

import pytest
from eval_fakes import FakeLM
from webllama.evalsuite.errors import RunMismatch
from webllama.evalsuite.run import EvalRequest, load_run, run_eval

TASKS = ("arc_easy", "lambada_openai", "wikitext", "gsm8k")


def _req(out, data_dir, limit=3, **kw) -> EvalRequest:
    return EvalRequest(
        model="fake",
        backend="native",
        tasks=TASKS,
        output=str(out),
        limit=limit,
        data_dir=str(data_dir),
        gen_kwargs={"max_gen_toks": 8},
        bootstrap_iters=0,
        **kw,
    )


def test_interrupted_run_resumes_from_its_cache(tmp_path, small_data_dir):
    fresh = FakeLM()
    want = run_eval(_req(tmp_path / "fresh", small_data_dir), fresh)

    with pytest.raises(KeyboardInterrupt):
        run_eval(_req(tmp_path / "run", small_data_dir), FakeLM(fail_after=3))
    assert (tmp_path / "run" / "cache" / "lm_rank0.db").is_file()
    assert not (tmp_path / "run" / "results.json").exists()

    again = FakeLM()
    got = run_eval(_req(tmp_path / "run", small_data_dir), again)
    assert 0 < again.rows < fresh.rows  # only what the interrupted run had not scored
    assert got["webllama"]["resumed_from_cache"] is True
    for task in TASKS:
        assert got["results"][task] == want["results"][task]
    assert [s["filtered_resps"] for s in got["samples"]["gsm8k"]] == [s["filtered_resps"] for s in want["samples"]["gsm8k"]]


def test_a_different_request_refuses_the_old_cache(tmp_path, small_data_dir):
    run_eval(_req(tmp_path / "run", small_data_dir, limit=1), FakeLM())
    with pytest.raises(RunMismatch, match="limit"):
        run_eval(_req(tmp_path / "run", small_data_dir, limit=2), FakeLM())


def test_results_file_and_samples(tmp_path, small_data_dir):
    run_eval(_req(tmp_path / "run", small_data_dir, limit=2), FakeLM())
    results, samples = load_run(tmp_path / "run")
    assert set(samples) == set(TASKS) and all(len(samples[t]) >= 2 for t in TASKS)
    rec = results["webllama"]
    assert rec["schema_version"] == 1 and rec["seed"] == 1234 and rec["request"]["tasks"] == list(TASKS)
    assert {"lm_eval", "torch", "transformers", "onnxruntime", "python"} <= set(rec["versions"])
    assert "samples" not in results and results["results"]["wikitext"]["bits_per_byte,none"] > 0
    assert (tmp_path / "run" / "tasks" / "arc_easy.yaml").is_file()


def test_cli_eval_resume_and_compare(tmp_path, s260_bundle, small_data_dir, capsys):
    from webllama.evalsuite.cli import main

    args = [
        "eval",
        str(s260_bundle),
        "--backend",
        "onnx",
        "--variant",
        "q4",
        "--tasks",
        "arc_easy,piqa",
        "--limit",
        "2",
        "--data-dir",
        str(small_data_dir),
    ]
    assert main(args + ["--output", str(tmp_path / "a")]) == 0
    assert "arc_easy" in capsys.readouterr().out
    assert main(args + ["--output", str(tmp_path / "a")]) == 0  # same request, same folder: from the cache
    assert "resuming" in capsys.readouterr().err
    assert main(args[:5] + ["fp32"] + args[6:] + ["--output", str(tmp_path / "b")]) == 0
    capsys.readouterr()
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    acc = next(r for r in rows if r["task"] == "piqa" and r["metric"] == "acc,none")
    assert acc["n"] == 2 and acc["test"] == "mcnemar-exact" and 0 <= acc["agreement"] <= 1
    assert (
        main(
            [
                "eval",
                str(s260_bundle),
                "--backend",
                "onnx",
                "--tasks",
                "arc_esay",
                "--data-dir",
                str(small_data_dir),
                "--output",
                str(tmp_path / "c"),
            ]
        )
        != 0
    )
    assert "Did you mean 'arc_easy'" in capsys.readouterr().err


def test_every_offline_task_end_to_end_with_the_mmlu_group(tmp_path, small_data_dir):
    """All tasks, the full 57-subject mmlu group included, through the real lm-eval pipeline (fake model)."""
    tasks = (
        "arc_easy",
        "arc_challenge",
        "hellaswag",
        "piqa",
        "winogrande",
        "lambada_openai",
        "boolq",
        "mmlu",
        "truthfulqa_mc1",
        "truthfulqa_mc2",
        "gsm8k",
        "wikitext",
    )
    req = EvalRequest(
        model="fake",
        backend="native",
        tasks=tasks,
        output=str(tmp_path / "all"),
        limit=1,
        data_dir=str(small_data_dir),
        gen_kwargs={"max_gen_toks": 4},
        bootstrap_iters=0,
    )
    res = run_eval(req, FakeLM(max_length=1024))  # characters are tokens: long prompts need room
    assert set(tasks) <= set(res["results"])
    assert len(res["group_subtasks"]["mmlu"]) == 4 and res["n-shot"]["mmlu_anatomy"] == 5
