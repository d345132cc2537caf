"""`webllama sweep SPEC`: argparse only; the work is in webllama.evalsuite.sweep."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sweep",
        help="models x variants x runtimes x tasks as Ray jobs (local or a cluster) -> runs, bench, leaderboard",
        description="Plan and run a sweep (see README: Sweeps). Re-running the same command skips finished jobs and "
        "re-does failed ones; Ctrl-C stops it and keeps what finished.",
    )
    p.add_argument("spec", help="sweep spec (.toml or .yaml): models, variants/recipes, runtimes, tasks, limit, bench")
    p.add_argument("--out", default=None, help="output folder, shared by every node (default: sweeps/<spec name>)")
    p.add_argument("--address", default=None, help="join this Ray cluster (ray start --head prints it) instead of a local one")
    p.add_argument("--cpus", type=int, default=None, help="local cluster: CPUs to use (default: all of the machine's)")
    p.add_argument("--browsers", type=int, default=None, help="local cluster: Chromium sessions at once (default: one per CPU)")
    p.add_argument("--limit", type=int, default=None, help="override the spec's items per task")
    p.add_argument("--full", action="store_true", help="whole tasks: ignore the spec's limit")
    p.add_argument("--shard-size", type=int, default=None, help="override the spec's items per eval job")
    p.add_argument("--dashboard", action="store_true", help='local cluster: start Ray\'s dashboard (needs "ray[default]")')
    p.add_argument("--dry-run", action="store_true", help="print the plan (what is done, what would run) and stop")
    p.set_defaults(func=cmd_sweep)


def apply_overrides(spec, args: argparse.Namespace):
    from webllama.evalsuite.sweep.spec import SpecError

    changes = {}
    if args.full:
        changes["limit"] = None
    elif args.limit is not None:
        changes["limit"] = args.limit
    if args.shard_size is not None:
        changes["shard_size"] = args.shard_size
    for key in ("limit", "shard_size"):
        if changes.get(key) is not None and changes[key] < 1:
            raise SpecError(f"--{key.replace('_', '-')} {changes[key]}: must be >= 1")
    return dataclasses.replace(spec, **changes)


def cmd_sweep(args: argparse.Namespace) -> int:
    from webllama.evalsuite.sweep import SweepFailed, describe_plan, load_spec, plan_sweep, run_sweep
    from webllama.evalsuite.sweep.cluster import ClusterOptions
    from webllama.evalsuite.sweep.jobs import finished

    spec = apply_overrides(load_spec(args.spec), args)
    out = Path(args.out or Path("sweeps") / Path(args.spec).stem).resolve()
    jobs = plan_sweep(spec)
    done = sum(1 for j in jobs if finished(out, j.id))
    print(f"{describe_plan(jobs)}; {done} already done in {out}", flush=True)
    if args.dry_run:
        for j in jobs:
            print(f"  {'done' if finished(out, j.id) else 'todo'}  {j.id}  {j.label}")
        return 0
    opts = ClusterOptions(address=args.address, cpus=args.cpus, browsers=args.browsers, dashboard=args.dashboard)
    try:
        result = run_sweep(spec, jobs, out, opts, log=lambda m: print(m, flush=True))
    except KeyboardInterrupt:
        print(f"interrupted: finished jobs are kept in {out}; re-run the same command to resume", file=sys.stderr)
        return 130
    if result.leaderboard:
        print((result.leaderboard / "leaderboard.md").read_text(encoding="utf-8"))
        print(f"leaderboard: {result.leaderboard / 'index.html'}")
    failed = result.failed()
    if failed:
        first, st = failed[0]
        raise SweepFailed(
            f"{len(failed)} of {len(jobs)} jobs failed, the others finished; first: {first.label}: {st.error} "
            f"(all errors: {out / 'sweep_state.json'}; re-run the same command to retry them)"
        )
    print(f"sweep finished: {len(jobs)} jobs; runs in {out / 'runs'}")
    return 0
