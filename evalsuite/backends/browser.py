"""webllama-browser: a bundle executed by the web engine inside headless Chromium (WebGPU or WASM).

One page session per backend object: the Flask app of web/server.py serves the bundle and the eval
page (/eval.html, `window.webllama`, see web/static/eval.js) on a free local port; Playwright opens
it once, loads the bundle once, and every lm-eval request is sent in batches through `page.evaluate`:

    score_pairs  -> webllama.scoreTokens([{context, continuation}, ...])   sums + greedy flags, in-page
    generate     -> webllama.generateTokens(ids, {max_tokens, stop_token_ids}) for each prompt of a batch

Tokenization stays in Python (the bundle's tokenizer through transformers, as in webllama-onnx), so the
page scores exactly the token ids the onnx backend scores; per-item answers must agree on WASM.
Requests keep lm-eval's order (no length sort): the choices of one question are adjacent and the
engine reuses the KV cache of their shared context.

Model args: pretrained=BUNDLE, variant, device=wasm|webgpu, batch_size (items per page call, default 64),
chromium (path, default /usr/bin/chromium or $WEBLLAMA_CHROMIUM), timeout_s (per page call).
The engine decodes greedily only; sampled generation (do_sample with temperature > 0) is refused.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

from lm_eval.api.registry import register_model
from webllama.evalsuite.backends.base import GenOptions, Pair, WebllamaLM
from webllama.evalsuite.backends.onnx import bundle_record, bundle_tokenizer
from webllama.evalsuite.devices import CHROMIUM, DEFAULT_BROWSER_DEVICE, check_browser_device, chromium_args
from webllama.evalsuite.errors import BackendError

SCORE_JS = "(batch) => window.webllama.scoreTokens(batch)"
GENERATE_JS = """async (items) => {
  const out = [];
  for (const [ids, opts] of items) out.push(await window.webllama.generateTokens(ids, opts));
  return out;
}"""


class PageSession:
    """A local server + one Chromium page with the bundle loaded; close() stops both."""

    def __init__(
        self, bundle: Path, variant: str | None, device: str, chromium: str, timeout_s: float, threads: int | None = None
    ) -> None:
        self.bundle, self.variant, self.device, self.threads = bundle, variant, device, threads
        self.chromium, self.timeout_ms = chromium, timeout_s * 1000
        self._server = self._pw = self._browser = self.page = None
        self.console: list[str] = []
        self.info: dict = {}

    def open(self) -> PageSession:
        try:
            url = self._serve()
            self._launch()
            self.page.goto(url + "/eval.html")
            self.page.wait_for_function("window.webllama !== undefined")
            slug = self.page.evaluate("() => fetch('/api/models').then(r => r.json())")
            bundle_url = _bundle_url(slug, self.bundle)
            opts = {"device": self.device, **({"variant": self.variant} if self.variant else {})}
            if self.threads:
                opts["numThreads"] = self.threads
            self.info = self.call("([u, o]) => window.webllama.load(u, o)", [bundle_url, opts])
        except BackendError:
            self.close()
            raise
        except Exception as e:  # playwright / server start failures -> one line for the user
            self.close()
            raise BackendError(f"browser session for {self.bundle} failed to start: {_first_line(e)}") from e
        return self

    def _serve(self) -> str:
        from webllama.web.server import ServeConfig, create_app
        from werkzeug.serving import make_server

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per file fetched otherwise
        app = create_app(ServeConfig(bundle_paths=(self.bundle,)))
        self._server = make_server("127.0.0.1", 0, app, threaded=True)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self._server.server_port}"

    def _launch(self) -> None:
        from playwright.sync_api import sync_playwright

        if not Path(self.chromium).exists():
            raise BackendError(
                f"Chromium not found at {self.chromium}; install it (apt-get install chromium) or set WEBLLAMA_CHROMIUM"
            )
        self._pw = sync_playwright().start()
        args = chromium_args(self.device)
        self._browser = self._pw.chromium.launch(executable_path=self.chromium, headless=True, args=args)
        self.page = self._browser.new_context().new_page()
        self.page.set_default_timeout(self.timeout_ms)
        self.page.on("console", lambda m: self.console.append(f"{m.type}: {m.text[:300]}"))
        self.page.on("pageerror", lambda e: self.console.append(f"pageerror: {e}"))

    def call(self, js: str, arg):
        try:
            return self.page.evaluate(js, arg)
        except Exception as e:
            raise BackendError(f"browser engine call failed: {_first_line(e)}") from e

    def close(self) -> None:
        for step in (
            lambda: self._browser and self._browser.close(),
            lambda: self._pw and self._pw.stop(),
            lambda: self._server and self._server.shutdown(),
        ):
            try:
                step()
            except Exception:  # closing is best effort; the process may be exiting
                pass
        self._browser = self._pw = self._server = None


def _bundle_url(models, bundle: Path) -> str:
    items = models.get("data", []) if isinstance(models, dict) else models
    if not items:
        raise BackendError(f"the web server lists no bundle for {bundle}")
    return items[0]["url"]


def _first_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


@register_model("webllama-browser")
class BrowserLM(WebllamaLM):
    sort_by_length = False  # keep same-context items adjacent: the engine reuses their KV cache

    def __init__(
        self,
        pretrained: str | None = None,
        bundle: str | None = None,
        variant: str | None = None,
        device: str = DEFAULT_BROWSER_DEVICE,
        batch_size: int | str = 64,
        seed: int = 1234,
        chromium: str | None = None,
        timeout_s: float = 1800,
        threads: int | str | None = None,
        **kwargs,
    ) -> None:
        from webllama.converter.manifest import open_bundle

        path = pretrained or bundle
        if not path:
            raise BackendError("webllama-browser needs pretrained=BUNDLE_DIR (a folder made by `webllama convert`)")
        try:
            check_browser_device(device)
        except ValueError as e:
            raise BackendError(str(e)) from None
        self.bundle = open_bundle(path)
        self.variant = self.bundle.variant(variant)["name"]
        self.web_device = device
        chromium = chromium or os.environ.get("WEBLLAMA_CHROMIUM", CHROMIUM)
        super().__init__(bundle_tokenizer(self.bundle.root), self.bundle.manifest["context_length"], batch_size=batch_size, seed=seed)
        self.session = PageSession(
            self.bundle.root, self.variant, device, chromium, float(timeout_s), int(threads) if threads else None
        ).open()

    @property
    def vocab_size(self) -> int:
        return 1  # logits never leave the page: no memory budget to respect here

    def describe(self) -> dict:
        info = self.session.info or {}
        return bundle_record(self.bundle, self.variant) | {
            "device": self.web_device,
            "execution_provider": info.get("execution_provider"),
            "graph_file": info.get("graph_file"),  # the WASM engine runs the dequantize-at-load graph of int4 variants
            "num_threads": info.get("num_threads"),
            "browser": self.session._browser.version if self.session._browser else None,
        }

    def forward_logits(self, input_ids, attention_mask):
        raise NotImplementedError("the browser backend scores inside the page (score_pairs)")

    def score_pairs(self, pairs: list[Pair]) -> list[tuple[float, bool]]:
        batch = [{"context": list(map(int, c)), "continuation": list(map(int, x))} for c, x in pairs]
        out = self.session.call(SCORE_JS, batch)
        return [(float(r["logprob"]), bool(r["greedy"])) for r in out]

    def generate(self, prompts: list[list[int]], opts: GenOptions) -> list[list[int]]:
        if opts.do_sample and opts.temperature > 0:
            raise BackendError("the browser engine's generateTokens is greedy only; use do_sample=false")
        items = [[list(map(int, p)), {"max_tokens": opts.max_new_tokens, "stop_token_ids": list(opts.eos_ids)}] for p in prompts]
        return [list(map(int, ids)) for ids in self.session.call(GENERATE_JS, items)]

    def close(self) -> None:
        self.session.close()

    def __del__(self) -> None:
        session = getattr(self, "session", None)
        if session is not None:
            session.close()
