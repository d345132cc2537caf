"""llama.cpp (llama-cpp-python, an optional extra built from source) on a GGUF file, in this process.

Greedy argmax over the last position's logits, as our runners do; prefill is one llama_decode over the
prompt in a batch of up to 512 tokens (llama.cpp computes the last position's logits only)."""

from __future__ import annotations

import os
import time

import numpy as np
from webllama.evalsuite.bench.schema import BenchError

INSTALL = (
    'CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON" '
    'CFLAGS="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16" CXXFLAGS="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16" '
    "pip install --no-binary llama-cpp-python llama-cpp-python==0.3.36"
)


class LlamaCppRunner:
    def __init__(self, path: str, threads: int, n_ctx: int = 2048) -> None:
        try:
            import llama_cpp  # noqa: F401
        except ImportError as e:
            raise BenchError(f"llama-cpp-python is not installed: the llamacpp runtime is skipped; build it with {INSTALL}") from e
        if not str(path).endswith(".gguf"):
            raise BenchError(f"--runtime llamacpp needs a .gguf file, got {path}")
        self.path, self.threads, self.n_ctx = str(path), threads, n_ctx
        self.llm = None
        self.context_length = n_ctx
        self.vocab_size = 0
        self.bos_token_id = None
        self.variant = None

    def load(self) -> dict:
        from llama_cpp import Llama

        self.llm = None
        t0 = time.perf_counter()
        self.llm = Llama(
            self.path,
            n_ctx=self.n_ctx,
            n_batch=512,
            n_ubatch=512,
            n_threads=self.threads,
            n_threads_batch=self.threads,
            logits_all=False,
            verbose=False,
        )
        dt = time.perf_counter() - t0
        self.vocab_size = self.llm.n_vocab()
        self.bos_token_id = self.llm.token_bos()
        self.context_length = min(self.n_ctx, self.llm.n_ctx())
        return {"load_s": dt, "load_cached_s": None}

    def pids(self) -> list[int]:
        return [os.getpid()]

    def _eval(self, ids: list[int]) -> int:
        self.llm.eval(ids)
        return int(np.argmax(self.llm.scores[self.llm.n_tokens - 1]))

    def prefill(self, ids: list[int]) -> float:
        self.llm.reset()  # n_tokens = 0: the next eval drops the KV cache from position 0
        t0 = time.perf_counter()
        self._eval(ids)
        return time.perf_counter() - t0

    def decode(self, ids: list[int], n: int) -> float:
        self.prefill(ids)
        tok = int(np.argmax(self.llm.scores[self.llm.n_tokens - 1]))
        t0 = time.perf_counter()
        for _ in range(n):
            tok = self._eval([tok])
        return time.perf_counter() - t0

    def info(self) -> dict:
        import llama_cpp

        return {
            "system_info": llama_cpp.llama_print_system_info().decode(errors="replace").strip(),
            "versions": {"llama_cpp_python": llama_cpp.__version__},
        }


def make_runner(req) -> LlamaCppRunner:
    return LlamaCppRunner(req.target, req.threads)
