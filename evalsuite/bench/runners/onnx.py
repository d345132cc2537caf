"""A bundle variant on onnxruntime CPU in this process (webllama.converter.ort_model.OrtModel)."""

from __future__ import annotations

import os
import time

import numpy as np


class OrtRunner:
    def __init__(self, bundle_dir, variant: str | None, threads: int, profile_dir: str | None = None) -> None:
        from webllama.converter.manifest import open_bundle

        self.bundle = open_bundle(bundle_dir)
        self.variant = self.bundle.variant(variant)["name"]
        self.threads = threads
        self.profile_dir = profile_dir
        self.context_length = self.bundle.manifest["context_length"]
        self.vocab_size = self.bundle.manifest["config"]["vocab_size"]
        self.bos_token_id = self.bundle.manifest["tokenizer"]["bos_token_id"]
        self.model = None

    def load(self) -> dict:
        from webllama.converter.ort_model import OrtModel

        self.model = None
        t0 = time.perf_counter()
        self.model = OrtModel(self.bundle, self.variant, threads=self.threads)
        return {"load_s": time.perf_counter() - t0, "load_cached_s": None}

    def pids(self) -> list[int]:
        return [os.getpid()]

    def _step(self, ids: list[int], mask: np.ndarray, past):
        logits, past = self.model.run(np.array([ids], dtype=np.int64), mask, past)
        return int(np.argmax(logits[0, -1])), past

    def prefill(self, ids: list[int]) -> float:
        t0 = time.perf_counter()
        self._step(ids, np.ones((1, len(ids)), dtype=np.int64), self.model.empty_past(1))
        return time.perf_counter() - t0

    def decode(self, ids: list[int], n: int) -> float:
        mask = np.ones((1, len(ids)), dtype=np.int64)
        tok, past = self._step(ids, mask, self.model.empty_past(1))
        t0 = time.perf_counter()
        for _ in range(n):
            mask = np.ones((1, mask.shape[1] + 1), dtype=np.int64)
            tok, past = self._step([tok], mask, past)
        return time.perf_counter() - t0


def make_runner(req) -> OrtRunner:
    return OrtRunner(req.target, req.variant, req.threads)
