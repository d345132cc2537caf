"""The named weight transforms of the architecture tables (archs/*.py): source arrays -> one graph tensor.

Every transform takes the rule's source arrays (float32, torch nn.Linear (out, in) layout) and the
ModelConfig, and returns one array. Split transforms have an inverse (`pack`) so a torch model can be
rebuilt from any source (the torch view of a GGUF or llama2.c file).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from webllama.converter.archs.base import ModelConfig

Transform = Callable[[list[np.ndarray], "ModelConfig"], np.ndarray]


def permute_rope(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Interleaved (Meta / llama2.c / llama.cpp) -> rotate-half (HF) row order of a q or k projection.

    Works on weights (out, in) and biases (out,): exactly transformers' convert_llama_weights_to_hf.py,
    and the inverse of llama.cpp's LlamaModel.permute.
    """
    rows = w.shape[0]
    rest = w.shape[1:]
    return w.reshape(n_heads, rows // n_heads // 2, 2, *rest).swapaxes(1, 2).reshape(rows, *rest)


def permute_rope_to_gguf(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Rotate-half (HF) -> interleaved (llama.cpp) row order: llama.cpp's LlamaModel.permute, the inverse of
    `permute_rope` (writing GGUF files of HF weights: the benchmarks' and tests' Q4_0 peers)."""
    rows = w.shape[0]
    rest = w.shape[1:]
    return w.reshape(n_heads, 2, rows // n_heads // 2, *rest).swapaxes(1, 2).reshape(rows, *rest)


def qkv_sizes(c: ModelConfig) -> list[int]:
    """Rows of q, k, v in a packed qkv projection (Phi-3's qkv_proj, llama.cpp's attn_qkv)."""
    return [c.n_heads * c.head_dim, c.n_kv_heads * c.head_dim, c.n_kv_heads * c.head_dim]


def gate_up_sizes(c: ModelConfig) -> list[int]:
    """Rows of gate, up in a packed gate_up projection (Phi-3's gate_up_proj, GGUF phi3's ffn_up)."""
    return [c.hidden_dim, c.hidden_dim]


def split_rows(w: np.ndarray, sizes: list[int], part: int) -> np.ndarray:
    if w.shape[0] != sum(sizes):
        from webllama.converter.errors import ShapeMismatch

        raise ShapeMismatch(f"a packed projection has {w.shape[0]} rows, the config implies {'+'.join(map(str, sizes))}")
    start = sum(sizes[:part])
    return np.ascontiguousarray(w[start : start + sizes[part]])


def concat_rows(parts: list[np.ndarray]) -> np.ndarray:
    """q/k/v (or gate/up) stacked along the output rows: the packed projection the fused graph runs."""
    return np.concatenate(parts, axis=0)


def _split(sizes: Callable[[ModelConfig], list[int]], part: int) -> Transform:
    return lambda a, c: split_rows(a[0], sizes(c), part)


TRANSFORMS: dict[str, Transform] = {
    "copy": lambda a, c: a[0],
    "rope_q": lambda a, c: np.ascontiguousarray(permute_rope(a[0], c.n_heads)),
    "rope_k": lambda a, c: np.ascontiguousarray(permute_rope(a[0], c.n_kv_heads)),
    "split_q": _split(qkv_sizes, 0),
    "split_k": _split(qkv_sizes, 1),
    "split_v": _split(qkv_sizes, 2),
    "split_gate": _split(gate_up_sizes, 0),
    "split_up": _split(gate_up_sizes, 1),
}

# Split transforms that together rebuild one packed source tensor, in row order (the inverse: pack).
PACKS: dict[str, tuple[str, ...]] = {
    "qkv": ("split_q", "split_k", "split_v"),
    "gate_up": ("split_gate", "split_up"),
}
