"""Shards -> one ordinary run, scored by lm-eval itself.

Every shard is a `webllama eval` run over some item indices (EvalRequest.samples); its lm-eval response
cache (cache/lm_rank0.db) holds every answer the model gave, keyed by the request. The merge copies those
caches into one and runs lm-eval once more over the whole item range with a model that has no answers of
its own (ReplayLM): every request is a cache hit, and lm-eval computes the metrics, stderrs, groups and
samples exactly as for a run made in one piece. Nothing of the scoring is re-implemented here.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from lm_eval.api.model import LM
from webllama.evalsuite.run import CACHE_PREFIX, RESULTS_FILE
from webllama.evalsuite.sweep.spec import SweepError

CACHE_FILE = CACHE_PREFIX + "_rank0.db"


class ShardMissing(SweepError):
    """A merge found a request that no shard answered (the shards and the merge disagree on the items)."""


class ReplayLM(LM):
    """An lm-eval model that only replays the shards' cached answers; describe() is the shards' model record."""

    def __init__(self, record: dict) -> None:
        super().__init__()
        self._record = record

    def describe(self) -> dict:
        return dict(self._record)

    def _missing(self, requests: list) -> list:
        first = requests[0].args[0][-80:] if requests else ""
        raise ShardMissing(
            f"{len(requests)} requests were answered by no shard (first ends {first!r}); few-shot prompts depend on "
            "item order in lm-eval: give such tasks shard_size >= limit"
        )

    loglikelihood = loglikelihood_rolling = generate_until = _missing


def shard_model_record(shard_dirs: list[Path]) -> tuple[dict, dict]:
    """(the model record, lm-eval's config block) the shards share; an error if they evaluated different models."""
    records, config = [], {}
    for d in shard_dirs:
        res = json.loads((d / RESULTS_FILE).read_text(encoding="utf-8"))
        records.append(res["webllama"]["model"])
        config = config or res.get("config", {})
    keys = {json.dumps({k: r.get(k) for k in ("manifest_sha256", "source_sha256", "variant")}, sort_keys=True) for r in records}
    if len(keys) > 1:
        raise SweepError(f"the shards of one run evaluated different models ({len(keys)} distinct); delete their jobs/ folders")
    return records[0], config


def merge_caches(sources: list[Path], dest: Path) -> int:
    """Every (request -> answer) of the shard caches into one lm-eval cache; returns the answer count."""
    from sqlitedict import SqliteDict

    dest.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with SqliteDict(str(dest), autocommit=False) as out:
        for src in sources:
            if not src.is_file():
                raise SweepError(f"{src} is missing: that shard's answers are gone; delete its jobs/ folder and re-run")
            with SqliteDict(str(src), flag="r") as cache:
                for key, value in cache.items():
                    out[key] = value
                    n += 1
        out.commit()
    return n


def publish(tmp: Path, dest: Path) -> None:
    """Move a finished folder into place; an older version (an earlier sweep's) is replaced whole."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    old = dest.with_name(f".{dest.name}.old")
    if old.exists():
        shutil.rmtree(old)
    if dest.exists():
        os.replace(dest, old)
    os.replace(tmp, dest)
    if old.exists():
        shutil.rmtree(old)
