"""genai_config.json: the manifest of onnxruntime-genai's model builder, written into every bundle.

With it, runtimes that read model-builder folders load a bundle as it is, without moving files:
lm-eval's stock `onnxruntime` backend (`lm_eval --model onnxruntime --model_args pretrained=BUNDLE`)
finds the graph through `model.decoder.filename` (relative to the bundle, so `onnx/model_q4.onnx`), the
tokenizer beside it (the bundle's tokenizer.json), and the context length and special tokens here.
The layout follows microsoft/onnxruntime-genai's `make_genai_config` (src/python/py/models/builder.py)
and its configuration reference: `model.decoder` names the graph's inputs and outputs, with the
per-layer KV names as printf templates, and `search` holds greedy defaults.

One decoder per file, so the default variant is named: q4 when the bundle has it (the variant the
browser runs), else the first of fp32, fp16, q4f16. Another variant is reached by giving its .onnx
file as `pretrained` to runtimes that accept one.
"""

from __future__ import annotations

import json
from pathlib import Path

from webllama.converter.archs import for_hf

GENAI_CONFIG = "genai_config.json"
DEFAULT_ORDER = ("q4", "fp32", "fp16", "q4f16")


def default_variant(variants: dict[str, dict]) -> str:
    """The variant genai_config.json names: the first of DEFAULT_ORDER present, else the first by name."""
    return next((v for v in DEFAULT_ORDER if v in variants), sorted(variants)[0])


def _io_names(entry: dict) -> tuple[dict, dict]:
    """decoder.inputs / decoder.outputs: the graph's own names, the per-layer ones as %d templates."""
    names = {i["name"] for i in entry.get("inputs", [])}
    inputs = {k: k for k in ("input_ids", "attention_mask", "position_ids") if k in names}
    inputs |= {"past_key_names": "past_key_values.%d.key", "past_value_names": "past_key_values.%d.value"}
    outputs = {"logits": "logits", "present_key_names": "present.%d.key", "present_value_names": "present.%d.value"}
    return inputs, outputs


def genai_config(
    config, variants: dict[str, dict], bos_token_id: int | None, eos_token_ids: list[int], pad_token_id: int | None
) -> dict:
    """The genai_config.json dict for a bundle; `config` is the transformers config of the source."""
    arch = for_hf(config, "the source config")  # its family name is onnxruntime-genai's model type too
    ctx = arch.model_config(config).max_seq_len  # the context the bundle is exact for (Phi-3 longrope: shorter)
    entry = variants[default_variant(variants)]
    inputs, outputs = _io_names(entry)
    head_size = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    eos = eos_token_ids[0] if len(eos_token_ids) == 1 else list(eos_token_ids)
    return {
        "model": {
            "bos_token_id": bos_token_id,
            "context_length": ctx,
            "decoder": {
                "session_options": {"log_id": "onnxruntime-genai", "provider_options": []},  # [] = CPU, as the builder writes for cpu
                "filename": entry["model"],
                "head_size": head_size,
                "hidden_size": config.hidden_size,
                "inputs": inputs,
                "outputs": outputs,
                "num_attention_heads": config.num_attention_heads,
                "num_hidden_layers": config.num_hidden_layers,
                "num_key_value_heads": config.num_key_value_heads,
            },
            "eos_token_id": eos,
            "pad_token_id": pad_token_id if pad_token_id is not None else eos_token_ids[0],
            "type": arch.name,
            "vocab_size": config.vocab_size,
        },
        "search": _search_defaults(ctx),
    }


def _search_defaults(max_length: int) -> dict:
    # Greedy, as the model builder writes them; past_present_share_buffer needs a static-cache GQA graph.
    return {
        "diversity_penalty": 0.0,
        "do_sample": False,
        "early_stopping": True,
        "length_penalty": 1.0,
        "max_length": max_length,
        "min_length": 0,
        "no_repeat_ngram_size": 0,
        "num_beams": 1,
        "num_return_sequences": 1,
        "past_present_share_buffer": False,
        "repetition_penalty": 1.0,
        "temperature": 1.0,
        "top_k": 1,
        "top_p": 1.0,
    }


def write_genai_config(root: Path, config, variants: dict[str, dict], tokenizer, eos_token_ids: list[int]) -> Path:
    """Write root/genai_config.json (inside the bundle's staging folder, so it is renamed in with the rest)."""
    cfg = genai_config(config, variants, tokenizer.bos_token_id, eos_token_ids, tokenizer.pad_token_id)
    path = root / GENAI_CONFIG
    path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path
