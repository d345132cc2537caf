"""A tiny random Llama with GQA, an untied head and llama3 RoPE scaling: fp32 must be token-exact."""

from __future__ import annotations

from webllama.converter import ConvertOptions, convert
from webllama.converter.variants import parse_variants

from tests.conftest import make_tiny_llama, read_json


def test_tiny_gqa_untied_llama3_rope_is_token_exact(tmp_path, tiny_llama_dir):
    out = tmp_path / "tiny"
    b = convert(str(tiny_llama_dir), out, ConvertOptions(variants=parse_variants("fp32,q4"), progress=False))
    r = read_json(out / "verify.json")["variants"]["fp32"]
    assert r["greedy_match"] and r["top1_agreement"] == 1.0, r
    assert b.manifest["config"]["num_key_value_heads"] == 2
    assert b.manifest["config"]["rope_scaling"]["rope_type"] == "llama3"
    assert b.manifest["config"]["tie_word_embeddings"] is False
    assert b.manifest["source"]["kind"] == "hf"


def test_linear_and_dynamic_rope_scaling_are_token_exact(tmp_path, stories_dir):
    for kind in ({"rope_type": "linear", "factor": 2.0}, {"rope_type": "dynamic", "factor": 2.0}):
        src = make_tiny_llama(tmp_path / kind["rope_type"], stories_dir, tie=True, rope_scaling=kind, seed=1)
        convert(str(src), tmp_path / f"out-{kind['rope_type']}", ConvertOptions(variants=parse_variants("fp32"), progress=False))
        r = read_json(tmp_path / f"out-{kind['rope_type']}" / "verify.json")["variants"]["fp32"]
        assert r["greedy_match"] and r["top1_agreement"] == 1.0, (kind, r)
