"""`webllama sweep` on a local Ray cluster (2 CPUs): stories260K x {fp32, q4} x {native, onnx, browser-wasm (q4)}
x {arc_easy, piqa}, 4 items per task in shards of 2. Its merged runs must answer item by item like the same
runs made one by one with `webllama eval`; a failing job is named while the others finish; a worker killed
mid-job is retried and its job finishes; a re-run skips what is done and re-does what failed; a spec with a
typo is refused in one line before anything runs."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.evalsuite.helpers import choice, close, scores

TASKS = ("arc_easy", "piqa")
LIMIT = 4
ROWS = {  # merged run folder -> the `webllama eval` arguments of the same run
    "stories260K-source-native": ["--backend", "native"],
    "stories260K-fp32-onnx": ["--backend", "onnx", "--variant", "fp32"],
    "stories260K-q4-onnx": ["--backend", "onnx", "--variant", "q4"],
    "stories260K-q4-browser-wasm": ["--backend", "browser", "--variant", "q4", "--device", "wasm"],
}


def sweep_cmd(spec: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "webllama.cli", "sweep", str(spec), "--out", str(out), "--cpus", "2", *extra]


def write_spec(path: Path, doc: dict) -> Path:
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path


def _kill_first_worker(out: Path, label: str, proc: subprocess.Popen) -> tuple[int, str] | None:
    """SIGKILL the Ray worker running the first job whose label starts with `label`; (its pid, the job), or None."""
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        for f in (out / "jobs").glob("*.partial/worker.json") if (out / "jobs").is_dir() else ():
            try:
                w = json.loads(f.read_text())
            except (OSError, ValueError):
                continue
            if w["label"].startswith(label):
                try:
                    os.kill(w["pid"], signal.SIGKILL)
                    return w["pid"], w["label"]
                except ProcessLookupError:
                    continue
        time.sleep(0.02)
    return None


@dataclass
class SweepRun:
    out: Path
    spec: Path
    returncode: int
    stdout: str
    stderr: str
    killed: tuple[int, str] | None  # (pid, job label)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, stories_dir, small_data_dir) -> SweepRun:
    """One sweep with everything the tests look at: two models (stories260K, and a truncated copy of it that
    fails), three runtimes, a bench row, and a Ray worker SIGKILLed in the middle of a job."""
    work = tmp_path_factory.mktemp("sweep")
    broken = work / "broken"
    shutil.copytree(stories_dir, broken)
    weights = broken / "stories260K.bin"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    spec = write_spec(
        work / "s260.yaml",
        {
            "tasks": list(TASKS),
            "limit": LIMIT,
            "shard_size": 2,
            "data_dir": str(small_data_dir),
            # a browser job pays a Chromium start: one per task
            "runtimes": ["native", "onnx", {"name": "browser-wasm", "variants": ["q4"], "shard_size": LIMIT}],
            "models": [
                {"name": "stories260K", "source": str(stories_dir), "variants": ["fp32", "q4"]},
                {"name": "broken", "source": str(broken), "variants": ["q4"]},
            ],
            "bench": {"runs": 1, "load_runs": 1, "prompt_lengths": [16], "decode_tokens": 8, "threads": 1, "runtimes": ["onnx"]},
        },
    )
    out = work / "out"
    proc = subprocess.Popen(sweep_cmd(spec, out), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed = _kill_first_worker(out, "eval stories260K-source-native arc_easy", proc)
    stdout, stderr = proc.communicate(timeout=900)
    return SweepRun(out, spec, proc.returncode, stdout, stderr, killed)


def _one_by_one(main, model, args: list[str], tasks: tuple[str, ...], data_dir, out: Path):
    """`webllama eval` of one row: in this process, or (browser) in its own, since Playwright's sync API
    cannot start a second time in a process that already ran it."""
    from webllama.evalsuite.run import load_run

    cmd = ["eval", str(model), *args, "--tasks", ",".join(tasks), "--limit", str(LIMIT), "--data-dir", str(data_dir)]
    cmd += ["--output", str(out)]
    if "browser" in args:
        proc = subprocess.run([sys.executable, "-m", "webllama.cli", *cmd], capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
    else:
        assert main(cmd) == 0
    return load_run(out)


@pytest.mark.browser
def test_sweep_answers_like_one_by_one_eval(sweep, tmp_path, stories_dir, small_data_dir):
    from webllama.evalsuite.run import load_run

    from webllama.cli import main

    bundle = sweep.out / "bundles" / "stories260K"
    for name, args in ROWS.items():
        model = stories_dir.resolve() if name.endswith("native") else bundle  # the sweep records resolved paths
        if "browser" in name:
            # The page's answers depend on what it scored before in the same session (its WASM graph quantizes
            # activations dynamically and reuses KV across items), and a sweep runs each task in its own page:
            # the same runs one by one are then one `webllama eval` per task.
            runs = [_one_by_one(main, model, args, (t,), small_data_dir, tmp_path / f"{name}-{t}") for t in TASKS]
            alone = ({"results": {t: r[0]["results"][t] for t, r in zip(TASKS, runs, strict=True)}}, {})
            for r in runs:
                alone[1].update(r[1])
        else:
            alone = _one_by_one(main, model, args, TASKS, small_data_dir, tmp_path / name)
            assert load_run(sweep.out / "runs" / name)[0]["webllama"]["request"] == alone[0]["webllama"]["request"], name
        merged = load_run(sweep.out / "runs" / name)
        a, b = scores({"samples": merged[1]}), scores({"samples": alone[1]})
        assert sorted(a) == sorted(b) and len(a) == len(TASKS) * LIMIT, name
        for key in a:
            assert choice(a[key]) == choice(b[key]) and close(a[key], b[key]), (name, key, a[key], b[key])
        for task in TASKS:
            assert merged[0]["results"][task]["acc,none"] == alone[0]["results"][task]["acc,none"], (name, task)
            assert merged[0]["results"][task]["acc_stderr,none"] == pytest.approx(alone[0]["results"][task]["acc_stderr,none"])


@pytest.mark.browser
def test_failing_jobs_are_named_while_the_others_finish(sweep):
    assert "local Ray cluster: 1 node(s), CPU 2, chromium 2" in sweep.stdout
    assert sweep.returncode != 0, sweep.stdout[-3000:]
    last = sweep.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "jobs failed, the others finished; first: " in last, last
    assert "broken" in last and "truncated" in last, last
    assert "convert broken default (q4): FAILED: " in sweep.stdout
    assert "eval broken-q4-onnx arc_easy 1/2: skipped: needs 'convert broken default (q4)', which failed" in sweep.stdout
    assert "eval broken-source-native piqa 2/2: FAILED: " in sweep.stdout
    state = json.loads((sweep.out / "sweep_state.json").read_text())
    failed = {j["label"].split()[1] for j in state["jobs"].values() if j["status"] in ("failed", "blocked")}
    assert failed == {"broken", "broken-source-native", "broken-q4-onnx", "broken-q4-browser-wasm"}, failed
    assert sorted(p.name for p in (sweep.out / "runs").iterdir()) == sorted(ROWS)


@pytest.mark.browser
def test_killed_worker_is_retried_and_a_rerun_skips_done_and_redoes_failed(sweep):
    assert sweep.killed, "no worker of the native eval was seen running"
    pid, label = sweep.killed
    attempts = [json.loads(f.read_text()) for f in (sweep.out / "jobs").glob("*/worker.json")]
    finished = [w for w in attempts if w["label"] == label]
    assert len(finished) == 1 and finished[0]["pid"] != pid  # Ray re-ran the killed job on another worker
    assert f"{label}: done in " in sweep.stdout and f"{label}: FAILED" not in sweep.stdout
    # Content-addressed: the same spec plans the same jobs; finished ones are found done, failed ones are to do.
    dry = subprocess.run(sweep_cmd(sweep.spec, sweep.out, "--dry-run"), capture_output=True, text=True, timeout=120)
    assert dry.returncode == 0, dry.stderr
    lines = [line.split(None, 2) for line in dry.stdout.splitlines() if line.startswith("  ")]
    todo = {label for status, _, label in lines if status == "todo"}
    assert todo and all("broken" in label for label in todo), todo
    assert sum(status == "done" for status, _, _ in lines) == 14 + 1 + 4 + 2  # shards (browser: 1 per task), convert, merges, bench


@pytest.mark.browser
def test_sweep_leaderboard_reads_the_merged_runs_and_bench(sweep):
    board = json.loads((sweep.out / "leaderboard" / "leaderboard.json").read_text())
    rows = {(r["model"], r["variant"], r["runtime"]): r for r in board["rows"]}
    assert set(rows) == {("stories260K", "source", "native"), *[("stories260K", v, "onnx") for v in ("fp32", "q4")]} | {
        ("stories260K", "q4", "browser-wasm")
    }  # shards (jobs/*/run) are not rows
    q4 = rows[("stories260K", "q4", "onnx")]
    assert q4["bench"]["decode_tps"] > 0 and q4["bench"]["load_s"] > 0 and q4["bench"]["memory_bytes"] > 0
    assert q4["bundle_bytes"] < rows[("stories260K", "fp32", "onnx")]["bundle_bytes"]
    for task in TASKS:  # fp32 on onnxruntime answers as torch does, item by item
        assert rows[("stories260K", "fp32", "onnx")]["scores"][task]["agreement"] == 1.0
    for plot in ("accuracy_vs_size.png", "accuracy_vs_decode.svg", "deltas_vs_native.png", "index.html"):
        assert (sweep.out / "leaderboard" / plot).stat().st_size > 0
    runs = sweep.out / "runs"
    cmp = subprocess.run(
        [
            sys.executable,
            "-m",
            "webllama.cli",
            "compare",
            str(runs / "stories260K-q4-onnx"),
            str(runs / "stories260K-q4-browser-wasm"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert cmp.returncode == 0 and "1.000" in cmp.stdout, cmp.stdout + cmp.stderr


TYPOS = [
    ({"taks": ["arc_easy"]}, "unknown key 'taks' (did you mean 'tasks'?)"),
    ({"runtimes": ["browser-wsm"]}, "unknown runtime 'browser-wsm' (did you mean 'browser-wasm'?)"),
    ({"models": [{"name": "m", "source": "SRC", "variants": ["q5"]}]}, "unknown variant 'q5'"),
    ({"models": [{"name": "m", "sorce": "SRC"}]}, "unknown key 'models[0].sorce' (did you mean 'models[0].source'?)"),
    ({"bench": {"run": 3}}, "unknown key 'bench.run' (did you mean 'bench.runs'?)"),
    ({"tasks": ["arc_esy"]}, "unknown task 'arc_esy'"),
]


@pytest.mark.parametrize(("change", "message"), TYPOS, ids=[m.split("'")[1] for _, m in TYPOS])
def test_spec_with_a_typo_is_refused_in_one_line_before_anything_runs(tmp_path, capsys, stories_dir, small_data_dir, change, message):
    from webllama.cli import main

    doc = {"tasks": ["arc_easy"], "limit": 2, "data_dir": str(small_data_dir), "runtimes": ["native"]}
    doc["models"] = [{"name": "m", "source": str(stories_dir)}]
    if "taks" in change:
        del doc["tasks"]
    for key, value in change.items():
        doc[key] = json.loads(json.dumps(value).replace("SRC", str(stories_dir)))
    spec = tmp_path / "spec.toml"
    spec.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in doc.items() if k not in ("models", "bench")) + _toml_tables(doc))
    assert main(["sweep", str(spec), "--out", str(tmp_path / "out")]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert not (tmp_path / "out").exists()


def _toml_tables(doc: dict) -> str:
    """[[models]] and [bench] tables in TOML (the list/dict values above are inline JSON, valid TOML too)."""
    text = ""
    for m in doc.get("models", []):
        text += "\n[[models]]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in m.items())
    if "bench" in doc:
        text += "\n[bench]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in doc["bench"].items())
    return text


def test_pareto_front_and_strided_shards():
    from webllama.evalsuite.leaderboard import pareto_front
    from webllama.evalsuite.sweep.plan import Leaf, shards

    pts = [(100.0, 0.50), (400.0, 0.52), (120.0, 0.40), (400.0, 0.51), (50.0, 0.30)]
    assert pareto_front(pts, x_lower_is_better=True) == [4, 0, 1]  # size: smaller and more accurate wins
    assert pareto_front(pts, x_lower_is_better=False) == [1]  # speed: faster and more accurate wins
    assert shards(Leaf("t", 5), 2) == [(0, 3), (1, 4), (2,)]
    assert sorted(i for s in shards(Leaf("t", 250), 100) for i in s) == list(range(250))
