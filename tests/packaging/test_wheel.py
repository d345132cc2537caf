"""The wheel works anywhere: built from the checkout (setup.py vendors the npm files the page loads),
installed into a fresh virtual environment, then run from an unrelated folder: `webllama convert`,
`webllama demo` (convert, eval native / onnx / browser, leaderboard), `webllama site` and `webllama serve`,
whose chat page loads and answers in Chromium with nothing but the installed package.

The venv gets the wheel with --no-deps; its dependencies come from the environment running the tests
through a .pth line (site-packages as a plain path: its own .pth files, among them the editable install's
finder, are not processed), so torch and friends are not reinstalled."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest

from tests.web.test_browser_chat import chat_once, wait_loaded

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("WEBLLAMA_CHROMIUM", "/usr/bin/chromium")


def _source_copy(dest: Path) -> Path:
    """The files git would ship (tracked + untracked not ignored), as a clean source tree; web/node_modules
    is linked, as an `npm ci` would have filled it (the build hook copies the vendored files from it)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO, capture_output=True, check=True
    ).stdout.split(b"\0")
    for rel in filter(None, (p.decode() for p in listed)):
        if (REPO / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, dest / rel)
    (dest / "web" / "node_modules").symlink_to(REPO / "web" / "node_modules")
    return dest


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    src = _source_copy(tmp_path_factory.mktemp("src"))
    dist = tmp_path_factory.mktemp("dist")
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist), str(src)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    (whl,) = dist.glob("webllama-*.whl")
    return whl


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True, timeout=120)
    (site,) = root.glob("lib/python*/site-packages")
    deps = [p for p in sys.path if p.endswith("site-packages")]  # this environment's (and what its .pth files add)
    (site / "_webllama_test_deps.pth").write_text("".join(f"{p}\n" for p in deps))
    py = root / "bin" / "python"
    r = subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    return root


@pytest.fixture(scope="module")
def elsewhere(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("elsewhere")  # no checkout anywhere above it


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "WEBLLAMA_DATA_DIR", "VIRTUAL_ENV")}


def run(venv: Path, cwd: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    r = subprocess.run([str(venv / "bin" / "webllama"), *args], cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"webllama {' '.join(args)}:\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
    return r


def test_wheel_holds_one_namespace_and_the_vendored_npm_files(wheel):
    from webllama.web.vendor import vendor_files

    names = set(zipfile.ZipFile(wheel).namelist())
    tops = {n.split("/")[0] for n in names}
    assert tops == {"webllama", wheel.name.split("-py3")[0] + ".dist-info"}, tops
    for dist, _, files in vendor_files().values():
        for f in files:
            assert f"webllama/web/node_modules/{dist}/{f}" in names, f
    assert "webllama/web/static/index.html" in names and "webllama/web/engine/worker.js" in names
    assert not any("/node_modules/" in n and n.endswith(".map") for n in names)  # only what the page loads


def test_installed_package_is_the_wheel(venv, elsewhere):
    code = "import webllama.web.server as s; print(s.WEB_DIR)"
    out = subprocess.run([str(venv / "bin" / "python"), "-c", code], cwd=elsewhere, env=_env(), capture_output=True, text=True)
    assert Path(out.stdout.strip()).is_relative_to(venv), out.stdout + out.stderr


@pytest.fixture(scope="module")
def demo(venv, elsewhere, stories_dir, benchmarks_dir) -> Path:
    work = elsewhere / "demo"
    # --no-bench: the speed jobs add a minute on 2 cores; the packaged bench page was checked with them once.
    args = ["demo", str(stories_dir), "--workdir", str(work), "--tasks", "arc_easy", "--limit", "2", "--no-serve", "--no-bench"]
    run(venv, elsewhere, *args, "--data-dir", str(benchmarks_dir))
    return work


def test_demo_runs_every_step_from_the_wheel(demo):
    import json

    rows = json.loads((demo / "leaderboard" / "leaderboard.json").read_text())["rows"]
    assert {r["runtime"] for r in rows} >= {"native", "onnx", "browser-wasm"}, rows


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            raise AssertionError(f"webllama serve exited: {proc.stderr.read()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"{url} did not answer in {timeout} s")


def test_convert_then_serve_answers_in_chromium(venv, elsewhere, stories_dir, demo):
    from playwright.sync_api import sync_playwright
    from webllama.evalsuite.devices import chromium_args

    run(venv, elsewhere, "convert", str(stories_dir), "s260", "--variant", "q4", "--no-verify")  # demo verified its own
    run(venv, elsewhere, "site", "s260", "--out", "site")  # the static site copies the vendored files too
    assert (elsewhere / "site" / "vendor" / "ort" / "ort-wasm-simd-threaded.wasm").is_file()
    port = _free_port()
    cmd = [str(venv / "bin" / "webllama"), "serve", "s260", "--port", str(port), "--leaderboard", str(demo / "leaderboard")]
    proc = subprocess.Popen(cmd, cwd=elsewhere, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_http(url + "/api/models", proc)
        with urllib.request.urlopen(url + "/leaderboard/") as r:
            assert b"arc_easy" in r.read()
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=chromium_args("wasm"))
            page = browser.new_page()
            page.set_default_timeout(300_000)
            page.goto(url + "/?model=s260&autoload=1")
            wait_loaded(page)
            reply, status = chat_once(page, "Once upon a time")
            browser.close()
        assert len(reply) > 5 and "Provider: wasm" in status, (reply, status)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
