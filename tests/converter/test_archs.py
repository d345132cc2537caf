"""The architecture registry (converter/archs): named transforms, completeness both ways, refusals by
name, and the streaming view of every family equal to the transformers model it came from.

Tiny random models are built here from transformers' own config classes (vocab 512: the stories260K
tokenizer), with random biases and norm weights so a dropped or misplaced tensor changes the logits.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from webllama.converter.archs import ARCHS, families, for_gguf, for_hf
from webllama.converter.archs.transforms import TRANSFORMS, concat_rows, permute_rope, permute_rope_to_gguf
from webllama.converter.errors import MissingTensor, UnsupportedArchitecture, UnusedTensor

COMMON = dict(
    vocab_size=512,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=512,
    rope_theta=10000.0,
    bos_token_id=1,
    eos_token_id=2,
    pad_token_id=None,
)
# family -> (transformers config class, overrides): every feature the registry implements, once
TINY: dict[str, tuple[str, dict]] = {
    "llama-bias": ("LlamaConfig", {"attention_bias": True, "mlp_bias": True, "tie_word_embeddings": False}),
    "mistral": ("MistralConfig", {"sliding_window": 24, "tie_word_embeddings": False}),
    "qwen2": ("Qwen2Config", {"tie_word_embeddings": True}),
    "qwen2-untied": ("Qwen2Config", {"tie_word_embeddings": False}),
    "qwen3": ("Qwen3Config", {"head_dim": 32, "tie_word_embeddings": True}),
    "phi3": (
        "Phi3Config",
        {
            "tie_word_embeddings": False,
            "sliding_window": 40,
            "original_max_position_embeddings": 128,
            "rope_scaling": {"type": "longrope", "short_factor": [1.0 + i / 8 for i in range(8)], "long_factor": [4.0] * 8},
        },
    ),
}


def make_tiny(folder: Path, stories_dir: Path, family: str, seed: int = 0, **overrides) -> Path:
    """A random model of `family` (TINY) saved as a Hugging Face directory with the stories260K tokenizer."""
    import torch
    import transformers
    from webllama.converter.sources.llama2c import build_tokenizer, read_tokenizer_bin

    config_class, kw = TINY[family]
    cfg = getattr(transformers, config_class)(**(COMMON | kw | overrides))
    torch.manual_seed(seed)
    model = for_hf(cfg, family).transformers_class()(cfg).eval()
    with torch.no_grad():  # peaked logits (greedy is meaningful), non-trivial biases and norms
        for name, p in model.named_parameters():
            if p.dim() == 2:
                p.mul_(4.0)
            else:  # small enough that no bias swamps the token's own signal (greedy would repeat one token)
                p.add_(torch.randn_like(p) * (0.1 if name.endswith("bias") else 0.3))
    model.save_pretrained(folder, safe_serialization=True)
    pieces, scores = read_tokenizer_bin(stories_dir / "tok512.bin", 512)
    build_tokenizer(pieces, scores).save_pretrained(folder)
    return folder


# ---------------------------------------------------------------- named transforms


def test_rope_permutation_inverts_llama_cpp_permute():
    """llama.cpp's LlamaModel.permute (convert_hf_to_gguf.py) followed by ours is the identity, on weights and biases."""
    rng = np.random.default_rng(0)
    for shape in ((32, 12), (32,)):
        w = rng.normal(size=shape).astype(np.float32)
        heads = 4
        cpp = w.reshape(heads, 2, shape[0] // heads // 2, *shape[1:]).swapaxes(1, 2).reshape(shape)
        np.testing.assert_array_equal(permute_rope(cpp, heads), w)
        np.testing.assert_array_equal(permute_rope_to_gguf(w, heads), cpp)  # the writers' direction


def test_split_transforms_and_pack_round_trip():
    from webllama.converter.archs.base import ModelConfig

    c = ModelConfig("phi3", 512, 64, 96, 1, 4, 2, 16, 1e4, None, 1e-5, False, 64)
    qkv = np.arange((64 + 2 * 32) * 3, dtype=np.float32).reshape(-1, 3)
    q, k, v = (TRANSFORMS[t]([qkv], c) for t in ("split_q", "split_k", "split_v"))
    assert (q.shape, k.shape, v.shape) == ((64, 3), (32, 3), (32, 3))
    np.testing.assert_array_equal(concat_rows([q, k, v]), qkv)
    gate_up = np.arange(192 * 2, dtype=np.float32).reshape(192, 2)
    g, u = TRANSFORMS["split_gate"]([gate_up], c), TRANSFORMS["split_up"]([gate_up], c)
    np.testing.assert_array_equal(g, gate_up[:96]) and np.testing.assert_array_equal(u, gate_up[96:])
    with pytest.raises(Exception, match="packed projection has 10 rows"):
        TRANSFORMS["split_q"]([np.zeros((10, 3), np.float32)], c)


# ---------------------------------------------------------------- the registry


def test_every_family_is_registered_by_hf_and_gguf_name():
    names = {a.name: a for a in families()}
    assert set(names) == {k.split("-")[0] for k in TINY}  # every registered family has a tiny model here
    for a in names.values():
        for hf in a.hf_architectures:
            assert ARCHS.get(hf) is a and for_hf({"architectures": [hf]}, "x") is a
        if a.gguf_architecture:
            assert for_gguf(a.gguf_architecture, "x") is a
        assert "hf" in a.weights
    with pytest.raises(UnsupportedArchitecture, match="GPT2LMHeadModel.*not supported.*LlamaForCausalLM"):
        for_hf({"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2"}, "config.json")
    with pytest.raises(UnsupportedArchitecture, match="GGUF architecture 'gemma2' is not supported"):
        for_gguf("gemma2", "x.gguf")


@pytest.mark.parametrize("family", sorted(TINY))
def test_streaming_view_equals_the_model(tmp_path, stories_dir, family):
    """Every canonical tensor of the safetensors view is the model's own (split where packed), and the
    torch view rebuilt from the stream gives the model's logits exactly."""
    import torch
    from webllama.converter.sources.hf import SafetensorsTensors

    folder = make_tiny(tmp_path / family, stories_dir, family)
    view = SafetensorsTensors(folder)
    model = view.arch.transformers_class().from_pretrained(folder, dtype=torch.float32).eval()
    rebuilt = view.torch_model()
    ids = torch.tensor([[1, 5, 9, 33, 100, 7, 2, 64]])
    with torch.no_grad():
        np.testing.assert_array_equal(rebuilt(ids).logits.numpy(), model(ids).logits.numpy())
    sd = {k: v.numpy() for k, v in model.state_dict().items()}
    assert np.array_equal(view.get("layers.1.down"), sd["model.layers.1.mlp.down_proj.weight"])
    c = view.config
    if c.qkv_bias:
        assert np.array_equal(view.get("layers.0.q_bias"), sd["model.layers.0.self_attn.q_proj.bias"])
    if c.qk_norm:
        assert view.get("layers.1.k_norm").shape == (c.head_dim,)


def test_model_configs_carry_every_feature(tmp_path, stories_dir):
    from webllama.converter.sources.hf import SafetensorsTensors

    def cfg(family):
        return SafetensorsTensors(make_tiny(tmp_path / family, stories_dir, family)).config

    assert (cfg("llama-bias").qkv_bias, cfg("llama-bias").o_bias, cfg("llama-bias").mlp_bias) == (True, True, True)
    assert cfg("mistral").sliding_window == 24 and cfg("phi3").sliding_window == 40
    q2 = cfg("qwen2")
    assert q2.qkv_bias and not q2.o_bias and q2.tie_embeddings and not cfg("qwen2-untied").tie_embeddings
    q3 = cfg("qwen3")
    assert q3.qk_norm and q3.head_dim == 32 and not q3.qkv_bias
    assert cfg("phi3").max_seq_len == 128  # longrope: exact only within the short-factor range


# ---------------------------------------------------------------- nothing dropped silently


def test_unused_source_tensor_is_refused_by_name(tmp_path, stories_dir):
    """Bias tensors in a checkpoint whose config says attention_bias=false would be dropped: refused, named."""
    from webllama.converter.sources.hf import SafetensorsTensors

    folder = make_tiny(tmp_path / "b", stories_dir, "llama-bias")
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(cfg | {"attention_bias": False}))
    with pytest.raises(
        UnusedTensor, match=r"does not use: model\.layers\.0\.self_attn\.k_proj\.bias, .*layers\.1\.self_attn\.v_proj\.bias;"
    ):
        SafetensorsTensors(folder)


