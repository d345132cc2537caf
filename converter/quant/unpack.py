"""The WASM graph of a quantized variant: the same weights as int8, one row scale each, in integer GEMMs.

Why: onnxruntime's MatMulNBits has fast kernels only where MLAS has a QNBitGemm dispatch (x86 AVX2/512,
ARM NEON). The WebAssembly build has none, so every MatMulNBits call takes `ComputeBUnpacked`: it
dequantizes the *whole* weight matrix to float32 and then runs SGEMM (SmolLM2 q4 decode 2.17 tok/s in
Chromium). MLAS does have WebAssembly SIMD kernels for 8-bit integer GEMM (qgemm_kernel_wasmsimd.cpp), which
onnxruntime's MatMulInteger uses: A uint8, B int8 (K, N), int32 out.

So each MatMulNBits(A, B, scales[, zero_points][, bias]) of any bit width (4 or 8) and block size becomes

    a_s = max|A[t, :]| / 127 per token t;  A_q = round(A / a_s) + 128   (uint8, zero point 128)
    Y   = MatMulInteger(A_q, Q (K, N) int8, 128) * a_s * s (N,)  [+ bias]

with W = dequantized MatMulNBits weight (N, K), s[n] = max|W[n, :]| / 63, Q = round(W / s) (symmetric, 7 bits
of int8 per output channel, see INT8_QMAX: at least as fine as the int4 grid wherever a block's maximum is within
63/7 = 9x of its row's). Q is computed here, once, in numpy (the WASM engine's weights are stored, not built in the browser),
so the browser and onnxruntime CPU run the same bytes: the graph is its own variant in verify.json
(`q4_wasm`) because its numerics differ from the int4 graph (int8 weights and 8-bit activations). The activation
scale is per token (ACT_QMAX), not onnxruntime's DynamicQuantizeMatMul's one per tensor: SmolLM2's int8 graph
went from mean KL 0.690 / top-1 0.544 to 0.135 / 0.781, and 0.141 / 0.776 with the tied lookup from the int8
head (int4 graph 0.091 / 0.827; int8 weights with float activations 0.107), at the same speed in Chromium
(benchmarks/README.md "WASM at 1B scale").

Measured in Chromium on SmolLM2 q4 against the previous WASM graph (float32 weights folded at load from
the int4 file): see benchmarks/README.md "WASM int8". The graph holds ~1 byte per parameter in the
wasm heap instead of 4, so a 1B-class model fits the 4 GiB wasm32 heap.

Used for models whose float32 weights do not fit the heap budget (1B-class); smaller models get the exact float
graph of converter/quant/wasm_float.py instead (write_wasm_graph chooses).

The int8 graph and its weights are self-contained (`onnx/<model>_wasm.onnx` + `<model>_wasm.onnx_data[_N]`): the
WASM engine downloads only these (the int4 file is not needed there). A tied model's embedding becomes a Gather
from the int8 head (`_tied_lookup`: the matrix is held once); an untied embedding (GatherBlockQuantized) and the
other initializers are copied as they are.

Fused graphs also get their GroupQueryAttention unfused to MatMul/Softmax (converter/quant/unfuse_attention.py:
onnxruntime-web's WASM GroupQueryAttention is slow); that part holds for one unpadded sequence only.

Layouts follow the MatMulNBits contract (onnxruntime docs/ContribOperators.md): B uint8 (N, n_blocks,
block * bits / 8), scales (N * n_blocks) or (N, n_blocks), zero_points uint8 (N, ceil(n_blocks * bits / 8))
packed per row (default 2^(bits-1) when absent).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, external_data_helper, helper, numpy_helper
from webllama.converter.onnx_io import cast_initializers, drop_dead_nodes, save_sharded
from webllama.converter.quant.unfuse_attention import KV_APPEND_KEY, unfuse_gqa

MS_DOMAIN = "com.microsoft"
WASM_HEAP = 4 * 2**30  # wasm32: the whole heap (weights, activations, KV cache, runtime) is at most 4 GiB
HEAP_BUDGET = 3 * 2**30  # weight bytes the WASM graph may hold, leaving room for activations and the KV cache
# Weight shards of the WASM graph: Chromium's Cache API fails puts of ~1 GB ("Unexpected internal error"), and a
# reload resumes per shard (web/engine/cache.js), so smaller shards cost little and bound both.
WASM_SHARD = 128 * 2**20


def int8_weight_bytes(model: onnx.ModelProto) -> int:
    """Bytes of int8 weights the rewrite would store (sum of K*N over MatMulNBits)."""
    total = 0
    for node in model.graph.node:
        if node.op_type == "MatMulNBits":
            a = {x.name: helper.get_attribute_value(x) for x in node.attribute}
            total += int(a["K"]) * int(a["N"])
    return total


def _load(t: TensorProto, base_dir: Path) -> TensorProto:
    """A copy of `t` with its bytes inline (external data read from `base_dir`)."""
    out = TensorProto()
    out.CopyFrom(t)
    if external_data_helper.uses_external_data(out):
        external_data_helper.load_external_data_for_tensor(out, str(base_dir))
        out.data_location = TensorProto.DEFAULT
        del out.external_data[:]
    return out


def _unpack_bits(packed: np.ndarray, bits: int, count: int) -> np.ndarray:
    """uint8 rows of packed `bits`-bit values (low bits first) -> (rows, count) uint8 values."""
    if bits == 8:
        return packed[:, :count]
    if bits != 4:
        raise ValueError(f"MatMulNBits with bits={bits} is not supported (4 or 8)")
    return np.stack([packed & 0x0F, packed >> 4], axis=-1).reshape(packed.shape[0], -1)[:, :count]


def dequantize_nbits(node: onnx.NodeProto, inits: dict[str, TensorProto], base_dir: Path) -> np.ndarray:
    """The float32 weight (N, K) a MatMulNBits node multiplies by: (q - zero_point) * scale per block."""
    a = {x.name: helper.get_attribute_value(x) for x in node.attribute}
    k, n, block, bits = int(a["K"]), int(a["N"]), int(a["block_size"]), int(a.get("bits", 4))
    ins = list(node.input) + [""] * (6 - len(node.input))
    _, b, scales, zp, g_idx, _ = ins[:6]
    if g_idx:
        raise ValueError(f"{node.name}: MatMulNBits with g_idx (act-order) is not supported on WASM")
    if b not in inits or scales not in inits or (zp and zp not in inits):
        raise ValueError(f"{node.name}: MatMulNBits weights are not initializers")
    n_blocks = (k + block - 1) // block
    arr = lambda name: numpy_helper.to_array(inits[name], base_dir=str(base_dir))  # noqa: E731
    q = _unpack_bits(arr(b).reshape(n * n_blocks, -1), bits, block).reshape(n, n_blocks, block)
    s = arr(scales).astype(np.float32).reshape(n, n_blocks, 1)
    if zp:
        z = _unpack_bits(arr(zp).reshape(n, -1), bits, n_blocks).reshape(n, n_blocks, 1)
    else:  # MatMulNBits' default zero point: 2^(bits-1) (symmetric values stored unsigned)
        z = np.full((n, n_blocks, 1), 1 << (bits - 1), np.uint8)
    w = (q.astype(np.float32) - z.astype(np.float32)) * s
    return w.reshape(n, n_blocks * block)[:, :k]


# The int8 weights use 7 bits (|Q| <= 63), as onnxruntime's own quantizer does with reduce_range: x86 CPUs without
# VNNI multiply uint8 activations by int8 weights with vpmaddubsw, whose int16 pair sums saturate above 32767
# (255 * 127 * 2 = 64770); with |Q| <= 63 they cannot (255 * 63 * 2 = 32130). Without it onnxruntime CPU on such a
# machine computes other numbers than the browser's WASM SIMD kernel (measured here on AVX2: max |dy| 3.0 of 36
# on a 96x48 matrix, vs 0.3 with 7 bits), and the WASM graph could not be token-exact with onnxruntime CPU.
INT8_QMAX = 63


def requantize_int8(w_nk: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric 7-bit-range int8 per output channel: (Q (K, N) int8, scale (N,) float32) with W ~= Q * scale."""
    amax = np.abs(w_nk).max(axis=1)
    scale = np.where(amax > 0, amax / INT8_QMAX, 1.0).astype(np.float32)
    q = np.clip(np.rint(w_nk / scale[:, None]), -INT8_QMAX, INT8_QMAX).astype(np.int8)
    return np.ascontiguousarray(q.T), scale


