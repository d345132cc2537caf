"""LoRA adapters merged before export, chat templates, and RoPE-scaled longer contexts (issue 8)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from webllama.converter import ConvertOptions, convert
from webllama.converter.chat_templates import TEMPLATES
from webllama.converter.customize import Customization
from webllama.converter.ort_model import OrtModel
from webllama.converter.variants import parse_variants

from tests.conftest import make_tiny_llama, read_json

TWO_TURNS = [
    {"role": "user", "content": "Name a colour."},
    {"role": "assistant", "content": "Blue."},
    {"role": "user", "content": "And another one?"},
]


@pytest.fixture(scope="module")
def lora_adapter(tmp_path_factory, tiny_llama_dir):
    """A LoRA adapter trained for a few steps on the tiny Llama, so it really changes the outputs."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoTokenizer, LlamaForCausalLM

    torch.manual_seed(0)
    base = LlamaForCausalLM.from_pretrained(tiny_llama_dir)
    tok = AutoTokenizer.from_pretrained(tiny_llama_dir)
    model = get_peft_model(
        base,
        LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj", "down_proj"], lora_dropout=0.0, init_lora_weights=True),
    )
    ids = torch.tensor([tok("The cat sat on the mat. The cat sat on the mat.").input_ids])
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-2)
    for _ in range(30):
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    out = tmp_path_factory.mktemp("lora") / "adapter"
    model.save_pretrained(out)
    model.eval()
    prompt = tok("The cat").input_ids
    with torch.no_grad():
        want = model.generate(torch.tensor([prompt]), max_new_tokens=16, do_sample=False, pad_token_id=0)[0, len(prompt) :]
    return out, prompt, want.tolist()


def test_merged_lora_bundle_matches_the_peft_model(tmp_path, tiny_llama_dir, lora_adapter):
    adapter, prompt, want = lora_adapter
    out = tmp_path / "merged"
    b = convert(
        str(tiny_llama_dir),
        out,
        ConvertOptions(variants=parse_variants("fp32"), progress=False, customization=Customization(adapters=(str(adapter),))),
    )
    got = OrtModel(out, "fp32").greedy(prompt, 16, eos=False)
    assert got == want
    # the adapter changed something: the plain base model decodes differently
    plain = tmp_path / "plain"
    convert(str(tiny_llama_dir), plain, ConvertOptions(variants=parse_variants("fp32"), progress=False, verify=False))
    assert OrtModel(plain, "fp32").greedy(prompt, 16, eos=False) != want
    assert b.manifest["source"]["customization"]["adapters"] == [adapter.name]  # named: no local path published
    assert read_json(out / "verify.json")["variants"]["fp32"]["greedy_match"]


def test_mismatched_adapter_fails_clearly(tmp_path, stories_dir, lora_adapter):
    adapter, _, _ = lora_adapter
    other = make_tiny_llama(tmp_path / "wide", stories_dir, seed=3)  # same layout, so change the width
    cfg = json.loads((other / "config.json").read_text())
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg.update(hidden_size=96, intermediate_size=192)
    LlamaForCausalLM(LlamaConfig(**{k: v for k, v in cfg.items() if k not in ("architectures",)})).save_pretrained(other)
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "webllama.converter.cli", "convert", str(other), str(out), "--adapter", str(adapter)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode != 0 and not out.exists()
    line = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(line) == 1 and "cannot apply" in line[0] and "shapes" in line[0], proc.stderr


def test_adapter_for_missing_modules_fails_clearly(tmp_path, tiny_llama_dir, lora_adapter):
    adapter, _, _ = lora_adapter
    bad = tmp_path / "bad-adapter"
    bad.mkdir()
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    cfg["target_modules"] = ["c_attn"]  # a GPT-2 module name
    (bad / "adapter_config.json").write_text(json.dumps(cfg))
    for f in adapter.glob("adapter_model*"):
        (bad / f.name).write_bytes(f.read_bytes())
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "webllama.converter.cli", "convert", str(tiny_llama_dir), str(out), "--adapter", str(bad)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode != 0 and "another base model" in proc.stderr and not out.exists()


def test_linear_rope_scaling_to_twice_the_context_is_token_exact_past_the_trained_length(tmp_path, stories_dir):
    """Trained for 64 positions, stretched to 128 by linear scaling: torch's scaled model and the bundle
    agree token for token on a sequence that runs past position 64."""
    from transformers import LlamaForCausalLM

    src = make_tiny_llama(tmp_path / "short", stories_dir, rope_scaling={}, seed=5)
    cfg = json.loads((src / "config.json").read_text())
    cfg.update(max_position_embeddings=64, rope_scaling=None)
    (src / "config.json").write_text(json.dumps(cfg))
    out = tmp_path / "long"
    b = convert(
        str(src),
        out,
        ConvertOptions(
            variants=parse_variants("fp32"), progress=False, customization=Customization(context_length=128, rope_scaling="linear")
        ),
    )
    assert b.manifest["context_length"] == 128
    assert b.manifest["config"]["rope_scaling"] == {"rope_type": "linear", "factor": 2.0}
    ref = LlamaForCausalLM.from_pretrained(
        src, rope_scaling={"rope_type": "linear", "factor": 2.0}, max_position_embeddings=128
    ).eval()
    prompt = list(range(3, 83))  # 80 tokens: decoding runs from position 80 to 119, past 64
    with torch.no_grad():
        want = ref.generate(torch.tensor([prompt]), max_new_tokens=40, do_sample=False, pad_token_id=0)[0, 80:].tolist()
        logits = ref(torch.tensor([prompt])).logits[0].numpy()
    m = OrtModel(out, "fp32")
    assert m.greedy(prompt, 40, eos=False) == want
    np.testing.assert_allclose(m.forward(np.array([prompt]))[0], logits, atol=1e-3)


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_chat_templates_render_in_transformers(name, tmp_path, tiny_llama_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_llama_dir)
    tok.chat_template = TEMPLATES[name]
    text = tok.apply_chat_template(TWO_TURNS if name != "llama2" else TWO_TURNS, tokenize=False, add_generation_prompt=True)
    assert "Name a colour." in text and "And another one?" in text and "Blue." in text
    if name == "vicuna":
        assert text.startswith("A chat between a curious user") and text.endswith("ASSISTANT:")
        assert "USER: Name a colour. ASSISTANT: Blue.</s>USER: And another one? ASSISTANT:" in text
