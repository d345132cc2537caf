"""The fused graph (--graph fused: GroupQueryAttention, SimplifiedLayerNormalization, MatMulNBits) in the
browser: greedy ids on WASM and WebGPU equal onnxruntime Python CPU on the same bundle, and WebGPU's
fixed-capacity KV cache (written in place, grown by doubling, trimmed for reuse) decodes the same ids."""

from __future__ import annotations

import numpy as np
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
    # GroupQueryAttention on WebGPU writes into one fixed buffer; the WASM graph's attention is unfused and returns
    # the new positions only (an appended cache); fp32 on WASM runs the variant's own graph (a growing cache)
    mode = "fixed" if device == "webgpu" else "append" if unpacked else "growing"
    assert info["kv_cache"]["mode"] == mode, info["kv_cache"]
    ids = page.evaluate("([p, n]) => webllama.generateTokens(p, {max_tokens: n})", [prompt, N_TOKENS])
    assert ids == want


def test_webgpu_fixed_kv_cache_grows_trims_and_matches_onnxruntime(page, serve, fused_bundle):
    """300 tokens cross the first capacity (256 -> 512 = the context): ids equal onnxruntime CPU's growing cache.
    A second request sharing 40 tokens of that history reuses them (the cache is trimmed, not re-allocated) and
    still matches; the growing cache forced on the same session type gives the same ids."""
    from webllama.converter.ort_model import OrtModel

    n = 300
    m = OrtModel(fused_bundle, variant="q4")
    prompt = [m.bos_token_id, *m.tokenizer.encode("Once upon a time", add_special_tokens=False).ids]
    want = m.greedy(prompt, n, eos=False)
    open_eval(page, serve(fused_bundle))
    info = load_bundle(page, "stories260K-fused", device="webgpu", variant="q4")
    assert_on_webgpu(info)
    assert info["kv_cache"] == {"mode": "fixed", "capacity": 256, "growths": 0}, info["kv_cache"]
    gen = "([p, n]) => webllama.generateTokens(p, {max_tokens: n, ignore_eos: true})"
    assert page.evaluate(gen, [prompt, n]) == want
    kv = page.evaluate("() => webllama.runtimeInfo()")["kv_cache"]
    assert kv == {"mode": "fixed", "capacity": 512, "growths": 1}, kv

    turn2 = [*prompt, *want[:40], (want[40] + 1) % 512]  # diverges from the held history after 40 tokens
    assert page.evaluate(gen, [turn2, 24]) == m.greedy(turn2, 24, eos=False)
    assert page.evaluate("() => webllama.runtimeInfo()")["kv_cache"]["growths"] == 1

    info = load_bundle(page, "stories260K-fused", device="webgpu", variant="q4", kvCache="growing")
    assert info["kv_cache"]["mode"] == "growing"
    assert page.evaluate(gen, [prompt, 64]) == want[:64]


def test_wasm_appended_kv_cache_grows_trims_and_matches_onnxruntime(page, serve, fused_bundle):
    """The WASM graph's appended cache: 300 tokens cross the first capacity (256 -> 512 = the context), and ids equal
    onnxruntime CPU's on the same graph decoded the engine's way (OrtModel._greedy_append) and the plain way (the
    past exactly as long as the cache: the spare slots change nothing). A second request sharing 40 tokens reuses
    them and shrinks the capacity back."""
    from webllama.converter.ort_model import OrtModel

    n = 300
    m = OrtModel(fused_bundle, variant="q4", graph="wasm")
    prompt = [m.bos_token_id, *m.tokenizer.encode("Once upon a time", add_special_tokens=False).ids]
    want = m.greedy(prompt, n, eos=False)
    ids, mask, past, plain = np.array([prompt]), np.ones((1, len(prompt)), dtype=np.int64), m.empty_past(1), []
    for _ in range(n):
        logits, past = m.run(ids, mask, past)
        plain.append(int(np.argmax(logits[0, -1])))
        ids, mask = np.array([[plain[-1]]]), np.ones((1, mask.shape[1] + 1), dtype=np.int64)
    assert plain == want
    open_eval(page, serve(fused_bundle))
    info = load_bundle(page, "stories260K-fused", device="wasm", variant="q4")
    assert info["kv_cache"] == {"mode": "append", "capacity": 0, "growths": 0}, info["kv_cache"]
    gen = "([p, n]) => webllama.generateTokens(p, {max_tokens: n, ignore_eos: true})"
    assert page.evaluate(gen, [prompt, n]) == want
    assert page.evaluate("() => webllama.runtimeInfo()")["kv_cache"] == {"mode": "append", "capacity": 512, "growths": 1}
    turn2 = [*prompt, *want[:40], (want[40] + 1) % 512]
    assert page.evaluate(gen, [turn2, 24]) == m.greedy(turn2, 24, eos=False)
    # the short second turn shrinks the capacity back to one step: every run feeds, and attends over, all of it
    assert page.evaluate("() => webllama.runtimeInfo()")["kv_cache"] == {"mode": "append", "capacity": 256, "growths": 2}
