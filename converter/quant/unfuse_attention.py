"""The WASM graph's attention: GroupQueryAttention rewritten as the standard ops of a decomposed attention.

Why: onnxruntime-web's WASM build runs com.microsoft GroupQueryAttention far slower than the same
attention as MatMul/Softmax nodes. Measured in Chromium on SmolLM2 q4 with onnxruntime's own profiler
(benchmarks/wasm_profile.py, 2 threads): GroupQueryAttention took 35% of the kernel time of a 128-token
prefill (623 ms) and 69% of a 512-token one (9.9 s), where this decomposed form takes a few percent
(FusedMatMul + Softmax). `webllama bench` on the same machine: prefill-128 88 vs 56-62 tok/s, prefill-512
87 vs 29-32, time to first token 1.45 vs 2.1-2.3 s, decode unchanged (15.4 vs 15.3-16.0 tok/s). Native
onnxruntime and WebGPU keep GroupQueryAttention (the default graph); only the WASM graph is rewritten.

Per GroupQueryAttention node (num_heads H, kv_num_heads KV, head size D):

    q, k, v   = Split(packed QKV) or the three inputs              # (B, S, H*D), (B, S, KV*D) x2
    q, k      = RotaryEmbedding(q|k, positions, cos, sin)           # if do_rotary; positions = total - S + j
    present_k = Concat(past_k, k as (B, KV, S, D), axis=2)          # (B, KV, T, D), T = total length
    q         = q as (B, KV, G, S, D), G = H / KV                 # query head i reads kv head i // G
    probs     = Softmax(q Kᵀ / sqrt(D) + causal bias)              # (B, KV, G, S, T), K broadcast over G
                (banded when local_window_size W > 0: query i sees keys i-W+1 .. i, GroupQueryAttention's window)
    output    = probs V as (B, S, H*D)

The rewrite assumes what the browser engine always feeds: one unpadded sequence (batch 1, attention_mask all
ones), so the new tokens sit at positions total - S .. total - 1.

Appended cache (`append=True`, what write_wasm_graph emits; model metadata webllama.kv_append = "1", manifest
`wasm_kv_cache: "append"`): the present outputs are the new positions only, (B, KV, S, D), and the past inputs
may be longer than the cache, (B, KV, C, D) with C >= P = total - S: positions P.. are masked, never attended.
The engine keeps a fixed-capacity JS buffer per tensor and copies only the new positions into it
(web/engine/kv_cache.js AppendKvCache). Why: onnxruntime-web's WASM build copies every output out of the heap
into a fresh JS array on each run and has no device-resident outputs, and the concatenated form above also
copies the whole cache once more inside the graph (Concat): at 2048 tokens of SmolLM2 that is 3 extra passes over
94 MB per token. Here attention scores past and new keys separately and never concatenates the cache:

    scores = Concat(q Kpastᵀ, q Knewᵀ)  (B, KV, G, S, C + S)           # the small score rows, not the cache
    probs  = Softmax(scores / sqrt(D) + bias), bias masks past keys >= P as well as the causal band
    output = probs[..., :C] Vpast + probs[..., C:] Vnew
GroupQueryAttention also handles padded batches through seqlens_k; this graph does not, and
webllama.converter.ort_model refuses such inputs for it. The positions and the causal bias depend only on S and the
total length, so all layers share one copy of each.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

MS_DOMAIN = "com.microsoft"
SINGLE_SEQUENCE_KEY = "webllama.single_sequence"  # model metadata: valid for one unpadded sequence only
KV_APPEND_KEY = "webllama.kv_append"  # model metadata: present.* are the new positions only (see above)
SPLIT_SIZES = "/model/wasm_attention/split_sizes"  # (C, S): the score row split into past slots and new keys
MASKED_POSITION = 2**62  # a past slot beyond the cache: later than every query, so the causal test masks it
NEG = float(np.finfo(np.float32).min)  # not -inf: a fully masked row would give NaN instead of a uniform row


class _Emitter:
    """Collects nodes and constant initializers under one name prefix."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[TensorProto] = []

    def op(self, op_type: str, inputs: list[str], out: str, domain: str = "", **attrs) -> str:
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=out, domain=domain, **attrs))
        return out

    def const(self, name: str, value, dtype=np.int64) -> str:
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name


