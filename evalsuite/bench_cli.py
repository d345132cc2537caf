"""`webllama bench`: argparse only; the work is in webllama.evalsuite.bench."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from webllama.evalsuite.bench.runners import RUNNERS
from webllama.evalsuite.devices import DEVICES


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="speed, memory and size of a model on one runtime (JSON result; see benchmarks/README.md)")
    p.add_argument("target", help="bundle folder (onnx, browser, transformersjs), source model (native) or .gguf (llamacpp, wllama)")
    p.add_argument(
        "--runtime",
        default="onnx",
        choices=list(RUNNERS),
        help="onnx: bundle on onnxruntime CPU; native: source in torch; browser: our web engine in Chromium; "
        "llamacpp, transformersjs, wllama: the peers",
    )
    p.add_argument("--variant", default=None, help="bundle variant (fp32, fp16, q4, q4f16; default: q4 if present)")
    p.add_argument("--device", default=None, choices=list(DEVICES), help="browser EP (default wasm); cpu otherwise")
    p.add_argument("--threads", type=int, default=2, help="CPU / WASM threads (default 2)")
    p.add_argument("--runs", type=int, default=5, help="timed repeats per measurement after the warm-up (default 5)")
    p.add_argument("--load-runs", type=int, default=3, help="times the model is loaded (default 3)")
    p.add_argument("--prompt-lengths", default="16,128,512", help="prefill prompt lengths (capped at the context)")
    p.add_argument("--decode-tokens", type=int, default=128, help="decoded tokens per decode run (default 128)")
    p.add_argument("--chromium", default="/usr/bin/chromium", help="Chromium executable for the browser runtimes")
    p.add_argument(
        "--decode-prompt",
        type=int,
        default=128,
        help="prompt length before the decode run and for TTFT (default 128; shorter for slow devices)",
    )
    p.add_argument(
        "--no-unpack-int4",
        dest="unpack_int4",
        action="store_false",
        help="browser WASM: run the int4 MatMulNBits graph, not the dequantize-at-load one (for comparison)",
    )
    p.add_argument(
        "--kv-cache",
        default="auto",
        choices=["auto", "fixed", "growing"],
        help="browser webllama: KV cache layout (auto: fixed-capacity GPU buffers on WebGPU fused graphs, else growing)",
    )
    p.add_argument("--output", required=True, help="result JSON file to write")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    p.set_defaults(func=cmd_bench)


def cmd_bench(args: argparse.Namespace) -> int:
    from webllama.evalsuite.bench import BenchRequest, run_bench
    from webllama.evalsuite.bench.report import one_line
    from webllama.evalsuite.bench.schema import BenchError

    try:
        lengths = tuple(int(x) for x in args.prompt_lengths.split(",") if x.strip())
    except ValueError as e:
        raise BenchError(f"--prompt-lengths {args.prompt_lengths!r}: comma-separated integers, e.g. 16,128,512") from e
    req = BenchRequest(
        target=args.target,
        runtime=args.runtime,
        variant=args.variant,
        device=args.device,
        threads=args.threads,
        runs=args.runs,
        load_runs=args.load_runs,
        prompt_lengths=lengths,
        decode_tokens=args.decode_tokens,
        chromium=args.chromium,
        unpack_int4=args.unpack_int4,
        decode_prompt=args.decode_prompt,
        kv_cache=args.kv_cache,
    )
    log = (lambda m: None) if args.quiet else (lambda m: print(f"[bench {args.runtime}] {m}", file=sys.stderr, flush=True))
    doc = run_bench(req, log=log)
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print(one_line(doc))
    print(f"result: {out.resolve()}")
    return 0
