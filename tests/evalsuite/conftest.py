"""Evalsuite fixtures: a trimmed copy of the offline benchmarks (fast task loading), bundles of the
shared models (tests/conftest.py: stories_dir, s260_bundle, tiny_llama_dir, benchmarks_dir)."""

from __future__ import annotations

import bz2
import csv
import json
from pathlib import Path

import pytest

N = 12  # items kept per benchmark file (gsm8k few-shot from test needs > 5)


def _head_lines(src: Path, dst: Path, n: int) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    with src.open(encoding="utf-8", newline="") as fh:
        dst.write_text("".join(line for _, line in zip(range(n), fh, strict=False)), encoding="utf-8", newline="")


def trim_benchmarks(src: Path, dst: Path, n: int = N) -> Path:
    """The first n items of every benchmark file, same layout and formats as the shared folder."""
    for rel in (
        "arc/ARC-Easy-Test.jsonl",
        "arc/ARC-Challenge-Test.jsonl",
        "piqa/valid.jsonl",
        "piqa/valid-labels.lst",
        "winogrande/dev.jsonl",
        "lambada/lambada_test.jsonl",
        "boolq/boolq.jsonl",
        "gsm8k/test.jsonl",
    ):
        _head_lines(src / rel, dst / rel, n)
    text = bz2.decompress((src / "hellaswag/hellaswag_val_full.txt.bz2").read_bytes()).decode("utf-8")
    (dst / "hellaswag").mkdir(parents=True, exist_ok=True)
    (dst / "hellaswag/hellaswag_val_full.txt.bz2").write_bytes(
        bz2.compress(("\n".join(text.split("\n")[: 6 * n]) + "\n").encode("utf-8"))
    )
    tqa = json.loads((src / "truthfulqa/validation.json").read_text(encoding="utf-8"))[:n]
    (dst / "truthfulqa").mkdir(parents=True, exist_ok=True)
    (dst / "truthfulqa/validation.json").write_text(json.dumps(tqa), encoding="utf-8")
    raw = (src / "wikitext2/wiki.test.raw").read_bytes().split(b"\n")
    titles = [i for i, line in enumerate(raw) if line.startswith(b" = ") and not line.startswith(b" = = ")]
    (dst / "wikitext2").mkdir(parents=True, exist_ok=True)
    (dst / "wikitext2/wiki.test.raw").write_bytes(b"\n".join(raw[: titles[3]]) + b"\n")  # 3 articles
    for f in sorted((src / "mmlu").glob("*/*.csv")):
        out = dst / "mmlu" / f.parent.name / f.name
        out.parent.mkdir(parents=True, exist_ok=True)
        with f.open(encoding="utf-8", newline="") as fh, out.open("w", encoding="utf-8", newline="") as oh:
            csv.writer(oh).writerows(row for _, row in zip(range(5 if "dev" in f.name else 3), csv.reader(fh), strict=False))
    return dst


@pytest.fixture(scope="session")
def small_data_dir(tmp_path_factory, benchmarks_dir) -> Path:
    if not benchmarks_dir.is_dir():
        pytest.fail(f"{benchmarks_dir} is missing: the tests need ../shared/data beside the checkout")
    return trim_benchmarks(benchmarks_dir, tmp_path_factory.mktemp("bench"))


@pytest.fixture(scope="session")
def small_tasks(tmp_path_factory, small_data_dir):
    """(TaskManager over the trimmed offline tasks, its work dir)."""
    from webllama.evalsuite import tasks

    work = tmp_path_factory.mktemp("tasks")
    tasks.quiet_index_logs()
    return tasks.task_manager(small_data_dir, work), work
