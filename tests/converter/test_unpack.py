"""The WASM graph of an int4 variant (converter/quant/unpack.py): dequantize-at-load + MatMul over the same
weight bytes. It must compute what MatMulNBits computes, for symmetric and asymmetric blocks, odd block
counts and a padded last block, and a converted bundle must carry it."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from webllama.converter.errors import BundleError
from webllama.converter.onnx_io import save_sharded
from webllama.converter.ort_model import OrtModel
from webllama.converter.quant.int4 import QuantSpec, _run_quantizer
from webllama.converter.quant.unpack import write_wasm_graph


def _session(path, fold: bool) -> ort.InferenceSession:
    so = ort.SessionOptions()
    if fold:
        so.add_session_config_entry("session.disable_quant_qdq", "1")
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


@pytest.mark.parametrize(("k", "symmetric"), [(96, True), (80, False), (64, False)])  # nb 3 / 3 (padded) / 2
def test_unpacked_matmul_equals_matmulnbits(tmp_path, k, symmetric):
    rng = np.random.default_rng(k)
    n = 48
    w = rng.standard_normal((k, n)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3, n])],
        [numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
    q = _run_quantizer(model, QuantSpec(block_size=32, symmetric=symmetric), 4, ("MatMul",), [])
    assert [nd.op_type for nd in q.graph.node] == ["MatMulNBits"]
    (tmp_path / "onnx").mkdir()
    save_sharded(q, tmp_path / "onnx" / "model_q4.onnx")  # writes the graph and its weight shard
    rel = write_wasm_graph(tmp_path, {"model": "onnx/model_q4.onnx", "activation_dtype": "float32"})
    assert rel == "onnx/model_q4_wasm.onnx"
    unpacked = onnx.load(str(tmp_path / rel), load_external_data=False)
    assert "MatMulNBits" not in {nd.op_type for nd in unpacked.graph.node}
    x = rng.standard_normal((2, 3, k)).astype(np.float32)
    want = _session(tmp_path / "onnx" / "model_q4.onnx", fold=False).run(None, {"x": x})[0]
    got = _session(tmp_path / rel, fold=True).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)
    assert np.abs(got - x @ w).max() > 1e-3  # it is the quantized weight, not the float one


def test_bundle_wasm_graph_matches_q4(s260_bundle):
    from webllama.converter.manifest import open_bundle

    b = open_bundle(s260_bundle)
    q4 = b.manifest["variants"]["q4"]
    assert q4["wasm_model"] == "onnx/model_q4_wasm.onnx"
    assert "wasm_model" not in b.manifest["variants"]["fp32"]
    assert q4["wasm_model"] in {f["path"] for f in b.manifest["files"]}
    default, wasm = OrtModel(b, variant="q4"), OrtModel(b, variant="q4", graph="wasm")
    ids = np.random.default_rng(0).integers(3, 512, size=(1, 48))
    a, c = default.forward(ids)[0], wasm.forward(ids)[0]
    assert np.abs(a - c).max() < 1e-3
    assert (a.argmax(-1) == c.argmax(-1)).all()
    assert default.greedy([1, 400, 30], 24) == wasm.greedy([1, 400, 30], 24)
    with pytest.raises(BundleError, match="no WASM graph"):
        OrtModel(b, variant="fp32", graph="wasm")
