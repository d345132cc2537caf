"""Leaderboard: eval runs (+ bench results) -> one row per model x variant x runtime.

Pure data work: collect what `webllama eval` and `webllama bench` wrote, pick each task's headline
metric, compare every row with the native row of the same model (same source sha256) item by item
(webllama.evalsuite.compare: McNemar / paired bootstrap), and render Markdown, CSV and JSON. The HTML page
and the plots are in leaderboard_html.py.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from webllama.evalsuite.compare import compare_metric
from webllama.evalsuite.devices import DEFAULT_BROWSER_DEVICE
from webllama.evalsuite.errors import DataMissing
from webllama.evalsuite.run import RESULTS_FILE, load_run

SCHEMA_VERSION = 1
# lm-eval's customary headline metric per task (Open LLM Leaderboard conventions); others: first acc.
PRIMARY_METRIC = {
    "arc_easy": "acc,none",
    "arc_challenge": "acc_norm,none",
    "hellaswag": "acc_norm,none",
    "piqa": "acc,none",
    "winogrande": "acc,none",
    "boolq": "acc,none",
    "lambada_openai": "acc,none",
    "mmlu": "acc,none",
    "truthfulqa_mc1": "acc,none",
    "truthfulqa_mc2": "acc,none",
    "gsm8k": "exact_match,flexible-extract",
    "wikitext": "word_perplexity,none",
}
LOWER_IS_BETTER = ("perplexity", "bits_per_byte")
SIGNIFICANCE = 0.05
RUNTIME_ORDER = {"native": 0, "onnx": 1, "browser-wasm": 2, "browser-webgpu": 3}


@dataclass
class Score:
    metric: str
    value: float | None
    stderr: float | None
    delta: float | None = None  # against the native row of the same model
    p_value: float | None = None
    agreement: float | None = None

    @property
    def significant(self) -> bool:
        return self.p_value is not None and self.p_value < SIGNIFICANCE


@dataclass
class Row:
    model: str
    variant: str
    runtime: str
    source_sha256: str | None
    scores: dict[str, Score] = field(default_factory=dict)
    bundle_bytes: int | None = None
    bytes_per_parameter: float | None = None
    bench: dict = field(default_factory=dict)
    run_dir: str | None = None
    target_path: str | None = None  # the bundle (or, native, the source) the row evaluated: bench files match on it

    @property
    def average(self) -> float | None:
        accs = [s.value for s in self.scores.values() if s.value is not None and not lower_is_better(s.metric)]
        return sum(accs) / len(accs) if accs else None

    @property
    def key(self) -> tuple:
        return (self.model, self.variant, self.runtime)


def lower_is_better(metric: str) -> bool:
    return any(w in metric for w in LOWER_IS_BETTER)


def primary_metric(task: str, metrics: dict) -> str | None:
    want = PRIMARY_METRIC.get(task)
    if want in metrics:
        return want
    for m in metrics:
        if m.startswith("acc,") or m.startswith("exact_match,") or "perplexity," in m:
            return m
    return None


def runtime_of(results: dict) -> str:
    req = results.get("webllama", {}).get("request", {})
    backend = req.get("backend", "native")
    return f"browser-{req.get('device') or DEFAULT_BROWSER_DEVICE}" if backend == "browser" else backend


def _bundle_size(model_rec: dict, variant: str) -> tuple[int | None, float | None]:
    root = model_rec.get("bundle")
    manifest = Path(root) / "manifest.json" if root else None
    if not manifest or not manifest.exists():
        return None, None
    try:
        v = json.loads(manifest.read_text())["variants"].get(variant, {})
        return v.get("bytes"), v.get("bytes_per_parameter")
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None, None  # the bundle moved on since the run: its size is unknown, the scores stand


def row_from_run(folder: Path) -> tuple[Row, tuple[dict, dict]]:
    run = load_run(folder)
    results = run[0]
    rec = results.get("webllama", {})
    model = rec.get("model", {})
    runtime = runtime_of(results)
    variant = model.get("variant") or ("source" if runtime == "native" else "?")
    name = model.get("bundle_name") or Path(rec.get("request", {}).get("model", "model")).stem
    labels = rec.get("sweep") or {}  # a sweep names its rows (its model name, the variant with its recipe)
    name, label = labels.get("model", name), labels.get("variant", variant)
    row = Row(model=name, variant=label, runtime=runtime, source_sha256=model.get("source_sha256"), run_dir=str(folder))
    row.bundle_bytes, row.bytes_per_parameter = _bundle_size(model, variant) if runtime != "native" else (None, None)
    row.target_path = model.get("bundle") or rec.get("request", {}).get("model")
    for task, metrics in results.get("results", {}).items():
        if task in results.get("group_subtasks", {}) and task not in PRIMARY_METRIC:
            continue
        if any(task in subs for subs in results.get("group_subtasks", {}).values()):
            continue  # a subtask of a group (mmlu_*): the group row stands for it
        m = primary_metric(task, metrics)
        if m is None:
            continue
        err = metrics.get(m.replace(",", "_stderr,", 1))
        row.scores[task] = Score(m, _num(metrics.get(m)), _num(err))
    return row, run


def _num(v) -> float | None:
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def attach_deltas(rows: list[Row], runs: dict[tuple, tuple]) -> None:
    """Each non-native row against the native row of the same source model, item by item."""
    natives = {r.source_sha256: r for r in rows if r.runtime == "native"}
    for row in rows:
        ref = natives.get(row.source_sha256)
        if ref is None or ref is row:
            continue
        # The native run's name is the source path; show the bundle's name on both.
        ref.model = row.model if ref.model != row.model and ref.source_sha256 == row.source_sha256 else ref.model
        for task, score in row.scores.items():
            if task not in ref.scores:
                continue
            cmp = compare_metric(task, score.metric, runs[ref.key], runs[row.key])
            score.delta, score.p_value, score.agreement = cmp.delta, cmp.p_value, cmp.agreement


def load_bench(path: Path) -> dict | None:
    """A `webllama bench` JSON file, reduced to what the table shows (None if it is not one)."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if not isinstance(doc, dict) or "runtime" not in doc or "metrics" not in doc:
        return None
    return doc


