"""SweepSpec -> the job graph: convert each (model, recipe) once, then for every target (model, variant,
runtime) one eval job per shard of every task, a merge of those shards into one ordinary run folder,
and a bench job. Jobs are content-addressed: the id hashes everything that decides the job's output
(inputs, settings, the ids it depends on), so a re-run finds finished work by id and a changed input
gets a new id instead of stale results.

Layout under the output folder (shared by every node of a cluster, at the same path):
    sweep.json                 the spec and the plan (marks the folder as a sweep for `webllama leaderboard`)
    sweep_state.json           every job's status, seconds and error (rewritten as jobs finish)
    bundles/<model>[-<recipe>]/    converted bundles
    jobs/<id>/                 a finished job (job.json; eval shards: run/, an ordinary run folder of their items)
    jobs/<id>.partial/         a job being run, or interrupted (eval shards resume from its lm-eval cache)
    runs/<model>-<variant>-<runtime>/  merged runs: what `webllama compare` and `leaderboard` read
    bench/bench-<model>-<variant>-<runtime>.json   `webllama bench` documents
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from webllama.evalsuite.devices import BROWSER_DEVICES
from webllama.evalsuite.run import _DropCustomKwargsNotice
from webllama.evalsuite.sweep.spec import ModelSpec, Recipe, RuntimeSpec, SweepError, SweepSpec

from webllama.registry import Registry


@dataclass(frozen=True)
class Runtime:
    backend: str  # webllama eval --backend
    device: str | None  # browser: wasm | webgpu
    bench_runtime: str  # webllama bench --runtime
    browser: bool  # needs one Chromium: the "chromium" Ray resource


RUNTIMES: Registry[Runtime] = Registry("runtime")
RUNTIMES.add("native", Runtime("native", None, "native", False))
RUNTIMES.add("onnx", Runtime("onnx", None, "onnx", False))
for _device in BROWSER_DEVICES:  # evalsuite/devices.py
    RUNTIMES.add(f"browser-{_device}", Runtime("browser", _device, "browser", True))
RUNTIMES.freeze()
CHROMIUM = "chromium"  # the custom Ray resource: how many browser sessions a node can host at once


@dataclass(frozen=True)
class Leaf:
    """One lm-eval task the sweep shards (a group such as mmlu contributes one Leaf per subtask)."""

    name: str
    items: int  # items evaluated (the limit, capped at the task's size)


@dataclass(frozen=True)
class Job:
    id: str
    kind: str  # convert | eval | merge | bench
    label: str  # what the terminal and the state file call it
    params: dict  # JSON-able inputs of the executor (webllama.evalsuite.sweep.jobs)
    deps: tuple[str, ...] = ()
    items: int = 0  # eval items (progress, items/s, ETA)
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    resources: dict = field(default_factory=dict)

    def summary(self) -> dict:
        return {"id": self.id, "kind": self.kind, "label": self.label, "deps": list(self.deps), "items": self.items}


@dataclass(frozen=True)
class Target:
    """One leaderboard row: what is evaluated, on which runtime, under which names."""

    model: str
    variant: str  # bundle variant; "source" for native
    label: str  # row variant: the variant, suffixed with the recipe when it is not the default
    runtime: str
    path: str  # source path / hub id (native), or the bundle relative to the output folder
    identity: str  # source digest (native) or the convert job id
    convert: str | None  # the convert job it needs

    @property
    def name(self) -> str:
        return f"{self.model}-{self.label}-{self.runtime}"


def digest(*parts) -> str:
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def source_identity(model: ModelSpec) -> str:
    """Content of a local source (files over 64 MiB by size + mtime), or the hub id + revision."""
    from webllama.evalsuite.run import folder_digest

    path = Path(model.source)
    return folder_digest(path) if path.exists() else f"hub:{model.source}@{model.revision or 'main'}"


def resolve_tasks(spec: SweepSpec, work: Path) -> dict[str, list[Leaf]]:
    """Each task of the spec -> its leaf tasks and item counts (lm-eval loads them once, here, so a bad
    task name fails before anything runs)."""
    from webllama.evalsuite import tasks as offline

    offline.quiet_index_logs()
    logging.getLogger("lm_eval.api.task").addFilter(_DropCustomKwargsNotice())
    data_dir = offline.resolve_data_dir(spec.data_dir)
    tm = offline.task_manager(data_dir, work)
    import datasets

    datasets.disable_progress_bars()  # the planner's task loads print one "Map" bar per task otherwise
    try:
        return {name: _leaves(name, spec, tm, data_dir) for name in spec.tasks}
    finally:
        datasets.enable_progress_bars()


def _leaves(name: str, spec: SweepSpec, tm, data_dir) -> list[Leaf]:
    from webllama.evalsuite import tasks as offline

    leaves = []
    for leaf in offline.check_tasks([name], tm, data_dir):
        for task_name, task in sorted(tm.load([leaf])["tasks"].items()):
            n = len(task.eval_docs)
            leaves.append(Leaf(task_name, min(n, spec.limit) if spec.limit else n))
    return leaves


def targets(spec: SweepSpec, identities: dict[str, str], converts: dict[tuple[str, str], Job]) -> list[Target]:
    out = []
    for model in spec.models:
        for rt in spec.runtimes:
            if rt.name == "native":
                out.append(Target(model.name, "source", "source", "native", model.source, identities[model.name], None))
                continue
            for recipe in model.recipes:
                conv = converts[(model.name, recipe.name)]
                for variant in _variants_for(recipe, rt):
                    label = variant if recipe.name == "default" else f"{variant}-{recipe.name}"
                    out.append(Target(model.name, variant, label, rt.name, conv.params["bundle"], conv.id, conv.id))
    return out


def _variants_for(recipe: Recipe, rt: RuntimeSpec) -> list[str]:
    return [v for v in recipe.variants if rt.variants is None or v in rt.variants]


def convert_job(model: ModelSpec, recipe: Recipe, identity: str, threads: int) -> Job:
    bundle = f"bundles/{model.name}" + ("" if recipe.name == "default" else f"-{recipe.name}")
    params = {
        "source": model.source,
        "revision": model.revision,
        "bundle": bundle,
        "variants": list(recipe.variants),
        "quant": dict(recipe.quant),
        "graph": recipe.graph,
    }
    job_id = digest("convert", identity, params | {"source": None})  # the source's content, not its path
    return Job(job_id, "convert", f"convert {model.name} {recipe.name} ({','.join(recipe.variants)})", params, num_cpus=threads)


def eval_settings(spec: SweepSpec) -> dict:
    """What every eval job of the sweep shares (and so is part of every eval job id)."""
    gen = {"max_gen_toks": spec.max_gen_toks} if spec.max_gen_toks else None
    return {"data_dir": spec.data_dir, "seed": spec.seed, "num_fewshot": spec.num_fewshot, "gen_kwargs": gen}


def shards(leaf: Leaf, size: int) -> list[tuple[int, ...]]:
    """Item indices of each shard: strided, so every shard gets a similar mix of short and long items."""
    count = max(1, -(-leaf.items // size))
    return [tuple(range(i, leaf.items, count)) for i in range(count) if i < leaf.items]


def _resources(spec: SweepSpec, target: Target, threads: int) -> dict:
    rt = RUNTIMES.get(target.runtime)
    gpus = next(r.gpus for r in spec.runtimes if r.name == target.runtime)
    return {"num_cpus": threads, "num_gpus": gpus, "resources": {CHROMIUM: 1} if rt.browser else {}}


def eval_jobs(spec: SweepSpec, target: Target, tasks: dict[str, list[Leaf]]) -> list[Job]:
    rt, settings, out = RUNTIMES.get(target.runtime), eval_settings(spec), []
    size = next(r.shard_size for r in spec.runtimes if r.name == target.runtime) or spec.shard_size
    for leaves in tasks.values():
        for leaf in leaves:
            parts = shards(leaf, size)
            for i, ids in enumerate(parts, 1):
                params = {
                    "model": target.path,
                    "in_bundle": target.convert is not None,
                    "backend": rt.backend,
                    "device": rt.device,
                    "variant": None if target.runtime == "native" else target.variant,
                    "task": leaf.name,
                    "samples": list(ids),
                    "threads": spec.threads,
                    "batch_size": spec.batch_size,
                    **settings,
                }
                job_id = digest("eval", target.identity, params | {"model": None})
                label = f"eval {target.name} {leaf.name} {i}/{len(parts)}"
                deps = (target.convert,) if target.convert else ()
                out.append(Job(job_id, "eval", label, params, deps, len(ids), **_resources(spec, target, spec.threads)))
    return out


def merge_job(spec: SweepSpec, target: Target, shards_: list[Job]) -> Job:
    rt = RUNTIMES.get(target.runtime)
    params = {
        "name": target.name,
        "labels": {"model": target.model, "variant": target.label, "runtime": target.runtime},
        "model": target.path,
        "in_bundle": target.convert is not None,
        "backend": rt.backend,
        "device": rt.device,
        "variant": None if target.runtime == "native" else target.variant,
        "tasks": list(spec.tasks),
        "limit": spec.limit,
        "shards": [j.id for j in shards_],
        "bootstrap_iters": spec.bootstrap_iters,
        **eval_settings(spec),
    }
    job_id = digest("merge", params | {"model": None})
    return Job(job_id, "merge", f"merge {target.name}", params, tuple(j.id for j in shards_))


def bench_job(spec: SweepSpec, target: Target) -> Job:
    b, rt = spec.bench, RUNTIMES.get(target.runtime)
    params = {
        "name": target.name,
        "labels": {"model": target.model, "variant": target.label, "runtime": target.runtime},
        "target": target.path,
        "in_bundle": target.convert is not None,
        "runtime": rt.bench_runtime,
        "device": rt.device if rt.browser else "cpu",
        "variant": None if target.runtime == "native" else target.variant,
        "threads": b.threads,
        "runs": b.runs,
        "load_runs": b.load_runs,
        "prompt_lengths": list(b.prompt_lengths),
        "decode_tokens": b.decode_tokens,
        "decode_prompt": b.decode_prompt,
    }
    job_id = digest("bench", target.identity, params | {"target": None})
    params["exclusive"] = b.exclusive  # how it is scheduled, not what it measures: not part of the id
    deps = (target.convert,) if target.convert else ()
    return Job(job_id, "bench", f"bench {target.name}", params, deps, **_resources(spec, target, b.threads))


def build_plan(spec: SweepSpec, tasks: dict[str, list[Leaf]]) -> list[Job]:
    """Every job of the sweep, dependencies before dependents."""
    identities = {m.name: source_identity(m) for m in spec.models}
    converts = {(m.name, r.name): convert_job(m, r, identities[m.name], spec.threads) for m in spec.models for r in m.recipes}
    rows = targets(spec, identities, converts)
    used = {t.convert for t in rows}
    jobs = [j for j in converts.values() if j.id in used]
    for target in rows:
        shard_jobs = eval_jobs(spec, target, tasks)
        jobs += [*shard_jobs, merge_job(spec, target, shard_jobs)]
    if spec.bench:
        chosen = spec.bench.runtimes or [r.name for r in spec.runtimes]
        jobs += [bench_job(spec, t) for t in rows if t.runtime in chosen]
    ids = [j.id for j in jobs]
    if len(set(ids)) != len(ids):
        raise SweepError("two jobs of the plan are the same job (a model listed twice under two names?); remove the duplicate")
    return jobs
