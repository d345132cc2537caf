"""`--graph fused` against the optimum reference graph: fp32 token-exact with torch, q4 equal to the
reference q4 (same quantized weights) within float tolerance, on stories260K, a tiny random Llama
(GQA, llama3 RoPE scaling) and SmolLM2-135M (GGUF). Also: left/right padding, batched decoding with
the cache, and the exact GGUF Q4_0 -> MatMulNBits transcode."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from webllama.converter import ConvertOptions, convert, open_bundle
from webllama.converter.errors import BundleError
from webllama.converter.ort_model import OrtModel
from webllama.converter.variants import parse_variants
from webllama.converter.verify import VERIFY_TEXT, logit_stats

from tests.conftest import make_tiny_llama, read_json

Q4_LOGIT_TOL = 2e-3  # same int4 bytes, different kernels' float summation order


def fused(src, out: Path, variants: str = "fp32,q4", verify: bool = True) -> Path:
    convert(str(src), out, ConvertOptions(variants=parse_variants(variants), progress=False, graph="fused", verify=verify, force=True))
    return out


def node_count(bundle: Path, variant: str) -> int:
    """Nodes that run per step: not the Casts of stored float16 scales, which onnxruntime folds at load."""
    spec = open_bundle(bundle).variant(variant)
    g = onnx.load(str(bundle / spec["model"]), load_external_data=False).graph
    inits = {t.name for t in g.initializer}
    return sum(1 for n in g.node if not (n.op_type == "Cast" and n.input[0] in inits))


def compare(ref: Path, got: Path, variant: str, n_tokens: int = 128, n_greedy: int = 32, got_graph: str = "default") -> dict:
    """Teacher-forced logits and greedy tokens of two bundles (or two graphs of one) on onnxruntime CPU."""
    a, b = OrtModel(ref, variant), OrtModel(got, variant, graph=got_graph)
    ids = a.tokenizer.encode(VERIFY_TEXT).ids[: min(n_tokens, a.context_length - 1)]
    max_diff, _, top1 = logit_stats(a.forward(np.array([ids]))[0], b.forward(np.array([ids]))[0])
    prompt = a.tokenizer.encode("Once upon a time").ids
    return {
        "max_diff": max_diff,
        "top1": top1,
        "greedy_equal": a.greedy(prompt, n_greedy, eos=False) == b.greedy(prompt, n_greedy, eos=False),
    }


def assert_fp32_exact(bundle: Path) -> None:
    r = read_json(bundle / "verify.json")["variants"]["fp32"]
    assert r["greedy_match"] and r["top1_agreement"] == 1.0, r


def assert_q4_parity(ref: Path, got: Path) -> None:
    c = compare(ref, got, "q4")
    assert c["max_diff"] < Q4_LOGIT_TOL and c["top1"] == 1.0 and c["greedy_equal"], c


def assert_wasm_graph_parity(bundle: Path) -> None:
    """The q4 variant's WASM graph: GroupQueryAttention unfused to MatMul/Softmax (converter/quant/unfuse_attention.py)
    and no MatMulNBits (onnxruntime-web has no WASM int4 kernel). A small model gets the float graph over the same
    int4 bytes (DequantizeLinear + MatMul, converter/quant/wasm_float.py): q4's numbers; it refuses batches."""
    spec = open_bundle(bundle).variant("q4")
    assert spec["wasm_weights"] == "float32" and "wasm_external_data" not in spec, spec
    ops = {n.op_type for n in onnx.load(str(bundle / spec["wasm_model"]), load_external_data=False).graph.node}
    assert not ops & {"GroupQueryAttention", "MatMulNBits"} and {"Softmax", "DequantizeLinear", "MatMul"} <= ops, ops
    c = compare(bundle, bundle, "q4", got_graph="wasm")
    assert c["max_diff"] < Q4_LOGIT_TOL and c["top1"] == 1.0 and c["greedy_equal"], c
    wasm = OrtModel(bundle, "q4", graph="wasm")
    # an appended cache (web/engine/kv_cache.js AppendKvCache): present.* are the new positions only, and spare
    # past slots beyond the held length are masked (filled here with a finite value that would change the scores)
    assert spec["wasm_kv_cache"] == "append" and wasm.kv_append
    ids = np.array([[5, 6, 7, 8]])
    _, past = wasm.run(ids, np.ones_like(ids), wasm.empty_past(1))
    out = wasm.session.run(
        wasm.present_names,
        {"input_ids": ids[:, :1], "attention_mask": np.ones((1, 5), np.int64), "position_ids": np.array([[4]]), **past},
    )
    assert {o.shape[2] for o in out} == {1}
    step = (np.array([[9]]), np.ones((1, 5), dtype=np.int64))
    exact, grown = wasm.run(*step, past)
    spare = {n: np.concatenate([v, np.full((*v.shape[:2], 3, v.shape[3]), 7.0, v.dtype)], axis=2) for n, v in past.items()}
    assert np.array_equal(exact, wasm.run(*step, spare)[0])
    assert {v.shape[2] for v in grown.values()} == {5}
    with pytest.raises(BundleError, match="one unpadded sequence"):
        wasm.forward(np.array([[5, 6, 7], [5, 6, 7]]))
    with pytest.raises(BundleError, match="one unpadded sequence"):
        wasm.forward(np.array([[5, 6, 7]]), np.array([[0, 1, 1]]))


