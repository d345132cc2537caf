"""Every registered family end to end on a tiny random model: the fused graph's fp32 is token-exact with
transformers (top-1 1.0 over 384 teacher-forced tokens, 64 greedy tokens identical), q4 converts, and
the WASM graph's attention (unfused, banded for a sliding window) is exact on the fp32 graph; Mistral
on a text 16x longer than its window, with the reference export as well; GGUF files of the families
llama.cpp writes read back to the same model, and GGUF tensors nothing reads are refused by name."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from webllama.converter import ConvertOptions, convert, open_bundle
from webllama.converter.archs.transforms import permute_rope_to_gguf
from webllama.converter.ort_model import OrtModel
from webllama.converter.variants import parse_variants
from webllama.converter.verify import VERIFY_TEXT, logit_stats

from tests.converter.test_archs import TINY, make_tiny

FAMILIES = sorted(TINY)


def family_bundle(root: Path, stories_dir: Path, family: str, graph: str = "fused") -> Path:
    """The family's tiny model converted (fp32 + q4, verified), once per test session (web tests share it)."""
    out = root / f"{family}-{graph}"
    if not (out / "manifest.json").exists():
        src = make_tiny(root / f"{family}-src", stories_dir, family)
        variants = "fp32,q4" if graph == "fused" else "fp32"
        convert(str(src), out, ConvertOptions(variants=parse_variants(variants), progress=False, graph=graph, force=True))
    return out


@pytest.fixture(scope="session")
def archs_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.getbasetemp() / "archs"
    root.mkdir(exist_ok=True)
    return root


def verified(bundle: Path) -> dict:
    return json.loads((bundle / "verify.json").read_text())["variants"]


@pytest.mark.parametrize("family", FAMILIES)
def test_family_converts_exactly(tmp_path, archs_root, stories_dir, family):
    bundle = family_bundle(archs_root, stories_dir, family)
    v = verified(bundle)
    fp32, q4 = v["fp32"], v["q4"]
    manifest = open_bundle(bundle).manifest
    scored = min(384, manifest["context_length"] - 1)  # phi3 (longrope): exact within its 128-token short-factor range
    assert fp32["top1_agreement"] == 1.0 and fp32["greedy_match"] and fp32["tokens_scored"] == scored, fp32
    assert fp32["max_abs_logit_diff"] < 1e-3, fp32  # every logit, not just the argmax
    assert q4["passed"] and q4["top1_agreement"] > 0.4, q4  # random weights: int4 moves them, not beyond recognition
    assert manifest["architecture"] == family.split("-")[0]
    spec = manifest["variants"]["q4"]
    ops = {n.op_type for n in onnx.load(str(bundle / spec["model"]), load_external_data=False).graph.node}
    assert {"MatMulNBits", "GroupQueryAttention"} <= ops, ops
    wasm = onnx.load(str(bundle / spec["wasm_model"]), load_external_data=False).graph.node
    assert "GroupQueryAttention" not in {n.op_type for n in wasm}
    # the WASM graph's attention (unfused, banded for a window), isolated from int4: the fp32 graph unfused
    a, b = OrtModel(bundle, "fp32"), OrtModel(unfused_fp32(bundle, tmp_path / "unfused"), "fp32")
    ids = a.tokenizer.encode(VERIFY_TEXT).ids[: min(200, a.context_length - 1)]
    max_diff, _, top1 = logit_stats(a.forward(np.array([ids]))[0], b.forward(np.array([ids]))[0])
    assert top1 == 1.0 and max_diff < 1e-4, (max_diff, top1)
    prompt = a.tokenizer.encode("Once upon a time").ids
    assert a.greedy(prompt, 48, eos=False) == b.greedy(prompt, 48, eos=False)


def unfused_fp32(bundle: Path, dst: Path) -> Path:
    """A copy of the bundle whose fp32 graph has GroupQueryAttention unfused as the WASM graph has it."""
    from webllama.converter.manifest import list_files, write_json_atomic
    from webllama.converter.quant.unfuse_attention import unfuse_gqa

    shutil.copytree(bundle, dst)
    path = dst / "onnx/model.onnx"
    onnx.save(unfuse_gqa(onnx.load(str(path), load_external_data=False)), str(path))
    manifest = json.loads((dst / "manifest.json").read_text())
    manifest["files"] = list_files(dst)  # the runtime checks every file's sha256
    write_json_atomic(dst / "manifest.json", manifest)
    return dst


