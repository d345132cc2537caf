"""webllama-onnx: a bundle variant on onnxruntime in Python (webllama.converter.ort_model.OrtModel).

Model args: `pretrained=BUNDLE` (or `bundle=`), `variant=q4`, `provider=CPUExecutionProvider`, `threads`,
`batch_size`, `seed`. Tokenization uses the bundle's own tokenizer files through transformers (the same
fast-tokenizer rules as `hf`/`native`); the browser backend tokenizes the same way, so the two
score identical token ids.

Generation: the same KV-cache decode loop as OrtModel.greedy (prefill, then one token per step through
OrtModel.run), plus a stop-string check so it ends at the first stop string instead of max_gen_toks.
Sampling (do_sample) picks from the same logits with a seeded numpy sampler.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from lm_eval.api.registry import register_model
from webllama.evalsuite.backends.base import GenOptions, StopWatcher, WebllamaLM
from webllama.evalsuite.errors import BackendError


def bundle_tokenizer(root: Path):
    """The bundle's tokenizer files through transformers: the same class and rules `hf` would use."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(root))


@register_model("webllama-onnx")
class OnnxLM(WebllamaLM):
    def __init__(
        self,
        pretrained: str | None = None,
        bundle: str | None = None,
        variant: str | None = None,
        provider: str = "CPUExecutionProvider",
        threads: int | None = None,
        batch_size: int | str = 8,
        seed: int = 1234,
        **kwargs,
    ) -> None:
        from webllama.converter.ort_model import OrtModel

        path = pretrained or bundle
        if not path:
            raise BackendError("webllama-onnx needs pretrained=BUNDLE_DIR (a folder made by `webllama convert`)")
        self.ort = OrtModel(path, variant=variant, provider=provider, threads=int(threads) if threads else None)
        self.provider = provider
        super().__init__(bundle_tokenizer(self.ort.bundle.root), self.ort.context_length, batch_size=batch_size, seed=seed)

    @property
    def vocab_size(self) -> int:
        return int(self.ort.bundle.manifest["config"]["vocab_size"])

    def describe(self) -> dict:
        return bundle_record(self.ort.bundle, self.ort.variant) | {"provider": self.provider}

    def forward_logits(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        return self.ort.forward(input_ids, attention_mask)  # (B,T,V) f32

    def generate(self, prompts: list[list[int]], opts: GenOptions) -> list[list[int]]:
        return [self._decode(p, opts) for p in prompts]

    def _decode(self, prompt: list[int], opts: GenOptions) -> list[int]:
        """OrtModel.greedy's loop (token-exact with it) + stop strings + optional seeded sampling."""
        sampling = opts.do_sample and opts.temperature > 0
        rng = np.random.default_rng(opts.seed)
        watcher, new = StopWatcher(self.tokenizer, opts), []
        ids = np.array([prompt], dtype=np.int64)  # (1,T)
        mask = np.ones_like(ids)  # (1,past+T)
        past = self.ort.empty_past(1)
        for _ in range(opts.max_new_tokens):
            logits, past = self.ort.run(ids, mask, past)  # (1,T,V)
            last = logits[0, -1]
            nxt = sample_token(last / opts.temperature, opts.top_k, opts.top_p, rng) if sampling else int(np.argmax(last))
            new.append(nxt)
            if watcher.done(new):
                break
            ids = np.array([[nxt]], dtype=np.int64)
            mask = np.concatenate([mask, np.ones((1, 1), dtype=np.int64)], axis=1)
        return new


def sample_token(logits: np.ndarray, top_k: int, top_p: float, rng) -> int:
    """Temperature-scaled logits (V,) -> one token id, with optional top-k and nucleus (top-p) filtering."""
    logits = np.asarray(logits, dtype=np.float64)
    order = np.argsort(-logits)
    if top_k:
        order = order[:top_k]
    probs = np.exp(logits[order] - logits[order].max())
    probs /= probs.sum()
    if top_p < 1.0:
        keep = np.searchsorted(np.cumsum(probs), top_p) + 1
        order, probs = order[:keep], probs[:keep] / probs[:keep].sum()
    return int(order[rng.choice(len(order), p=probs)])


def bundle_record(bundle, variant: str) -> dict:
    """What a result file records about a bundle: manifest sha256, variant, source sha, quantization."""
    import hashlib

    manifest_bytes = (bundle.root / "manifest.json").read_bytes()
    spec = bundle.manifest["variants"][variant]
    return {
        "bundle": str(bundle.root),
        "bundle_name": bundle.manifest.get("name"),
        "manifest_sha256": hashlib.sha256(manifest_bytes).hexdigest(),
        "variant": variant,
        "quantization": spec.get("quantization"),
        "source_sha256": bundle.manifest.get("source", {}).get("sha256"),
        "created_by": bundle.manifest.get("created_by"),
    }