# ---------------------------------------------------------------- stories260K (llama2.c, head_dim 8)


def test_stories260k_fused_matches_reference(tmp_path, stories_dir, s260_bundle):
    out = fused(stories_dir, tmp_path / "s260-fused")
    assert_fp32_exact(out)
    assert_q4_parity(s260_bundle, out)
    # head_dim 8: GroupQueryAttention cannot rotate it, RotaryEmbedding runs before it
    assert node_count(out, "q4") * 4 < node_count(s260_bundle, "q4")
    assert open_bundle(out).manifest["variants"]["q4"]["graph"] == "fused"
    assert_wasm_graph_parity(out)  # rotary outside the attention (RotaryEmbedding, do_rotary=0)


# ---------------------------------------------------------------- tiny random Llama (GQA, llama3 rope)


@pytest.fixture(scope="module")
def tiny_pair(tmp_path_factory, tiny_llama_dir) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("fused-tiny")
    ref = root / "ref"
    convert(
        str(tiny_llama_dir), ref, ConvertOptions(variants=parse_variants("fp32,q4"), progress=False, verify=False, graph="optimum")
    )
    return ref, fused(tiny_llama_dir, root / "fused")


def test_tiny_gqa_llama3_fused_matches_reference(tiny_pair):
    ref, out = tiny_pair
    assert_fp32_exact(out)
    assert_q4_parity(ref, out)
    counts = {v: (node_count(ref, v), node_count(out, v)) for v in ("fp32", "q4")}
    ops = {n.op_type for n in onnx.load(str(out / "onnx/model_q4.onnx"), load_external_data=False).graph.node}
    assert {"GroupQueryAttention", "SkipSimplifiedLayerNormalization", "MatMulNBits", "GatherBlockQuantized"} <= ops
    assert all(f < r / 4 for r, f in counts.values()), counts
    assert_wasm_graph_parity(out)  # packed QKV, rotary (llama3-scaled caches) inside GroupQueryAttention, 4 heads over 2
    assert [i["name"] for i in open_bundle(out).variant("q4")["inputs"]] == [
        i["name"] for i in open_bundle(ref).variant("q4")["inputs"]
    ]


@pytest.mark.parametrize("rope", [{"rope_type": "linear", "factor": 2.0}, {"rope_type": "dynamic", "factor": 2.0}])
def test_linear_and_dynamic_rope_scaling_fused_is_token_exact(tmp_path, stories_dir, rope):
    """Through the CLI: `webllama convert --graph fused` (dynamic NTK: exact within max_position_embeddings)."""
    from webllama.converter.cli import main

    src = make_tiny_llama(tmp_path / rope["rope_type"], stories_dir, tie=True, rope_scaling=rope, seed=1)
    assert main(["convert", str(src), str(tmp_path / "out"), "--graph", "fused", "--variant", "fp32"]) == 0
    assert_fp32_exact(tmp_path / "out")


def test_customized_source_yarn_context_extension_fused_is_token_exact(tmp_path, stories_dir):
    """Customizations act on the torch model; the fused graph takes its weights and RoPE (yarn scales cos/sin)."""
    from webllama.converter.customize import Customization

    out = tmp_path / "s260-yarn"
    convert(
        str(stories_dir),
        out,
        ConvertOptions(
            variants=parse_variants("fp32"),
            progress=False,
            graph="fused",
            customization=Customization(context_length=1024, rope_scaling="yarn"),
        ),
    )
    assert_fp32_exact(out)
    assert open_bundle(out).manifest["config"]["rope_scaling"]["rope_type"] == "yarn"


