"""The chat page and the engine's chat API in headless Chromium: streaming, status line, Cache API,
WASM fallback, checksum refusal, context limit, multi-turn KV reuse, seeded sampling, stop strings."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from .conftest import copy_bundle, load_bundle, open_eval

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def s260_server(serve, s260_bundle):
    return serve(s260_bundle)


def settings(pg, **values):
    pg.evaluate("document.querySelector('#settings').open = true")
    for k, v in values.items():
        pg.fill(f"#{k}", str(v), timeout=10_000)


def chat_once(pg, text: str, max_tokens: int = 8):
    settings(pg, max_tokens=max_tokens, temperature=0)
    pg.fill("#prompt", text)
    pg.press("#prompt", "Enter")
    pg.wait_for_selector(".msg.assistant .meta", timeout=300_000)
    return pg.inner_text(".msg.assistant"), pg.inner_text("#status")


def wait_loaded(pg):
    pg.wait_for_function("!document.querySelector('#prompt').disabled || !document.querySelector('#error').hidden", timeout=300_000)
    assert pg.is_hidden("#error"), pg.inner_text("#error")


def test_chat_page_streams_and_reports_speed(page, s260_server, tmp_path):
    page.goto(s260_server.url + "/?model=stories260K&autoload=1")
    wait_loaded(page)
    settings(page, max_tokens=10, temperature=0)
    page.fill("#prompt", "Once upon a time")
    page.press("#prompt", "Enter")
    # Streamed: text shows up before the reply is finished.
    page.wait_for_function("document.querySelector('.msg.assistant.streaming')?.textContent.length > 0")
    page.wait_for_selector(".msg.assistant .meta")
    reply = page.inner_text(".msg.assistant")
    status = page.inner_text("#status")
    assert "there was" in reply or len(reply) > 10, reply
    assert "Provider: webgpu" in status, status
    assert "Adapter: google swiftshader" in status
    assert "TTFT" in status and "decode" in status and "tok/s" in status
    shot = tmp_path / "chat.png"
    page.screenshot(path=str(shot), full_page=True)
    if os.environ.get("WEBLLAMA_UPDATE_SCREENSHOT"):
        (REPO / "docs" / "img").mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, REPO / "docs" / "img" / "chat.png")


def test_second_load_reads_the_cache_api(browser, serve, s260_bundle):
    server = serve(s260_bundle)  # own server: its request counter sees only this test
    ctx = browser.new_context()
    pg = ctx.new_page()
    open_eval(pg, server)
    first = load_bundle(pg, "stories260K", device="wasm")
    weights = server.count("/bundles/stories260K/onnx/")
    tokenizer = server.count("/bundles/stories260K/tokenizer")
    assert not first["from_cache"] and weights == 2 and tokenizer == 2
    pg.reload()
    pg.wait_for_function("window.webllama !== undefined")
    second = load_bundle(pg, "stories260K", device="wasm")
    assert second["from_cache"]
    assert server.count("/bundles/stories260K/onnx/") == weights, server.requests
    assert server.count("/bundles/stories260K/tokenizer") == tokenizer
    assert server.count("/bundles/stories260K/manifest.json") == 2  # always revalidated
    # Clearing the cache downloads again.
    pg.evaluate("() => webllama.clearCache()")
    third = load_bundle(pg, "stories260K", device="wasm")
    assert not third["from_cache"] and server.count("/bundles/stories260K/onnx/") == 2 * weights
    ctx.close()


def test_without_webgpu_falls_back_to_wasm_and_answers(browser_no_webgpu, s260_server):
    ctx = browser_no_webgpu.new_context()
    pg = ctx.new_page()
    pg.goto(s260_server.url + "/?model=stories260K&autoload=1")
    wait_loaded(pg)
    reply, status = chat_once(pg, "Once upon a time")
    assert len(reply) > 5
    assert "Provider: wasm" in status and "Adapter: none" in status, status
    assert "(cross-origin isolated)" in status, status  # `webllama serve` sends COOP/COEP: threads allowed
    info = pg.evaluate("""async () => { const {createEngine} = await import('/engine/client.js');
        const e = await createEngine('/bundles/stories260K/'); const i = await e.runtimeInfo(); e.terminate(); return i; }""")
    assert info["execution_provider"] == "wasm" and info["adapter"] is None and info["fallback_reason"]
    ctx.close()


def test_corrupted_bundle_is_refused_with_a_checksum_error(browser, serve, s260_bundle, tmp_path):
    bad = copy_bundle(s260_bundle, tmp_path / "corrupt" / "stories260K")
    data = bad / "onnx" / "model_q4.onnx_data"  # what the WASM engine downloads (its float graph folds these int4 bytes)
    raw = bytearray(data.read_bytes())
    for i in range(len(raw) // 2, len(raw) // 2 + 16):
        raw[i] ^= 0xFF
    data.write_bytes(bytes(raw))
    server = serve(bad.parent)
    ctx = browser.new_context()
    pg = ctx.new_page()
    pg.goto(server.url + "/?model=stories260K&device=wasm&autoload=1")
    pg.wait_for_selector("#error:not([hidden])", timeout=120_000)
    err = pg.inner_text("#error")
    assert "ChecksumError" in err and "checksum mismatch" in err and "model_q4.onnx_data" in err, err
    assert pg.is_disabled("#prompt")
    ctx.close()


def test_missing_bundle_is_a_readable_error(page, s260_server):
    open_eval(page, s260_server)
    msg = page.evaluate("() => webllama.load('/bundles/nope/').then(() => 'loaded', (e) => `${e.name}: ${e.message}`)")
    assert msg.startswith("BundleNotFoundError") and "HTTP 404" in msg, msg


def test_chat_api_context_kv_reuse_seed_and_stop(page, s260_server):
    open_eval(page, s260_server)
    load_bundle(page, "stories260K", device="wasm")
    msgs = [{"role": "user", "content": "Once upon a time"}]
    # Context full: prompt + max_tokens > 512.
    err = page.evaluate(
        "(m) => webllama.chat({messages: m, max_tokens: 600}).then(() => 'ok', (e) => `${e.name}: ${e.message}`)", msgs
    )
    assert err.startswith("ContextFullError") and "context length 512" in err, err
    # Multi-turn: the second turn reuses the first turn's KV cache.
    first = page.evaluate("(m) => webllama.chat({messages: m, max_tokens: 12, temperature: 0})", msgs)
    reply = first["choices"][0]["message"]["content"]
    turn2 = msgs + [{"role": "assistant", "content": reply}, {"role": "user", "content": "The end."}]
    second = page.evaluate("(m) => webllama.chat({messages: m, max_tokens: 4, temperature: 0})", turn2)
    assert second["usage"]["prompt_tokens_details"]["cached_tokens"] >= first["usage"]["prompt_tokens"]
    assert second["usage"]["extra"]["prefill_tokens"] < second["usage"]["prompt_tokens"] / 2
    # Seeded sampling is reproducible.
    req = {"messages": msgs, "max_tokens": 16, "temperature": 1.0, "top_k": 20, "top_p": 0.9, "seed": 1234}
    a = page.evaluate("(r) => webllama.chat(r)", req)["choices"][0]["message"]["content"]
    b = page.evaluate("(r) => webllama.chat(r)", req)["choices"][0]["message"]["content"]
    assert a == b
    # Stop strings end the reply before the stop string, finish_reason 'stop'.
    stop = page.evaluate("(m) => webllama.chat({messages: m, max_tokens: 30, temperature: 0, stop: ['little']})", msgs)
    assert stop["choices"][0]["finish_reason"] == "stop"
    assert "little" not in stop["choices"][0]["message"]["content"]
    # Streaming chunks are OpenAI-shaped and end with usage.
    chunks = page.evaluate("(m) => webllama.chatChunks({messages: m, max_tokens: 5, temperature: 0})", msgs)
    assert chunks[0]["object"] == "chat.completion.chunk" and chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-2]["choices"][0]["finish_reason"] == "length"
    assert chunks[-1]["usage"]["completion_tokens"] == 5
    assert chunks[-1]["usage"]["extra"]["decode_tokens_per_s"] > 0
