"""The fused graph's per-family hooks (converter/archs): where a family differs from plain Llama.

- biases (Llama attention_bias/mlp_bias, Qwen2 q/k/v): an Add after the MatMul(NBits), so every
  runtime (CPU, WASM, WebGPU) runs the same standard op whatever its MatMulNBits supports;
- q/k RMSNorm per head (Qwen3): SimplifiedLayerNormalization over head_dim of (B, S, heads, head_dim),
  before the rotary embedding (which then runs outside GroupQueryAttention, on the normed q and k);
- sliding window (Mistral, Phi-3): GroupQueryAttention's local_window_size, which counts the query's
  own position as transformers' sliding_window does (W keys: positions i-W+1 .. i).

Op helpers in the style of ops.py: input names in, output names out.
"""

from __future__ import annotations

import numpy as np
from webllama.converter.archs import ModelConfig
from webllama.converter.graph.builder import GraphBuilder


def add_bias(g: GraphBuilder, y: str, bias: np.ndarray | None, dtype: type, name: str) -> str:
    """y + bias ((out,) broadcast over (B, S, out)); y itself when the family has no bias here."""
    if bias is None:
        return y
    return g.op("Add", [y, g.initializer(f"{name}.bias", bias.astype(dtype))], f"{name}/Add")


def head_rms_norm(g: GraphBuilder, x: str, weight: np.ndarray, heads: int, c: ModelConfig, dtype: type, name: str) -> str:
    """RMSNorm over each head of x (B, S, heads*head_dim): Qwen3's q_norm / k_norm."""
    per_head = g.op("Reshape", [x, g.const([0, 0, heads, c.head_dim])], f"{name}/Reshape")  # (B, S, heads, head_dim)
    w = g.initializer(f"{name}.weight", weight.astype(dtype))
    normed = g.op("SimplifiedLayerNormalization", [per_head, w], f"{name}/SimplifiedLayerNormalization", axis=-1, epsilon=c.rms_eps)
    return g.op("Reshape", [normed, g.const([0, 0, heads * c.head_dim])], f"{name}/Reshape_back")


def window(c: ModelConfig) -> int:
    """GroupQueryAttention's local_window_size: -1 for full causal attention."""
    return c.sliding_window or -1


def rotary_outside(c: ModelConfig, rotary_inside_gqa: bool) -> bool:
    """q/k norms sit between the projection and the rotary: GroupQueryAttention cannot rotate for them."""
    return c.qk_norm or not rotary_inside_gqa