# The activations are quantized per token (per row of A), symmetric around a fixed zero point of 128: one scale
# per token, amax(|x|) / 127, so a token with massive activations (SmolLM2's first token reaches 5126 in layer 29)
# coarsens only its own row. DynamicQuantizeMatMul (onnxruntime's fused op) has one scale for the whole A: in a
# prefill every token got the step of the worst one (SmolLM2 int8 graph: top-1 0.54 with it), and rounding flips of
# that huge step made x86 and WASM runs diverge. MatMulInteger takes per-row A only through a scalar zero point,
# hence symmetric uint8 (x / s + 128, 255 levels); the int32 result is scaled back by s[token] * w_scale[col].
ACT_QMAX = 127.0


def _act_constants() -> list[TensorProto]:
    """Initializers shared by every quantized matmul of the graph (names under `int8/`)."""
    return [
        numpy_helper.from_array(np.array([-1], np.int64), "int8/last_axis"),
        numpy_helper.from_array(np.array(np.finfo(np.float32).tiny, np.float32), "int8/tiny"),
        numpy_helper.from_array(np.array(ACT_QMAX, np.float32), "int8/qmax"),
        numpy_helper.from_array(np.array(128.0, np.float32), "int8/zp_f"),
        numpy_helper.from_array(np.array(128, np.uint8), "int8/zp"),
    ]


