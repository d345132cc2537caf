"""The local server for the browser benchmarks: web/server.py's app (engine, vendor, /bundles/) plus
  /bench/<path>               benchmarks/pages (the benchmark pages)
  /bench_modules/<pkg>/<path> whitelisted dist folders of benchmarks/node_modules (transformers.js, its
                              onnxruntime-web, wllama), so no page ever reaches a CDN
  /gguf/<name>                one GGUF file (wllama)
Every response keeps web/server.py's COOP/COEP headers (threads, measureUserAgentSpecificMemory)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from webllama.evalsuite.bench.schema import BenchError

BENCH_DIR_ENV = "WEBLLAMA_BENCHMARKS_DIR"
BENCH_MODULES = {
    "transformers": "@huggingface/transformers/dist",
    "ort": "onnxruntime-web/dist",
    "wllama": "@wllama/wllama/esm",
}


# A wheel carries benchmarks/pages here (setup.py): our own engine's page runs from an installed package; the
# peers' npm packages (transformers.js, wllama) stay in a checkout's benchmarks/node_modules.
PACKAGED_DIR = Path(__file__).resolve().parent / "benchmarks"


def bench_dir(given: Path | None = None) -> Path:
    """The benchmarks folder (pages/ + node_modules/ of the peers): `given`, else $WEBLLAMA_BENCHMARKS_DIR,
    else ./benchmarks (a checkout's root as the working directory), else the pages packaged in the wheel."""
    chosen = given or os.environ.get(BENCH_DIR_ENV)
    if chosen is None:
        chosen = Path.cwd() / "benchmarks" if (Path.cwd() / "benchmarks" / "pages").is_dir() else PACKAGED_DIR
    return Path(chosen).resolve()


def npm_ready(folder: Path | None = None) -> bool:
    return all((bench_dir(folder) / "node_modules" / d).is_dir() for d in BENCH_MODULES.values())


def create_bench_app(bundle: Path | None, gguf: Path | None, folder: Path | None = None):
    from webllama.web.server import ServeConfig, _send, create_app

    bench = bench_dir(folder)
    app = create_app(ServeConfig(bundle_paths=(bundle,) if bundle else (), bundle_max_age=0))

    def page(rel: str):
        return _send(bench / "pages", rel, max_age=0)

    def module(pkg: str, rel: str):
        from flask import abort

        if pkg not in BENCH_MODULES:
            abort(404)
        return _send(bench / "node_modules" / BENCH_MODULES[pkg], rel, max_age=3600)

    def gguf_file(name: str):
        from flask import abort

        if gguf is None or name != gguf.name:
            abort(404)
        return _send(gguf.parent, gguf.name, max_age=0)

    app.add_url_rule("/bench/<path:rel>", "bench_page", page)
    app.add_url_rule("/bench_modules/<pkg>/<path:rel>", "bench_module", module)
    app.add_url_rule("/gguf/<name>", "bench_gguf", gguf_file)
    return app


class BenchServer:
    """The app on 127.0.0.1:<free port> in a daemon thread; `url`, `slug` (the bundle's /bundles/ segment).
    `peers=False`: only our engine's page is used, benchmarks/node_modules is not needed."""

    def __init__(self, bundle: Path | None = None, gguf: Path | None = None, folder: Path | None = None, peers: bool = True) -> None:
        from werkzeug.serving import WSGIRequestHandler, make_server

        class QuietHandler(WSGIRequestHandler):
            def log_request(self, *args, **kwargs) -> None:  # one line per file would drown the progress lines
                pass

        bench = bench_dir(folder)
        if not (bench / "pages" / "index.html").is_file():
            raise BenchError(f"{bench}/pages is missing: pass the checkout's benchmarks/ folder (or set ${BENCH_DIR_ENV})")
        if peers and not npm_ready(bench):  # only the peer runtimes' pages import benchmarks/node_modules
            raise BenchError(
                f"{bench}/node_modules is missing: run `npm ci --ignore-scripts` in the checkout's benchmarks/ "
                f"(run from the repository root, or set ${BENCH_DIR_ENV})"
            )
        self.app = create_bench_app(bundle, gguf, bench)
        bundles = self.app.config["WEBLLAMA_BUNDLES"]
        self.slug = next(iter(bundles)) if bundles else None
        self._srv = make_server("127.0.0.1", 0, self.app, threaded=True, request_handler=QuietHandler)
        threading.Thread(target=self._srv.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self._srv.server_port}"

    def close(self) -> None:
        self._srv.shutdown()
