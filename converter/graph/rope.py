"""RoPE cos/sin caches for GroupQueryAttention (do_rotary=1), computed by transformers itself.

LlamaRotaryEmbedding honours rope_theta and every rope_scaling type it knows (linear, llama3, yarn,
longrope's attention scaling ...); taking its cos/sin for positions 0..max_seq_len-1 makes the cache
identical to what the torch model uses. Dynamic NTK changes the frequencies only beyond the original
context length, where a static cache cannot follow: the cache is exact up to max_position_embeddings.
"""

from __future__ import annotations

import numpy as np


def rope_caches(hf_config, length: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """cos, sin: (length, head_dim/2) float32, the first half of transformers' (cat(freqs, freqs)) tables."""
    import torch
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    n = length or hf_config.max_position_embeddings
    rope = LlamaRotaryEmbedding(hf_config)
    pos = torch.arange(n, dtype=torch.int64)[None]
    with torch.no_grad():
        cos, sin = rope(torch.zeros(1, dtype=torch.float32), pos)
    half = cos.shape[-1] // 2
    return cos[0, :, :half].numpy().copy(), sin[0, :, :half].numpy().copy()