def _head_size(model: onnx.ModelProto, past_key: str) -> int:
    for vi in model.graph.input:
        if vi.name == past_key:
            dim = vi.type.tensor_type.shape.dim[3]
            if dim.HasField("dim_value"):
                return int(dim.dim_value)
    raise ValueError(f"{past_key}: the past key input needs a static head size (dim 3) to unfuse attention")


def _shared(e: _Emitter, q: str, total_len: str, window: int, past_key: str | None = None) -> tuple[str, str]:
    """positions (1, S) int64 and the causal bias (S, T) float32, from the query and the total length;
    window > 0: the band of a sliding window (Mistral, Phi-3), as GroupQueryAttention's local_window_size.
    past_key (appended cache): the bias is (S, C + S) over [past slots | new keys], past slot c at position c when
    c < P, else masked."""
    p = "/model/wasm_attention"
    s = e.op("Shape", [q], f"{p}/S/Shape", start=1, end=2)  # (1,)
    s0 = e.op("Squeeze", [s], f"{p}/S")  # ()
    t = e.op("Cast", [total_len], f"{p}/T", to=TensorProto.INT64)  # ()
    past = e.op("Sub", [t, s0], f"{p}/P")  # () tokens already in the cache
    zero, one = e.const(f"{p}/zero", 0), e.const(f"{p}/one", 1)
    qpos = e.op("Range", [past, t, one], f"{p}/qpos/Range")  # (S,) absolute position of each new token
    positions = e.op("Unsqueeze", [qpos, e.const(f"{p}/axes0", [0])], f"{p}/positions")  # (1, S)
    if past_key is None:
        kpos = e.op("Range", [zero, t, one], f"{p}/kpos/Range")  # (T,)
    else:
        cap = e.op("Squeeze", [e.op("Shape", [past_key], f"{p}/C/Shape", start=2, end=3)], f"{p}/C")  # () slots
        slots = e.op("Range", [zero, cap, one], f"{p}/slots/Range")  # (C,)
        held = e.op("Less", [slots, past], f"{p}/slots/Less")  # slot c holds a key iff c < P
        slots = e.op("Where", [held, slots, e.const(f"{p}/masked", MASKED_POSITION)], f"{p}/slots/Where")
        kpos = e.op("Concat", [slots, qpos], f"{p}/kpos/Concat", axis=0)  # (C + S,) past slots, then the new keys
        e.op("Concat", [e.op("Unsqueeze", [cap, e.const(f"{p}/axes0d", [0])], f"{p}/C/Unsqueeze"), s], SPLIT_SIZES, axis=0)
    allowed = e.op(
        "LessOrEqual",
        [
            e.op("Unsqueeze", [kpos, e.const(f"{p}/axes0b", [0])], f"{p}/kpos/Unsqueeze"),
            e.op("Unsqueeze", [qpos, e.const(f"{p}/axes1", [1])], f"{p}/qpos/Unsqueeze"),
        ],
        f"{p}/causal/LessOrEqual",
    )  # (S, T): key t visible to query j iff t <= its position
    if window > 0:  # ... and t > its position - window
        lower = e.op("Sub", [qpos, e.const(f"{p}/window", window)], f"{p}/window/Sub")
        recent = e.op(
            "Greater",
            [
                e.op("Unsqueeze", [kpos, e.const(f"{p}/axes0c", [0])], f"{p}/window/kpos/Unsqueeze"),
                e.op("Unsqueeze", [lower, e.const(f"{p}/axes1b", [1])], f"{p}/window/Unsqueeze"),
            ],
            f"{p}/window/Greater",
        )
        allowed = e.op("And", [allowed, recent], f"{p}/window/And")
    bias = e.op(
        "Where",
        [allowed, e.const(f"{p}/zero_f", 0.0, np.float32), e.const(f"{p}/neg_f", NEG, np.float32)],
        f"{p}/causal_bias",
    )
    return positions, bias