def _replace(node: onnx.NodeProto, inits: dict[str, TensorProto], base_dir: Path) -> tuple[list, list]:
    """The nodes (and int8 initializers) computing node's output: A quantized per token, MatMulInteger with the
    int8 weight, the int32 result scaled by the token's and the column's scale."""
    q, scale = requantize_int8(dequantize_nbits(node, inits, base_dir))
    p = f"{node.input[1]}/int8"
    ins = list(node.input) + [""] * (6 - len(node.input))
    x, bias, out = ins[0], ins[5], node.output[0]
    new = [numpy_helper.from_array(q, f"{p}/q"), numpy_helper.from_array(scale, f"{p}/scale")]
    mk = helper.make_node
    g = [
        mk("Abs", [x], [f"{p}/abs"]),
        mk("ReduceMax", [f"{p}/abs", "int8/last_axis"], [f"{p}/amax"], keepdims=1),  # (..., T, 1)
        mk("Max", [f"{p}/amax", "int8/tiny"], [f"{p}/amax_nz"]),  # an all-zero token: any scale, codes 128
        mk("Div", [f"{p}/amax_nz", "int8/qmax"], [f"{p}/a_scale"]),
        mk("Div", [x, f"{p}/a_scale"], [f"{p}/x_s"]),
        mk("Round", [f"{p}/x_s"], [f"{p}/x_r"]),  # half to even, the same on every build
        mk("Add", [f"{p}/x_r", "int8/zp_f"], [f"{p}/x_u"]),  # 1..255: exact in float32, then cast
        mk("Cast", [f"{p}/x_u"], [f"{p}/x_q"], to=TensorProto.UINT8),
        mk("MatMulInteger", [f"{p}/x_q", f"{p}/q", "int8/zp"], [f"{p}/acc"], name=node.name),
        mk("Cast", [f"{p}/acc"], [f"{p}/acc_f"], to=TensorProto.FLOAT),
        mk("Mul", [f"{p}/acc_f", f"{p}/a_scale"], [f"{p}/y_a"]),
        mk("Mul", [f"{p}/y_a", f"{p}/scale"], [f"{p}/y" if bias else out]),
    ]
    if bias:
        g.append(mk("Add", [f"{p}/y", bias], [out]))
    return g, new


def _tied_lookup(node: onnx.NodeProto, head: onnx.NodeProto) -> list:
    """A tied model's token lookup from the head's int8 weight (Q (K, V), scale (V,)) instead of its own 4-bit table:
    the tied matrix is held once in the heap (Llama-3.2-1B-shaped: the 4-bit table is 150 MB of a 1.5 GB graph).
    Gather along V gives (K, B, T); transposed, cast and scaled per token it is the (B, T, K) float embedding."""
    p, ids, out = f"{head.input[1]}/int8", node.input[1], node.output[0]
    mk = helper.make_node
    return [
        mk("Gather", [f"{p}/q", ids], [f"{out}/q_kbt"], axis=1),
        mk("Transpose", [f"{out}/q_kbt"], [f"{out}/q_btk"], perm=[1, 2, 0]),
        mk("Cast", [f"{out}/q_btk"], [f"{out}/q_f"], to=TensorProto.FLOAT),
        mk("Gather", [f"{p}/scale", ids], [f"{out}/s_bt"], axis=0),
        mk("Unsqueeze", [f"{out}/s_bt", "int8/last_axis"], [f"{out}/s_bt1"]),
        mk("Mul", [f"{out}/q_f", f"{out}/s_bt1"], [out], name=node.name),
    ]


