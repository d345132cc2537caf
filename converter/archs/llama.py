"""Llama (LlamaForCausalLM: Llama 1/2/3, TinyLlama, SmolLM, Vicuna; llama2.c checkpoints).

The reference family: the other families are this one plus hooks. attention_bias (q/k/v/o biases)
and mlp_bias (gate/up/down biases) are implemented, not dropped.
"""

from __future__ import annotations

from typing import Any

from webllama.converter.archs.base import Architecture, Rule, WeightMap, rules

HF_LAYER = {
    "attn_norm": "model.layers.{i}.input_layernorm.weight",
    "q": "model.layers.{i}.self_attn.q_proj.weight",
    "k": "model.layers.{i}.self_attn.k_proj.weight",
    "v": "model.layers.{i}.self_attn.v_proj.weight",
    "o": "model.layers.{i}.self_attn.o_proj.weight",
    "mlp_norm": "model.layers.{i}.post_attention_layernorm.weight",
    "gate": "model.layers.{i}.mlp.gate_proj.weight",
    "up": "model.layers.{i}.mlp.up_proj.weight",
    "down": "model.layers.{i}.mlp.down_proj.weight",
    "q_bias": "model.layers.{i}.self_attn.q_proj.bias",
    "k_bias": "model.layers.{i}.self_attn.k_proj.bias",
    "v_bias": "model.layers.{i}.self_attn.v_proj.bias",
    "o_bias": "model.layers.{i}.self_attn.o_proj.bias",
    "gate_bias": "model.layers.{i}.mlp.gate_proj.bias",
    "up_bias": "model.layers.{i}.mlp.up_proj.bias",
    "down_bias": "model.layers.{i}.mlp.down_proj.bias",
}
HF_GLOBAL = {"embed": "model.embed_tokens.weight", "norm": "model.norm.weight", "lm_head": "lm_head.weight"}
# Old checkpoints saved the rotary frequencies; they are recomputed from rope_theta.
HF_UNUSED = ("model.layers.{i}.self_attn.rotary_emb.inv_freq", "model.rotary_emb.inv_freq")
HF = WeightMap(rules(HF_LAYER), rules(HF_GLOBAL), HF_UNUSED)

# llama.cpp's tensor vocabulary (gguf-py tensor_mapping.py); q/k rows are stored in the interleaved RoPE order.
GGUF_LAYER = {
    "attn_norm": "blk.{i}.attn_norm.weight",
    "q": Rule("blk.{i}.attn_q.weight", "rope_q"),
    "k": Rule("blk.{i}.attn_k.weight", "rope_k"),
    "v": "blk.{i}.attn_v.weight",
    "o": "blk.{i}.attn_output.weight",
    "mlp_norm": "blk.{i}.ffn_norm.weight",
    "gate": "blk.{i}.ffn_gate.weight",
    "up": "blk.{i}.ffn_up.weight",
    "down": "blk.{i}.ffn_down.weight",
    "q_bias": Rule("blk.{i}.attn_q.bias", "rope_q"),
    "k_bias": Rule("blk.{i}.attn_k.bias", "rope_k"),
    "v_bias": "blk.{i}.attn_v.bias",
    "o_bias": "blk.{i}.attn_output.bias",
    "gate_bias": "blk.{i}.ffn_gate.bias",
    "up_bias": "blk.{i}.ffn_up.bias",
    "down_bias": "blk.{i}.ffn_down.bias",
}
GGUF_GLOBAL = {"embed": "token_embd.weight", "norm": "output_norm.weight", "lm_head": "output.weight"}
# rope_freqs (Llama 3.1/3.2) is read into the config's llama3 rope_scaling (archs/gguf_keys.py), not into the graph.
GGUF = WeightMap(rules(GGUF_LAYER), rules(GGUF_GLOBAL), ("rope_freqs.weight",))

# llama2.c (run.c's TransformerWeights): per-layer arrays are named "<field>.{i}" by the reader.
LLAMA2C_LAYER = {
    "attn_norm": "attention_norm.{i}",
    "q": Rule("wq.{i}", "rope_q"),
    "k": Rule("wk.{i}", "rope_k"),
    "v": "wv.{i}",
    "o": "wo.{i}",
    "mlp_norm": "ffn_norm.{i}",
    "gate": "w1.{i}",
    "down": "w2.{i}",
    "up": "w3.{i}",
}
LLAMA2C_GLOBAL = {"embed": "tok_embeddings", "norm": "norm", "lm_head": "output"}
# v0 files carry RoPE tables that run.c never reads (it recomputes them).
LLAMA2C = WeightMap(rules(LLAMA2C_LAYER), rules(LLAMA2C_GLOBAL), ("freq_cis_real", "freq_cis_imag"))


class Llama(Architecture):
    def features(self, hf: Any) -> dict:
        attn_bias, mlp_bias = bool(getattr(hf, "attention_bias", False)), bool(getattr(hf, "mlp_bias", False))
        return {"qkv_bias": attn_bias, "o_bias": attn_bias, "mlp_bias": mlp_bias}

    def gguf_features(self, fields: dict, tensors: set[str]) -> dict:
        return {"attention_bias": "blk.0.attn_q.bias" in tensors, "mlp_bias": "blk.0.ffn_up.bias" in tensors}


LLAMA = Llama(
    name="llama",
    hf_architectures=("LlamaForCausalLM",),
    model_type="llama",
    model_class="LlamaForCausalLM",
    config_class="LlamaConfig",
    weights={"hf": HF, "gguf": GGUF, "llama2c": LLAMA2C},
    gguf_architecture="llama",
    gguf_keys={"rope.dimension_count": "head_dim"},
)
