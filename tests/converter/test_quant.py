"""Quantization methods, recipes and the quantization pass (converter/quant/methods.py, policy.py, calibrate.py).

Each method is checked against a reference implementation where one exists (onnxruntime's RTN quantizer: the
same bytes; onnxruntime's k-quant and GPTQ: never a larger error), and never worse than RTN where it claims to
be better. The recipes end to end on stories260K: calibrated methods beat RTN on verify's text, the fused and the
reference graph carry the same numbers, a tied table is stored once, a mixed 8-bit recipe converts and runs.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from webllama.converter.errors import UnsupportedVariant
from webllama.converter.graph.quantize import pack_blocks, quantize_matmul, unpack_nbits
from webllama.converter.quant.int4 import ort_quantize
from webllama.converter.quant.methods import GPTQ_DAMP, METHODS, Stats, quantize_gptq, quantize_weight
from webllama.converter.quant.policy import RECIPES, TensorQuant, from_options, parse_override


def _correlated(rng, tokens: int, k: int) -> np.ndarray:
    """Activations with a few large channels and correlated inputs, as in a real model."""
    mix = rng.standard_normal((k, k)) / np.sqrt(k)
    x = rng.standard_normal((tokens, k)) @ (np.eye(k) + 0.5 * mix)
    x[:, rng.choice(k, 4, replace=False)] *= 8.0
    return x


def _stats(x: np.ndarray) -> Stats:
    return Stats(imatrix=(x * x).mean(0), hessian=x.T @ x, tokens=x.shape[0])


def _out_err(x, w, b) -> float:
    return float(((x @ (b.dequantize() - w).T) ** 2).mean())


@pytest.mark.parametrize(
    ("bits", "block", "symmetric"), [(4, 32, True), (4, 16, False), (4, 32, False), (8, 32, True), (4, 128, True)]
)
def test_rtn_is_onnxruntimes_quantizer_byte_for_byte(bits, block, symmetric):
    rng = np.random.default_rng(bits + block)
    k, n = 200, 24  # 200 is not a multiple of the block: a padded last block (odd block counts too)
    w_kn = rng.standard_normal((k, n)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, n])],
        [numpy_helper.from_array(w_kn, "w")],
    )
    q = ort_quantize(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10), bits, block, symmetric)
    node = next(nd for nd in q.graph.node if nd.op_type == "MatMulNBits")
    ref = {t.name: numpy_helper.to_array(t) for t in q.graph.initializer}
    ours = pack_blocks(quantize_weight(w_kn.T, "rtn", bits, block, symmetric))
    assert np.array_equal(ours.packed.reshape(-1), ref[node.input[1]].reshape(-1))
    assert np.array_equal(ours.scales.reshape(-1), ref[node.input[2]].reshape(-1))
    if not symmetric:
        assert np.array_equal(ours.zero_points.reshape(-1), ref[node.input[3]].reshape(-1))
    back = unpack_nbits(ours)  # and unpack/pack is the identity
    assert np.array_equal(pack_blocks(back).packed, ours.packed)


@pytest.mark.parametrize("symmetric", [True, False])
def test_search_never_worse_than_rtn_nor_onnxruntime_k_quant(symmetric):
    from onnxruntime.quantization.neural_compressor.weight_only import quant_tensor_k_quant_cpu

    rng = np.random.default_rng(1)
    w = rng.standard_normal((64, 256)).astype(np.float32) * rng.gamma(2.0, 1.0, (64, 1)).astype(np.float32)
    rtn = quantize_weight(w, "rtn", 4, 32, symmetric)
    srch = quantize_weight(w, "search", 4, 32, symmetric)
    e_rtn, e_srch = (((b.dequantize() - w) ** 2).mean() for b in (rtn, srch))
    assert e_srch < e_rtn
    if not symmetric:  # onnxruntime's k_quant is asymmetric with integer zero points, blocks along K
        q, scale, zp = quant_tensor_k_quant_cpu(w.copy(), 4, 32)
        kq = (scale * (q - zp)).reshape(w.shape)
        assert e_srch <= ((kq - w) ** 2).mean() * 1.001


@pytest.mark.parametrize(("bits", "symmetric"), [(4, True), (4, False), (8, False)])
def test_gptq_never_worse_than_onnxruntime_gptq_or_the_search(bits, symmetric):
    from onnxruntime.quantization.neural_compressor.weight_only import gptq as ort_gptq

    rng = np.random.default_rng(2)
    k, n = 128, 48
    x = _correlated(rng, 2048, k)
    w = rng.standard_normal((n, k)).astype(np.float32)
    st = _stats(x)
    # at onnxruntime's dampening (percdamp 0.01): the same objective, so ours must fit it at least as well
    ours = quantize_gptq(w, bits, 32, symmetric, st, damp=0.01)
    srch = quantize_weight(w, "search", bits, 32, symmetric, st)
    ref = ort_gptq(w.T.copy(), st.hessian.copy(), num_bits=bits, group_size=32, scheme="sym" if symmetric else "asym", blocksize=32)
    ref_err = float(((x @ (ref.T - w).T) ** 2).mean())
    assert _out_err(x, w, ours) <= ref_err * 1.01
    assert _out_err(x, w, ours) < _out_err(x, w, srch)
    assert ours.codes.max() < 2**bits and (ours.zero_points is None) == symmetric


def _objective(w, b, st, damp) -> float:
    """GPTQ's objective: tr(dW (H + lambda I) dW^T), lambda = damp x mean diag H (what the refit minimizes)."""
    h = st.hessian + np.eye(st.hessian.shape[0]) * damp * np.mean(np.diag(st.hessian))
    dw = b.dequantize().astype(np.float64) - w
    return float(np.einsum("nk,kj,nj->", dw, h, dw))