def torch_logits(model_dir: Path, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    import torch
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    pos = np.clip(np.cumsum(mask, axis=1) - 1, 0, None)
    with torch.no_grad():
        return model(torch.tensor(ids), attention_mask=torch.tensor(mask), position_ids=torch.tensor(pos)).logits.numpy()


def test_padded_batches_give_the_unpadded_logits(tiny_pair, tiny_llama_dir):
    """position_ids is unused by the fused graph: left padding must still number tokens from 0."""
    m = OrtModel(tiny_pair[1], "fp32")
    rows = [[1, 45, 300, 22, 9, 77, 120], [1, 310, 5, 64], [1, 8]]
    width = max(map(len, rows))
    for side in ("left", "right"):
        ids = np.zeros((len(rows), width), np.int64)
        mask = np.zeros_like(ids)
        for b, r in enumerate(rows):
            sl = slice(width - len(r), width) if side == "left" else slice(0, len(r))
            ids[b, sl], mask[b, sl] = r, 1
        got, want = m.forward(ids, mask), torch_logits(tiny_llama_dir, ids, mask)
        real = mask.astype(bool)
        assert np.abs(got[real] - want[real]).max() < 1e-4, side
        assert (got[real].argmax(-1) == want[real].argmax(-1)).all(), side


def test_batched_decode_with_cache_after_left_padding(tiny_pair, tiny_llama_dir):
    m = OrtModel(tiny_pair[1], "fp32")
    ids = np.array([[0, 0, 1, 45, 300], [1, 310, 5, 64, 7]], np.int64)
    mask = (np.arange(5)[None] >= np.array([[2], [0]])).astype(np.int64)
    full_ids, full_mask = ids, mask
    logits, past = m.run(ids, mask, m.empty_past(2))
    for _ in range(3):
        nxt = logits[:, -1].argmax(-1)[:, None].astype(np.int64)
        full_ids = np.concatenate([full_ids, nxt], 1)
        full_mask = np.concatenate([full_mask, np.ones((2, 1), np.int64)], 1)
        logits, past = m.run(nxt, full_mask, past)
        want = torch_logits(tiny_llama_dir, full_ids, full_mask)[:, -1]
        assert np.abs(logits[:, -1] - want).max() < 1e-4


# ---------------------------------------------------------------- SmolLM2-135M (GGUF Q4_1, tied head)


@pytest.fixture(scope="module")
def smollm2_fused(tmp_path_factory, smollm2_gguf_path) -> Path:
    """Without verification: the GGUF is streamed and never loaded into torch (the path a 7B takes).
    Torch exactness is checked against the reference bundle's verify.json, which holds torch's tokens."""
    cache = os.environ.get("WEBLLAMA_TEST_CACHE")
    out = (Path(cache) if cache else tmp_path_factory.mktemp("fused")) / "smollm2-135m-fused"
    if out.exists() and (out / "manifest.json").exists():
        return out
    return fused(smollm2_gguf_path, out, verify=False)


def test_smollm2_fused_matches_reference(smollm2_fused, smollm2_bundle):
    from webllama.converter.verify import GREEDY_PROMPT

    torch_greedy = read_json(smollm2_bundle / "verify.json")["variants"]["fp32"]
    m = OrtModel(smollm2_fused, "fp32")
    have = m.greedy(m.tokenizer.encode(GREEDY_PROMPT).ids, torch_greedy["greedy_tokens"], eos=False)
    assert m.tokenizer.decode(have) == torch_greedy["torch_greedy_text"]  # token-exact with torch
    c = compare(smollm2_bundle, smollm2_fused, "fp32")
    assert c["top1"] == 1.0 and c["max_diff"] < 1e-3 and c["greedy_equal"], c
    assert_q4_parity(smollm2_bundle, smollm2_fused)
    ref_nodes, fused_nodes = node_count(smollm2_bundle, "q4"), node_count(smollm2_fused, "q4")
    # 11 nodes per layer, 14 where the recipe's grids differ within QKV (mixed: 8-bit v) and the packed projection
    # becomes three MatMulNBits + Concat; the reference export has ~250 per layer
    assert fused_nodes < 15 * 30 + 40 < ref_nodes, (ref_nodes, fused_nodes)
    assert open_bundle(smollm2_fused).manifest["tokenizer"] == open_bundle(smollm2_bundle).manifest["tokenizer"]
    assert_wasm_graph_parity(smollm2_fused)  # packed QKV, rotary inside GroupQueryAttention, 9 heads over 3


# ---------------------------------------------------------------- GGUF Q4_0: transcoded, not requantized


def test_q4_0_blocks_transcode_exactly():
    from gguf import GGMLQuantizationType, dequantize, quantize
    from webllama.converter.graph.quantize import q4_0_to_nbits

    w = np.random.default_rng(0).normal(size=(48, 96)).astype(np.float32)
    blocks = quantize(w, GGMLQuantizationType.Q4_0)
    nb = q4_0_to_nbits(blocks, 48, 96)
    q = np.stack([nb.packed & 0x0F, nb.packed >> 4], -1).reshape(48, 3, 32).astype(np.float32)
    ours = ((q - 8) * nb.scales[:, :, None]).reshape(48, 96)
    np.testing.assert_array_equal(ours, dequantize(blocks, GGMLQuantizationType.Q4_0))


def write_q4_0_gguf(path: Path, model) -> None:
    """A llama GGUF of `model`: projections Q4_0 (q/k in llama.cpp's interleaved row order), rest F32."""
    import gguf
    from webllama.converter.archs.transforms import permute_rope_to_gguf
    from webllama.converter.graph.readers import GGUF_NAMES

    c = model.config
    w = gguf.GGUFWriter(str(path), "llama")
    for fn, value in (
        (w.add_block_count, c.num_hidden_layers),
        (w.add_context_length, c.max_position_embeddings),
        (w.add_embedding_length, c.hidden_size),
        (w.add_feed_forward_length, c.intermediate_size),
        (w.add_head_count, c.num_attention_heads),
        (w.add_head_count_kv, c.num_key_value_heads),
        (w.add_rope_freq_base, c.rope_theta),
        (w.add_layer_norm_rms_eps, c.rms_norm_eps),
    ):
        fn(value)
    names = {t.format(i=i): g.format(i=i) for t, g in GGUF_NAMES.items() for i in range(c.num_hidden_layers)}
    for hf_name, t in model.state_dict().items():
        a = t.numpy()
        if hf_name.endswith(("q_proj.weight", "k_proj.weight")):  # llama.cpp's permute (inverse of ours)
            a = permute_rope_to_gguf(a, c.num_attention_heads if "q_proj" in hf_name else c.num_key_value_heads)
        if "proj" in hf_name:
            w.add_tensor(names[hf_name], gguf.quantize(a, gguf.GGMLQuantizationType.Q4_0), raw_dtype=gguf.GGMLQuantizationType.Q4_0)
        else:
            w.add_tensor(names[hf_name], np.ascontiguousarray(a))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_gguf_q4_0_graph_equals_its_dequantized_float_graph(tmp_path):
    """q4 graph from transcoded Q4_0 == fp32 graph from the dequantized GGUF weights (embedding and head float)."""
    import onnxruntime as ort
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    from webllama.converter.graph.emit import build_graph, precision_for
    from webllama.converter.graph.readers import GGUFTensorReader
    from webllama.converter.quant.calibrate import quantize_weights
    from webllama.converter.quant.policy import from_options
    from webllama.converter.variants import VARIANTS

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=96,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        tie_word_embeddings=False,
    )
    write_q4_0_gguf(tmp_path / "tiny.gguf", LlamaForCausalLM(cfg).eval())
    reader = GGUFTensorReader(tmp_path / "tiny.gguf")
    feeds = {
        "input_ids": np.array([[1, 5, 9, 33, 2, 70]]),
        "attention_mask": np.ones((1, 6), np.int64),
        "position_ids": np.arange(6)[None],
    }
    feeds |= {f"past_key_values.{i}.{k}": np.zeros((1, 2, 0, 16), np.float32) for i in range(2) for k in ("key", "value")}
    logits = {}
    spec = from_options(quant="rtn", lm_head_bits=0, float_embedding=True)  # Q4_0's own grid: transcoded, not requantized
    store = quantize_weights(reader, spec, None)
    for name in ("fp32", "q4"):
        path = tmp_path / f"{name}.onnx"
        g = build_graph(reader, precision_for(VARIANTS[name], spec), path, store=store)
        g.save(path)
        if name == "q4":
            assert sum(n.op_type == "MatMulNBits" for n in g.nodes) == 2 * 5
        logits[name] = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(["logits"], feeds)[0]
    assert np.abs(logits["fp32"] - logits["q4"]).max() < 1e-4