def _unfuse(node: onnx.NodeProto, e: _Emitter, head: int, shared: tuple[str, str], append: bool) -> None:
    a = {x.name: helper.get_attribute_value(x) for x in node.attribute}
    h, kv = int(a["num_heads"]), int(a["kv_num_heads"])
    if float(a.get("softcap", 0.0)) != 0.0:
        raise ValueError(f"{node.name}: soft-capped attention is not unfused")
    ins = list(node.input) + [""] * (9 - len(node.input))
    qkv, k, v, past_k, past_v = ins[:5]
    cos, sin = ins[7], ins[8]
    positions, bias = shared
    p = f"{node.name}/unfused"
    if not k:  # packed QKV: (B, S, (H + 2 KV) * D)
        split = e.const(f"{p}/split_sizes", [h * head, kv * head, kv * head])
        e.nodes.append(helper.make_node("Split", [qkv, split], [f"{p}/q", f"{p}/k", f"{p}/v"], name=f"{p}/Split", axis=-1))
        q, k, v = f"{p}/q", f"{p}/k", f"{p}/v"
    else:
        q = qkv
    if int(a.get("do_rotary", 0)):  # GroupQueryAttention's rotary (rotary_interleaved=0) as its own contrib op
        q = e.op("RotaryEmbedding", [q, positions, cos, sin], f"{p}/q_rotary", MS_DOMAIN)
        k = e.op("RotaryEmbedding", [k, positions, cos, sin], f"{p}/k_rotary", MS_DOMAIN)

    g = h // kv  # query heads per kv head: query head i reads kv head i // g
    # q as (B, KV, G, S, D) and k, v as (B, KV, 1, T, D): MatMul broadcasts each kv head over its G query
    # heads, so the cache is never copied per query head (fewer nodes and bytes than tiling it to H heads)
    qr = e.op("Reshape", [q, e.const(f"{p}/q_shape", [0, 0, kv, g, head])], f"{p}/q/Reshape")  # (B, S, KV, G, D)
    q5 = e.op("Transpose", [qr], f"{p}/q/Transpose", perm=[0, 2, 3, 1, 4])  # (B, KV, G, S, D)

    def kv_heads(x: str, tag: str, out: str | None = None) -> str:  # (B, S, KV*D) -> (B, KV, S, D)
        r = e.op("Reshape", [x, e.const(f"{p}/{tag}_shape", [0, 0, kv, head])], f"{p}/{tag}/Reshape")
        return e.op("Transpose", [r], out or f"{p}/{tag}/Transpose", perm=[0, 2, 1, 3])

    axis2 = e.const(f"{p}/axes2", [2])
    scale = e.const(f"{p}/scale", float(a.get("scale", 0.0)) or 1.0 / float(np.sqrt(head)), np.float32)

    def scores(keys: str, tag: str, query: str = q5, scaled: bool = False) -> str:  # (B, KV, T, D) -> (B, KV, G, S, T)
        k5 = e.op("Unsqueeze", [keys, axis2], f"{p}/{tag}/Unsqueeze")  # (B, KV, 1, T, D)
        kt = e.op("Transpose", [k5], f"{p}/{tag}T", perm=[0, 1, 2, 4, 3])  # (B, KV, 1, D, T)
        qk = e.op("MatMul", [query, kt], f"{p}/q{tag}/MatMul")
        return qk if scaled else e.op("Mul", [qk, scale], f"{p}/q{tag}/Mul")

    def weighted(probs: str, values: str, tag: str) -> str:  # (B, KV, G, S, T) x (B, KV, T, D) -> (B, KV, G, S, D)
        v5 = e.op("Unsqueeze", [values, axis2], f"{p}/{tag}/Unsqueeze")  # (B, KV, 1, T, D)
        return e.op("MatMul", [probs, v5], f"{p}/p{tag}/MatMul")

    if not append:
        present_k = e.op("Concat", [past_k, kv_heads(k, "k")], node.output[1], axis=2)  # (B, KV, T, D)
        present_v = e.op("Concat", [past_v, kv_heads(v, "v")], node.output[2], axis=2)
        probs = e.op("Softmax", [e.op("Add", [scores(present_k, "k"), bias], f"{p}/masked")], f"{p}/Softmax", axis=-1)
        ctx = weighted(probs, present_v, "v")  # (B, KV, G, S, D)
    else:  # present.* = the new positions only; the past is read where it lies, never concatenated
        # as few nodes as the concatenating form allows (each node costs a dispatch, which the browser's WASM
        # threads make dear): the query scaled once for both score blocks, the split sizes shared by all layers
        new_k, new_v = kv_heads(k, "k", node.output[1]), kv_heads(v, "v", node.output[2])  # (B, KV, S, D)
        qs = e.op("Mul", [q5, scale], f"{p}/q/Mul")
        both = e.op(
            "Concat", [scores(past_k, "kpast", qs, True), scores(new_k, "knew", qs, True)], f"{p}/scores", axis=-1
        )  # (B, KV, G, S, C + S)
        probs = e.op("Softmax", [e.op("Add", [both, bias], f"{p}/masked")], f"{p}/Softmax", axis=-1)
        e.nodes.append(
            helper.make_node("Split", [probs, SPLIT_SIZES], [f"{p}/probs_past", f"{p}/probs_new"], name=f"{p}/probs/Split", axis=-1)
        )
        ctx = e.op(
            "Add", [weighted(f"{p}/probs_past", past_v, "vpast"), weighted(f"{p}/probs_new", new_v, "vnew")], f"{p}/pv/Add"
        )  # (B, KV, G, S, D)
    ctx = e.op("Transpose", [ctx], f"{p}/ctx/Transpose", perm=[0, 3, 1, 2, 4])  # (B, S, KV, G, D)
    e.op("Reshape", [ctx, e.const(f"{p}/out_shape", [0, 0, h * head])], node.output[0])