def bench_key(doc: dict) -> tuple[str | None, str, str]:
    runtime = doc["runtime"]
    if runtime == "browser":
        runtime = f"browser-{doc.get('device') or DEFAULT_BROWSER_DEVICE}"
    return doc.get("source_sha256"), doc.get("variant") or "source", runtime


def _median(x):
    if isinstance(x, dict):
        return x.get("median")
    return x


def attach_bench(rows: list[Row], benches: list[dict]) -> None:
    """Each `webllama bench` document onto its row: by the sweep's row names when a sweep wrote it, else by
    the bundle (or source) path, variant and runtime."""
    for doc in benches:
        row = next((r for r in rows if _bench_matches(r, doc)), None)
        if row is not None:
            row.bench = bench_columns(doc["metrics"])
            if row.bundle_bytes is None and row.runtime != "native":
                row.bundle_bytes, row.bytes_per_parameter = (
                    doc["metrics"].get("bundle_bytes"),
                    doc["metrics"].get("bytes_per_parameter"),
                )


def _bench_matches(row: Row, doc: dict) -> bool:
    labels = doc.get("sweep")
    if labels:
        return (row.model, row.variant, row.runtime) == (labels.get("model"), labels.get("variant"), labels.get("runtime"))
    _, variant, runtime = bench_key(doc)
    path = (doc.get("target") or {}).get("path")
    if runtime != row.runtime or not path or not row.target_path:
        return False
    same_variant = runtime == "native" or variant == row.variant
    return same_variant and Path(path).resolve() == Path(row.target_path).resolve()


def bench_columns(m: dict) -> dict:
    """The leaderboard's speed columns from a bench document's metrics (medians; prefill at 128 tokens, or the
    longest prompt measured)."""
    prefill = m.get("prefill_tokens_per_s") or {}
    key = "128" if "128" in prefill else max(prefill, key=int, default=None)
    return {
        "load_s": _median(m.get("load_s")),
        "ttft_s": _median(m.get("ttft_s")),
        "prefill_tps": _median(prefill[key]) if key else None,
        "prefill_tokens": int(key) if key else None,
        "decode_tps": _median(m.get("decode_tokens_per_s")),
        "memory_bytes": m.get("peak_rss_bytes"),
    }


def _sweep_internal(results: Path, root: Path) -> bool:
    """A `webllama sweep` keeps its shards (runs of a part of the items) under jobs/ and unfinished work in
    hidden or .partial folders; only its merged runs/ are leaderboard rows."""
    from webllama.evalsuite.sweep import MARKER

    parts = results.relative_to(root).parts[:-1]
    if any(x.startswith(".") or x.endswith(".partial") for x in parts):
        return True
    return any(x == "jobs" and (root.joinpath(*parts[:i]) / MARKER).is_file() for i, x in enumerate(parts))