def test_mistral_window_binds_and_the_reference_agrees(archs_root, stories_dir):
    """The window (24) changes the model on the verification text (so the exact fp32 above is the window's),
    and optimum's reference export of the same checkpoint is exact with transformers beyond it too."""
    import torch
    import transformers

    src = archs_root / "mistral-src"
    family_bundle(archs_root, stories_dir, "mistral")
    windowed = transformers.MistralForCausalLM.from_pretrained(src, dtype=torch.float32).eval()
    full = transformers.MistralForCausalLM.from_pretrained(src, dtype=torch.float32, sliding_window=None).eval()
    ids = torch.tensor([OrtModel(archs_root / "mistral-fused", "fp32").tokenizer.encode(VERIFY_TEXT).ids[:384]])
    with torch.no_grad():
        diff = (windowed(ids).logits - full(ids).logits).abs()
    assert diff[0, :24].max() < 1e-4 and diff[0, 24:].max() > 1.0  # identical inside the window, not after it
    ref = verified(family_bundle(archs_root, stories_dir, "mistral", graph="optimum"))["fp32"]
    assert ref["top1_agreement"] == 1.0 and ref["greedy_match"], ref


def test_sliding_window_reaches_the_attention_nodes(archs_root, stories_dir):
    bundle = family_bundle(archs_root, stories_dir, "mistral")
    graph = onnx.load(str(bundle / "onnx/model_q4.onnx"), load_external_data=False).graph
    windows = {a.i for n in graph.node if n.op_type == "GroupQueryAttention" for a in n.attribute if a.name == "local_window_size"}
    assert windows == {24}
    assert open_bundle(bundle).manifest["architecture"] == "mistral"


# ---------------------------------------------------------------- GGUF


def write_gguf(path: Path, folder: Path, extra: dict[str, np.ndarray] | None = None) -> None:
    """The HF checkpoint `folder` as llama.cpp's converter writes it: its architecture's GGUF names, q/k rows
    in the interleaved RoPE order where the map says rope_q/rope_k, packed tensors as they are, all F32."""
    import gguf
    from safetensors.numpy import load_file
    from transformers import AutoConfig
    from webllama.converter.archs import for_hf

    hf = AutoConfig.from_pretrained(folder)
    arch = for_hf(hf, str(folder))
    c = arch.model_config(hf)
    sd = load_file(folder / "model.safetensors")
    hf_rules, gguf_rules = arch.weights["hf"].resolve(c), arch.weights["gguf"].resolve(c)
    w = gguf.GGUFWriter(str(path), arch.gguf_architecture)
    for key, value in {
        "block_count": c.n_layers,
        "context_length": hf.max_position_embeddings,
        "embedding_length": c.dim,
        "feed_forward_length": c.hidden_dim,
        "attention.head_count": c.n_heads,
        "attention.head_count_kv": c.n_kv_heads,
        "attention.key_length": c.head_dim,
    }.items():
        w.add_uint32(f"{arch.gguf_architecture}.{key}", value)
    w.add_float32(f"{arch.gguf_architecture}.rope.freq_base", c.rope_theta)
    w.add_float32(f"{arch.gguf_architecture}.attention.layer_norm_rms_epsilon", c.rms_eps)
    written = set()
    for canonical, rule in gguf_rules.items():
        if rule.source in written:
            continue
        a = sd[hf_rules[canonical].source]
        if rule.transform in ("rope_q", "rope_k"):  # llama.cpp's LlamaModel.permute
            a = permute_rope_to_gguf(a, c.n_heads if rule.transform == "rope_q" else c.n_kv_heads)
        w.add_tensor(rule.source, np.ascontiguousarray(a))
        written.add(rule.source)
    for name, a in (extra or {}).items():
        w.add_tensor(name, a)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


@pytest.mark.parametrize("family", ["llama-bias", "qwen2", "qwen3", "phi3"])
def test_gguf_of_each_family_reads_back_to_the_model(tmp_path, stories_dir, family):
    import torch
    import transformers
    from webllama.converter.sources.gguf import GGUFTensors

    folder = make_tiny(tmp_path / family, stories_dir, family, rope_scaling=None)  # GGUF carries longrope as tensors
    write_gguf(tmp_path / "m.gguf", folder)
    view = GGUFTensors(tmp_path / "m.gguf")
    assert view.arch.name == family.split("-")[0]
    model = getattr(transformers, view.arch.model_class).from_pretrained(folder, dtype=torch.float32).eval()
    ids = torch.tensor([[1, 5, 9, 33, 100, 7, 2, 64, 300, 11]])
    with torch.no_grad():
        np.testing.assert_allclose(view.torch_model()(ids).logits.numpy(), model(ids).logits.numpy(), atol=1e-5)


