"""A bundle variant on onnxruntime in Python: the reference runtime every other runtime must match.

`forward` scores whole sequences (no cache; left or right padding), `greedy` decodes with the KV
cache exactly as the browser engine does (prefill, then one token per step feeding `present.*` back
as `past_key_values.*`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from converter.manifest import Bundle, open_bundle


class OrtModel:
    def __init__(
        self,
        bundle: str | Path | Bundle,
        variant: str | None = None,
        provider: str = "CPUExecutionProvider",
        threads: int | None = None,
    ) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self.bundle = bundle if isinstance(bundle, Bundle) else open_bundle(bundle)
        self.spec = self.bundle.variant(variant)
        self.variant = self.spec["name"]
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if threads:
            opts.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(self.bundle.root / self.spec["model"]), opts, providers=[provider])
        self.tokenizer = Tokenizer.from_file(str(self.bundle.root / "tokenizer.json"))
        cfg = self.bundle.manifest["config"]
        self.n_layers = cfg["num_hidden_layers"]
        self.n_kv_heads = cfg["num_key_value_heads"]
        self.head_dim = cfg["head_dim"]
        self.context_length = self.bundle.manifest["context_length"]
        tok = self.bundle.manifest["tokenizer"]
        self.bos_token_id: int | None = tok["bos_token_id"]
        self.eos_token_ids: list[int] = tok["eos_token_ids"]
        self.kv_dtype = np.float16 if self.spec["kv_dtype"] == "float16" else np.float32
        self.past_names = [i.name for i in self.session.get_inputs() if i.name.startswith("past_key_values.")]
        self.present_names = [o.name for o in self.session.get_outputs() if o.name.startswith("present.")]

    def empty_past(self, batch: int) -> dict[str, np.ndarray]:
        shape = (batch, self.n_kv_heads, 0, self.head_dim)
        return {n: np.zeros(shape, dtype=self.kv_dtype) for n in self.past_names}

    def run(self, input_ids: np.ndarray, attention_mask: np.ndarray, past: dict[str, np.ndarray]):
        """One step: logits (B, T, V) float32 and the new cache."""
        seq = input_ids.shape[1]
        # Position of each token = number of real tokens before it (HF's convention for padding).
        position_ids = np.clip(np.cumsum(attention_mask, axis=1) - 1, 0, None)[:, -seq:]
        feeds = {
            "input_ids": input_ids.astype(np.int64),
            "attention_mask": attention_mask.astype(np.int64),
            "position_ids": position_ids.astype(np.int64),
            **past,
        }
        out = self.session.run(["logits", *self.present_names], feeds)
        new_past = {p.replace("present.", "past_key_values.", 1): v for p, v in zip(self.present_names, out[1:], strict=True)}
        return out[0].astype(np.float32, copy=False), new_past

    def forward(self, input_ids: np.ndarray, attention_mask: np.ndarray | None = None) -> np.ndarray:
        """Logits (B, T, V) for whole sequences, no cache."""
        input_ids = np.asarray(input_ids, dtype=np.int64)
        if attention_mask is None:
            attention_mask = np.ones_like(input_ids)
        logits, _ = self.run(input_ids, np.asarray(attention_mask, dtype=np.int64), self.empty_past(input_ids.shape[0]))
        return logits

    def greedy(self, prompt_ids: list[int], max_new_tokens: int, eos: bool = True) -> list[int]:
        """Greedy decoding with the KV cache; returns only the new tokens."""
        ids = np.array([prompt_ids], dtype=np.int64)
        mask = np.ones_like(ids)
        past = self.empty_past(1)
        out: list[int] = []
        for _ in range(max_new_tokens):
            logits, past = self.run(ids, mask, past)
            nxt = int(np.argmax(logits[0, -1]))
            out.append(nxt)
            if eos and nxt in self.eos_token_ids:
                break
            ids = np.array([[nxt]], dtype=np.int64)
            mask = np.concatenate([mask, np.ones((1, 1), dtype=np.int64)], axis=1)
        return out