@pytest.mark.parametrize("symmetric", [True, False])
def test_gptq_act_order_keeps_contiguous_blocks_and_beats_onnxruntime_act_order(symmetric):
    """Act-order with static groups: columns in decreasing-Hessian-diagonal order, each original block's grid
    fixed when the block is first reached, so the codes stay in MatMulNBits' contiguous blocks (no g_idx).
    onnxruntime's actorder forms its groups in the permuted order (a g_idx layout the runtimes do not read), so
    its result is only a reference for the objective: ours fits it at least as well in the layout we can store."""
    from onnxruntime.quantization.neural_compressor.weight_only import gptq as ort_gptq

    rng = np.random.default_rng(4)
    k, n = 200, 48  # 200: a padded last block
    x = _correlated(rng, 2048, k)
    w = rng.standard_normal((n, k)).astype(np.float32)
    st = _stats(x)
    plain = quantize_gptq(w, 4, 32, symmetric, _stats(x), damp=0.01)
    act = quantize_weight(w, "gptq-act", 4, 32, symmetric, st)
    assert act.codes.shape == plain.codes.shape == (n, 224) and act.scales.shape == (n, 7)
    assert act.codes.max() <= 15 and (act.zero_points is None) == symmetric
    if not symmetric:
        assert act.zero_points.dtype == np.uint8  # integer zero points: every runtime's kernel reads them
    assert np.array_equal(pack_blocks(unpack_nbits(pack_blocks(act))).packed, pack_blocks(act).packed)
    act01 = quantize_gptq(w, 4, 32, symmetric, _stats(x), damp=0.01, act_order=True)
    scheme = "sym" if symmetric else "asym"
    ref = ort_gptq(w.T.copy(), st.hessian.copy(), num_bits=4, group_size=32, scheme=scheme, blocksize=32, actorder=True)
    ref_err = float(((x @ (ref.T - w).T) ** 2).mean())
    assert _out_err(x, w, act01) <= ref_err * 1.01
    assert _out_err(x, w, act01) < _out_err(x, w, plain)  # on correlated inputs the order pays (calibration fit)


