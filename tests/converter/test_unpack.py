"""The WASM graph of a quantized variant (converter/quant/unpack.py): DynamicQuantizeMatMul over int8 weights
requantized from the MatMulNBits weights. Its dequantization must read what MatMulNBits computes (4 and 8 bits,
symmetric and asymmetric blocks, odd block counts, a padded last block, every block size), its int8 weights must
stay within the int8 grid's rounding of them, and a converted bundle must carry it with its own weight shards."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from webllama.converter.errors import BundleError
from webllama.converter.onnx_io import save_sharded
from webllama.converter.ort_model import OrtModel
from webllama.converter.quant.int4 import ort_quantize
from webllama.converter.quant.unpack import dequantize_nbits, requantize_int8, write_wasm_graph


def _session(path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _quantized_matmul(tmp_path, k: int, n: int, bits: int, block: int, symmetric: bool, seed: int):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((k, n)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3, n])],
        [numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
    q = ort_quantize(model, bits, block, symmetric)
    assert [nd.op_type for nd in q.graph.node] == ["MatMulNBits"]
    (tmp_path / "onnx").mkdir()
    save_sharded(q, tmp_path / "onnx" / "model_q4.onnx")  # writes the graph and its weight shard
    return w, rng


@pytest.mark.parametrize(
    ("k", "bits", "block", "symmetric"),
    [(96, 4, 32, True), (80, 4, 32, False), (64, 4, 16, False), (200, 4, 128, True), (96, 8, 32, True), (80, 8, 16, False)],
)
def test_dequantized_weight_is_what_matmulnbits_multiplies(tmp_path, k, bits, block, symmetric):
    n = 48
    w, rng = _quantized_matmul(tmp_path, k, n, bits, block, symmetric, seed=k + bits)
    q4 = onnx.load(str(tmp_path / "onnx" / "model_q4.onnx"), load_external_data=False)
    inits = {t.name: t for t in q4.graph.initializer}
    w_nk = dequantize_nbits(q4.graph.node[0], inits, tmp_path / "onnx")
    x = rng.standard_normal((2, 3, k)).astype(np.float32)
    want = _session(tmp_path / "onnx" / "model_q4.onnx").run(None, {"x": x})[0]
    np.testing.assert_allclose(x @ w_nk.T, want, atol=2e-4, rtol=1e-4)
    assert np.abs(want - x @ w).max() > 1e-3  # it is the quantized weight, not the float one

    rel = write_wasm_graph(tmp_path, {"model": "onnx/model_q4.onnx", "activation_dtype": "float32"}, weights="int8")
    assert rel == {
        "wasm_model": "onnx/model_q4_wasm.onnx",
        "wasm_external_data": ["onnx/model_q4_wasm.onnx_data"],
        "wasm_weights": "int8",
    }
    wasm = onnx.load(str(tmp_path / rel["wasm_model"]), load_external_data=False)
    ops = [nd.op_type for nd in wasm.graph.node]
    assert ops.count("MatMulInteger") == 1 and "MatMulNBits" not in ops and "DynamicQuantizeMatMul" not in ops, ops
    sess = _session(tmp_path / rel["wasm_model"])
    got = sess.run(None, {"x": x})[0]
    # int8 weights (<= half a row step each) and 8-bit activations (<= half a step of the token's range): a few % of |y|
    assert np.abs(got - want).max() < 0.05 * np.abs(want).max()
    # per-token activation scales: a token with a massive activation (SmolLM2's first token) leaves the others' rows
    # exactly as they were, where one scale per tensor would have coarsened them all
    spiked = x.copy()
    spiked[0, 0, 0] = 5000.0
    again = sess.run(None, {"x": spiked})[0]
    np.testing.assert_array_equal(again[0, 1:], got[0, 1:])
    np.testing.assert_array_equal(again[1], got[1])


def test_requantize_int8_is_round_to_nearest_per_row():
    w = np.array([[0.6, -1.0, 0.25], [0.0, 0.0, 0.0], [3.0, 1.2, -0.75]], np.float32)
    q, s = requantize_int8(w)
    np.testing.assert_allclose(s, [1 / 63, 1.0, 3 / 63], rtol=1e-6)
    assert q.dtype == np.int8 and q.shape == (3, 3)  # 7 bits of int8: no int16 saturation on x86 (INT8_QMAX)
    np.testing.assert_array_equal(q.T, [[38, -63, 16], [0, 0, 0], [63, 25, -16]])
    assert np.abs(q.T * s[:, None] - w).max() <= s.max() / 2 + 1e-7


def test_bundle_wasm_graph_matches_q4(s260_bundle):
    from webllama.converter.manifest import open_bundle

    b = open_bundle(s260_bundle)
    q4 = b.manifest["variants"]["q4"]
    assert q4["wasm_model"] == "onnx/model_q4_wasm.onnx"
    # a small model: the float WASM graph over the int4 file (converter/quant/wasm_float.py), no shards of its own
    assert q4["wasm_weights"] == "float32" and "wasm_external_data" not in q4
    assert "wasm_model" not in b.manifest["variants"]["fp32"]
    listed = {f["path"] for f in b.manifest["files"]}
    assert q4["wasm_model"] in listed
    default, wasm = OrtModel(b, variant="q4"), OrtModel(b, variant="q4", graph="wasm")
    ids = np.random.default_rng(0).integers(3, 512, size=(1, 48))
    a, c = default.forward(ids)[0], wasm.forward(ids)[0]
    assert np.abs(a - c).max() < 2e-3  # the same int4 weights, folded to float32: q4's numbers
    assert (a.argmax(-1) == c.argmax(-1)).all()
    with pytest.raises(BundleError, match="no WASM graph"):
        OrtModel(b, variant="fp32", graph="wasm")


def test_an_unknown_wasm_weights_choice_is_refused_before_converting(tmp_path):
    from webllama.converter import ConvertOptions, convert
    from webllama.converter.errors import UnsupportedVariant

    with pytest.raises(UnsupportedVariant, match="--wasm-weights 'fp32': use one of auto, float32, int8"):
        convert(str(tmp_path / "no-such-model"), tmp_path / "out", ConvertOptions(wasm_weights="fp32"))
    assert not (tmp_path / "out").exists()


def test_a_tied_models_int8_graph_holds_the_matrix_once_and_looks_up_the_int8_head(s260_int8_bundle):
    """stories260K is tied: its int8 WASM graph has no 4-bit table of its own; the lookup reads the int8 head, so
    each token's embedding is that head row (Q[:, id] * scale[id]), and the graph stays close to the q4 graph."""
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper
    from webllama.converter.manifest import open_bundle

    b = open_bundle(s260_int8_bundle)
    q4 = b.manifest["variants"]["q4"]
    wasm = onnx.load(str(s260_int8_bundle / q4["wasm_model"]))
    ops = [nd.op_type for nd in wasm.graph.node]
    assert "GatherBlockQuantized" not in ops and "MatMulNBits" not in ops, ops
    inits = {t.name: t for t in wasm.graph.initializer}
    assert not [n for n in inits if "embed_tokens" in n], [n for n in inits if "embed_tokens" in n]
    head = next(nd for nd in wasm.graph.node if nd.op_type == "MatMulInteger" and "lm_head" in nd.name)
    q = numpy_helper.to_array(inits[head.input[1]])  # (K, V) int8
    s = numpy_helper.to_array(inits[head.input[1].replace("/q", "/scale")])
    lookup = next(nd for nd in wasm.graph.node if nd.op_type == "Mul" and "embed_tokens" in nd.name)
    ids = np.array([[1, 5, 300, 511]], np.int64)
    wasm.graph.output.append(onnx.helper.make_tensor_value_info(lookup.output[0], onnx.TensorProto.FLOAT, None))
    sess = ort.InferenceSession(wasm.SerializeToString(), providers=["CPUExecutionProvider"])
    # an empty KV cache (symbolic dims 0) and the prompt: only the lookup's output is read
    ins = sess.get_inputs()
    feeds = {i.name: np.zeros([d if isinstance(d, int) else 0 for d in i.shape], np.float32) for i in ins if i.type == "tensor(float)"}
    feeds.update({"input_ids": ids, "attention_mask": np.ones_like(ids), "position_ids": np.arange(4)[None]})
    feeds = {k: v for k, v in feeds.items() if k in {i.name for i in ins}}
    emb = sess.run([lookup.output[0]], feeds)[0]
    np.testing.assert_array_equal(emb[0], (q[:, ids[0]].astype(np.float32) * s[ids[0]]).T)
    a = OrtModel(b, variant="q4").forward(ids)[0]
    c = OrtModel(b, variant="q4", graph="wasm").forward(ids)[0]
    assert (a.argmax(-1) == c.argmax(-1)).mean() >= 0.75, (a.argmax(-1), c.argmax(-1))
