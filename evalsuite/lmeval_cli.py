"""`webllama lm-eval ARGS...`: lm-eval's own command line, with webllama's three backends registered.

lm-eval 0.4.13 loads no model plugins by entry point (its registry knows only lm_eval/models and what
the running process registers), so plain `lm_eval --model webllama-onnx` cannot see our backends. This
command registers them and hands every argument, unchanged, to lm-eval's CLI:

    webllama lm-eval --model webllama-onnx --model_args pretrained=BUNDLE,variant=q4 --tasks arc_easy --limit 50
    webllama lm-eval --model webllama-browser --model_args pretrained=BUNDLE --device wasm --tasks piqa
    webllama lm-eval --model webllama-native --model_args pretrained=HF_DIR --tasks hellaswag --include_path my_tasks/
    webllama lm-eval ls tasks                     # any lm-eval subcommand; `webllama lm-eval --help` is lm-eval's help
    python -m webllama.evalsuite.lmeval_cli ...   # the same without the root parser

The offline tasks (evalsuite/tasks: lm-eval's stock YAMLs over local files) are reached the same way:
with `--data-dir DIR` as the first argument (the only one webllama reads itself) or $WEBLLAMA_DATA_DIR,
their YAMLs are written to a temporary folder that is given to lm-eval as `--include_path`, where they
override the stock tasks of the same name. lm-eval takes a single include path, so a user's own
`--include_path X` is added to that folder as one stub per YAML file (`include: X/...`, absolute): lm-eval
resolves `!function` and relative `include:` lines from the original file, so they keep working, and X
itself is never written to.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from webllama.evalsuite.errors import DataMissing

DATA_DIR_FLAG = "--data-dir"
INCLUDE_FLAG = "--include_path"


def register(subparsers: argparse._SubParsersAction) -> None:
    # No help and no option parsing of our own: "--help", "--model" ... all belong to lm-eval.
    p = subparsers.add_parser(
        "lm-eval",
        help="lm-eval's own CLI with the webllama-native|onnx|browser backends registered (every argument passed on)",
        add_help=False,
        prefix_chars="\0",
    )
    p.add_argument("lm_eval_args", nargs=argparse.REMAINDER)
    p.set_defaults(func=lambda args: run_lm_eval(args.lm_eval_args))


def register_backends() -> None:
    """Stock models first (lm-eval imports its own mapping only while its registry is empty), then ours."""
    import lm_eval.models  # noqa: F401  (fills the registry with lm-eval's MODEL_MAPPING, lazily)
    from webllama.evalsuite.backends import register

    register()


def split_data_dir(argv: list[str]) -> tuple[str | None, list[str]]:
    """A leading `--data-dir DIR` / `--data-dir=DIR` (ours) and the rest (lm-eval's)."""
    if argv and argv[0].startswith(f"{DATA_DIR_FLAG}="):
        return argv[0].split("=", 1)[1], argv[1:]
    if argv and argv[0] == DATA_DIR_FLAG:
        if len(argv) < 2:
            raise DataMissing(f"{DATA_DIR_FLAG} needs a folder (the offline benchmarks, laid out as SOURCES.md)")
        return argv[1], argv[2:]
    return None, argv


def _take_include_path(argv: list[str]) -> tuple[str | None, list[str]]:
    """lm-eval's `--include_path X` (either spelling) and the other arguments."""
    rest, found, i = [], None, 0
    while i < len(argv):
        if argv[i] == INCLUDE_FLAG and i + 1 < len(argv):
            found, i = argv[i + 1], i + 2
            continue
        if argv[i].startswith(f"{INCLUDE_FLAG}="):
            found = argv[i].split("=", 1)[1]
        else:
            rest.append(argv[i])
        i += 1
    return found, rest


def link_user_tasks(user: Path, dest: Path) -> int:
    """One `include: <absolute path>` stub in dest per YAML file of the user's folder; returns how many."""
    if not user.is_dir():
        raise DataMissing(f"{INCLUDE_FLAG} {user}: no such folder (give a folder of lm-eval task YAML files)")
    found = sorted(user.resolve().rglob("*.yaml"))
    for path in found:
        stub = dest / path.relative_to(user.resolve())
        stub.parent.mkdir(parents=True, exist_ok=True)
        stub.write_text(f"include: {json.dumps(str(path))}\n", encoding="utf-8")  # JSON string = valid YAML scalar
    return len(found)


@contextmanager
def offline_task_args(argv: list[str], data_dir: str | None) -> Iterator[list[str]]:
    """argv with `--include_path TMP` holding the offline tasks (and a copy of the user's include path)."""
    from webllama.evalsuite.tasks import quiet_index_logs, resolve_data_dir, write_task_dir

    data = resolve_data_dir(data_dir)
    if data is None:
        yield argv
        return
    user, rest = _take_include_path(argv)
    with tempfile.TemporaryDirectory(prefix="webllama-lm-eval-tasks-") as tmp:
        write_task_dir(data, Path(tmp) / "webllama_offline")
        if user is not None:
            link_user_tasks(Path(user), Path(tmp) / "user")
        quiet_index_logs()
        yield [*rest, INCLUDE_FLAG, tmp]


def run_lm_eval(argv: list[str]) -> int:
    """Run lm-eval's CLI on argv (webllama backends registered); returns its exit status."""
    from lm_eval.__main__ import cli_evaluate

    data_dir, argv = split_data_dir(list(argv))
    register_backends()
    saved = sys.argv
    with offline_task_args(argv, data_dir) as lm_argv:
        # lm-eval's HarnessCLI reads sys.argv itself (and inserts `run` when no subcommand is given).
        sys.argv = ["lm-eval", *lm_argv]
        try:
            cli_evaluate()
        except SystemExit as e:  # argparse errors and --help exit through here
            return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        finally:
            sys.argv = saved
    return 0


def main(argv: list[str] | None = None) -> int:
    from webllama.errors import WebllamaError

    try:
        return run_lm_eval(sys.argv[1:] if argv is None else argv)
    except WebllamaError as e:
        sys.stderr.write(f"error: {e}\n")
        return e.exit_code


if __name__ == "__main__":
    sys.exit(main())