@pytest.mark.parametrize("act_order", [False, True])
def test_gptq_scale_refit_never_raises_the_objective(act_order):
    """The least-squares refit of the scales on GPTQ's own codes minimizes the damped objective exactly, so it is
    never above the unrefit result; codes and zero points are unchanged (still integers)."""
    rng = np.random.default_rng(5)
    x = _correlated(rng, 2048, 128)
    w = rng.standard_normal((40, 128)).astype(np.float32)
    a = quantize_gptq(w, 4, 32, False, _stats(x), act_order=act_order)
    b = quantize_gptq(w, 4, 32, False, _stats(x), act_order=act_order, refit=True)
    assert np.array_equal(a.codes, b.codes) and np.array_equal(a.zero_points, b.zero_points)
    assert _objective(w, b, _stats(x), GPTQ_DAMP) <= _objective(w, a, _stats(x), GPTQ_DAMP) * (1 + 1e-6)


def test_gptq_refuses_without_calibration():
    with pytest.raises(ValueError, match="calibration"):
        quantize_weight(np.ones((4, 32), np.float32), "gptq", 4, 32, True)


def test_recipes_and_options():
    assert set(METHODS.names()) == {"rtn", "search", "gptq", "gptq-act", "gptq-refit"}
    spec = from_options(quant="gptq", block_size=16, lm_head_bits=8, override=["layers.*.down=8:32:sym:search", "layers.0.q=0"])
    assert spec.linear == TensorQuant(4, 16, False, "gptq") and spec.head.bits == 8
    assert spec.for_tensor("layers.3.down") == TensorQuant(8, 32, True, "search")
    assert spec.for_tensor("layers.0.q") is None and spec.for_tensor("layers.1.q").block_size == 16
    assert spec.needs_calibration == "hessian" and RECIPES["rtn"].needs_calibration is None
    assert json.dumps(spec.to_json())  # the manifest records the whole recipe
    for bad in ("layers.*.down", "=4", "x=4:32:half", "x=five"):
        with pytest.raises(UnsupportedVariant):
            parse_override(bad)
    with pytest.raises(UnsupportedVariant, match="unknown quantization option"):
        from_options(lm_head_bitz=8)
    with pytest.raises(UnsupportedVariant, match="block size 48"):
        from_options(block_size=48).validate()


# ---------------------------------------------------------------- end to end on stories260K


@pytest.fixture(scope="module")
def recipe_bundles(tmp_path_factory, stories_dir):
    """stories260K q4 with each recipe (fused, verified), gptq and the default (GPTQ on the tied output projection)
    also through the reference export, and the GPTQ variants."""
    from webllama.converter import ConvertOptions, convert
    from webllama.converter.variants import parse_variants

    root = tmp_path_factory.mktemp("recipes")
    out = {}
    for name, graph, quant, extra in (
        ("rtn", "fused", "rtn", {}),
        ("search", "fused", "search", {}),
        ("gptq", "fused", "gptq", {}),
        ("gptq-optimum", "optimum", "gptq", {}),
        ("mixed", "fused", "mixed", {}),
        ("mixed-optimum", "optimum", "mixed", {}),
        ("gptq-act", "fused", "gptq", {"method": "gptq-act"}),
        ("gptq-refit", "fused", "gptq", {"method": "gptq-refit"}),
    ):
        spec = from_options(quant=quant, calibration_tokens=2048, **extra)
        opts = ConvertOptions(variants=parse_variants("q4"), progress=False, graph=graph, quant=spec)
        convert(str(stories_dir), root / name, opts)
        out[name] = root / name
    return out


def _verify(bundle) -> dict:
    return json.loads((bundle / "verify.json").read_text())


