"""RoPE cos/sin caches for GroupQueryAttention (do_rotary=1), computed by transformers itself.

The family's own rotary module (LlamaRotaryEmbedding, MistralRotaryEmbedding, ...) honours rope_theta
and every rope_scaling type it knows (linear, llama3, yarn, longrope's attention scaling ...); taking
its cos/sin for positions 0..max_seq_len-1 makes the cache identical to what the torch model uses.
Dynamic NTK changes the frequencies only beyond the original context length, where a static cache
cannot follow: the cache is exact up to max_position_embeddings. longrope switches every position to
its long factors once a sequence outgrows original_max_position_embeddings: the architecture's
context (archs/phi3.py) stops there, and so does the cache, which then holds the short factors
transformers uses within it.
"""

from __future__ import annotations

import numpy as np


def rope_caches(hf_config, length: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """cos, sin: (length, head_dim/2) float32, the first half of transformers' (cat(freqs, freqs)) tables."""
    import torch
    from webllama.converter.archs import for_hf

    arch = for_hf(hf_config, "the rotary config")
    n = length or arch.model_config(hf_config).max_seq_len
    rope = rotary_class(arch.transformers_class())(hf_config)
    pos = torch.arange(n, dtype=torch.int64)[None]
    with torch.no_grad():
        cos, sin = rope(torch.zeros(1, dtype=torch.float32), pos)
    half = cos.shape[-1] // 2
    return cos[0, :, :half].numpy().copy(), sin[0, :, :half].numpy().copy()


def rotary_class(model_class: type) -> type:
    """The *RotaryEmbedding of a transformers model class's own modeling module."""
    import importlib

    module = importlib.import_module(model_class.__module__)
    (name,) = [n for n in dir(module) if n.endswith("RotaryEmbedding")]
    return getattr(module, name)
