"""The engine as an npm package (web/package.json, `webllama-engine`): its JSDoc type-checks with
`tsc --checkJs`, `npm pack` emits declarations from it and vendors the onnxruntime-web / tokenizers /
jinja files it loads, and a web app outside the repository that `npm install`s the tarball imports the
engine, serves a bundle as plain static files and generates token-exact with onnxruntime CPU
(OrtModel.greedy) in Chromium on WASM."""

from __future__ import annotations

import functools
import http.server
import json
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

from .conftest import WEB

pytestmark = pytest.mark.browser

TSC = WEB / "node_modules" / ".bin" / "tsc"
PROMPT = [1, 403, 407, 261, 378]  # BOS + "Once upon a time" (stories260K)
N_NEW = 24

PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>an app using webllama-engine</title>
<script type="importmap">{"imports": {"webllama-engine": "./node_modules/webllama-engine/engine/client.js"}}</script>
</head><body><script type="module">
import { createEngine } from 'webllama-engine';
window.run = async (ids, n) => {
  const engine = await createEngine('./models/s260/', { device: 'wasm' });
  const tokens = await engine.generateTokens(ids, { max_tokens: n, ignore_eos: true });
  const info = await engine.runtimeInfo();
  engine.terminate();
  return { tokens, provider: info.execution_provider, graph: info.graph_file };
};
window.appReady = true;
</script></body></html>
"""

CONSUMER_TS = """import { createEngine, type WebLlamaEngine } from 'webllama-engine';
const engine: WebLlamaEngine = await createEngine('./models/s260/', { device: 'wasm' });
const info = await engine.runtimeInfo();
export const provider: string = info.execution_provider;
"""


def npm(*args: str, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    r = subprocess.run(["npm", *args, "--no-audit", "--no-fund"], cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"npm {' '.join(args)}:\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
    return r


def tsc(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    if not TSC.exists():
        pytest.fail(f"{TSC} is missing: run `cd web && npm ci` (typescript is a pinned devDependency)")
    return subprocess.run([str(TSC), *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_engine_jsdoc_type_checks():
    r = tsc("-p", "tsconfig.json", cwd=WEB)
    assert r.returncode == 0, "tsc --checkJs (web/tsconfig.json):\n" + r.stdout[-4000:]


@pytest.fixture(scope="module")
def app(tmp_path_factory, s260_bundle) -> Path:
    """npm pack (prepack: declarations + vendored files; postpack cleans up), then a fresh app installs it."""
    dist = tmp_path_factory.mktemp("pack")
    npm("pack", "--pack-destination", str(dist), cwd=WEB, timeout=600)
    (tgz,) = dist.glob("webllama-engine-*.tgz")
    assert not (WEB / "vendor").exists() and not (WEB / "types").exists()  # the checkout is left as it was
    root = tmp_path_factory.mktemp("app")
    (root / "package.json").write_text(json.dumps({"name": "app", "private": True, "type": "module"}))
    npm("install", "--offline", str(tgz), cwd=root)  # the package has no dependencies to fetch
    (root / "index.html").write_text(PAGE)
    shutil.copytree(s260_bundle, root / "models" / "s260")
    return root


def test_package_exports_and_its_types_serve_a_typescript_app(app):
    pkg = app / "node_modules" / "webllama-engine"
    meta = json.loads((pkg / "package.json").read_text())
    assert meta["exports"]["."] == {"types": "./types/client.d.ts", "default": "./engine/client.js"}
    assert not meta.get("dependencies"), "vendored at pack time: nothing to install besides the package"
    assert (pkg / "vendor" / "ort" / "ort-wasm-simd-threaded.wasm").is_file()
    (app / "main.ts").write_text(CONSUMER_TS)
    (app / "wrong.ts").write_text(CONSUMER_TS.replace("provider: string", "provider: number"))  # the types are real
    flags = ["--noEmit", "--strict", "--module", "esnext", "--moduleResolution", "bundler", "--target", "es2022"]
    flags += ["--lib", "es2022,dom"]
    r = tsc(*flags, "main.ts", "wrong.ts", cwd=app)
    errors = [line for line in r.stdout.splitlines() if "error TS" in line]
    assert len(errors) == 1 and errors[0].startswith("wrong.ts") and "not assignable to type 'number'" in errors[0], r.stdout


class _Handler(http.server.SimpleHTTPRequestHandler):
    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map, ".mjs": "text/javascript", ".wasm": "application/wasm"}

    def log_message(self, *args) -> None:
        pass


def test_app_outside_the_repo_generates_token_exact_with_ort(app, s260_bundle, browser_no_webgpu):
    from webllama.converter.ort_model import OrtModel

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Handler, directory=str(app)))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        page = browser_no_webgpu.new_page()
        page.set_default_timeout(300_000)
        page.goto(f"http://127.0.0.1:{srv.server_port}/index.html")
        page.wait_for_function("window.appReady === true")
        got = page.evaluate("([ids, n]) => window.run(ids, n)", [PROMPT, N_NEW])
        page.close()
    finally:
        srv.shutdown()
    # On WASM the engine runs the q4 variant's WASM graph (converter/quant/unpack.py); onnxruntime CPU runs the same file.
    assert got["provider"] == "wasm" and got["graph"] == "onnx/model_q4_wasm.onnx", got
    want = OrtModel(s260_bundle, variant="q4", graph="wasm").greedy(PROMPT, max_new_tokens=N_NEW, eos=False)
    assert got["tokens"] == want, got
