"""GGUF metadata -> transformers config kwargs, for every family (llama.cpp writes "{arch}.key" fields).

The same keys as transformers' GGUF_CONFIG_MAPPING, read from the header alone (transformers' own
loader parses the whole file) and checked: a RoPE scaling GGUF records but webllama cannot reproduce
is refused by name.
"""

from __future__ import annotations

from typing import Any

import numpy as np
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


def llama3_factors(inv_freq: np.ndarray, s: dict) -> np.ndarray:
    """llama.cpp's rope_freqs (the divisor of each frequency) of transformers' llama3 rope_scaling `s`."""
    wavelen = 2 * np.pi / inv_freq
    smooth = (s["original_max_position_embeddings"] / wavelen - s["low_freq_factor"]) / (s["high_freq_factor"] - s["low_freq_factor"])
    medium = 1 / ((1 - smooth) / s["factor"] + smooth)
    return np.where(smooth >= 1, 1.0, np.where(smooth <= 0, s["factor"], medium))


def llama3_scaling(factors: np.ndarray, theta: float, dim: int, where: str) -> dict | None:
    """The llama3 rope_scaling whose frequencies are GGUF's rope_freqs (Llama 3.1/3.2 files), or refused.

    Only the band's slope and offset are fixed by the frequencies: low_freq_factor is taken as 1 (Meta's)
    and the rest solved from the smoothed band, or, with one frequency in the band, high_freq_factor 4 too.
    """
    inv_freq = 1.0 / theta ** (np.arange(0, dim, 2, dtype=np.float64) / dim)  # (dim/2,)
    f = np.asarray(factors, dtype=np.float64)
    if f.shape != inv_freq.shape:
        raise UnsupportedArchitecture(f"{where}: rope_freqs has {f.size} values, the heads rotate {inv_freq.size}")
    factor = float(f.max())
    if np.allclose(f, 1.0):
        return None
    band = (f > 1 + 1e-6) & (f < factor * (1 - 1e-6))
    x, smooth = inv_freq[band] / (2 * np.pi), (1 / f[band] - 1 / factor) / (1 - 1 / factor)  # smooth = a * x + b
    if band.sum() >= 2:
        a, b = np.polyfit(x, smooth, 1)
        s = {"low_freq_factor": 1.0, "high_freq_factor": float(1 - 1 / b), "original_max_position_embeddings": float(-a / b)}
    elif band.sum() == 1:
        s = {"low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": float((3 * smooth[0] + 1) / x[0])}
    else:
        raise UnsupportedArchitecture(f"{where}: rope_freqs has no smoothed band; its Llama-3 scaling cannot be recovered")
    s = {"rope_type": "llama3", "factor": factor, **s}
    for k in ("high_freq_factor", "original_max_position_embeddings"):  # integers in every published config
        if abs(s[k] - round(s[k])) < 1e-5 * max(1.0, abs(s[k])):
            s[k] = int(round(s[k])) if k == "original_max_position_embeddings" else float(round(s[k]))
    if not np.allclose(llama3_factors(inv_freq, s), f, rtol=1e-5):
        raise UnsupportedArchitecture(f"{where}: rope_freqs do not follow Llama-3's RoPE scaling; webllama cannot reproduce them")
    return s
