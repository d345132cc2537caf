"""Qwen3 (Qwen3ForCausalLM): Llama's layout plus an RMSNorm over each head of q and k before RoPE;
biases only with attention_bias; head_dim independent of hidden_size / heads."""

from __future__ import annotations

from typing import Any

from webllama.converter.archs import llama, qwen2
from webllama.converter.archs.base import Architecture, WeightMap, rules, uniform_window

HF_LAYER = llama.HF_LAYER | {
    "q_norm": "model.layers.{i}.self_attn.q_norm.weight",
    "k_norm": "model.layers.{i}.self_attn.k_norm.weight",
}
HF = WeightMap(rules(HF_LAYER), llama.HF.globals, llama.HF.unused)
GGUF_LAYER = qwen2.GGUF_LAYER | {"q_norm": "blk.{i}.attn_q_norm.weight", "k_norm": "blk.{i}.attn_k_norm.weight"}
GGUF = WeightMap(rules(GGUF_LAYER), rules(llama.GGUF_GLOBAL))


class Qwen3(Architecture):
    def features(self, hf: Any) -> dict:
        bias = bool(getattr(hf, "attention_bias", False))
        return {"qkv_bias": bias, "o_bias": bias, "qk_norm": True, "sliding_window": uniform_window(hf, f"{self.model_class} config")}

    def gguf_features(self, fields: dict, tensors: set[str]) -> dict:
        return {"attention_bias": "blk.0.attn_q.bias" in tensors}


QWEN3 = Qwen3(
    name="qwen3",
    hf_architectures=("Qwen3ForCausalLM",),
    model_type="qwen3",
    model_class="Qwen3ForCausalLM",
    config_class="Qwen3Config",
    weights={"hf": HF, "gguf": GGUF},
    gguf_architecture="qwen3",
)