def test_calibrated_recipes_beat_rtn_and_the_llamacpp_q4_0_peer(recipe_bundles):
    kl = {k: _verify(b)["variants"]["q4"]["mean_kl"] for k, b in recipe_bundles.items()}
    peer = _verify(recipe_bundles["gptq"])["baselines"]["llama.cpp Q4_0"]
    assert kl["search"] < kl["rtn"] and kl["gptq"] < kl["search"], kl
    assert kl["gptq-act"] < kl["rtn"] and kl["gptq-refit"] < kl["rtn"], kl  # the variants: never worse than RTN
    assert kl["mixed"] < kl["gptq"], kl  # the default: GPTQ on the output projection and 8-bit v on top of gptq
    # stories260K's down projections have 172 inputs, which llama.cpp cannot quantize to Q4_0 (not whole blocks of
    # 32): the peer keeps them in F16 (converter/baselines.py) while ours are int4, so here the peer is only close;
    # on SmolLM2, where every tensor is whole blocks, the default recipe beats it (benchmarks/README.md).
    assert kl["gptq"] < 1.2 * peer["mean_kl"], (kl, peer)
    assert 0 < peer["mean_kl"] < 10 and 0 < peer["top1_agreement"] <= 1


def test_fused_and_reference_graphs_carry_the_same_quantized_model(recipe_bundles):
    from webllama.converter import open_bundle
    from webllama.converter.ort_model import OrtModel

    ids = np.array([[1, 403, 261, 378, 375, 261, 349, 409, 400, 363]])
    for fused in ("gptq", "mixed"):
        a = OrtModel(open_bundle(recipe_bundles[fused]), "q4").forward(ids)
        b = OrtModel(open_bundle(recipe_bundles[f"{fused}-optimum"]), "q4").forward(ids)
        assert np.abs(a - b).max() < 1e-3, fused
    # the float matrices the int4 pass replaced are gone from every file
    for name in ("gptq", "gptq-optimum", "mixed", "mixed-optimum"):
        g = onnx.load(str(recipe_bundles[name] / "onnx" / "model_q4.onnx"), load_external_data=False)
        used = {i for n in g.graph.node for i in n.input}
        assert not [t.name for t in g.graph.initializer if t.name not in used], name


def test_manifest_records_the_recipe_and_the_calibration_text(recipe_bundles):
    from webllama.converter.quant.calibrate import builtin_corpus

    q = json.loads((recipe_bundles["gptq"] / "manifest.json").read_text())["variants"]["q4"]["quantization"]
    assert q["recipe"] == "gptq" and q["linear"]["method"] == "gptq" and q["head"]["method"] == "search"
    assert q["method_params"] == {"gptq": {"damp": GPTQ_DAMP}}  # the hyper-parameters a reproduction needs
    d = json.loads((recipe_bundles["mixed"] / "manifest.json").read_text())["variants"]["q4"]["quantization"]
    assert d["recipe"] == "mixed" and d["head"]["method"] == "gptq"
    a = json.loads((recipe_bundles["gptq-act"] / "manifest.json").read_text())["variants"]["q4"]["quantization"]
    assert a["method_params"] == {"gptq-act": {"damp": GPTQ_DAMP, "act_order": 1.0}}  # the head's search has none
    import hashlib

    assert q["calibration"]["sha256"] == hashlib.sha256(builtin_corpus()[0].encode()).hexdigest()
    assert q["calibration"]["tokens"] >= 256
    r = json.loads((recipe_bundles["rtn"] / "manifest.json").read_text())["variants"]["q4"]["quantization"]
    assert r["calibration"] is None