def test_missing_graph_tensor_is_refused_by_name(tmp_path, stories_dir):
    from safetensors.numpy import load_file, save_file
    from webllama.converter.sources.hf import SafetensorsTensors

    folder = make_tiny(tmp_path / "q3", stories_dir, "qwen3")
    st = folder / "model.safetensors"
    tensors = load_file(st)
    del tensors["model.layers.1.self_attn.q_norm.weight"]
    save_file(tensors, st, metadata={"format": "pt"})
    with pytest.raises(MissingTensor, match=r"layers\.1\.q_norm \(model\.layers\.1\.self_attn\.q_norm\.weight\)"):
        SafetensorsTensors(folder)


@pytest.mark.parametrize(
    ("family", "change", "named"),
    [
        ("llama-bias", {"hidden_act": "gelu"}, "hidden_act='gelu'"),
        ("phi3", {"partial_rotary_factor": 0.75, "rope_scaling": None}, "partial_rotary_factor=0.75"),
        (
            "qwen2",
            {"use_sliding_window": True, "sliding_window": 16, "max_window_layers": 1, "layer_types": None},
            "layer_types mixes",
        ),
        ("llama-bias", {"rope_scaling": {"rope_type": "longrope", "short_factor": [1.0] * 8, "long_factor": [2.0] * 8}}, "'longrope'"),
    ],
)
def test_unimplemented_config_field_is_refused_by_name(tmp_path, stories_dir, family, change, named):
    from webllama.converter.sources.hf import SafetensorsTensors

    src = make_tiny(tmp_path / "src", stories_dir, family)
    cfg = json.loads((src / "config.json").read_text())
    (src / "config.json").write_text(json.dumps(cfg | change))
    with pytest.raises(UnsupportedArchitecture, match=named.replace("(", r"\(")):
        SafetensorsTensors(src)