def test_gguf_tensor_nothing_reads_is_refused_by_name(tmp_path, stories_dir):
    """llama.cpp stores Phi-3's longrope factors as tensors; webllama does not read them: refused, named."""
    from webllama.converter.errors import UnusedTensor
    from webllama.converter.sources.gguf import GGUFTensors

    folder = make_tiny(tmp_path / "phi3", stories_dir, "phi3", rope_scaling=None)
    write_gguf(tmp_path / "m.gguf", folder, {"rope_factors_long.weight": np.ones(8, np.float32)})
    with pytest.raises(UnusedTensor, match="does not use: rope_factors_long.weight;"):
        GGUFTensors(tmp_path / "m.gguf")


def test_gguf_rope_freqs_become_llama3_scaling_on_the_fused_path(tmp_path, stories_dir):
    """Llama 3.1/3.2 GGUFs carry their RoPE scaling as rope_freqs (one divisor per frequency): read back
    into transformers' llama3 rope_scaling, the fused graph and the torch view match the original model."""
    import onnxruntime as ort
    import torch
    from transformers import LlamaForCausalLM
    from webllama.converter.archs.gguf_keys import llama3_factors
    from webllama.converter.convert import ConvertOptions
    from webllama.converter.graph.emit import build_graph, precision_for
    from webllama.converter.sources.gguf import GGUFTensors
    from webllama.converter.variants import VARIANTS

    from tests.conftest import make_tiny_llama

    folder = make_tiny_llama(tmp_path / "l3", stories_dir)  # llama3 scaling: factor 8, original context 64
    model = LlamaForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    c = model.config
    inv = 1.0 / c.rope_theta ** (np.arange(0, 16, 2) / 16)
    write_gguf(tmp_path / "l3.gguf", folder, {"rope_freqs.weight": llama3_factors(inv, c.rope_scaling).astype(np.float32)})
    view = GGUFTensors(tmp_path / "l3.gguf")
    assert view.hf_config.rope_scaling == {k: c.rope_scaling[k] for k in view.hf_config.rope_scaling}
    ids = np.array([[1, 5, 9, 33, 100, 7, 2, 64, 300, 11] * 10])  # 100 tokens: past the original 64
    with torch.no_grad():
        want = model(torch.from_numpy(ids)).logits.numpy()
        np.testing.assert_allclose(view.torch_model()(torch.from_numpy(ids)).logits.numpy(), want, atol=1e-4)
    path = tmp_path / "model.onnx"
    build_graph(view, precision_for(VARIANTS["fp32"], ConvertOptions().quant), path).save(path)
    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids), "position_ids": np.arange(ids.shape[1])[None]}
    feeds |= {f"past_key_values.{i}.{k}": np.zeros((1, 2, 0, 16), np.float32) for i in range(2) for k in ("key", "value")}
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(["logits"], feeds)[0]
    assert np.abs(got - want).max() < 1e-3 and (got.argmax(-1) == want.argmax(-1)).all()


def test_context_extension_uses_the_family_rotary(tmp_path, stories_dir):
    """--context-length/--rope-scaling on a family whose config has no rope_scaling field (Mistral): the
    family's own rotary module is rebuilt, and the fused graph stays exact over the stretched context."""
    from webllama.converter.customize import Customization

    src = make_tiny(tmp_path / "m", stories_dir, "mistral", max_position_embeddings=128)
    out = tmp_path / "b"
    custom = Customization(context_length=256, rope_scaling="linear")
    convert(str(src), out, ConvertOptions(variants=parse_variants("fp32"), progress=False, customization=custom))
    fp32 = verified(out)["fp32"]
    assert fp32["top1_agreement"] == 1.0 and fp32["greedy_match"] and fp32["tokens_scored"] == 255, fp32
    manifest = open_bundle(out).manifest
    assert manifest["context_length"] == 256 and manifest["config"]["sliding_window"] == 24
