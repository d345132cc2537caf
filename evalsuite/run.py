"""One evaluation run: backend x tasks -> OUTPUT/results.json + OUTPUT/samples/<task>.jsonl.

OUTPUT also holds what makes a run resumable and auditable:
    run_config.json        the request (model, backend, variant, tasks, limit, ...); a resume must match it
    cache/lm_rank0.db      lm-eval's sqlite response cache (use_cache=); every scored request is written
                           as soon as it is computed (cache_hook.add_partial), so an interrupted run
                           restarts where it stopped instead of from zero
    tasks/*.yaml           the generated offline task configs (see webllama.evalsuite.tasks); the user's own task
                           folders (--include-path) are read in place and recorded in run_config.json
results.json carries a "webllama" block: schema_version, run id, model/bundle sha256, seed, versions.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import hashlib
import importlib.metadata
import json
import logging
import platform
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from webllama.evalsuite import tasks as offline
from webllama.evalsuite.errors import DataMissing, RunMismatch

SCHEMA_VERSION = 1
RESULTS_FILE = "results.json"
CONFIG_FILE = "run_config.json"
CACHE_PREFIX = "cache/lm"  # lm-eval appends "_rank0.db"
VERSIONED = ("webllama", "lm_eval", "torch", "transformers", "onnxruntime", "datasets", "tokenizers", "playwright")


@dataclass(frozen=True)
class EvalRequest:
    """Everything that determines the numbers of a run (and so must match when resuming)."""

    model: str
    backend: str  # native | onnx | browser
    tasks: tuple[str, ...]
    output: str
    variant: str | None = None
    device: str | None = None  # browser: webgpu | wasm
    provider: str | None = None  # onnx: an onnxruntime execution provider
    limit: float | None = None
    num_fewshot: int | None = None
    data_dir: str | None = None
    batch_size: int | None = None  # None: the backend's default
    threads: int | None = None  # None: the backend's default (torch's / onnxruntime's / the page's)
    seed: int = 1234
    gen_kwargs: dict | None = None  # overrides merged into every generate_until task's generation_kwargs
    bootstrap_iters: int = 100000  # lm-eval's stderr bootstrap (perplexity); 0 = none
    include_paths: tuple[str, ...] = ()  # user task folders (absolute), lm-eval's include_path
    adapters: tuple[str, ...] = ()  # native: PEFT LoRA folders (absolute) merged into the source
    adapter_weights: tuple[float, ...] = ()  # one scale per adapter; () = 1.0 each
    # lm-eval's samples=: only these doc indices of each task (a `webllama sweep` shard); limit must be None
    samples: dict[str, tuple[int, ...]] | None = None

    def fingerprint(self) -> dict:
        """The fields a resumed run must share with the interrupted one (output dir excluded)."""
        d = asdict(self)
        d.pop("output")
        d.pop("bootstrap_iters")  # changes only the reported stderr of perplexity, not any answer
        d.pop("batch_size")  # changes padding only (answers equal within float tolerance)
        d.pop("threads")  # changes the order of float sums only
        for key in ("include_paths", "adapters", "adapter_weights", "samples"):
            if not d[key]:
                d.pop(key)  # absent when unused, so run folders written before these options still resume
        # Paths alone would let a retrained adapter or an edited task YAML in the same folder reuse the
        # cached answers of the old one: the contents are part of the request too.
        if self.adapters:
            d["adapters_sha256"] = [folder_digest(a) for a in self.adapters]
        if self.include_paths:
            d["include_paths_sha256"] = [folder_digest(p) for p in self.include_paths]
        return d


_WHOLE_FILE_LIMIT = 64 << 20  # bigger files (a data dump beside a task YAML) are fingerprinted by size + mtime


def folder_digest(path: str | Path) -> str:
    """sha256 over the relative names and contents of the files under PATH (or of PATH itself, a file)."""
    root = Path(path)
    files = [root] if root.is_file() else sorted(f for f in root.rglob("*") if f.is_file() and "__pycache__" not in f.parts)
    h = hashlib.sha256()
    for f in files:
        h.update(str(f.relative_to(root) if f != root else f.name).encode() + b"\0")
        st = f.stat()
        if st.st_size > _WHOLE_FILE_LIMIT:
            h.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
        else:
            h.update(f.read_bytes())
        h.update(b"\0")
    return h.hexdigest()


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in VERSIONED:
        dist = "lm-eval" if name == "lm_eval" else name
        try:
            out[name] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def check_resume(req: EvalRequest, out: Path) -> bool:
    """True if OUTPUT holds an earlier (possibly interrupted) run of the same request; error if another."""
    cfg_path = out / CONFIG_FILE
    if out.exists() and not out.is_dir():
        raise RunMismatch(f"--output {out} is a file, not a run folder; pick a new --output")
    if not cfg_path.is_file():
        if out.is_dir() and any(out.iterdir()):
            raise RunMismatch(
                f"--output {out} holds files but no {CONFIG_FILE}: not a `webllama eval` run folder, and its files "
                "are not ours to overwrite; pick a new --output"
            )
        return False
    try:
        old = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise RunMismatch(f"{cfg_path}: unreadable ({e}); the run folder is corrupt: pick a new --output or delete it") from None
    if old != json.loads(json.dumps(req.fingerprint())):
        diff = sorted(k for k in set(old) | set(req.fingerprint()) if old.get(k) != req.fingerprint().get(k))
        raise RunMismatch(
            f"{out} holds a run with different settings ({', '.join(diff)}); its cache would give wrong "
            "answers: pick a new --output or delete that folder"
        )
    return True


class _DropCustomKwargsNotice(logging.Filter):
    """lm-eval logs a usage hint for every task with a custom_dataset; ours are not user-facing."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Custom kwargs can be passed" not in record.getMessage()


