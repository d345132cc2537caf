"""Phi-3 / Phi-3.5-mini (Phi3ForCausalLM): packed qkv_proj and gate_up_proj, split into the graph's
q/k/v and gate/up; sliding window (Phi-3-mini: 2047); RoPE default or longrope.

longrope uses its short factors up to original_max_position_embeddings and switches every position to
the long factors beyond (transformers' longrope_frequency_update), which a static RoPE cache cannot
follow: the bundle's context is original_max_position_embeddings, exact within it.
"""

from __future__ import annotations

from typing import Any

from webllama.converter.archs import llama
from webllama.converter.archs.base import ROPE_TYPES, Architecture, Rule, WeightMap, rope_type, rules, window

HF_LAYER = {
    "attn_norm": "model.layers.{i}.input_layernorm.weight",
    "q": Rule("model.layers.{i}.self_attn.qkv_proj.weight", "split_q"),
    "k": Rule("model.layers.{i}.self_attn.qkv_proj.weight", "split_k"),
    "v": Rule("model.layers.{i}.self_attn.qkv_proj.weight", "split_v"),
    "o": "model.layers.{i}.self_attn.o_proj.weight",
    "mlp_norm": "model.layers.{i}.post_attention_layernorm.weight",
    "gate": Rule("model.layers.{i}.mlp.gate_up_proj.weight", "split_gate"),
    "up": Rule("model.layers.{i}.mlp.gate_up_proj.weight", "split_up"),
    "down": "model.layers.{i}.mlp.down_proj.weight",
}
HF = WeightMap(rules(HF_LAYER), llama.HF.globals, llama.HF.unused)
GGUF_LAYER = {
    "attn_norm": "blk.{i}.attn_norm.weight",
    "q": Rule("blk.{i}.attn_qkv.weight", "split_q"),
    "k": Rule("blk.{i}.attn_qkv.weight", "split_k"),
    "v": Rule("blk.{i}.attn_qkv.weight", "split_v"),
    "o": "blk.{i}.attn_output.weight",
    "mlp_norm": "blk.{i}.ffn_norm.weight",
    "gate": Rule("blk.{i}.ffn_up.weight", "split_gate"),
    "up": Rule("blk.{i}.ffn_up.weight", "split_up"),
    "down": "blk.{i}.ffn_down.weight",
}
GGUF = WeightMap(rules(GGUF_LAYER), rules(llama.GGUF_GLOBAL))


class Phi3(Architecture):
    def features(self, hf: Any) -> dict:
        return {"sliding_window": window(hf, getattr(hf, "sliding_window", None))}

    def context_length(self, hf: Any) -> int:
        n = int(hf.max_position_embeddings)
        if rope_type(hf) == "longrope":
            return min(n, int(getattr(hf, "original_max_position_embeddings", None) or n))
        return n


PHI3 = Phi3(
    name="phi3",
    hf_architectures=("Phi3ForCausalLM",),
    model_type="phi3",
    model_class="Phi3ForCausalLM",
    config_class="Phi3Config",
    weights={"hf": HF, "gguf": GGUF},
    gguf_architecture="phi3",
    rope_types=(*ROPE_TYPES, "longrope"),
)
