"""Sweep scaling: items/s of a browser (WASM) eval run by `webllama sweep` with 1 worker, 2 workers on one
local Ray cluster, and 2 workers on a two-node Ray cluster (two `ray start` nodes on this machine, joined
with --address). Writes benchmarks/results/sweep-scaling/<model>.json and prints a Markdown table.

    .venv/bin/python benchmarks/sweep_scaling.py                         # stories260K, 2 tasks x 40 items
    .venv/bin/python benchmarks/sweep_scaling.py --model smollm2 --limit 12 --shard-size 3

items/s = eval items / (last eval job's end - first eval job's start), from the job records: Ray's start,
the merges and the leaderboard are not counted; model load and Chromium start are (each job pays them).
The model is converted once (first configuration) and reused by the others (copied with its job record).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("WEBLLAMA_SHARED", REPO.parent / "shared"))
CONFIGS = {  # name -> (what it is, sweep flags, `ray start` nodes as (cpus, chromium); None: a local cluster)
    "one-worker": ("1 worker (local cluster, --cpus 1)", ["--cpus", "1", "--browsers", "1"], None),
    "two-workers": ("2 workers (local cluster, --cpus 2)", ["--cpus", "2", "--browsers", "2"], None),
    "two-nodes": ("2 workers on 2 Ray nodes (ray start x2, --address)", [], [(1, 1), (1, 1)]),
}


def model_source(name: str, work: Path) -> tuple[str, str]:
    if name == "stories260K":
        return str(SHARED / "data/models/stories260K"), "stories260K"
    from webllama.converter.sources import smollm2_gguf

    return str(smollm2_gguf(work / "models")), "smollm2"


def write_spec(path: Path, source: str, name: str, args: argparse.Namespace) -> None:
    runtimes = '[{name = "browser-wasm", variants = ["q4"]}]'
    path.write_text(
        f"tasks = {json.dumps(args.tasks.split(','))}\nlimit = {args.limit}\nshard_size = {args.shard_size}\nthreads = 1\n"
        f"data_dir = {json.dumps(str(SHARED / 'data/benchmarks'))}\nruntimes = {runtimes}\n\n"
        f'[[models]]\nname = {json.dumps(name)}\nsource = {json.dumps(source)}\nvariants = ["q4"]\n',
        encoding="utf-8",
    )


def items_per_s(out: Path) -> tuple[float, int, float, list[str]]:
    recs = [json.loads(p.read_text()) for p in (out / "jobs").glob("*/job.json")]
    evals = [r for r in recs if r.get("kind") == "eval"]
    wall = max(r["finished"] for r in evals) - min(r["started"] for r in evals)
    items = sum(r["items"] for r in evals)
    return items / wall, items, wall, sorted({f"{r['host']}:{r.get('node')}" for r in evals})


def cluster_env() -> dict[str, str]:
    """Ray >= 2.59 authenticates with a token: the nodes and the driver must share one (Ray's own variables)."""
    import secrets

    return os.environ | {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}


def start_nodes(nodes: list[tuple[int, int]], port: int, env: dict[str, str]) -> list[subprocess.Popen]:
    """`ray start --block` per node, so that each node is a child process this script can stop by its pid."""
    ray = str(Path(sys.executable).with_name("ray"))
    procs = []
    for i, (cpus, chromium) in enumerate(nodes):
        where = ["--head", f"--port={port}", "--include-dashboard=false"] if i == 0 else [f"--address=127.0.0.1:{port}"]
        res = json.dumps({"chromium": chromium})
        cmd = [ray, "start", "--block", *where, f"--num-cpus={cpus}", f"--resources={res}", "--object-store-memory=134217728"]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, env=env))
        time.sleep(15 if i == 0 else 10)  # the head must be up before a worker node joins it
    return procs


def stop_nodes(procs: list[subprocess.Popen]) -> None:
    import signal

    for p in reversed(procs):
        os.killpg(p.pid, signal.SIGTERM)  # the node's own process group: its raylet, workers, store
        try:
            p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)


def run_config(name: str, spec: Path, out: Path, warm: Path | None, port: int) -> dict:
    label, flags, nodes = CONFIGS[name]
    if warm:  # the converted bundle and its job record: the convert job is then found done
        shutil.copytree(warm / "bundles", out / "bundles")
        for job in (warm / "jobs").glob("*/job.json"):
            if json.loads(job.read_text())["kind"] == "convert":
                shutil.copytree(job.parent, out / "jobs" / job.parent.name)
    env = cluster_env() if nodes else dict(os.environ)
    procs = start_nodes(nodes, port, env) if nodes else []
    try:
        cmd = [sys.executable, "-m", "webllama.cli", "sweep", str(spec), "--out", str(out), *flags]
        if nodes:
            cmd += ["--address", f"127.0.0.1:{port}"]
        t0 = time.time()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            raise SystemExit(f"{name}: sweep failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    finally:
        stop_nodes(procs)
    rate, items, wall, nodes = items_per_s(out)
    return {"config": label, "items_per_s": rate, "items": items, "eval_wall_s": wall, "command_s": time.time() - t0, "nodes": nodes}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="stories260K", choices=["stories260K", "smollm2"])
    ap.add_argument("--tasks", default="arc_easy,piqa")
    ap.add_argument("--limit", type=int, default=40)
    ap.add_argument("--shard-size", type=int, default=10)
    ap.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated subset of: " + ", ".join(CONFIGS))
    ap.add_argument("--work", default="/tmp/webllama-sweep-scaling")
    ap.add_argument("--port", type=int, default=6391)
    args = ap.parse_args()
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    source, name = model_source(args.model, work)
    spec = work / "spec.toml"
    write_spec(spec, source, name, args)
    rows, warm = [], None
    for config in args.configs.split(","):
        out = work / f"out-{len(rows)}"
        rows.append(run_config(config, spec, out, warm, args.port))
        warm = warm or out
        print(json.dumps(rows[-1]), flush=True)
    base = rows[0]["items_per_s"]
    doc = {"model": name, "tasks": args.tasks, "limit": args.limit, "shard_size": args.shard_size, "cpus": os.cpu_count()}
    doc |= {"load_avg_1m_at_end": os.getloadavg()[0], "rows": rows}
    dest = REPO / "benchmarks/results/sweep-scaling" / f"{name}.json"
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(doc, indent=2) + "\n")
    print("| configuration | eval items | eval wall s | items/s | vs 1 worker |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['config']} | {r['items']} | {r['eval_wall_s']:.1f} | {r['items_per_s']:.3f} | {r['items_per_s'] / base:.2f}x |")
    print(f"results: {dest}")


if __name__ == "__main__":
    main()
