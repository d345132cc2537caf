"""The source model in torch (transformers, float32) in this process: the 'before conversion' baseline."""

from __future__ import annotations

import os
import time


class TorchRunner:
    def __init__(self, source: str, threads: int) -> None:
        self.source_path = source
        self.threads = threads
        self.src = None
        self.context_length = self.vocab_size = 0
        self.bos_token_id = None

    def load(self) -> dict:
        import torch
        from webllama.converter.sources import load_source

        torch.set_num_threads(self.threads)
        self.src = None
        t0 = time.perf_counter()
        self.src = load_source(self.source_path)
        dt = time.perf_counter() - t0
        cfg = self.src.model.config
        self.context_length = int(getattr(cfg, "max_position_embeddings", 2048))
        self.vocab_size = int(cfg.vocab_size)
        self.bos_token_id = cfg.bos_token_id
        return {"load_s": dt, "load_cached_s": None}

    def pids(self) -> list[int]:
        return [os.getpid()]

    def _forward(self, ids, past):
        import torch

        out = self.src.model(torch.tensor([ids]), past_key_values=past, use_cache=True)
        return int(out.logits[0, -1].argmax()), out.past_key_values

    def prefill(self, ids: list[int]) -> float:
        import torch

        with torch.inference_mode():
            t0 = time.perf_counter()
            self._forward(ids, None)
            return time.perf_counter() - t0

    def decode(self, ids: list[int], n: int) -> float:
        import torch

        with torch.inference_mode():
            tok, past = self._forward(ids, None)
            t0 = time.perf_counter()
            for _ in range(n):
                tok, past = self._forward([tok], past)
            return time.perf_counter() - t0


def make_runner(req) -> TorchRunner:
    return TorchRunner(req.target, req.threads)
