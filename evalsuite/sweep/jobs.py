"""What one sweep job does, wherever Ray runs it: the existing convert / eval / bench code, called with
the job's parameters. A job works in OUT/jobs/<id>.partial/ and renames it to OUT/jobs/<id>/ when it has
finished, so a finished job is there whole or not at all, and an interrupted eval shard resumes from
its lm-eval cache on the next attempt (a Ray retry after a lost worker, or a re-run of the sweep).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import time
from collections.abc import Callable
from pathlib import Path

from webllama.errors import WebllamaError

JOB_FILE = "job.json"
RUN_DIR = "run"  # an eval shard's `webllama eval` run folder inside its job folder
WORKER_FILE = "worker.json"
log = logging.getLogger(__name__)


def job_dir(out: Path, job_id: str) -> Path:
    return out / "jobs" / job_id


def partial_dir(out: Path, job_id: str) -> Path:
    return out / "jobs" / f"{job_id}.partial"


def finished(out: Path, job_id: str) -> dict | None:
    """The record of a finished job, or None."""
    path = job_dir(out, job_id) / JOB_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def _model_path(p: dict, out: Path) -> str:
    return str(out / p["model"]) if p["in_bundle"] else p["model"]


def run_convert(p: dict, out: Path, work: Path) -> dict:
    from webllama.converter.convert import ConvertOptions, convert
    from webllama.converter.quant.policy import from_options
    from webllama.converter.variants import parse_variants

    opts = ConvertOptions(
        variants=parse_variants(p["variants"]),
        quant=from_options(**p["quant"]),
        revision=p["revision"],
        force=True,  # OUT/bundles/ is the sweep's own: an earlier recipe's bundle of this name is replaced
        progress=False,
        graph=p["graph"],
    )
    convert(p["source"], out / p["bundle"], opts)
    return {"bundle": p["bundle"]}


def _request(p: dict, out: Path, output: Path, **over):
    from webllama.evalsuite.run import EvalRequest

    fields = dict(
        model=_model_path(p, out),
        backend=p["backend"],
        tasks=(p["task"],) if "task" in p else tuple(p["tasks"]),
        output=str(output),
        variant=p["variant"],
        device=p["device"],
        provider="CPUExecutionProvider" if p["backend"] == "onnx" else None,
        num_fewshot=p["num_fewshot"],
        data_dir=p["data_dir"],
        seed=p["seed"],
        gen_kwargs=p["gen_kwargs"],
    )
    return EvalRequest(**(fields | over))


def run_eval_shard(p: dict, out: Path, work: Path) -> dict:
    from webllama.evalsuite.cli import build_lm
    from webllama.evalsuite.run import CONFIG_FILE, run_eval

    if (work / RUN_DIR).is_dir() and not (work / RUN_DIR / CONFIG_FILE).is_file():
        shutil.rmtree(work / RUN_DIR)  # an attempt killed before its run began: the sweep's own leftovers
    shard = {p["task"]: tuple(p["samples"])}
    req = _request(p, out, work / RUN_DIR, samples=shard, threads=p["threads"], batch_size=p["batch_size"], bootstrap_iters=0)
    lm = build_lm(req)
    try:
        run_eval(req, lm)
    finally:
        close = getattr(lm, "close", None)
        if close:
            close()
    return {"run": RUN_DIR}


def run_merge(p: dict, out: Path, work: Path) -> dict:
    from webllama.evalsuite.run import CONFIG_FILE, run_eval, write_results
    from webllama.evalsuite.sweep.merge import CACHE_FILE, ReplayLM, merge_caches, publish, shard_model_record

    shards = [job_dir(out, s) / RUN_DIR for s in p["shards"]]
    record, config = shard_model_record(shards)
    run = work / RUN_DIR
    req = _request(p, out, run, limit=p["limit"], bootstrap_iters=p["bootstrap_iters"])
    # The run record first: the folder is then a run of this request whose cache holds every answer, which
    # run_eval resumes from, as it would resume an interrupted `webllama eval` of the same request.
    run.mkdir(parents=True, exist_ok=True)
    (run / CONFIG_FILE).write_text(json.dumps(req.fingerprint(), indent=2) + "\n", encoding="utf-8")
    answers = merge_caches([d / CACHE_FILE for d in shards], run / CACHE_FILE)
    results = run_eval(req, ReplayLM(record))
    seconds = [(finished(out, s) or {}).get("seconds", 0.0) for s in p["shards"]]
    results["config"] = config | {k: v for k, v in results.get("config", {}).items() if k not in config}
    results["webllama"]["sweep"] = p["labels"] | {"shards": p["shards"], "answers": answers, "eval_seconds": round(sum(seconds), 2)}
    write_results(results, run)
    publish(run, out / "runs" / p["name"])
    return {"run": f"runs/{p['name']}"}


def run_bench_job(p: dict, out: Path, work: Path) -> dict:
    from webllama.evalsuite.bench import BenchRequest, run_bench

    req = BenchRequest(
        target=_model_path(p | {"model": p["target"]}, out),
        runtime=p["runtime"],
        variant=p["variant"],
        device=p["device"],
        threads=p["threads"],
        runs=p["runs"],
        load_runs=p["load_runs"],
        prompt_lengths=tuple(p["prompt_lengths"]),
        decode_tokens=p["decode_tokens"],
        decode_prompt=p["decode_prompt"],
    )
    doc = run_bench(req) | {"sweep": p["labels"]}  # the leaderboard matches it to its row by these names
    dest = out / "bench" / f"bench-{p['name']}.json"
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = work / dest.name
    tmp.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, dest)
    return {"bench": f"bench/{dest.name}"}


EXECUTORS: dict[str, Callable[[dict, Path, Path], dict]] = {
    "convert": run_convert,
    "eval": run_eval_shard,
    "merge": run_merge,
    "bench": run_bench_job,
}


def _node() -> str | None:
    """The Ray node running this job (hosts repeat when several nodes share a machine)."""
    try:
        import ray

        return ray.get_runtime_context().get_node_id()[:12] if ray.is_initialized() else None
    except Exception:  # outside Ray (a job run by hand): no node
        return None


def one_line(e: BaseException) -> str:
    if isinstance(e, WebllamaError):
        return str(e)
    text = " ".join(str(e).split()) or "(no message)"
    return f"{type(e).__name__}: {text[:400]}"


def execute(job: dict, out: str) -> dict:
    """Run one job (a plan.Job as a dict); returns its record: status done or failed (with the error)."""
    out_dir = Path(out)
    done = finished(out_dir, job["id"])
    if done:  # another attempt finished it first (a retry racing a slow node)
        return done
    work = partial_dir(out_dir, job["id"])
    work.mkdir(parents=True, exist_ok=True)
    host = socket.gethostname()
    attempt = {"pid": os.getpid(), "host": host, "started": time.time(), "label": job["label"]}
    (work / WORKER_FILE).write_text(json.dumps(attempt), encoding="utf-8")
    t0 = time.time()
    try:
        extra = EXECUTORS[job["kind"]](job["params"], out_dir, work)
    except Exception as e:  # the job fails; the sweep goes on with the others and names this error
        log.exception("sweep job %s failed", job["label"])
        return {"id": job["id"], "status": "failed", "error": one_line(e), "host": host, "seconds": round(time.time() - t0, 2)}
    record = {"id": job["id"], "kind": job["kind"], "label": job["label"], "status": "done", "items": job["items"]}
    record |= {
        "seconds": round(time.time() - t0, 2),
        "started": t0,
        "finished": time.time(),
        "host": host,
        "node": _node(),
        "pid": os.getpid(),
        **extra,
    }
    (work / JOB_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    final = job_dir(out_dir, job["id"])
    if final.exists():  # a stale folder without job.json (a crash mid-rename): ours to replace
        shutil.rmtree(final)
    os.replace(work, final)
    return record
