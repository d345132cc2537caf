"""GGUF metadata -> transformers config kwargs, for every family (llama.cpp writes "{arch}.key" fields).

The same keys as transformers' GGUF_CONFIG_MAPPING, read from the header alone (transformers' own
loader parses the whole file) and checked: a RoPE scaling GGUF records but webllama cannot reproduce
is refused by name.
"""

from __future__ import annotations

from typing import Any

from webllama.converter.errors import UnsupportedArchitecture

# "{arch}.<key>" -> transformers config field
GGUF_CONFIG: dict[str, str] = {
    "context_length": "max_position_embeddings",
    "block_count": "num_hidden_layers",
    "feed_forward_length": "intermediate_size",
    "embedding_length": "hidden_size",
    "rope.freq_base": "rope_theta",
    "attention.head_count": "num_attention_heads",
    "attention.head_count_kv": "num_key_value_heads",
    "attention.layer_norm_rms_epsilon": "rms_norm_eps",
    "attention.key_length": "head_dim",
    "vocab_size": "vocab_size",
}
NO_SCALING = (None, "none")


def common_gguf_config(arch: str, fields: dict[str, Any], tensors: set[str], where: str, extra: dict[str, str]) -> dict:
    kw = {hf: fields[f"{arch}.{k}"] for k, hf in (GGUF_CONFIG | extra).items() if fields.get(f"{arch}.{k}") is not None}
    if "vocab_size" not in kw and fields.get("tokenizer.ggml.tokens_count"):
        kw["vocab_size"] = int(fields["tokenizer.ggml.tokens_count"])
    kind, factor = fields.get(f"{arch}.rope.scaling.type"), fields.get(f"{arch}.rope.scaling.factor")
    if kind == "linear" and factor:
        kw["rope_scaling"] = {"rope_type": "linear", "factor": float(factor)}
    elif kind not in NO_SCALING:
        raise UnsupportedArchitecture(f"{where}: GGUF rope scaling {kind!r} is not supported; convert the Hugging Face checkpoint")
    kw["tie_word_embeddings"] = "output.weight" not in tensors
    # the tokenizer's, not the config class's defaults (Phi3Config pads with id 32000 whatever the vocabulary)
    for field, key in (("pad_token_id", "padding"), ("bos_token_id", "bos"), ("eos_token_id", "eos")):
        kw[field] = fields.get(f"tokenizer.ggml.{key}_token_id")
    return kw