def to_int8(model: onnx.ModelProto, base_dir: Path, tied: bool = False) -> onnx.ModelProto:
    """A copy of `model` (loaded without external data, from `base_dir`) with every MatMulNBits replaced by a
    per-token int8 matmul over int8 weights; the other initializers are loaded inline (to be saved anew). A tied
    model (`tied`: its embedding is its output projection) reads its embedding from the int8 head."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    inits = {t.name: t for t in out.graph.initializer} | cast_initializers(out)  # float16 scales behind a Cast
    head = next((nd for nd in out.graph.node if nd.op_type == "MatMulNBits" and nd.output[0] == "logits"), None)
    nodes, added = [], []
    for node in out.graph.node:
        if node.op_type == "MatMulNBits" and node.domain == MS_DOMAIN:
            g, new = _replace(node, inits, base_dir)
            nodes += g
            added += new
        elif tied and head is not None and node.op_type == "GatherBlockQuantized":
            nodes += _tied_lookup(node, head)
        else:
            nodes.append(node)
    if added:
        added += _act_constants()
    nodes = drop_dead_nodes(nodes, {o.name for o in out.graph.output})
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    used = {i for nd in nodes for i in nd.input}
    kept = [_load(t, base_dir) for t in out.graph.initializer if t.name in used]
    del out.graph.initializer[:]
    out.graph.initializer.extend(kept + added)
    opset = next(op.version for op in out.opset_import if op.domain in ("", "ai.onnx"))
    if added and opset < 18:  # both graph builders emit 18+; raising it would change other ops' signatures
        raise ValueError(f"the int8 WASM graph needs opset 18+ (ReduceMax axes as an input); the graph has {opset}")
    return out


def write_wasm_graph(root: Path, entry: dict, weights: str = "auto", tied: bool = False) -> dict | None:
    """Write onnx/<model>_wasm.onnx next to a quantized float32 variant's graph; returns the manifest fields
    {"wasm_model", "wasm_weights"[, "wasm_external_data"]}, or None when the variant has no MatMulNBits or is
    float16. weights "auto": models whose float32 weights fit wasm_float.FP32_BUDGET get the float graph over the
    int4 file (exact, nothing more to download), larger ones the int8 graph with its own shards if that fits the
    heap; "float32" / "int8" ask for one (tests, benchmarks)."""
    from webllama.converter.quant.wasm_float import FP32_BUDGET, float_weight_bytes, fold_nbits

    if entry.get("activation_dtype") != "float32":
        return None
    path = root / entry["model"]
    model = onnx.load(str(path), load_external_data=False)  # initializers keep their shard references
    size = int8_weight_bytes(model)
    if size == 0 or size > HEAP_BUDGET:
        return None
    dest = path.with_name(path.stem + "_wasm.onnx")
    rel = Path(entry["model"]).parent
    if weights == "float32" or (weights == "auto" and float_weight_bytes(model) <= FP32_BUDGET):
        wasm = unfuse_gqa(fold_nbits(model, path.parent), append=True)  # fused graphs: WASM's GroupQueryAttention is slow
        onnx.save(wasm, str(dest))
        return {"wasm_model": str(rel / dest.name), "wasm_weights": "float32", **_kv_fields(wasm)}
    wasm = unfuse_gqa(to_int8(model, path.parent, tied), append=True)
    shards = save_sharded(wasm, dest, max_shard=WASM_SHARD)
    return {
        "wasm_model": str(rel / dest.name),
        "wasm_external_data": [str(rel / s.name) for s in shards],
        "wasm_weights": "int8",
        **_kv_fields(wasm),
    }


def _kv_fields(wasm: onnx.ModelProto) -> dict:
    """The manifest's word for the graph's cache (the engine cannot read model metadata): "append" when
    present.* are the new positions only (unfuse_attention's appended cache; optimum graphs concatenate)."""
    meta = {m.key: m.value for m in wasm.metadata_props}
    return {"wasm_kv_cache": "append"} if meta.get(KV_APPEND_KEY) == "1" else {}
