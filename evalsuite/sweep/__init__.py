"""`webllama sweep SPEC`: models x variants x runtimes x tasks as Ray tasks, on this machine or a cluster.

    spec.py     the TOML/YAML spec, checked before anything runs
    plan.py     spec -> content-addressed jobs: convert once per (model, recipe); eval shards, merge, bench per row
    jobs.py     what a job does, inside a Ray worker: the ordinary convert / eval / bench code
    merge.py    shards -> one ordinary run, re-scored by lm-eval from the shards' cached answers
    cluster.py  a local Ray cluster sized to the machine, or an existing one (--address)
    runner.py   the driver loop: submit, collect, progress, Ctrl-C
    cli.py      argparse
A sweep's output folder reads like any set of runs: `webllama compare OUT/runs/a OUT/runs/b`,
`webllama leaderboard OUT --out board`.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from webllama.evalsuite.sweep.cluster import ClusterOptions, check_feasible, cluster
from webllama.evalsuite.sweep.jobs import finished
from webllama.evalsuite.sweep.plan import Job, build_plan, resolve_tasks
from webllama.evalsuite.sweep.runner import JobState, Sweep
from webllama.evalsuite.sweep.spec import SpecError, SweepError, SweepSpec, load_spec, parse_spec

MARKER = "sweep.json"
FORMAT = "webllama-sweep"

__all__ = ["SpecError", "SweepError", "SweepSpec", "load_spec", "parse_spec", "plan_sweep", "run_sweep", "is_sweep", "SweepFailed"]


class SweepFailed(SweepError):
    """Some jobs failed; the others finished and their results are in place."""


@dataclass(frozen=True)
class SweepResult:
    out: Path
    state: dict[str, JobState]
    jobs: list[Job]
    leaderboard: Path | None

    def failed(self) -> list[tuple[Job, JobState]]:
        return [(j, self.state[j.id]) for j in self.jobs if self.state[j.id].status in ("failed", "blocked")]


def is_sweep(folder: Path) -> bool:
    return (folder / MARKER).is_file()


def plan_sweep(spec: SweepSpec) -> list[Job]:
    """Resolve the tasks (lm-eval loads them: a bad name fails here) and build the job graph. Writes nothing."""
    with tempfile.TemporaryDirectory(prefix="webllama-sweep-plan-") as tmp:
        tasks = resolve_tasks(spec, Path(tmp))
    return build_plan(spec, tasks)


def describe_plan(jobs: list[Job]) -> str:
    kinds: dict[str, int] = {}
    for j in jobs:
        kinds[j.kind] = kinds.get(j.kind, 0) + 1
    items = sum(j.items for j in jobs)
    return f"plan: {len(jobs)} jobs ({', '.join(f'{n} {k}' for k, n in kinds.items())}), {items} eval items"


def run_sweep(spec: SweepSpec, jobs: list[Job], out: Path, opts: ClusterOptions, log: Callable[[str], None]) -> SweepResult:
    """Run the plan on Ray (see cluster.py), then write OUT/leaderboard from what finished."""
    out.mkdir(parents=True, exist_ok=True)
    _write_marker(spec, jobs, out)
    if all(finished(out, j.id) for j in jobs):  # nothing to run: no cluster to start
        state = Sweep(jobs, out, log).run()
        return SweepResult(out, state, jobs, write_board(out))
    with cluster(opts) as info:
        where = f"Ray cluster at {info.address}" if info.address else "local Ray cluster"
        res = ", ".join(f"{k} {v:g}" for k, v in sorted(info.resources.items()) if k in ("CPU", "GPU", "chromium"))
        log(f"{where}: {info.nodes} node(s), {res}")
        log(f"Ray dashboard: {info.dashboard_url}" if info.dashboard_url else "Ray dashboard: none (progress is printed here)")
        check_feasible(jobs, info)
        state = Sweep(jobs, out, log).run()
    board = write_board(out) if any((out / "runs").glob("*/results.json")) else None
    return SweepResult(out, state, jobs, board)


def write_board(out: Path) -> Path:
    from webllama.evalsuite.leaderboard import collect
    from webllama.evalsuite.leaderboard_html import write_leaderboard

    rows = collect([out])
    write_leaderboard(rows, out / "leaderboard")
    return out / "leaderboard"


def _write_marker(spec: SweepSpec, jobs: list[Job], out: Path) -> None:
    doc = {"format": FORMAT, "schema_version": 1, "spec": asdict(spec), "plan": [j.summary() for j in jobs]}
    tmp = out / f".{MARKER}.tmp"
    tmp.write_text(json.dumps(doc, indent=2, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, out / MARKER)
