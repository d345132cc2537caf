"""webllama-native: the source model in torch (float32), as webllama.converter.sources.load_source reads it.

Works for every source the converter accepts (HF directory, GGUF, llama2.c); it is the reference the
converted bundle is scored against. Model args: `pretrained=PATH` (or `model=PATH`), `batch_size`, `seed`,
`adapters` (one PEFT LoRA folder, or a sequence of them) and `adapter_weights`: the adapters are merged
into the float32 weights exactly as `webllama convert --adapter` does (webllama.converter.customize.merge_adapters,
same checks), so a bundle converted with adapters is scored against the same fine-tuned model here.
`threads` sets torch's intra-op thread count (process-wide: torch has no per-model setting).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from lm_eval.api.registry import register_model
from lm_eval.models.utils import resolve_max_length
from transformers import StoppingCriteria, StoppingCriteriaList
from webllama.evalsuite.backends.base import GenOptions, StopWatcher, WebllamaLM


class _Stop(StoppingCriteria):
    def __init__(self, watcher: StopWatcher, prompt_len: int) -> None:
        self.watcher, self.prompt_len = watcher, prompt_len

    def __call__(self, input_ids, scores, **kwargs) -> bool:
        return self.watcher.done(input_ids[0, self.prompt_len :].tolist())


def _as_tuple(value) -> tuple:
    """A model arg given once (a string from `lm_eval --model_args`) or as a sequence (from Python)."""
    if value is None or value == "":
        return ()
    return (value,) if isinstance(value, (str, int, float)) else tuple(value)


@register_model("webllama-native")
class NativeLM(WebllamaLM):
    def __init__(
        self,
        pretrained: str | None = None,
        model: str | None = None,
        batch_size: int | str = 8,
        seed: int = 1234,
        max_length: int | None = None,
        adapters: str | Sequence[str] = (),
        adapter_weights: float | str | Sequence[float] = (),
        threads: int | str | None = None,
        **kwargs,
    ) -> None:
        from webllama.converter.customize import merge_adapters
        from webllama.converter.sources import load_source

        self.source = load_source(str(pretrained or model))
        self.adapters = _as_tuple(adapters)
        self.adapter_weights = tuple(float(w) for w in _as_tuple(adapter_weights))
        if self.adapters:
            merge_adapters(self.source, self.adapters, self.adapter_weights)
        self.model = self.source.model.eval()
        length = max_length or resolve_max_length(self.model.config, self.source.tokenizer)
        super().__init__(self.source.tokenizer, length, batch_size=batch_size, seed=seed)
        if threads:
            torch.set_num_threads(int(threads))

    @property
    def vocab_size(self) -> int:
        return int(self.model.config.vocab_size)

    def describe(self) -> dict:
        d = {"source_kind": self.source.kind, "source_sha256": self.source.sha256, "dtype": "float32"}
        if self.adapters:  # source_sha256 then covers the base and the adapter files (merge_adapters)
            d |= {"adapters": list(self.adapters), "adapter_weights": list(self.adapter_weights) or None}
        return d

    @torch.no_grad()
    def forward_logits(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        out = self.model(input_ids=torch.from_numpy(input_ids), attention_mask=torch.from_numpy(attention_mask))
        return out.logits.float().numpy()  # (B,T,V)

    @torch.no_grad()
    def generate(self, prompts: list[list[int]], opts: GenOptions) -> list[list[int]]:
        """One prompt at a time (no padding), greedy or seeded sampling, stopped by StopWatcher."""
        results = []
        for prompt in prompts:
            ids = torch.tensor([prompt], dtype=torch.long)
            sampling = {"do_sample": False}
            if opts.do_sample and opts.temperature > 0:
                torch.manual_seed(opts.seed)
                sampling = {"do_sample": True, "temperature": opts.temperature, "top_p": opts.top_p, "top_k": opts.top_k or None}
            out = self.model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=opts.max_new_tokens,
                stopping_criteria=StoppingCriteriaList([_Stop(StopWatcher(self.tokenizer, opts), len(prompt))]),
                eos_token_id=list(opts.eos_ids),
                pad_token_id=opts.eos_ids[0],
                use_cache=True,
                **sampling,
            )
            results.append(out[0, len(prompt) :].tolist())
        return results
