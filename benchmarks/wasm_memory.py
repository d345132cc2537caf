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
    from webllama.evalsuite.devices import BROWSER_DEVICES, DEFAULT_BROWSER_DEVICE

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("bundle", type=Path)
    p.add_argument("--variant", default="q4")
    p.add_argument("--device", default=DEFAULT_BROWSER_DEVICE, choices=BROWSER_DEVICES)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--contexts", default="128", help="comma-separated prompt lengths before decoding")
    p.add_argument("--decode", type=int, default=32, help="greedy tokens timed after each prompt")
    p.add_argument("--rounds", type=int, default=3, help="interleaved repeats of the decode timings (median)")
    p.add_argument("--no-unpack-int4", dest="unpack", action="store_false", help="run the MatMulNBits graph on WASM")
    p.add_argument("--kv-cache", default="auto", choices=("auto", "fixed", "growing"), help="the engine's KV cache layout")
    p.add_argument("--output", type=Path)
    return p.parse_args(argv)


def _stage(rss, fn):
    """Run fn, returning (its result, seconds, peak summed RSS while it ran, RSS right after)."""
    rss.peak = 0
    t0 = time.perf_counter()
    out = fn()
    s = time.perf_counter() - t0
    return out, s, rss.peak, rss.sample()


def _settle(rss, empty: int, held: int, timeout_s: float = 30.0) -> float:
    """Wait until the summed RSS is back within a tenth of `held` of the empty page (a terminated worker's heap is
    given back asynchronously); returns the seconds waited."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout_s and rss.sample() > empty + held / 10:
        time.sleep(0.25)
    return round(time.perf_counter() - t0, 2)


def measure(a: argparse.Namespace) -> dict:
    from webllama.evalsuite.bench import BenchRequest
    from webllama.evalsuite.bench.measure import PeakRss, prompt_ids
    from webllama.evalsuite.bench.runners.web import make_webllama_runner

    req = BenchRequest(
        str(a.bundle), "browser", variant=a.variant, device=a.device, threads=a.threads, unpack_int4=a.unpack, kv_cache=a.kv_cache
    )
    runner = make_webllama_runner(req)
    manifest = json.loads((a.bundle / "manifest.json").read_text())
    n_params = manifest["num_parameters"]
    try:
        with PeakRss(runner.pids) as rss:
            time.sleep(1.0)
            empty = rss.sample()
            # each load's peak on its own: the cold one (download into OPFS, then the session), the worker dropped and
            # its memory given back, then the cached one (a reload: files from OPFS); `loaded` after the cached one
            load_js = "([o, cold]) => window.benchRuntime.loadOnce(o, cold)"
            cold, cold_s, cold_peak, cold_loaded = _stage(rss, lambda: runner.call(load_js, [runner.load_opts, True]))
            runner.call("() => window.benchRuntime.unload()")
            settled_s = _settle(rss, empty, cold_loaded - empty)
            warm, warm_s, load_peak, loaded = _stage(rss, lambda: runner.call(load_js, [runner.load_opts, False]))
            runner.runtime_info = warm["info"]
            loads = {"load_s": cold["load_s"], "load_cached_s": warm["load_s"], "settle_s": settled_s}
            lengths = [int(x) for x in a.contexts.split(",")]
            prompts = {n: prompt_ids(runner.vocab_size, n, runner.bos_token_id) for n in lengths}
            decode = {str(n): {"samples_s": [], "peak_above_empty_bytes": 0} for n in lengths}
            for n in lengths:
                decode[str(n)]["ids"] = runner.call("([p, k]) => window.benchRuntime.tokens(p, k)", [prompts[n], a.decode + 1])
            for _ in range(a.rounds):  # interleaved: each round times every context once
                for n in lengths:
                    js = "([p, k]) => window.benchRuntime.decodeOnly(p, k)"
                    s, _, peak, _ = _stage(rss, lambda n=n, js=js: runner.call(js, [prompts[n], a.decode]))
                    d = decode[str(n)]
                    d["samples_s"].append(s)
                    d["peak_above_empty_bytes"] = max(d["peak_above_empty_bytes"], peak - empty)
            for d in decode.values():
                d["tokens_per_s"] = a.decode / sorted(d["samples_s"])[len(d["samples_s"]) // 2]
            info = runner.info()
    finally:
        runner.close()
    above = {"cold_load_peak": cold_peak - empty, "load_peak": load_peak - empty, "loaded": loaded - empty}
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
        "load_wall_s": {"cold": cold_s, "cached": warm_s},
        "decode": decode,
        "runtime_info": {
            k: info.get(k) for k in ("execution_provider", "num_threads", "ort_version", "from_cache", "load_s", "kv_cache")
        },
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
        f"{doc['graph_file']} on {doc['device']}: above the empty page load peak {per['cold_load_peak']:.2f} B/param cold "
        f"(download), {per['load_peak']:.2f} B/param cached, "
        f"loaded {per['loaded']:.2f} B/param; decode {dec}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
