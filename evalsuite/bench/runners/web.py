"""Browser runtimes through Playwright and Debian's Chromium: our engine (/engine/client.js), transformers.js
on our bundle, wllama on a GGUF. Each benchmark page (benchmarks/pages/RUNTIME.js) exposes the same
`window.benchRuntime` (load, prefill, decode, memory); timings are taken inside the page with
performance.now(). Memory: peak RSS of every Chromium process, plus what the page itself can observe."""

from __future__ import annotations

from pathlib import Path

from webllama.evalsuite.bench.schema import BenchError
from webllama.evalsuite.devices import chromium_args

# The suite's Chromium flags (evalsuite/devices.py: the same browser as the eval backend), plus eager memory
# measurement.
MEMORY_ARGS = ("--enable-blink-features=ForceEagerMeasureMemory",)


class PageRunner:
    """One Chromium page on the benchmark page of `runtime`; load() sends `load_opts` to benchRuntime.load."""

    def __init__(self, runtime: str, req, server, load_opts: dict) -> None:
        self.runtime, self.req, self.server, self.load_opts = runtime, req, server, load_opts
        self._pw = self._browser = self.page = None
        self._profile = None  # the persistent profile folder (TemporaryDirectory), removed on close
        self.console: list[str] = []
        self.runtime_info: dict = {}
        self.page_memory: dict | None = None
        self._open()

    def _open(self) -> None:
        from playwright.sync_api import sync_playwright

        if not Path(self.req.chromium).exists():
            raise BenchError(f"Chromium not found at {self.req.chromium}; apt-get install chromium (never `playwright install`)")
        self._pw = sync_playwright().start()
        args = chromium_args(self.req.device, MEMORY_ARGS)
        import tempfile

        # A persistent profile, as a user's browser has: an incognito context (new_context) keeps the Cache API and
        # OPFS in memory under a small quota, which both refuses a 1 GB model and counts its files as page memory.
        self._profile = tempfile.TemporaryDirectory(prefix="webllama-bench-profile-")
        self._browser = self._pw.chromium.launch_persistent_context(
            self._profile.name, executable_path=self.req.chromium, headless=True, args=args
        )
        self.page = self._browser.pages[0] if self._browser.pages else self._browser.new_page()
        self.page.set_default_timeout(self.req.timeout_s * 1000)
        self.page.on("console", lambda m: self.console.append(f"{m.type}: {m.text[:300]}"))
        self.page.on("pageerror", lambda e: self.console.append(f"pageerror: {e}"))
        self.page.goto(f"{self.server.url}/bench/index.html?runtime={self.runtime}")
        self.call("() => window.benchReady")

    def call(self, js: str, arg=None):
        try:
            return self.page.evaluate(js, arg)
        except Exception as e:
            tail = " | ".join(self.console[-3:])
            raise BenchError(f"{self.runtime} page: {str(e).strip().splitlines()[0]}" + (f" (console: {tail})" if tail else "")) from e

    def pids(self) -> list[int]:
        import psutil

        out = []
        for p in psutil.Process().children(recursive=True):
            try:
                if "chrom" in p.name().lower():
                    out.append(p.pid)
            except psutil.NoSuchProcess:
                pass
        return out

    def load(self) -> dict:
        r = self.call("(o) => window.benchRuntime.load(o)", self.load_opts)
        self.runtime_info = r.get("info") or {}
        return {"load_s": r["load_s"], "load_cached_s": r.get("load_cached_s")}

    def prefill(self, ids: list[int]) -> float:
        return float(self.call("(ids) => window.benchRuntime.prefill(ids)", ids))

    def decode(self, ids: list[int], n: int) -> float:
        return float(self.call("([ids, n]) => window.benchRuntime.decode(ids, n)", [ids, n]))

    def info(self) -> dict:
        mem = self.call("() => window.benchRuntime.memory()")
        browser = self._browser.browser if self._browser else None
        return {**self.runtime_info, "page_memory": mem, "browser": browser.version if browser else None}

    def close(self) -> None:
        for step in (
            lambda: self.page and self.call("() => window.benchRuntime.close()"),
            lambda: self._browser and self._browser.close(),
            lambda: self._pw and self._pw.stop(),
            lambda: self._profile and self._profile.cleanup(),
            self.server.close,
        ):
            try:
                step()
            except Exception:  # best effort: the browser may already be gone
                pass