def collect(paths: list[str | Path]) -> list[Row]:
    """Run folders, results.json files, bench JSON files, or folders holding any of them."""
    run_dirs, bench_files = [], []
    for p in map(Path, paths):
        if p.is_file() and p.name == RESULTS_FILE:
            run_dirs.append(p.parent)
        elif p.is_file() and p.suffix == ".json":
            bench_files.append(p)
        elif p.is_dir():
            run_dirs += sorted(f.parent for f in p.rglob(RESULTS_FILE) if not _sweep_internal(f, p))
            bench_files += sorted(f for f in p.rglob("*.json") if f.name.startswith("bench"))
        else:
            raise DataMissing(f"{p}: not an eval run folder, results.json or bench JSON file")
    if not run_dirs:
        raise DataMissing(f"no eval results ({RESULTS_FILE}) under {', '.join(map(str, paths))}; run `webllama eval` first")
    rows, runs = [], {}
    for d in dict.fromkeys(run_dirs):
        row, run = row_from_run(d)
        rows.append(row)
        runs[row.key] = run
    attach_deltas(rows, runs)
    attach_bench(rows, [b for b in map(load_bench, bench_files) if b])
    rows.sort(key=lambda r: (r.model, RUNTIME_ORDER.get(r.runtime, 9), r.variant))
    return rows


def pareto_front(points: list[tuple[float, float]], x_lower_is_better: bool) -> list[int]:
    """Indices of the points no other point beats: y (accuracy) higher and x (size: lower, speed: higher) better
    or equal, one of them strictly. Sorted by x."""

    def beats(a: tuple[float, float], b: tuple[float, float]) -> bool:
        ax, bx = (-a[0], -b[0]) if x_lower_is_better else (a[0], b[0])
        return a[1] >= b[1] and ax >= bx and (a[1] > b[1] or ax > bx)

    front = [i for i, p in enumerate(points) if not any(beats(q, p) for j, q in enumerate(points) if j != i)]
    return sorted(front, key=lambda i: points[i][0])


def tasks_of(rows: list[Row]) -> list[str]:
    return list(dict.fromkeys(t for r in rows for t in r.scores))


def _cell(s: Score | None) -> str:
    if s is None or s.value is None:
        return "-"
    out = f"{s.value:.4f}" + (f" ± {s.stderr:.4f}" if s.stderr is not None else "")
    if s.delta is not None:
        out += f" ({s.delta:+.4f}{'*' if s.significant else ''})"
    return out


def _mb(n: int | None) -> str:
    return "-" if n is None else f"{n / 1e6:.1f}"


def _opt(v, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def table(rows: list[Row]) -> tuple[list[str], list[list[str]]]:
    tasks = tasks_of(rows)
    head = [
        "model",
        "variant",
        "runtime",
        *tasks,
        "average",
        "size MB",
        "bytes/param",
        "load s",
        "prefill tok/s",
        "decode tok/s",
        "memory MB",
    ]
    body = []
    for r in rows:
        body.append(
            [
                r.model,
                r.variant,
                r.runtime,
                *[_cell(r.scores.get(t)) for t in tasks],
                _opt(r.average, ".4f"),
                _mb(r.bundle_bytes),
                _opt(r.bytes_per_parameter, ".3f"),
                _opt(r.bench.get("load_s"), ".2f"),
                _opt(r.bench.get("prefill_tps"), ".1f"),
                _opt(r.bench.get("decode_tps"), ".1f"),
                _mb(r.bench.get("memory_bytes")),
            ]
        )
    return head, body


def to_markdown(rows: list[Row]) -> str:
    head, body = table(rows)
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in body]
    metrics = {t: next(r.scores[t].metric for r in rows if t in r.scores) for t in tasks_of(rows)}
    note = ", ".join(f"{t}: {m.split(',')[0]}" for t, m in metrics.items())
    lines += ["", f"Metrics: {note}. (delta vs native; * = paired test p < {SIGNIFICANCE})"]
    if any(r.bench for r in rows):
        lines.append("Speed: `webllama bench` medians; prefill at a 128-token prompt; memory: peak RSS of the runtime's processes.")
    return "\n".join(lines) + "\n"


def to_csv(rows: list[Row]) -> str:
    tasks = tasks_of(rows)
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(
        [
            "model",
            "variant",
            "runtime",
            *[f"{t}{sfx}" for t in tasks for sfx in ("", "_stderr", "_delta", "_p")],
            "average",
            "bundle_bytes",
            "bytes_per_parameter",
            "load_s",
            "prefill_tps",
            "decode_tps",
            "memory_bytes",
        ]
    )
    for r in rows:
        cells = []
        for t in tasks:
            s = r.scores.get(t)
            cells += [s.value, s.stderr, s.delta, s.p_value] if s else ["", "", "", ""]
        w.writerow(
            [
                r.model,
                r.variant,
                r.runtime,
                *cells,
                r.average,
                r.bundle_bytes,
                r.bytes_per_parameter,
                r.bench.get("load_s"),
                r.bench.get("prefill_tps"),
                r.bench.get("decode_tps"),
                r.bench.get("memory_bytes"),
            ]
        )
    return buf.getvalue()


def to_json(rows: list[Row]) -> dict:
    return {
        "schema_version": SCHEMA_VERSION,
        "significance_level": SIGNIFICANCE,
        "tasks": tasks_of(rows),
        "rows": [asdict(r) | {"average": r.average} for r in rows],
    }
