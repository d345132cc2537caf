"""`webllama bench`: speed, memory and size of one model on one runtime, as a schema_version 1 JSON
document (webllama.evalsuite.bench.schema; fields documented in benchmarks/README.md).

    from webllama.evalsuite.bench import BenchRequest, run_bench
    doc = run_bench(BenchRequest(target="bundle/", runtime="onnx", variant="q4", threads=2, runs=5))
"""

from __future__ import annotations

import datetime as dt
import importlib
import os
from dataclasses import dataclass
from pathlib import Path

from webllama.evalsuite.bench.machine import machine_info, versions
from webllama.evalsuite.bench.measure import Settings, run_protocol
from webllama.evalsuite.bench.runners import RUNNERS
from webllama.evalsuite.bench.schema import FORMAT, SCHEMA_VERSION, BenchError, validate
from webllama.evalsuite.bench.target import describe_target
from webllama.evalsuite.devices import BROWSER_DEVICES, DEFAULT_BROWSER_DEVICE, DEVICES

DEFAULT_DEVICE = {
    "native": "cpu",
    "onnx": "cpu",
    "llamacpp": "cpu",
    **{r: DEFAULT_BROWSER_DEVICE for r in ("browser", "transformersjs", "wllama")},
}
BROWSER_RUNTIMES = ("browser", "transformersjs", "wllama")


KV_CACHES = ("auto", "fixed", "growing")  # the engine's kvCache load option


@dataclass(frozen=True)
class BenchRequest:
    target: str  # bundle folder (onnx, browser, transformersjs), source model (native), .gguf (llamacpp, wllama)
    runtime: str
    variant: str | None = None  # bundle variant; for GGUF runtimes the file's quantization is recorded
    device: str | None = None  # wasm | webgpu for the browser runtimes; cpu otherwise
    threads: int = 2
    runs: int = 5
    warmup: int = 1
    load_runs: int = 3
    prompt_lengths: tuple[int, ...] = (16, 128, 512)
    decode_tokens: int = 128
    chromium: str = "/usr/bin/chromium"
    timeout_s: float = 1800.0
    unpack_int4: bool = True  # browser WASM: run an int4 variant's dequantize-at-load graph (web/README.md)
    decode_prompt: int = 128  # prompt before the decode run and for TTFT (the product owner's targets: 128)
    kv_cache: str = "auto"  # browser webllama: auto | fixed | growing (web/engine/kv_cache.js)

    def __post_init__(self) -> None:
        if self.runtime not in RUNNERS:
            raise BenchError(f"--runtime {self.runtime!r}: use one of {', '.join(RUNNERS)}")
        device = self.device or DEFAULT_DEVICE[self.runtime]
        allowed = BROWSER_DEVICES if self.runtime in BROWSER_RUNTIMES else tuple(n for n, d in DEVICES.items() if not d.browser)
        if device not in allowed:
            raise BenchError(f"--device {device!r} with --runtime {self.runtime}: use {' or '.join(allowed)}")
        object.__setattr__(self, "device", device)
        if self.kv_cache not in KV_CACHES:
            raise BenchError(f"--kv-cache {self.kv_cache!r}: use one of {', '.join(KV_CACHES)}")
        if self.threads < 1 or self.runs < 1 or self.decode_tokens < 1 or self.decode_prompt < 1:
            raise BenchError("--threads, --runs, --decode-tokens and --decode-prompt must be >= 1")
        if not Path(self.target).exists():
            raise BenchError(f"{self.target}: no such file or folder (a bundle folder, a source model or a .gguf)")

    @property
    def settings(self) -> Settings:
        return Settings(
            runs=self.runs,
            warmup=self.warmup,
            prompt_lengths=tuple(self.prompt_lengths),
            decode_tokens=self.decode_tokens,
            decode_prompt=self.decode_prompt,
            load_runs=self.load_runs,
        )


def make_runner(req: BenchRequest):
    module, attr = RUNNERS[req.runtime].split(":")
    return getattr(importlib.import_module(module), attr)(req)


def run_bench(req: BenchRequest, log=None) -> dict:
    """Measure `req` and return the validated result document."""
    started = dt.datetime.now(dt.UTC)
    machine = machine_info()
    if req.runtime in ("onnx", "native", "llamacpp"):
        os.environ.setdefault("OMP_NUM_THREADS", str(req.threads))
    runner = make_runner(req)
    try:
        metrics = run_protocol(runner, req.settings, log=log)
        runtime_info = getattr(runner, "info", lambda: {})()
    finally:
        close = getattr(runner, "close", None)
        if close:
            close()
    target = describe_target(req, getattr(runner, "variant", req.variant))
    settings = metrics.pop("settings")
    metrics.update(target.pop("size"))
    doc = {
        "schema_version": SCHEMA_VERSION,
        "format": FORMAT,
        "created_at": started.isoformat(timespec="seconds"),
        "duration_s": (dt.datetime.now(dt.UTC) - started).total_seconds(),
        "target": target,
        "runtime": req.runtime,
        "device": req.device,
        "variant": target["variant"],
        "threads": req.threads,
        "settings": settings,
        "machine": machine,
        "versions": versions(runtime_info.pop("versions", {})),
        "runtime_info": runtime_info,
        "metrics": metrics,
    }
    return validate(doc)
