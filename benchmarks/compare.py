#!/usr/bin/env python3
"""Side-by-side benchmark of SmolLM2-135M-Instruct on this machine: our q4 bundle (reference optimum graph and
fused graph) on onnxruntime CPU and in Chromium (WASM, WebGPU) against llama.cpp (Q4_0 GGUF), transformers.js
(our bundle) and wllama (Q4_0 GGUF), plus the memory-bandwidth limit, the conversion cost and the node count of
each graph. Every runtime runs as its own `webllama bench`
process (clean peak RSS, cold load), all with the same --threads. Writes OUT/*.json and OUT/table.md.

    .venv/bin/python benchmarks/compare.py --bundle /tmp/wl/smollm2 --threads 2 --runs 5 --out benchmarks/results/latest

Run it on a quiet machine (nothing else using the CPU): the numbers are only as good as the machine is idle.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from webllama.evalsuite.bench.compare import conversion_lines, graph_lines, ratio_lines, results_table, target_lines  # noqa: E402
from webllama.evalsuite.bench.machine import machine_info, memory_bandwidth  # noqa: E402

WEBLLAMA = [sys.executable, "-m", "webllama.converter.cli"]


def bench(out: Path, name: str, target: Path, runtime: str, args: argparse.Namespace, *extra: str) -> dict | None:
    dest = out / f"{name}.json"
    if dest.exists() and not args.force:
        print(f"== {name}: kept {dest}", flush=True)
        return json.loads(dest.read_text())
    cmd = [
        *WEBLLAMA,
        "bench",
        str(target),
        "--runtime",
        runtime,
        "--threads",
        str(args.threads),
        "--runs",
        str(args.runs),
        "--load-runs",
        str(args.load_runs),
        "--output",
        str(dest),
        *extra,
    ]
    print(f"== {name}: {' '.join(cmd[2:])}", flush=True)
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if r.returncode != 0:
        err = (r.stderr.strip().splitlines() or ["?"])[-1]
        print(f"   skipped: {err}", flush=True)
        (out / f"{name}.error.txt").write_text(r.stderr)
        return None
    print("   " + r.stdout.strip().splitlines()[0], flush=True)
    return json.loads(dest.read_text())


def convert_cost(source: Path, work: Path, variant: str, extra: tuple[str, ...] = ()) -> dict:
    """Wall time and peak RSS (process tree, sampled every 50 ms) of one `webllama convert`."""
    import psutil

    out_dir = work / f"convert-{variant}"
    cmd = [*WEBLLAMA, "convert", str(source), str(out_dir), "--variant", variant, "--force", *extra]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak, ps = 0, psutil.Process(proc.pid)
    while proc.poll() is None:
        try:
            peak = max(peak, sum(p.memory_info().rss for p in [ps, *ps.children(recursive=True)]))
        except psutil.NoSuchProcess:
            pass
        time.sleep(0.05)
    wall = time.perf_counter() - t0
    res = {
        "variant": variant,
        "wall_s": wall,
        "peak_rss_bytes": peak,
        "ok": proc.returncode == 0,
        "verify": "--no-verify" not in extra,
    }
    if res["ok"]:
        manifest = json.loads((out_dir / "manifest.json").read_text())
        res["variant_bytes"] = manifest["variants"][variant]["bytes"]
    else:
        res["error"] = (proc.stderr.read().strip().splitlines() or ["?"])[-1]
    return res


def ensure_q4_0(source_gguf: Path, out: Path) -> Path:
    from webllama.evalsuite.bench.gguf_q4 import write_q4_0

    dest = out / "smollm2-135m-instruct-q4_0.gguf"
    return dest if dest.exists() else write_q4_0(source_gguf, dest)


def ensure_bundle(source_gguf: Path, dest: Path, graph: str, embedding: bool = True, accuracy_level: int | None = None) -> Path:
    """Convert SOURCE_GGUF to a q4 bundle at DEST unless one is there (no verification: this is benchmark input)."""
    from webllama.converter import ConvertOptions, convert
    from webllama.converter.quant.policy import from_options
    from webllama.converter.variants import parse_variants

    if not (dest / "manifest.json").exists():
        convert(
            str(source_gguf),
            dest,
            ConvertOptions(
                variants=parse_variants("q4"),
                quant=from_options(float_embedding=not embedding, accuracy_level=accuracy_level),
                graph=graph,
                verify=False,
                force=True,
                progress=False,
            ),
        )
    return dest


def ensure_fused_bundle(source_gguf: Path, work: Path) -> Path:
    """The same model and quantization as --bundle's q4, written by the fused graph builder (converter/graph)."""
    return ensure_bundle(source_gguf, work / "smollm2-fused", "fused")


