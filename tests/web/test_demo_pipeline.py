"""`webllama demo` end to end on a small slice (stories260K for CI speed; SmolLM2 is the default model
and is measured in benchmarks), then the leaderboard and the chat page in headless Chromium."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.web.test_browser_chat import chat_once, wait_loaded

pytestmark = pytest.mark.browser

RUNTIMES = {"native", "onnx", "browser-wasm"}


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory, stories_dir, benchmarks_dir):
    work = tmp_path_factory.mktemp("demo")
    cmd = [
        sys.executable,
        "-m",
        "webllama.converter.cli",
        "demo",
        str(stories_dir),
        "--workdir",
        str(work),
        "--tasks",
        "arc_easy,piqa",
        "--limit",
        "8",
        "--no-serve",
        "--data-dir",
        str(benchmarks_dir),
    ]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    second = subprocess.run(cmd, capture_output=True, text=True, timeout=600)  # resumes: every step skipped
    assert second.returncode == 0, second.stderr[-3000:]
    assert second.stdout.count("already done, skipped") >= 6, second.stdout  # get model, convert, 4 evals
    return work


def test_demo_writes_the_leaderboard_with_every_runtime(demo_dir):
    board = demo_dir / "leaderboard"
    for name in (
        "index.html",
        "leaderboard.md",
        "leaderboard.csv",
        "leaderboard.json",
        "accuracy_vs_size.png",
        "accuracy_vs_size.svg",
        "deltas_vs_native.png",
        "deltas_vs_native.svg",
    ):
        assert (board / name).stat().st_size > 0, name
    rows = json.loads((board / "leaderboard.json").read_text())["rows"]
    assert {(r["variant"], r["runtime"]) for r in rows} == {
        ("source", "native"),
        ("q4", "onnx"),
        ("fp32", "onnx"),
        ("q4", "browser-wasm"),
    }
    by = {(r["variant"], r["runtime"]): r for r in rows}
    for r in rows:
        assert set(r["scores"]) == {"arc_easy", "piqa"}
    # fp32 on onnxruntime answers exactly like torch; the browser exactly like onnxruntime on q4
    for task in ("arc_easy", "piqa"):
        assert by[("fp32", "onnx")]["scores"][task]["agreement"] == 1.0
        assert by[("q4", "browser-wasm")]["scores"][task]["value"] == by[("q4", "onnx")]["scores"][task]["value"]
    assert by[("q4", "onnx")]["bundle_bytes"] < by[("fp32", "onnx")]["bundle_bytes"]
    md = (board / "leaderboard.md").read_text()
    assert "| stories260K | q4 | browser-wasm |" in md


def test_leaderboard_and_chat_page_in_chromium(demo_dir, serve, page):
    server = serve(demo_dir / "bundles", leaderboard=demo_dir / "leaderboard")
    page.goto(server.url + "/leaderboard")
    page.wait_for_selector("table#board")
    assert page.locator("table#board tbody tr").count() == 4
    page.goto(server.url + "/?model=stories260K&autoload=1")
    wait_loaded(page)
    chat_once(page, "Once upon a time", max_tokens=8)
    assert len(page.inner_text(".msg.assistant")) > 5
    assert "tok/s" in page.inner_text("#status")
