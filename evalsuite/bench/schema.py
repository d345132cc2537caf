"""The benchmark result document (`webllama bench --output FILE.json`), schema_version 1.

Field names are a contract with the leaderboard: add fields, never rename or drop them (bump
SCHEMA_VERSION when a meaning changes). benchmarks/README.md documents every field.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

from webllama.evalsuite.devices import DEVICES as _DEVICES
from webllama.evalsuite.errors import EvalError

SCHEMA_VERSION = 1
FORMAT = "webllama-bench"
RUNTIMES = ("native", "onnx", "browser", "llamacpp", "transformersjs", "wllama")
DEVICES = tuple(_DEVICES)  # evalsuite/devices.py
# metrics key -> unit; every one is a Stat (below) or null when the runtime cannot observe it
STAT_METRICS = {"load_s": "s", "load_cached_s": "s", "ttft_s": "s", "decode_tokens_per_s": "tokens/s"}


class BenchError(EvalError):
    """A benchmark cannot run (missing runtime, bad target, page failure) or a result file is malformed."""


def stat(samples: list[float], unit: str) -> dict[str, Any]:
    """Median and spread of repeated measurements: {median, mean, stdev, min, max, p25, p75, n, unit, samples}."""
    xs = sorted(float(x) for x in samples)
    if not xs:
        raise BenchError("no samples were measured (every run failed?)")
    q = statistics.quantiles(xs, n=4, method="inclusive") if len(xs) > 1 else [xs[0]] * 3
    return {
        "median": statistics.median(xs),
        "mean": statistics.fmean(xs),
        "stdev": statistics.stdev(xs) if len(xs) > 1 else 0.0,
        "min": xs[0],
        "max": xs[-1],
        "p25": q[0],
        "p75": q[2],
        "n": len(xs),
        "unit": unit,
        "samples": [float(x) for x in samples],
    }


def rates(token_counts: int, seconds: list[float]) -> list[float]:
    """tokens/s for each timed run."""
    return [token_counts / s for s in seconds if s > 0]


def validate(doc: dict) -> dict:
    """Raise BenchError unless `doc` is a well-formed schema_version 1 result; returns it."""
    problems = []
    for key in (
        "schema_version",
        "format",
        "target",
        "runtime",
        "device",
        "variant",
        "threads",
        "settings",
        "machine",
        "versions",
        "metrics",
    ):
        if key not in doc:
            problems.append(f"missing field {key!r}")
    if problems:
        raise BenchError("bench result: " + "; ".join(problems))
    if doc["schema_version"] != SCHEMA_VERSION or doc["format"] != FORMAT:
        raise BenchError(f"bench result: format {doc['format']!r} v{doc['schema_version']}, expected {FORMAT!r} v{SCHEMA_VERSION}")
    if doc["runtime"] not in RUNTIMES or doc["device"] not in DEVICES:
        raise BenchError(f"bench result: runtime {doc['runtime']!r} / device {doc['device']!r} unknown")
    m = doc["metrics"]
    for key in (*STAT_METRICS, "prefill_tokens_per_s", "peak_rss_bytes", "bundle_bytes", "bytes_per_parameter"):
        if key not in m:
            problems.append(f"metrics.{key} missing")
    for key in STAT_METRICS:
        if m.get(key) is not None:
            problems += _check_stat(f"metrics.{key}", m[key])
    for length, s in (m.get("prefill_tokens_per_s") or {}).items():
        if not str(length).isdigit():
            problems.append(f"metrics.prefill_tokens_per_s key {length!r} is not a prompt length")
        problems += _check_stat(f"metrics.prefill_tokens_per_s.{length}", s)
    if problems:
        raise BenchError("bench result: " + "; ".join(problems))
    return doc


def _check_stat(where: str, s: Any) -> list[str]:
    if not isinstance(s, dict) or not {"median", "min", "max", "n", "samples"} <= set(s):
        return [f"{where} is not a stat object"]
    vals = [s["median"], s["min"], s["max"]]
    if not all(isinstance(v, int | float) and math.isfinite(v) and v >= 0 for v in vals):
        return [f"{where} has a negative or non-finite value"]
    if not s["min"] <= s["median"] <= s["max"] or s["n"] != len(s["samples"]):
        return [f"{where} is inconsistent (min <= median <= max, n == len(samples))"]
    return []
