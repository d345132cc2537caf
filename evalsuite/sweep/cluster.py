"""The Ray cluster a sweep runs on: a local one sized to the machine (stopped when the sweep ends, also on
Ctrl-C), or an existing one joined with `--address` (left running; only this sweep's tasks are cancelled).

A node's "chromium" resource is how many browser sessions it can host at once; a local cluster gets one
per CPU unless --browsers says otherwise. Nodes of a cluster declare it themselves:
    ray start --head --resources='{"chromium": 2}'
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from webllama.evalsuite.sweep.plan import CHROMIUM, Job
from webllama.evalsuite.sweep.spec import SweepError

OBJECT_STORE_BYTES = 128 << 20  # jobs exchange small JSON records only; Ray's default takes 30% of RAM


@dataclass(frozen=True)
class ClusterInfo:
    address: str | None  # None: the local cluster this sweep started
    dashboard_url: str | None
    resources: dict  # the cluster's total resources (CPU, chromium, GPU, memory ...)
    nodes: int
    max_node_cpus: float


@dataclass(frozen=True)
class ClusterOptions:
    address: str | None = None
    cpus: int | None = None  # local cluster only; default: the machine's
    browsers: int | None = None  # local cluster only; default: one per CPU
    dashboard: bool = False  # local cluster: start Ray's dashboard (needs `pip install "ray[default]"`)


@contextmanager
def cluster(opts: ClusterOptions) -> Iterator[ClusterInfo]:
    """ray.init for the sweep; ray.shutdown always runs (on a local cluster it stops every Ray process)."""
    import ray

    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage report to Ray's servers (offline machines)
    common = {"log_to_driver": False, "logging_level": logging.WARNING, "configure_logging": True}
    if opts.address:
        try:
            ctx = ray.init(address=opts.address, **common)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise SweepError(f"cannot join the Ray cluster at {opts.address}: {e} (is `ray start --head` running there?)") from None
    else:
        cpus = opts.cpus or os.cpu_count() or 1
        ctx = ray.init(
            address="local",  # a new cluster, even where `ray start` left one running (ray.init would join it)
            num_cpus=cpus,
            resources={CHROMIUM: float(opts.browsers or cpus)},
            include_dashboard=opts.dashboard,
            object_store_memory=OBJECT_STORE_BYTES,
            **common,
        )
    try:
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        yield ClusterInfo(
            address=opts.address,
            dashboard_url=_dashboard(ctx),
            resources=dict(ray.cluster_resources()),
            nodes=len(nodes),
            max_node_cpus=max((n["Resources"].get("CPU", 0.0) for n in nodes), default=0.0),
        )
    finally:
        ray.shutdown()


def _dashboard(ctx) -> str | None:
    url = getattr(ctx, "dashboard_url", None)
    if not url:
        return None
    return url if url.startswith("http") else f"http://{url}"


def check_feasible(jobs: list[Job], info: ClusterInfo) -> None:
    """Refuse a plan the cluster can never run (Ray would wait forever for the resource)."""
    where = f"the Ray cluster at {info.address}" if info.address else "the local Ray cluster"
    for job in jobs:
        if job.num_cpus > info.max_node_cpus:
            raise SweepError(
                f"{job.label} needs {job.num_cpus:g} CPUs but the largest node of {where} has {info.max_node_cpus:g}; lower 'threads'"
            )
        if job.num_gpus and info.resources.get("GPU", 0) < job.num_gpus:
            raise SweepError(f"{job.label} needs {job.num_gpus:g} GPU but {where} has none; drop 'gpus' from that runtime")
        for name, amount in job.resources.items():
            if info.resources.get(name, 0) < amount:
                raise SweepError(
                    f"{job.label} needs a '{name}' resource and {where} has none; start its nodes with "
                    f"ray start ... --resources='{{\"{name}\": 2}}' (browser sessions each node can host)"
                )