class WllamaRunner(PageRunner):
    """wllama takes text: ids are turned into text with the GGUF's own vocabulary, and timings are rescaled
    to the requested length by the prompt length wllama reports."""

    def __init__(self, req, server, load_opts: dict, vocab: list[str], tokenizer_model: str = "gpt2") -> None:
        self.vocab = vocab
        self.detokenize = spm_detokenize if tokenizer_model == "llama" else gpt2_detokenize
        super().__init__("wllama", req, server, load_opts)

    def text(self, ids: list[int]) -> str:
        return self.detokenize([self.vocab[i] for i in ids[1:]])  # wllama adds BOS itself

    def prefill(self, ids: list[int]) -> float:
        r = self.call("(t) => window.benchRuntime.prefillText(t)", self.text(ids))
        return float(r["s"]) * len(ids) / max(1, r.get("prompt_n") or len(ids))

    def decode(self, ids: list[int], n: int) -> float:
        return float(self.call("([t, n]) => window.benchRuntime.decodeText(t, n)", [self.text(ids), n])["s"])


def gpt2_detokenize(tokens: list[str]) -> str:
    """Byte-level BPE token strings (GPT-2 'Ġ' alphabet) -> text."""
    bs = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    inverse = {chr(c): b for b, c in zip(bs, cs, strict=True)}
    data = bytes(inverse[ch] for tok in tokens for ch in tok if ch in inverse)
    return data.decode("utf-8", errors="ignore")


def spm_detokenize(tokens: list[str]) -> str:
    """SentencePiece token strings (the GGUF "llama" tokenizer: '▁' for a space, <0xNN> byte pieces) -> text."""
    out = bytearray()
    for tok in tokens:
        if len(tok) == 6 and tok.startswith("<0x") and tok.endswith(">"):
            out.append(int(tok[3:5], 16))
        else:
            out += tok.replace("\u2581", " ").encode("utf-8")
    return out.decode("utf-8", errors="ignore")


def _bundle_common(req, peers: bool = True) -> tuple:
    from webllama.converter.manifest import open_bundle
    from webllama.evalsuite.bench.web_server import BenchServer

    bundle = open_bundle(req.target)
    server = BenchServer(bundle=bundle.root, peers=peers)
    variant = bundle.variant(req.variant)["name"]
    return bundle, server, variant


def _attach_model_facts(runner: PageRunner, bundle, variant: str) -> PageRunner:
    m = bundle.manifest
    runner.context_length = m["context_length"]
    runner.vocab_size = m["config"]["vocab_size"]
    runner.bos_token_id = m["tokenizer"]["bos_token_id"]
    runner.variant = variant
    return runner


def make_webllama_runner(req) -> PageRunner:
    bundle, server, variant = _bundle_common(req, peers=False)  # our engine only: runs from an installed wheel
    opts = {
        "bundleUrl": f"/bundles/{server.slug}/",
        "variant": variant,
        "device": req.device,
        "numThreads": req.threads,
        "unpackInt4": req.unpack_int4,
        "kvCache": req.kv_cache,
    }
    return _attach_model_facts(PageRunner("webllama", req, server, opts), bundle, variant)


def make_transformersjs_runner(req) -> PageRunner:
    bundle, server, variant = _bundle_common(req)
    opts = {"slug": server.slug, "variant": variant, "device": req.device, "numThreads": req.threads}
    return _attach_model_facts(PageRunner("transformersjs", req, server, opts), bundle, variant)


def make_wllama_runner(req) -> WllamaRunner:
    import gguf
    from webllama.evalsuite.bench.web_server import BenchServer

    path = Path(req.target)
    if path.suffix != ".gguf":
        raise BenchError(f"--runtime wllama needs a .gguf file, got {path}")
    r = gguf.GGUFReader(str(path))
    vocab = [str(x) for x in r.fields["tokenizer.ggml.tokens"].contents()]
    arch = r.fields["general.architecture"].contents()
    ctx = int(r.fields[f"{arch}.context_length"].contents())
    bos = r.fields.get("tokenizer.ggml.bos_token_id")
    server = BenchServer(gguf=path.resolve())
    n_ctx = min(ctx, 2048)
    model = r.fields.get("tokenizer.ggml.model")
    opts = {"ggufUrl": f"/gguf/{path.name}", "numThreads": req.threads, "nCtx": n_ctx}
    runner = WllamaRunner(req, server, opts, vocab, str(model.contents()) if model else "gpt2")
    runner.context_length, runner.vocab_size = n_ctx, len(vocab)
    runner.bos_token_id = int(bos.contents()) if bos else None
    runner.variant = None
    return runner


__all__ = [
    "PageRunner",
    "WllamaRunner",
    "make_webllama_runner",
    "make_transformersjs_runner",
    "make_wllama_runner",
    "gpt2_detokenize",
    "spm_detokenize",
]
