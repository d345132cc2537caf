"""The fused graph (--graph fused: GroupQueryAttention, SimplifiedLayerNormalization, MatMulNBits) in the
browser: greedy ids on WASM and WebGPU equal onnxruntime Python CPU on the same bundle."""

from __future__ import annotations

import pytest

from .conftest import assert_on_webgpu, load_bundle, open_eval

pytestmark = pytest.mark.browser
N_TOKENS = 32


@pytest.fixture(scope="module")
def fused_bundle(tmp_path_factory, stories_dir):
    from webllama.converter import ConvertOptions, convert
    from webllama.converter.variants import parse_variants

    out = tmp_path_factory.mktemp("fused") / "stories260K-fused"
    convert(str(stories_dir), out, ConvertOptions(variants=parse_variants("fp32,q4"), graph="fused", progress=False))
    return out


@pytest.mark.parametrize("device", ["wasm", "webgpu"])
@pytest.mark.parametrize("variant", ["q4", "fp32"])
def test_fused_greedy_parity(page, serve, fused_bundle, variant, device):
    from webllama.converter.ort_model import OrtModel

    unpacked = device == "wasm" and variant == "q4"  # the engine runs the dequantize-at-load graph there
    m = OrtModel(fused_bundle, variant=variant, graph="wasm" if unpacked else "default")
    prompt = [m.bos_token_id, *m.tokenizer.encode("Once upon a time", add_special_tokens=False).ids]
    want = m.greedy(prompt, N_TOKENS)
    open_eval(page, serve(fused_bundle))
    info = load_bundle(page, "stories260K-fused", device=device, variant=variant)
    if device == "webgpu":
        assert_on_webgpu(info)
    else:
        assert info["execution_provider"] == "wasm", info
    assert info["graph_file"].endswith("_wasm.onnx") == unpacked
    ids = page.evaluate("([p, n]) => webllama.generateTokens(p, {max_tokens: n})", [prompt, N_TOKENS])
    assert ids == want