def run_eval(req: EvalRequest, lm) -> dict:
    """Evaluate `lm` (a WebllamaLM) on req.tasks; write results and samples under req.output."""
    import lm_eval

    out = Path(req.output)
    resumed = check_resume(req, out)
    offline.quiet_index_logs()
    logging.getLogger("lm_eval.api.task").addFilter(_DropCustomKwargsNotice())
    data_dir = offline.resolve_data_dir(req.data_dir)
    tm, names = _prepare_tasks(req, out, data_dir)
    # The run record only now that the run can start: a failed check (an unknown task) leaves no folder
    # behind that would block the corrected command.
    (out / CONFIG_FILE).write_text(json.dumps(req.fingerprint(), indent=2) + "\n", encoding="utf-8")
    started = time.time()
    with _quiet_git_hash():
        results = _evaluate(lm_eval, req, lm, out, tm, names)
    results["webllama"] = _run_record(req, lm, data_dir, started, resumed)
    write_results(results, out)
    return results


def _prepare_tasks(req: EvalRequest, out: Path, data_dir) -> tuple:
    """The task manager (it writes the offline task YAMLs under OUTPUT/tasks) and the checked task names;
    a folder this call created is removed again when the check fails."""
    created = [p for p in (out, out / "tasks") if not p.exists()]
    try:
        out.mkdir(parents=True, exist_ok=True)
        tm = offline.task_manager(data_dir, out, req.include_paths)
        return tm, offline.check_tasks(list(req.tasks), tm, data_dir, req.include_paths)
    except BaseException as e:
        if created:
            shutil.rmtree(created[0], ignore_errors=True)
        if isinstance(e, OSError) and e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise RunMismatch(f"cannot write --output {out} ({e.strerror}); choose a folder you can write to") from None
        raise


def _git_describe() -> str | None:
    """lm-eval's get_git_commit_hash (the commit of the current folder) without git's stderr: outside a
    checkout git prints `fatal: not a git repository` into every eval's output."""
    try:
        proc = subprocess.run(["git", "describe", "--always"], capture_output=True, text=True, check=False, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout.strip() or None


@contextlib.contextmanager
def _quiet_git_hash() -> Iterator[None]:
    import lm_eval.evaluator as evaluator

    original = evaluator.get_git_commit_hash
    evaluator.get_git_commit_hash = _git_describe
    try:
        yield
    finally:
        evaluator.get_git_commit_hash = original


def _evaluate(lm_eval, req: EvalRequest, lm, out: Path, tm, names: list[str]) -> dict:
    return lm_eval.simple_evaluate(
        model=lm,
        tasks=names,
        num_fewshot=req.num_fewshot,
        limit=req.limit,
        samples={task: list(ids) for task, ids in req.samples.items()} if req.samples else None,
        use_cache=str(out / CACHE_PREFIX),
        log_samples=True,
        task_manager=tm,
        random_seed=req.seed,
        numpy_random_seed=req.seed,
        torch_random_seed=req.seed,
        fewshot_random_seed=req.seed,
        gen_kwargs=req.gen_kwargs,
        bootstrap_iters=req.bootstrap_iters,
    )


def _run_record(req: EvalRequest, lm, data_dir, started: float, resumed: bool) -> dict:
    return {
        "schema_version": SCHEMA_VERSION,
        "run_id": hashlib.sha256(json.dumps(req.fingerprint(), sort_keys=True).encode()).hexdigest()[:16],
        "request": req.fingerprint(),
        "model": lm.describe(),
        "data_dir": str(data_dir) if data_dir else None,
        "seed": req.seed,
        "versions": versions(),
        "resumed_from_cache": resumed,
        "finished_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "duration_s": round(time.time() - started, 2),
    }


def write_results(results: dict, out: Path) -> None:
    """results.json without the samples; samples/<task>.jsonl, one logged sample per line."""
    from lm_eval.utils import handle_non_serializable

    samples = results.pop("samples", {}) or {}
    body = json.dumps(results, indent=2, default=handle_non_serializable, ensure_ascii=False)
    (out / RESULTS_FILE).write_text(body + "\n", encoding="utf-8")
    (out / "samples").mkdir(exist_ok=True)
    for task, rows in samples.items():
        lines = [json.dumps(r, default=handle_non_serializable, ensure_ascii=False) for r in rows]
        (out / "samples" / f"{task}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    results["samples"] = samples


def load_run(path: str | Path) -> tuple[dict, dict[str, list[dict]]]:
    """A run folder (or its results.json) -> (results dict, {task: samples}); DataMissing if it is not one."""
    path = Path(path)
    folder = path.parent if path.is_file() else path
    res_path = folder / RESULTS_FILE
    if not res_path.is_file():
        raise DataMissing(f"{res_path} not found: give the --output folder of a finished `webllama eval` run")
    results = _read_json(res_path)
    if not isinstance(results, dict) or not isinstance(results.get("results"), dict) or not results["results"]:
        raise DataMissing(f"{res_path}: holds no scores (no 'results' object); not the results of a finished `webllama eval` run")
    samples = {}
    for f in sorted((folder / "samples").glob("*.jsonl")):
        try:
            samples[f.stem] = [json.loads(line) for line in f.read_text(encoding="utf-8").splitlines() if line]
        except (OSError, ValueError) as e:
            raise DataMissing(f"{f}: not JSON lines ({e}); the run is corrupt: run `webllama eval` again") from None
    return results, samples


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise DataMissing(f"{path}: not valid JSON ({e}); the run is corrupt or unfinished: run `webllama eval` again") from None
