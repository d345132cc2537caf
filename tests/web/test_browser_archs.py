"""Every registered family's q4 bundle in the browser: greedy ids on WASM (the dequantize-at-load graph,
attention unfused, banded for a sliding window) and on WebGPU (GroupQueryAttention, MatMulNBits, the
family's bias Adds and q/k norms) equal onnxruntime Python CPU on the same bundle."""

from __future__ import annotations

import pytest

from tests.converter.test_archs_convert import FAMILIES, family_bundle

from .conftest import assert_on_webgpu, load_bundle, open_eval

pytestmark = pytest.mark.browser
N_TOKENS = 40  # prompt + 40 > Mistral's window (24): the engine's cache path past the window


@pytest.fixture(scope="module")
def arch_server(tmp_path_factory, stories_dir, serve):
    root = tmp_path_factory.getbasetemp() / "archs"
    root.mkdir(exist_ok=True)
    return serve(*[family_bundle(root, stories_dir, f) for f in FAMILIES]), root


# WebGPU on SwiftShader is slow (~35 s a family): the two whose kernels differ from Llama's there, the attention
# window (Mistral: GroupQueryAttention's local_window_size) and per-head q/k norms before a separate rotary (Qwen3)
DEVICES = {"wasm": FAMILIES, "webgpu": ["mistral", "qwen3"]}


@pytest.mark.parametrize("device", sorted(DEVICES))
def test_family_greedy_parity(page, arch_server, device):
    from webllama.converter.ort_model import OrtModel

    server, root = arch_server
    open_eval(page, server)
    for family in DEVICES[device]:
        bundle = root / f"{family}-fused"
        m = OrtModel(bundle, variant="q4", graph="wasm" if device == "wasm" else "default")
        prompt = m.tokenizer.encode("Once upon a time, in a small town").ids
        want = m.greedy(prompt, N_TOKENS, eos=False)
        info = load_bundle(page, bundle.name, device=device, variant="q4")
        if device == "webgpu":
            assert_on_webgpu(info)
        else:
            assert info["execution_provider"] == "wasm" and info["graph_file"].endswith("_wasm.onnx"), info
        ids = page.evaluate("([p, n]) => webllama.generateTokens(p, {max_tokens: n, ignore_eos: true})", [prompt, N_TOKENS])
        assert ids == want, (family, device)
