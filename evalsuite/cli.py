"""`webllama eval` and `webllama compare`: argparse only; the work is in webllama.evalsuite.run / webllama.evalsuite.compare.

Until the root parser calls register(), run it as `python -m webllama.evalsuite.cli eval ...`.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from webllama.evalsuite.devices import BROWSER_DEVICES, DEFAULT_BROWSER_DEVICE
from webllama.evalsuite.errors import EvalError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="score a model, a bundle, or a bundle in the browser on standard benchmarks")
    p.add_argument("model", help="source model (native: HF dir, .gguf, llama2.c) or bundle folder (onnx, browser)")
    p.add_argument(
        "--backend",
        default="onnx",
        choices=["native", "onnx", "browser"],
        help="native: source model in torch; onnx: bundle on onnxruntime; browser: bundle in Chromium",
    )
    p.add_argument("--variant", default=None, help="bundle variant (fp32, fp16, q4, q4f16; default: q4 if present)")
    p.add_argument("--device", default=DEFAULT_BROWSER_DEVICE, choices=list(BROWSER_DEVICES), help="browser execution provider")
    p.add_argument("--provider", default="CPUExecutionProvider", help="onnxruntime execution provider (onnx)")
    p.add_argument("--tasks", required=True, help="comma-separated lm-eval task names or globs, e.g. arc_easy,hellaswag,mmlu,wikitext")
    p.add_argument("--limit", type=float, default=None, help="at most N items per task (a fraction if < 1)")
    p.add_argument("--num-fewshot", type=int, default=None, help="override the tasks' few-shot count")
    p.add_argument(
        "--data-dir", default=None, help="offline benchmark folder (default: $WEBLLAMA_DATA_DIR; neither: the HF hub datasets)"
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="sequences per forward call (native/onnx, default 8) or items per page call (browser, 64)",
    )
    p.add_argument("--threads", type=int, default=None, help="CPU threads: torch (native), onnxruntime (onnx), WASM (browser)")
    p.add_argument(
        "--gen-kwargs", default=None, help="generation overrides for generate_until tasks, e.g. max_gen_toks=64 (lm-eval syntax)"
    )
    p.add_argument(
        "--bootstrap-iters",
        type=int,
        default=100000,
        help="lm-eval's bootstrap for perplexity stderr (0: skip; lm-eval's default 100000)",
    )
    p.add_argument(
        "--include-path",
        action="append",
        metavar="DIR",
        help="folder of your own lm-eval task YAMLs (repeatable); its tasks can then be named in --tasks",
    )
    p.add_argument(
        "--adapter",
        action="append",
        metavar="DIR",
        help="native only: PEFT LoRA adapter merged into the source before scoring (repeatable, as in `webllama convert`)",
    )
    p.add_argument(
        "--adapter-weight", action="append", type=float, metavar="W", help="scale of the matching --adapter (default 1.0 each)"
    )
    p.add_argument("--seed", type=int, default=1234, help="seed for few-shot sampling and sampled generation")
    p.add_argument("--output", required=True, help="run folder: results.json, samples/, cache (re-running the same command resumes)")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("compare", help="compare two eval runs: deltas, per-item agreement, paired tests")
    p.add_argument("run_a", help="folder of the first run (its --output)")
    p.add_argument("run_b", help="folder of the second run")
    p.add_argument("--json", dest="as_json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_compare)


def _request(args: argparse.Namespace):
    from webllama.evalsuite.run import EvalRequest
    from webllama.evalsuite.tasks import resolve_include_paths

    tasks = tuple(t.strip() for t in args.tasks.split(",") if t.strip())
    if not tasks:
        raise EvalError("--tasks is empty; name at least one task, e.g. --tasks arc_easy")
    limit = args.limit
    if limit is not None:
        if limit <= 0:
            raise EvalError(f"--limit {limit}: must be positive")
        limit = int(limit) if limit >= 1 else limit
    adapters, weights = _adapters(args)
    return EvalRequest(
        model=args.model,
        backend=args.backend,
        tasks=tasks,
        output=args.output,
        variant=args.variant if args.backend != "native" else None,
        device=args.device if args.backend == "browser" else None,
        provider=args.provider if args.backend == "onnx" else None,
        limit=limit,
        num_fewshot=args.num_fewshot,
        data_dir=_data_dir(args.data_dir),
        batch_size=args.batch_size,
        threads=args.threads,
        seed=args.seed,
        gen_kwargs=_gen_kwargs(args.gen_kwargs),
        bootstrap_iters=args.bootstrap_iters,
        include_paths=resolve_include_paths(args.include_path),
        adapters=adapters,
        adapter_weights=weights,
    )


def _adapters(args: argparse.Namespace) -> tuple[tuple[str, ...], tuple[float, ...]]:
    """--adapter/--adapter-weight checked before the model is loaded; absolute paths for the run record."""
    from pathlib import Path

    adapters, weights = tuple(args.adapter or ()), tuple(args.adapter_weight or ())
    if weights and not adapters:
        raise EvalError("--adapter-weight without --adapter; give the adapter folder it scales")
    if not adapters:
        return (), ()
    if args.backend != "native":
        raise EvalError(
            f"--adapter works with --backend native only; a {args.backend} bundle already has its adapters merged "
            "(`webllama convert SOURCE --adapter DIR`): drop --adapter"
        )
    if weights and len(weights) != len(adapters):
        raise EvalError(f"{len(adapters)} --adapter but {len(weights)} --adapter-weight; give one weight per adapter")
    for a in adapters:
        if not (Path(a) / "adapter_config.json").is_file():
            raise EvalError(f"--adapter {a}: no adapter_config.json there; give a PEFT adapter folder")
    return tuple(str(Path(a).expanduser().resolve()) for a in adapters), weights


def _data_dir(given: str | None) -> str | None:
    """--data-dir or $WEBLLAMA_DATA_DIR, resolved now so the run records (and resumes on) the real path."""
    from webllama.evalsuite.tasks import resolve_data_dir

    path = resolve_data_dir(given)
    return str(path) if path else None


def _gen_kwargs(text: str | None) -> dict | None:
    if not text:
        return None
    from lm_eval.utils import simple_parse_args_string

    try:
        return simple_parse_args_string(text)
    except Exception as e:
        raise EvalError(f"--gen-kwargs {text!r}: expected key=value,key=value ({e})") from None


def build_lm(req):
    """The backend object for a request (the only place that maps CLI options to model args)."""
    from webllama.evalsuite.backends import get_backend

    cls = get_backend(req.backend)
    kwargs = {"pretrained": req.model, "seed": req.seed}
    if req.batch_size:
        kwargs["batch_size"] = req.batch_size
    if req.threads:
        kwargs["threads"] = req.threads
    if req.backend == "onnx":
        kwargs |= {"variant": req.variant, "provider": req.provider}
    elif req.backend == "browser":
        kwargs |= {"variant": req.variant, "device": req.device}
    elif req.adapters:
        kwargs |= {"adapters": req.adapters, "adapter_weights": req.adapter_weights}
    return cls(**kwargs)


def cmd_eval(args: argparse.Namespace) -> int:
    from lm_eval.utils import make_table
    from webllama.evalsuite.run import check_resume, run_eval

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    req = _request(args)
    from pathlib import Path

    if check_resume(req, Path(req.output)):
        print(f"resuming the run in {req.output} from its cache", file=sys.stderr)
    results = run_eval(req, build_lm(req))
    print(make_table(results))
    if results.get("groups"):
        print(make_table(results, "groups"))
    print(f"results: {Path(req.output) / 'results.json'}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from webllama.evalsuite.compare import compare_runs, to_json, to_table
    from webllama.evalsuite.run import load_run

    rows = compare_runs(load_run(args.run_a), load_run(args.run_b))
    print(json.dumps(to_json(rows), indent=2) if args.as_json else to_table(rows))
    return 0


def main(argv: list[str] | None = None) -> int:
    from webllama.errors import WebllamaError

    parser = argparse.ArgumentParser(prog="webllama")
    register(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except WebllamaError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code


if __name__ == "__main__":
    sys.exit(main())
