"""Mistral (MistralForCausalLM): Llama's tensors, plus sliding-window attention.

The window is honoured everywhere the graph attends: GroupQueryAttention's local_window_size (fused
graph), a banded causal mask (the WASM graph, quant/unfuse_attention.py) and the engine's KV-cache
bound. llama.cpp writes Mistral GGUFs as "llama" (without the window), so no GGUF map here.
"""

from __future__ import annotations

from typing import Any

from webllama.converter.archs import llama
from webllama.converter.archs.base import Architecture, window


class Mistral(Architecture):
    def features(self, hf: Any) -> dict:
        return {"sliding_window": window(hf, getattr(hf, "sliding_window", None))}


MISTRAL = Mistral(
    name="mistral",
    hf_architectures=("MistralForCausalLM",),
    model_type="mistral",
    model_class="MistralForCausalLM",
    config_class="MistralConfig",
    weights={"hf": llama.HF},
)
