"""A fake WebllamaLM: deterministic logits from a fixed random bigram table, no model (lm-eval's own
tests fake the forward function the same way)."""

from __future__ import annotations

import numpy as np
from webllama.evalsuite.backends.base import GenOptions, WebllamaLM


class FakeTokenizer:
    """Printable ASCII characters are tokens: id = ord(c) - 28 (4..98), anything else 99; 1 BOS, 2 EOS."""

    bos_token_id, eos_token_id, name_or_path = 1, 2, "fake"

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return ([1] if add_special_tokens else []) + [ord(c) - 28 if 32 <= ord(c) < 127 else 99 for c in text]

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        ids = [ids] if isinstance(ids, int) else ids
        out = []
        for i in ids:
            if i in (0, 1, 2):
                if not skip_special_tokens:
                    out.append({0: "<pad>", 1: "<s>", 2: "</s>"}[i])
                continue
            out.append(chr(i + 28) if 4 <= i < 99 else "?")
        return "".join(out)


class FakeLM(WebllamaLM):
    """logits[t] = table[ids[t]]: a bigram model; padded positions are NaN, so any leak shows."""

    V = 100

    def __init__(self, max_length: int = 64, batch_size: int = 4, fail_after: int | None = None) -> None:
        super().__init__(FakeTokenizer(), max_length, batch_size=batch_size)
        self.table = np.random.default_rng(0).normal(size=(self.V, self.V)).astype(np.float32) * 3
        self.calls = 0
        self.rows = 0
        self.fail_after = fail_after

    @property
    def vocab_size(self) -> int:
        return self.V

    def forward_logits(self, input_ids, attention_mask):
        self.calls += 1
        self.rows += len(input_ids)
        if self.fail_after is not None and self.calls > self.fail_after:
            raise KeyboardInterrupt("simulated interruption")
        out = self.table[input_ids]  # (B,T,V)
        return np.where(attention_mask[..., None] == 1, out, np.nan).astype(np.float32)

    def generate(self, prompts, opts: GenOptions):
        outs = []
        for p in prompts:
            new = []
            last = p[-1]
            for _ in range(opts.max_new_tokens):
                last = int(np.argmax(self.table[last]))
                new.append(last)
                if last in opts.eos_ids:
                    break
            outs.append(new)
        return outs
