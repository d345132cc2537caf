"""The results table of run.sh, in markdown, from what its steps wrote under WORK.

Usage: python summarize.py [WORK [RUNS]]   (defaults: the work/ folder beside this file, WORK/runs)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

RUNS = (  # run folder -> what it measures
    ("native-base", "SmolLM2-135M-Instruct, torch fp32, no adapter"),
    ("native-lora", "+ LoRA merged, torch fp32"),
    ("onnx-q4", "+ LoRA, q4 bundle, onnxruntime CPU"),
    ("browser-wasm-q4", "+ LoRA, q4 bundle, Chromium WASM"),
)
TASK, METRIC = "date_us", "exact_match,strip"


def _json(path: Path) -> dict | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def timings(*folders: Path) -> dict[str, int]:
    """label -> seconds of its latest run (run.sh appends one line per step it ran to FOLDER/timings.tsv)."""
    out = {}
    for path in (f / "timings.tsv" for f in folders):
        for line in path.read_text().splitlines() if path.is_file() else []:
            label, _, secs = line.partition("\t")
            out[label] = int(secs)
    return out


def train_lines(work: Path) -> list[str]:
    log = _json(work / "adapter" / "train_log.json")
    if not log:
        return ["training: not run"]
    return [
        f"training: {log['steps']} steps x batch {log['batch']} ({log['train_items']} items), LoRA r={log['rank']} on "
        f"{log['targets']} ({log['trainable_params']:,} parameters), lr {log['lr']}, torch threads {log['threads']}: "
        f"{log['train_seconds']:.0f} s, loss {log['first_loss']:.3f} -> {log['final_loss']:.2g} (mean of the last 10 steps)"
    ]


def bundle_lines(work: Path) -> list[str]:
    manifest, verify = _json(work / "bundle" / "manifest.json"), _json(work / "bundle" / "verify.json")
    if not manifest:
        return ["bundle: not converted"]
    q4 = manifest["variants"]["q4"]
    line = f"bundle: q4 {q4['bytes'] / 2**20:.1f} MiB ({q4['bytes_per_parameter']:.3f} bytes/parameter)"
    if verify and "q4" in verify["variants"]:
        v = verify["variants"]["q4"]
        line += f"; verify vs the merged source: top-1 {v['top1_agreement']:.4f}, mean KL {v['mean_kl']:.5f}"
    return [line]


def table(runs: Path, times: dict[str, int]) -> list[str]:
    lines = ["| run | model | exact match | items | eval wall s |", "|---|---|---|---|---|"]
    for name, what in RUNS:
        res = _json(runs / name / "results.json")
        if not res:
            lines.append(f"| {name} | {what} | not run | | |")
            continue
        r = res["results"][TASK]
        n = res["n-samples"][TASK]["effective"]
        lines.append(
            f"| {name} | {what} | {r[METRIC]:.3f} ± {r[METRIC.replace(',', '_stderr,')]:.3f} | {n} | "
            f"{times.get(f'eval {name}', '-')} |"
        )
    return lines


def main() -> None:
    work = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parent / "work")
    runs = Path(sys.argv[2]) if len(sys.argv) > 2 else work / "runs"
    times = timings(work, runs)
    print("\n".join(train_lines(work) + bundle_lines(work) + [""] + table(runs, times)))
    print("\nwall time per step (s): " + ", ".join(f"{k} {v}" for k, v in times.items()))


if __name__ == "__main__":
    main()
