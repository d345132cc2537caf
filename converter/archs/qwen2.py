"""Qwen2 / Qwen2.5 (Qwen2ForCausalLM): Llama's layout with q/k/v biases (no o bias), tied or untied head.

GGUF ("qwen2"): llama.cpp keeps Qwen's q/k row order (no RoPE permutation, unlike "llama").
"""

from __future__ import annotations

from typing import Any

from webllama.converter.archs import llama
from webllama.converter.archs.base import Architecture, WeightMap, rules, uniform_window

GGUF_LAYER = llama.GGUF_LAYER | {"q": "blk.{i}.attn_q.weight", "k": "blk.{i}.attn_k.weight"}
GGUF_LAYER |= {"q_bias": "blk.{i}.attn_q.bias", "k_bias": "blk.{i}.attn_k.bias"}
GGUF = WeightMap(rules(GGUF_LAYER), rules(llama.GGUF_GLOBAL))


class Qwen2(Architecture):
    def features(self, hf: Any) -> dict:
        return {"qkv_bias": True, "sliding_window": uniform_window(hf, f"{self.model_class} config")}


QWEN2 = Qwen2(
    name="qwen2",
    hf_architectures=("Qwen2ForCausalLM",),
    model_type="qwen2",
    model_class="Qwen2ForCausalLM",
    config_class="Qwen2Config",
    weights={"hf": llama.HF, "gguf": GGUF},
    gguf_architecture="qwen2",
)