def graph_stats(bundles: dict[str, Path], variant: str = "q4") -> dict:
    """Node count and the most frequent op types of each bundle's graph (on WebGPU each node is a dispatch)."""
    from collections import Counter

    import onnx
    from webllama.converter.manifest import open_bundle

    out = {}
    for name, root in bundles.items():
        b = open_bundle(root)
        model = onnx.load(str(b.root / b.variant(variant)["model"]), load_external_data=False)
        ops = Counter(n.op_type for n in model.graph.node)
        out[name] = {"nodes": len(model.graph.node), "top_ops": dict(ops.most_common(8))}
    return out


def ensure_acc4_bundle(source_gguf: Path, work: Path) -> Path:
    """`webllama convert --accuracy-level 4`: MatMulNBits quantizes activations to int8 on CPU (llama.cpp's Q8_0 trick)."""
    return ensure_bundle(source_gguf, work / "smollm2-fused-acc4", "fused", accuracy_level=4)


def ensure_tjs_bundle(source_gguf: Path, work: Path) -> Path:
    """A q4 bundle whose embedding stays float (Gather): transformers.js's WASM build of onnxruntime-web has no
    GatherBlockQuantized kernel, so our default q4 bundle does not load there (see README)."""
    return ensure_bundle(source_gguf, work / "smollm2-q4-float-embedding", "optimum", embedding=False)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", required=True, type=Path, help="SmolLM2 bundle with q4 (and fp32 for the fp32 rows)")
    ap.add_argument(
        "--fused-bundle",
        default=None,
        type=Path,
        help="the same model converted with --graph fused (default: converted into OUT/work)",
    )
    ap.add_argument("--source", default=None, type=Path, help="SmolLM2 GGUF (default: webllama.converter.sources.smollm2_gguf())")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--load-runs", type=int, default=3)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "latest")
    ap.add_argument("--skip", default="", help="comma-separated run names to skip (e.g. browser-webgpu-q4,convert)")
    ap.add_argument("--force", action="store_true", help="measure again even where OUT/NAME.json exists")
    args = ap.parse_args()
    from webllama.converter.sources import smollm2_gguf

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    work = out / "work"
    work.mkdir(exist_ok=True)
    skip = set(filter(None, args.skip.split(",")))
    source = args.source or smollm2_gguf()
    q4_0 = ensure_q4_0(source, work)
    bw = memory_bandwidth(args.threads)
    (out / "bandwidth.json").write_text(json.dumps(bw, indent=2))
    print(f"== memory read bandwidth: {bw['read_bytes_per_s'] / 1e9:.2f} GB/s ({args.threads} threads, {bw['method']})", flush=True)
    fused = args.fused_bundle or ensure_fused_bundle(source, work)
    graphs = graph_stats({"reference (optimum)": args.bundle, "fused": fused})
    (out / "graphs.json").write_text(json.dumps(graphs, indent=2))
    # SwiftShader (no GPU here) runs WebGPU on the CPU at seconds per token: fewer, shorter repeats there.
    light = ("--runs", "1", "--load-runs", "1", "--decode-tokens", "8", "--prompt-lengths", "16", "--decode-prompt", "16")
    plan = [
        ("onnx-q4", args.bundle, "onnx", ("--variant", "q4")),
        ("onnx-q4-fused", fused, "onnx", ("--variant", "q4")),
        ("onnx-q4-fused-acc4", "acc4", "onnx", ("--variant", "q4")),
        ("onnx-fp32", args.bundle, "onnx", ("--variant", "fp32")),
        ("llamacpp-q4_0", q4_0, "llamacpp", ()),
        ("browser-wasm-q4", args.bundle, "browser", ("--variant", "q4", "--device", "wasm")),
        ("browser-wasm-q4-fused", fused, "browser", ("--variant", "q4", "--device", "wasm")),
        # the int4 MatMulNBits graph on WASM (what the engine ran before the dequantize-at-load graph): ~0.6 tok/s
        (
            "browser-wasm-q4-matmulnbits",
            args.bundle,
            "browser",
            ("--variant", "q4", "--device", "wasm", "--no-unpack-int4", "--runs", "2", "--decode-tokens", "16"),
        ),
        ("browser-wasm-fp32", args.bundle, "browser", ("--variant", "fp32", "--device", "wasm", "--runs", "3")),
        ("wllama-wasm-q4_0", q4_0, "wllama", ("--device", "wasm")),
        ("transformersjs-wasm-q4-default-bundle", args.bundle, "transformersjs", ("--variant", "q4", "--device", "wasm")),
        ("transformersjs-wasm-q4", None, "transformersjs", ("--variant", "q4", "--device", "wasm")),
        ("transformersjs-wasm-fp32", args.bundle, "transformersjs", ("--variant", "fp32", "--device", "wasm")),
        ("browser-webgpu-q4", args.bundle, "browser", ("--variant", "q4", "--device", "webgpu", *light)),
        ("browser-webgpu-q4-fused", fused, "browser", ("--variant", "q4", "--device", "webgpu", *light)),
        ("transformersjs-webgpu-q4", args.bundle, "transformersjs", ("--variant", "q4", "--device", "webgpu", *light)),
    ]
    docs = {}
    for name, target, runtime, extra in plan:
        if name in skip:
            continue
        if target is None:
            target = ensure_tjs_bundle(source, work)
        elif target == "acc4":
            target = ensure_acc4_bundle(source, work)
        doc = bench(out, name, target, runtime, args, *extra)
        if doc:
            docs[name] = doc
    conv = json.loads((out / "conversion.json").read_text()) if (out / "conversion.json").exists() else []
    if "convert" not in skip:
        conv = []
        for variant in ("fp32", "fp16", "q4", "q4f16"):
            print(f"== convert {variant}", flush=True)
            conv.append(convert_cost(source, work, variant, ("--no-verify", "--graph", "fused")))
        # the default command as users run it: fused graph, parity verification against the source included
        print("== convert q4 (with verification)", flush=True)
        conv.append(convert_cost(source, work, "q4", ("--graph", "fused")) | {"variant": "q4 (verified)"})
        print("== convert q4 (optimum graph)", flush=True)
        conv.append(convert_cost(source, work, "q4", ("--no-verify", "--graph", "optimum")) | {"variant": "q4 (optimum graph)"})
        (out / "conversion.json").write_text(json.dumps(conv, indent=2))
    write_table(out, docs, bw, conv, graphs, args)
    return 0


def write_table(out: Path, docs: dict, bw: dict, conv: list, graphs: dict, args: argparse.Namespace) -> None:
    m = machine_info()
    text = "\n".join(
        [
            f"Machine: {m['cpu']}, {m['logical_cores']} cores, {m['memory_bytes'] / 2**30:.0f} GiB; load average at the end "
            f"{os.getloadavg()[0]:.2f}; {args.threads} threads; {args.runs} timed runs after 1 warm-up (median ±half-range).",
            f"Memory read bandwidth: {bw['read_bytes_per_s'] / 1e9:.2f} GB/s with {args.threads} threads "
            f"({bw['read_bytes_per_s_1t'] / 1e9:.2f} GB/s with 1).",
            "",
            results_table(docs, bw),
            "",
            *ratio_lines(docs),
            "",
            *target_lines(docs),
            "",
            *graph_lines(graphs),
            "",
            *(
                [
                    "Conversion (`webllama convert GGUF OUT --variant V --no-verify`, fused graph, unless noted; "
                    "'verified' = the default command, the parity check against the source included):",
                    "",
                    *conversion_lines(conv),
                ]
                if conv
                else []
            ),
        ]
    )
    (out / "table.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    raise SystemExit(main())