# ---------------------------------------------------------------- GraphBuilder


def test_builder_shards_weights_and_refuses_duplicates(tmp_path):
    import onnxruntime as ort
    from onnx import TensorProto
    from webllama.converter.graph.builder import GraphBuilder, ShardWriter

    g = GraphBuilder(ShardWriter(tmp_path / "m.onnx", max_shard=10_000))
    g.input("x", TensorProto.FLOAT, [1024])
    y = "x"
    for i in range(3):  # 4 KiB each: two fit in a 10 kB shard, the third opens a new one
        y = g.op("Add", [y, g.initializer(f"/w{i}", np.full(1024, i + 1, np.float32))], f"/add{i}")
    g.op("Identity", [y], "/out", output="y")
    g.output("y", TensorProto.FLOAT, [1024])
    with pytest.raises(ValueError):
        g.op("Identity", [y], "/out")
    with pytest.raises(ValueError):
        g.initializer("/w0", np.zeros(4, np.float32))
    shards = g.save(tmp_path / "m.onnx")
    assert [s.name for s in shards] == ["m.onnx_data", "m.onnx_data_1"]
    out = ort.InferenceSession(str(tmp_path / "m.onnx")).run(["y"], {"x": np.zeros(1024, np.float32)})[0]
    assert (out == 6).all()
