"""Web fixtures: the Flask app in a background thread (with a request log), headless Debian Chromium
through Playwright, and helpers that drive the eval page's `window.webllama`.

Chromium is /usr/bin/chromium (never `playwright install`). `--enable-unsafe-webgpu` gives a
SwiftShader (CPU) WebGPU adapter here; without it there is no adapter and the engine uses WASM.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from webllama.evalsuite.devices import chromium_args  # one Chromium command line for tests, evals and benchmarks

WEB = Path(__file__).resolve().parents[2] / "web"
CHROMIUM = os.environ.get("WEBLLAMA_CHROMIUM", "/usr/bin/chromium")

HEAVY_OPS = {
    "MatMul",
    "MatMulNBits",
    "GatherBlockQuantized",
    "Softmax",
    "GroupQueryAttention",
    "SimplifiedLayerNormalization",
    "SkipSimplifiedLayerNormalization",
    "RotaryEmbedding",
}


def node_modules_ready() -> bool:
    return (WEB / "node_modules" / "onnxruntime-web" / "dist").is_dir()


@dataclass
class RunningServer:
    url: str
    requests: Counter = field(default_factory=Counter)  # path -> count (bodies actually served)

    def count(self, prefix: str) -> int:
        return sum(n for p, n in self.requests.items() if p.startswith(prefix))


class _Counting:
    """WSGI middleware: count each request path (Range and conditional requests included)."""

    def __init__(self, app, counter: Counter) -> None:
        self.app, self.counter = app, counter

    def __call__(self, environ, start_response):
        self.counter[environ.get("PATH_INFO", "")] += 1
        return self.app(environ, start_response)


@pytest.fixture(scope="session")
def serve():
    """serve(*bundle_paths, leaderboard=None) -> RunningServer; servers stop at session end."""
    from webllama.web.server import ServeConfig, create_app
    from werkzeug.serving import make_server

    servers = []

    def start(*paths: Path, leaderboard: Path | None = None) -> RunningServer:
        app = create_app(ServeConfig(bundle_paths=tuple(paths), leaderboard_dir=leaderboard))
        counter: Counter = Counter()
        srv = make_server("127.0.0.1", 0, _Counting(app, counter), threaded=True)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
        return RunningServer(f"http://127.0.0.1:{srv.server_port}", counter)

    yield start
    for srv in servers:
        srv.shutdown()


@pytest.fixture(scope="session")
def playwright_instance():
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} not found (apt-get install chromium)")
    if not node_modules_ready():
        pytest.fail(f"{WEB}/node_modules is missing: run `cd web && npm ci`")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="session")
def browser(playwright_instance):
    """Chromium with a (SwiftShader) WebGPU adapter."""
    b = playwright_instance.chromium.launch(executable_path=CHROMIUM, headless=True, args=chromium_args("webgpu"))
    yield b
    b.close()


@pytest.fixture(scope="session")
def browser_no_webgpu(playwright_instance):
    """Chromium without WebGPU: navigator.gpu gives no adapter."""
    b = playwright_instance.chromium.launch(executable_path=CHROMIUM, headless=True, args=chromium_args("wasm"))
    yield b
    b.close()


@pytest.fixture
def page(browser) -> Iterator:
    """A fresh context (empty Cache API) per test; console errors are printed on failure."""
    ctx = browser.new_context()
    pg = ctx.new_page()
    pg.set_default_timeout(300_000)
    log: list[str] = []
    pg.on("console", lambda m: log.append(f"{m.type}: {m.text[:500]}") if "onnxruntime" not in m.text else None)
    pg.on("pageerror", lambda e: log.append(f"pageerror: {e}"))
    pg.console_log = log
    yield pg
    ctx.close()


def open_eval(pg, server: RunningServer):
    pg.goto(server.url + "/eval.html")
    pg.wait_for_function("window.webllama !== undefined")
    return pg


def load_bundle(pg, slug: str, **options) -> dict:
    return pg.evaluate("([u, o]) => webllama.load(u, o)", [f"/bundles/{slug}/", options])


def assert_on_webgpu(info: dict) -> None:
    """The placement log (ORT verbose) proves the heavy nodes run on WebGPU, none on CPU."""
    assert info["requested_provider"] == "webgpu", info
    assert info["placement"].get("WebGpuExecutionProvider", 0) > 0, info["placement_log"]
    on_cpu = set(info["placement_ops"].get("CPUExecutionProvider", []))
    on_gpu = set(info["placement_ops"].get("WebGpuExecutionProvider", []))
    assert not (on_cpu & HEAVY_OPS), f"heavy ops fell back to CPU: {on_cpu & HEAVY_OPS}"
    if info["placement"].get("CPUExecutionProvider"):  # mixed: the log lists each node, check the matmuls
        assert on_gpu & {"MatMul", "MatMulNBits"}, info["placement_ops"]


def copy_bundle(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def node_bin() -> str | None:
    return shutil.which("node")


def run_node_tests(paths: list[Path]) -> subprocess.CompletedProcess:
    return subprocess.run([node_bin() or "node", "--test", *map(str, paths)], capture_output=True, text=True, timeout=300)