def test_tied_table_is_stored_once(recipe_bundles):
    """gptq and the default (tie_once; the default's head by GPTQ) vs rtn (its own lookup table): the lookup
    aliases the head's bytes in the same shard, so the GPTQ codes fitted to the head are what the lookup reads."""
    for name in ("gptq", "mixed"):
        g = onnx.load(str(recipe_bundles[name] / "onnx" / "model_q4.onnx"), load_external_data=False)
        inits = {t.name: t for t in g.graph.initializer}
        gather = next(n for n in g.graph.node if n.op_type == "GatherBlockQuantized")
        head = next(n for n in g.graph.node if n.op_type == "MatMulNBits" and n.output[0] == "logits")

        def where(init, inits=inits):
            t = inits[init]
            return {e.key: e.value for e in t.external_data} if t.external_data else t.raw_data

        assert where(gather.input[0]) == where(head.input[1]) and gather.input[2] == head.input[2], name
    size = {k: sum(f.stat().st_size for f in (b / "onnx").glob("model_q4.onnx_data*")) for k, b in recipe_bundles.items()}
    assert size["gptq"] < size["rtn"]


def test_mixed_8bit_recipe_converts_and_runs_everywhere(tmp_path, stories_dir):
    """An 8-bit override converts (fused), verifies, and its WASM graph runs token-exact with its q4 graph's
    onnxruntime CPU greedy tokens where the numerics allow (the WASM graph is checked by the engine tests)."""
    from webllama.converter import ConvertOptions, convert, open_bundle
    from webllama.converter.ort_model import OrtModel
    from webllama.converter.variants import parse_variants

    spec = from_options(quant="rtn", override=["layers.*.down=8:32:sym:rtn", "layers.0.v=8:16:asym:search"], lm_head_bits=8)
    b = convert(str(stories_dir), tmp_path / "mixed", ConvertOptions(variants=parse_variants("q4"), progress=False, quant=spec))
    g = onnx.load(str(tmp_path / "mixed" / "onnx" / "model_q4.onnx"), load_external_data=False)
    bits = sorted(
        {helper.get_attribute_value(a) for n in g.graph.node if n.op_type == "MatMulNBits" for a in n.attribute if a.name == "bits"}
    )
    assert bits == [4, 8]
    m = OrtModel(open_bundle(b.root), "q4")
    assert len(m.greedy([1], 8, eos=False)) == 8
    if b.variant("q4").get("wasm_model"):
        w = OrtModel(open_bundle(b.root), "q4", graph="wasm")
        assert len(w.greedy([1], 8, eos=False)) == 8


def test_quantize_int4_matches_onnxruntime_on_the_same_tensor():
    """The store's rtn weights equal quantize_matmul's (onnxruntime's C++ quantizer) on the same tensor."""
    rng = np.random.default_rng(3)
    w = rng.standard_normal((40, 96)).astype(np.float32)
    a = quantize_matmul(w.T.copy(), 4, 32, True)
    b = pack_blocks(quantize_weight(w, "rtn", 4, 32, True))
    assert np.array_equal(a.packed, b.packed) and np.array_equal(a.scales, b.scales)


def test_a_variant_below_its_floor_fails_verification(tmp_path, stories_dir, s260_bundle):
    """Verification of a quantized variant fails below the variant's top-1 floor (converter/variants.py): here the
    stories260K bundle is verified against another model with the same tokenizer, as a broken conversion would be."""
    from webllama.converter import open_bundle
    from webllama.converter.errors import VerifyFailed
    from webllama.converter.sources import load_source
    from webllama.converter.verify import raise_if_failed, verify_bundle

    from tests.conftest import make_tiny_llama

    other = load_source(str(make_tiny_llama(tmp_path / "tiny", stories_dir)))
    doc = verify_bundle(other, open_bundle(s260_bundle), ["q4"], peers=False)
    r = doc["variants"]["q4"]
    assert r["top1_agreement"] < 0.4 and r["min_top1"] == 0.4 and not r["passed"] and not doc["passed"], r
    with pytest.raises(VerifyFailed, match=r"q4's top-1 agreement 0\.\d+ is below its floor 0\.40"):
        raise_if_failed(doc, "bundle")
    ok = verify_bundle(load_source(str(stories_dir)), open_bundle(s260_bundle), ["q4"], peers=False)
    assert ok["passed"] and ok["variants"]["q4"]["top1_agreement"] > 0.7, ok["variants"]["q4"]
