"""Where onnxruntime CPU spends its time on a bundle: SessionOptions.enable_profiling over a prefill and a
few decode steps, summarized per op type (share of kernel time), separately for prefill and decode.

    python -m webllama.evalsuite.bench.profile BUNDLE --variant q4 --threads 2 [--prompt 128 --decode 32]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import tempfile
from pathlib import Path

import numpy as np


def profile_bundle(
    bundle_dir: str, variant: str | None, threads: int, prompt: int = 128, decode: int = 32, accuracy_level: int | None = None
) -> dict:
    import onnxruntime as ort
    from webllama.converter.manifest import open_bundle
    from webllama.converter.ort_model import OrtModel
    from webllama.evalsuite.bench.measure import prompt_ids

    bundle = open_bundle(bundle_dir)
    model = OrtModel(bundle, variant, threads=threads)  # for feeds/cache helpers; the profiled session is below
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.enable_profiling = True
    if accuracy_level is not None:
        opts.add_session_config_entry("session.qdq_matmulnbits_accuracy_level", str(accuracy_level))
    with tempfile.TemporaryDirectory() as tmp:
        opts.profile_file_prefix = os.path.join(tmp, "ort")
        model.session = ort.InferenceSession(str(bundle.root / model.spec["model"]), opts, providers=["CPUExecutionProvider"])
        ids = prompt_ids(bundle.manifest["config"]["vocab_size"], prompt, bundle.manifest["tokenizer"]["bos_token_id"])
        mask = np.ones((1, len(ids)), dtype=np.int64)
        logits, past = model.run(np.array([ids]), mask, model.empty_past(1))
        for _ in range(decode):
            mask = np.ones((1, mask.shape[1] + 1), dtype=np.int64)
            logits, past = model.run(np.array([[int(np.argmax(logits[0, -1]))]]), mask, past)
        events = json.loads(Path(model.session.end_profiling()).read_text())
    return summarize(events, prompt, decode) | {"variant": model.variant, "threads": threads}


def summarize(events: list[dict], prompt: int, decode: int) -> dict:
    """Per op type: total kernel µs in the first run (prefill) and in the others (decode), with shares."""
    runs = [e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"]
    first_end = runs[0]["ts"] + runs[0]["dur"] if runs else float("inf")
    phases = {"prefill": collections.Counter(), "decode": collections.Counter()}
    for e in events:
        if e.get("cat") != "Node" or not e.get("name", "").endswith("_kernel_time"):
            continue
        op = e.get("args", {}).get("op_name", "?")
        phases["prefill" if e["ts"] < first_end else "decode"][op] += e["dur"]
    wall = {"prefill": runs[0]["dur"] if runs else 0, "decode": sum(r["dur"] for r in runs[1:])}
    out = {"prompt_tokens": prompt, "decode_steps": decode}
    for phase, counts in phases.items():
        total = sum(counts.values()) or 1
        out[phase] = {
            "run_us": wall[phase],
            "kernel_us": total,
            "ops": [{"op_type": op, "us": us, "share": us / total} for op, us in counts.most_common()],
        }
    return out


def format_profile(p: dict, top: int = 8) -> str:
    lines = []
    for phase in ("prefill", "decode"):
        d = p[phase]
        n = p["prompt_tokens"] if phase == "prefill" else p["decode_steps"]
        lines.append(
            f"{phase} ({n} {'tokens' if phase == 'prefill' else 'steps'}): run {d['run_us'] / 1e3:.1f} ms, "
            f"kernels {d['kernel_us'] / 1e3:.1f} ms ({d['kernel_us'] / max(1, d['run_us']):.0%} of run)"
        )
        for o in d["ops"][:top]:
            lines.append(f"  {o['op_type']:<32} {o['us'] / 1e3:9.1f} ms  {o['share']:6.1%}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundle")
    ap.add_argument("--variant", default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--decode", type=int, default=32)
    ap.add_argument("--output", default=None, help="write the summary JSON here")
    a = ap.parse_args(argv)
    p = profile_bundle(a.bundle, a.variant, a.threads, a.prompt, a.decode)
    print(format_profile(p))
    if a.output:
        Path(a.output).write_text(json.dumps(p, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