def _window(node: onnx.NodeProto) -> int:
    return int(next((helper.get_attribute_value(x) for x in node.attribute if x.name == "local_window_size"), -1))


def unfuse_gqa(model: onnx.ModelProto, append: bool = False) -> onnx.ModelProto:
    """`model` with every GroupQueryAttention replaced by decomposed attention (in place; returned);
    append: present.* are the new positions only and the past may carry masked spare slots (see the module doc)."""
    gqa = [n for n in model.graph.node if n.op_type == "GroupQueryAttention" and n.domain == MS_DOMAIN]
    if not gqa:
        return model
    e = _Emitter()
    first = gqa[0]
    windows = {_window(n) for n in gqa}
    if len(windows) != 1:
        raise ValueError(f"layers with different attention windows ({sorted(windows)}) are not unfused")
    shared = _shared(e, first.input[0], first.input[6], windows.pop(), first.input[3] if append else None)
    prologue = list(e.nodes)
    nodes = []
    for node in model.graph.node:
        if node in gqa:
            if node is first:
                nodes += prologue  # the shared tensors need only the first layer's query and total length
            e.nodes = []
            _unfuse(node, e, _head_size(model, node.input[3]), shared, append)
            nodes += e.nodes
        else:
            nodes.append(node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    model.graph.initializer.extend(e.inits)
    props = {m.key: m.value for m in model.metadata_props} | {SINGLE_SEQUENCE_KEY: "1"} | ({KV_APPEND_KEY: "1"} if append else {})
    onnx.helper.set_model_props(model, props)
    if append:  # present.* dims: the new positions (the sequence_length of input_ids), not the total
        seq = next(i for i in model.graph.input if i.name == "input_ids").type.tensor_type.shape.dim[1]
        for out in model.graph.output:
            if out.name.startswith("present."):
                out.type.tensor_type.shape.dim[2].CopyFrom(seq)
    return model
