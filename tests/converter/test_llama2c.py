"""stories260K (a real llama2.c checkpoint) through every variant."""

from __future__ import annotations

import numpy as np
import pytest
from webllama.converter import ConvertOptions, convert, open_bundle
from webllama.converter.ort_model import OrtModel
from webllama.converter.quant.policy import recipe
from webllama.converter.sources import load_source
from webllama.converter.sources.llama2c import permute_rope
from webllama.converter.variants import parse_variants

from tests.conftest import STORIES_REFERENCE, read_json


@pytest.fixture(scope="module")
def all_variants(tmp_path_factory, stories_dir):
    out = tmp_path_factory.mktemp("s260all") / "bundle"
    convert(str(stories_dir), out, ConvertOptions(variants=parse_variants("fp32,fp16,q4,q4f16"), progress=False))
    return out


def test_source_greedy_is_the_reference_text(stories_dir):
    src = load_source(str(stories_dir))
    import torch

    out = src.model.generate(torch.tensor([[1]]), max_new_tokens=40, do_sample=False, pad_token_id=0)
    assert src.tokenizer.decode(out[0], skip_special_tokens=True).startswith(STORIES_REFERENCE)


def test_every_variant_converts_and_verifies(all_variants):
    verify = read_json(all_variants / "verify.json")
    assert set(verify["variants"]) == {"fp32", "fp16", "q4", "q4f16"}
    fp32 = verify["variants"]["fp32"]
    assert fp32["greedy_match"] and fp32["top1_agreement"] == 1.0 and fp32["max_abs_logit_diff"] < 1e-3
    for name in ("q4", "q4f16"):
        r = verify["variants"][name]
        assert 0.5 < r["top1_agreement"] < 1.0, r  # int4 changes the model, but not beyond recognition
        assert r["mean_kl"] > 0
    assert verify["variants"]["fp16"]["top1_agreement"] > 0.97


def test_bundle_greedy_text_is_the_reference(all_variants):
    m = OrtModel(all_variants, "fp32")
    ids = m.greedy([1], 40, eos=False)
    assert m.tokenizer.decode(ids).startswith(STORIES_REFERENCE)


def test_manifest_lists_every_file_with_hashes(all_variants):
    b = open_bundle(all_variants, check_hashes=True)
    paths = {f["path"] for f in b.manifest["files"]}
    for v in b.variants:
        spec = b.variant(v)
        assert spec["model"] in paths and set(spec["external_data"]) <= paths
        assert spec["verify"]["passed"]
    assert {"config.json", "tokenizer.json", "tokenizer_config.json", "verify.json"} <= paths
    assert b.manifest["variants"]["q4f16"]["requires_webgpu_features"] == ["shader-f16"]
    assert b.manifest["variants"]["q4"]["requires_webgpu_features"] == []
    assert b.manifest["variants"]["q4"]["quantization"]["linear"]["block_size"] == recipe().linear.block_size  # the default's
    assert b.manifest["context_length"] == 512 and b.manifest["tokenizer"]["bos_token_id"] == 1
    # transformers.js layout: onnx/model{suffix}.onnx + the external-data declaration in config.json
    cfg = read_json(all_variants / "config.json")
    assert cfg["transformers.js_config"]["use_external_data_format"]["model_q4.onnx"] == 1


def test_int4_graph_uses_browser_kernels(all_variants):
    import onnx

    g = onnx.load(str(all_variants / "onnx" / "model_q4.onnx"), load_external_data=False).graph
    ops = [n.op_type for n in g.node]
    assert ops.count("GatherBlockQuantized") == 1  # the embedding
    assert ops.count("MatMulNBits") == 5 * 7 + 1  # 7 projections per layer + the tied lm_head
    assert not [n for n in g.node if n.op_type == "MatMul" and n.input[1] in {i.name for i in g.initializer}]


def test_permute_rope_matches_interleaved_rotation():
    """Rotating interleaved pairs with the original rows == rotating halves with permuted rows."""
    rng = np.random.default_rng(0)
    heads, hd, dim, pos = 2, 8, 16, 5
    w = rng.standard_normal((heads * hd, dim)).astype(np.float32)
    x = rng.standard_normal(dim).astype(np.float32)
    freqs = 1.0 / (10000 ** (np.arange(0, hd, 2) / hd)) * pos
    cos, sin = np.cos(freqs), np.sin(freqs)
    q = (w @ x).reshape(heads, hd)
    inter = q.reshape(heads, hd // 2, 2)
    rot_i = np.stack([inter[..., 0] * cos - inter[..., 1] * sin, inter[..., 0] * sin + inter[..., 1] * cos], -1)
    qh = (permute_rope(w, heads) @ x).reshape(heads, hd)
    a, b = qh[:, : hd // 2], qh[:, hd // 2 :]
    rot_h = np.concatenate([a * cos - b * sin, b * cos + a * sin], -1)
    # the same rotated vector, in the two layouts
    np.testing.assert_allclose(rot_i.reshape(heads, hd // 2, 2).transpose(0, 2, 1).reshape(heads, hd), rot_h, rtol=1e-5)
