"""custom_dataset for date_us.yaml: the test split from a JSONL file, found relative to this folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import datasets

HERE = Path(__file__).resolve().parent


def load(file: str = "../data/test.jsonl", **metadata) -> datasets.DatasetDict:
    """{"test": Dataset}; lm-eval also passes the task's metadata (version), which is not needed here."""
    import datasets

    path = (HERE / file).resolve()
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run `python make_data.py` in {HERE.parent} first")
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})
