"""Page memory and decode speed of one bundle in Chromium, stage by stage, measured like `webllama bench`.

Memory is the summed RSS of every Chromium process (evalsuite/bench/measure.py PeakRss, sampled every 50 ms),
reported above the same browser with the empty benchmark page open ("above empty"): peak during the cold load
(download into the Cache API + session), peak during the cached load (what a reload costs), RSS once loaded,
and peak while decoding. Bytes per parameter divide by the manifest's num_parameters. Decode speed is timed
at several context lengths (prompt of L tokens, then N greedy tokens, prefill excluded) so a KV cache that
slows down with length shows up. Also reports the greedy ids, to compare with onnxruntime CPU.

    .venv/bin/python benchmarks/wasm_memory.py BUNDLE --contexts 128,2048 --decode 32 --output out.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("bundle", type=Path)
    p.add_argument("--variant", default="q4")
    p.add_argument("--device", default="wasm", choices=("wasm", "webgpu"))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--contexts", default="128", help="comma-separated prompt lengths before decoding")
    p.add_argument("--decode", type=int, default=32, help="greedy tokens timed after each prompt")
    p.add_argument("--no-unpack-int4", dest="unpack", action="store_false", help="run the MatMulNBits graph on WASM")
    p.add_argument("--output", type=Path)
    return p.parse_args(argv)


def _stage(rss, fn):
    """Run fn, returning (its result, seconds, peak summed RSS while it ran, RSS right after)."""
    rss.peak = 0
    t0 = time.perf_counter()
    out = fn()
    s = time.perf_counter() - t0
    return out, s, rss.peak, rss.sample()


def measure(a: argparse.Namespace) -> dict:
    from webllama.evalsuite.bench import BenchRequest
    from webllama.evalsuite.bench.measure import PeakRss, prompt_ids
    from webllama.evalsuite.bench.runners.web import make_webllama_runner

    req = BenchRequest(str(a.bundle), "browser", variant=a.variant, device=a.device, threads=a.threads, unpack_int4=a.unpack)
    runner = make_webllama_runner(req)
    manifest = json.loads((a.bundle / "manifest.json").read_text())
    n_params = manifest["num_parameters"]
    try:
        with PeakRss(runner.pids) as rss:
            time.sleep(1.0)
            empty = rss.sample()
            loads, load_s, load_peak, loaded = _stage(rss, runner.load)
            decode = {}
            for length in [int(x) for x in a.contexts.split(",")]:
                ids = prompt_ids(runner.vocab_size, length, runner.bos_token_id)
                got = runner.call("([p, n]) => window.benchRuntime.tokens(p, n)", [ids, a.decode + 1])
                _, _, peak, _ = _stage(rss, lambda ids=ids: runner.decode(ids, a.decode))
                s = runner.decode(ids, a.decode)
                decode[str(length)] = {"tokens_per_s": a.decode / s, "peak_above_empty_bytes": peak - empty, "ids": got}
            info = runner.info()
    finally:
        runner.close()
    above = {"load_peak": load_peak - empty, "loaded": loaded - empty}
    return {
        "bundle": str(a.bundle),
        "variant": a.variant,
        "device": a.device,
        "threads": a.threads,
        "graph_file": info.get("graph_file"),
        "num_parameters": n_params,
        "empty_page_rss_bytes": empty,
        "above_empty_bytes": above,
        "above_empty_bytes_per_parameter": {k: v / n_params for k, v in above.items()},
        "load_s": loads,
        "load_wall_s": load_s,
        "decode": decode,
        "runtime_info": {k: info.get(k) for k in ("execution_provider", "num_threads", "ort_version", "from_cache", "load_s")},
    }


def main(argv: list[str] | None = None) -> int:
    a = _args(argv)
    doc = measure(a)
    text = json.dumps(doc, indent=2)
    if a.output:
        a.output.parent.mkdir(parents=True, exist_ok=True)
        a.output.write_text(text + "\n")
    per = doc["above_empty_bytes_per_parameter"]
    dec = ", ".join(f"ctx {k}: {v['tokens_per_s']:.2f} tok/s" for k, v in doc["decode"].items())
    print(
        f"{doc['graph_file']} on {doc['device']}: above the empty page load peak {per['load_peak']:.2f} B/param, "
        f"loaded {per['loaded']:.2f} B/param; decode {dec}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
