"""The `webllama` command: argparse only. Each package registers its own subcommands; every user
error is a WebllamaError, printed as one line with a non-zero exit code."""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import threading

from webllama.errors import WebllamaError

# Subcommand providers: module -> register(subparsers). Imported lazily so `webllama convert` does not
# pay for Flask or lm-eval, and a package that is absent does not break the others.
SUBCOMMAND_MODULES = (
    "webllama.converter.cli",
    "webllama.web.cli",
    "webllama.evalsuite.cli",
    "webllama.evalsuite.bench_cli",
    "webllama.evalsuite.pipeline_cli",
    "webllama.evalsuite.lmeval_cli",
    "webllama.evalsuite.sweep.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="webllama", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.description = "Llama-family models -> int4 ONNX bundles for the browser, verified and evaluated."
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name and name.startswith(e.name):  # that part of the toolkit is not there (yet)
                continue
            raise
        module.register(sub)
    return parser


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt  # SIGTERM (a kill, a service manager) cleans up exactly as Ctrl-C does


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = build_parser().parse_args(argv)
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _interrupt) if main_thread else None
    try:
        handler = getattr(args, "func", None) or args.handler  # packages name it either way
        return int(handler(args) or 0)
    except WebllamaError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted; nothing half-written was kept", file=sys.stderr)
        return 130
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