def test_refusal_through_the_cli(tmp_path, stories_dir):
    """One `error:` line naming the field, non-zero exit, nothing written."""
    from tests.converter.test_errors import assert_clean_failure, run_cli

    src = make_tiny(tmp_path / "src", stories_dir, "llama-bias")
    cfg = json.loads((src / "config.json").read_text())
    (src / "config.json").write_text(json.dumps(cfg | {"hidden_act": "gelu"}))
    out = tmp_path / "out"
    assert_clean_failure(run_cli("convert", str(src), str(out), "--variant", "fp32"), out, "hidden_act='gelu'", "not implemented")


def test_llama2c_and_gguf_views_use_the_registry(stories_dir):
    from webllama.converter.sources.llama2c import Llama2cTensors

    view = Llama2cTensors(stories_dir / "stories260K.bin")
    assert view.arch.name == "llama" and view.config.n_layers == 5 and view.get("layers.4.q").shape == (64, 64)


def test_pytorch_bin_checkpoints_are_checked_too(tmp_path, stories_dir):
    """The torch loader (reference export, verification, native eval) refuses what the streaming view refuses."""
    import torch
    from safetensors.torch import load_file
    from webllama.converter.sources import load_source

    folder = make_tiny(tmp_path / "q2", stories_dir, "qwen2")
    sd = load_file(folder / "model.safetensors")
    (folder / "model.safetensors").unlink()
    torch.save(sd | {"model.layers.0.mlp.up_proj.bias": torch.zeros(128)}, folder / "pytorch_model.bin")
    with pytest.raises(UnusedTensor, match=r"does not use: model\.layers\.0\.mlp\.up_proj\.bias;"):
        load_source(str(folder))


def test_no_family_literal_outside_its_module():
    """The Llama assumption lives in archs/llama.py only: no other converter module names LlamaForCausalLM /
    LlamaConfig or the string "llama" in code (comments and docstrings may mention them)."""
    import io
    import tokenize

    root = Path(__file__).resolve().parents[2] / "converter"
    found = []
    for path in sorted(root.rglob("*.py")):
        if path == root / "archs" / "llama.py":
            continue
        for tok in tokenize.generate_tokens(io.StringIO(path.read_text()).readline):
            named = tok.type == tokenize.NAME and tok.string in ("LlamaForCausalLM", "LlamaConfig")
            quoted = tok.type == tokenize.STRING and tok.string.strip("\"'") in ("llama", "LlamaForCausalLM")
            if named or quoted:
                found.append(f"{path.relative_to(root)}:{tok.start[0]}")
    assert not found, found
