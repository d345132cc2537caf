"""`webllama lm-eval ...`: lm-eval's own CLI, arguments unchanged, with our backends and offline tasks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


def webllama(*args: str, cwd: Path, env_data: Path | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "WEBLLAMA_DATA_DIR"}
    if env_data is not None:
        env["WEBLLAMA_DATA_DIR"] = str(env_data)
    return subprocess.run(
        [sys.executable, "-m", "webllama.cli", "lm-eval", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


USER_TASK = """task: my_arc
custom_dataset: !function my_data.load
output_type: multiple_choice
test_split: test
doc_to_text: "Question: {{question.stem}}\\nAnswer:"
doc_to_choice: "{{question.choices | map(attribute='text') | list}}"
doc_to_target: "{{(question.choices | map(attribute='label') | list).index(answerKey)}}"
metric_list:
  - metric: acc
"""
USER_DATA = """import json
from pathlib import Path

import datasets


def load(**_meta):
    rows = [json.loads(line) for line in (Path(__file__).parent / "arc.jsonl").read_text().splitlines()]
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})
"""


def write_user_task(folder: Path, data_dir: Path, n: int) -> Path:
    """A user's own task folder, as an lm-eval user writes one: a YAML, a loader beside it, its data file
    (found relative to the loader, so it works only if lm-eval reads the folder where it is)."""
    folder.mkdir()
    (folder / "my_arc.yaml").write_text(USER_TASK)
    (folder / "my_data.py").write_text(USER_DATA)
    lines = (data_dir / "arc/ARC-Easy-Test.jsonl").read_text().splitlines()[:n]
    (folder / "arc.jsonl").write_text("\n".join(lines) + "\n")
    return folder


def test_passthrough_runs_our_backend_on_offline_and_user_tasks(s260_bundle, small_data_dir, tmp_path):
    user = write_user_task(tmp_path / "user_tasks", small_data_dir, 4)
    out = tmp_path / "out"
    r = webllama(
        "--model",
        "webllama-onnx",
        "--model_args",
        f"pretrained={s260_bundle},variant=q4",
        "--tasks",
        "arc_easy,my_arc",
        "--limit",
        "4",
        "--include_path",
        str(user),
        "--output_path",
        str(out),
        "--log_samples",
        cwd=tmp_path,
        env_data=small_data_dir,  # $WEBLLAMA_DATA_DIR: the offline tasks
    )
    assert r.returncode == 0, r.stderr[-3000:]
    (results,) = out.rglob("results_*.json")
    res = json.loads(results.read_text())
    assert res["config"]["model"] == "webllama-onnx"
    assert set(res["results"]) == {"arc_easy", "my_arc"}
    assert res["results"]["arc_easy"]["acc,none"] == res["results"]["my_arc"]["acc,none"]  # same items, same model
    (samples,) = out.rglob("samples_arc_easy_*.jsonl")
    docs = [json.loads(line)["doc"] for line in samples.read_text().splitlines()]
    first = json.loads((small_data_dir / "arc/ARC-Easy-Test.jsonl").read_text().splitlines()[0])
    assert len(docs) == 4 and docs[0]["id"] == first["id"]  # read from the local files, not the hub
    assert sorted(p.name for p in user.iterdir() if p.name != "__pycache__") == ["arc.jsonl", "my_arc.yaml", "my_data.py"]


def test_help_is_lm_evals_and_both_registries_are_there(tmp_path):
    from lm_eval.api.registry import get_model
    from webllama.evalsuite.lmeval_cli import register_backends

    r = webllama("--help", cwd=tmp_path)
    assert r.returncode == 0 and "Language Model Evaluation Harness" in r.stdout, r.stderr[-2000:]
    register_backends()
    assert get_model("onnxruntime").__name__ == "ONNXRuntimeLM"  # lm-eval's stock models are kept
    assert {get_model(f"webllama-{b}").__name__ for b in ("native", "onnx", "browser")} == {"NativeLM", "OnnxLM", "BrowserLM"}


@pytest.mark.parametrize("args", [["--data-dir"], ["--data-dir", "/nonexistent/benchmarks", "--tasks", "arc_easy"]])
def test_a_bad_data_dir_is_one_error_line(tmp_path, args):
    r = webllama(*args, cwd=tmp_path)
    assert r.returncode != 0
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "data" in lines[0], r.stderr
