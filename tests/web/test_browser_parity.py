"""Token parity: greedy ids from the browser engine (WASM and WebGPU) equal onnxruntime Python CPU
(webllama.converter.ort_model.OrtModel.greedy) on the same bundle; WebGPU runs are proven by ORT's placement log."""

from __future__ import annotations

import numpy as np
import pytest

from .conftest import assert_on_webgpu, load_bundle, open_eval

pytestmark = pytest.mark.browser

PROMPT = "Once upon a time"
N_TOKENS = 32


@pytest.fixture(scope="module")
def s260_server(serve, s260_bundle):
    return serve(s260_bundle)


@pytest.fixture(scope="module")
def s260_prompt(s260_bundle) -> list[int]:
    from webllama.converter.ort_model import OrtModel

    m = OrtModel(s260_bundle, variant="fp32")
    return [m.bos_token_id, *m.tokenizer.encode(PROMPT, add_special_tokens=False).ids]


@pytest.fixture(scope="module")
def s260_reference(s260_bundle, s260_prompt) -> dict[str, list[int]]:
    from webllama.converter.ort_model import OrtModel

    # On WASM the engine runs an int4 variant's dequantize-at-load graph (converter/quant/unpack.py): the
    # reference is onnxruntime CPU on that same graph.
    ref = {(v, "webgpu"): OrtModel(s260_bundle, variant=v).greedy(s260_prompt, N_TOKENS) for v in ("q4", "fp32")}
    ref[("fp32", "wasm")] = ref[("fp32", "webgpu")]
    ref[("q4", "wasm")] = OrtModel(s260_bundle, variant="q4", graph="wasm").greedy(s260_prompt, N_TOKENS)
    return ref


@pytest.mark.parametrize("device", ["wasm", "webgpu"])
@pytest.mark.parametrize("variant", ["q4", "fp32"])
def test_stories260k_greedy_parity(page, s260_server, s260_prompt, s260_reference, variant, device):
    open_eval(page, s260_server)
    info = load_bundle(page, "stories260K", device=device, variant=variant)
    assert info["variant"] == variant
    if device == "webgpu":
        assert_on_webgpu(info)
    else:
        assert info["execution_provider"] == "wasm"
        assert set(info["placement"]) == {"CPUExecutionProvider"}, info["placement_log"]
    unpacked = device == "wasm" and variant == "q4"
    assert info["graph_file"] == f"onnx/model{'' if variant == 'fp32' else '_' + variant}{'_wasm' if unpacked else ''}.onnx"
    ids = page.evaluate("([p, n]) => webllama.generateTokens(p, {max_tokens: n})", [s260_prompt, N_TOKENS])
    assert ids == s260_reference[(variant, device)]


def test_tokenizer_and_scoring_parity(page, s260_server, s260_bundle):
    """encode/decode match Python's tokenizers; scoreTokens matches log-softmax of OrtModel.forward."""
    from webllama.converter.ort_model import OrtModel

    m = OrtModel(s260_bundle, variant="fp32")
    texts = ["Once upon a time", " Lily  liked\tcats.\n\nThe end!", "naïve café ☃ 🙂", "123 + 456 = 579"]
    open_eval(page, s260_server)
    load_bundle(page, "stories260K", device="wasm", variant="fp32")
    for t in texts:
        assert page.evaluate("(t) => webllama.encode(t)", t) == m.tokenizer.encode(t, add_special_tokens=False).ids, t
    ids = m.tokenizer.encode(texts[0], add_special_tokens=False).ids
    assert page.evaluate("(ids) => webllama.decode(ids)", ids) == m.tokenizer.decode(ids, skip_special_tokens=False)

    seq = [m.bos_token_id, *m.tokenizer.encode("Once upon a time there was a girl", add_special_tokens=False).ids]
    batch = [{"context": seq[:k], "continuation": seq[k:]} for k in (1, 3, 5)]
    got = page.evaluate("(b) => webllama.scoreTokens(b)", batch)
    logits = m.forward(np.array([seq], dtype=np.int64))[0].astype(np.float64)
    logp = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)) - logits.max(-1, keepdims=True)
    for item, res in zip(batch, got, strict=True):
        k = len(item["context"])
        want = [logp[k - 1 + j, t] for j, t in enumerate(item["continuation"])]
        assert np.allclose(res["logprobs"], want, atol=2e-4), (res["logprobs"], want)
        assert abs(res["logprob"] - sum(want)) < 1e-3
        greedy = all(int(np.argmax(logits[k - 1 + j])) == t for j, t in enumerate(item["continuation"]))
        assert res["greedy"] == greedy
