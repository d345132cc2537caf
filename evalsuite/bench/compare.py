"""Side by side: the runs of benchmarks/compare.py -> one markdown table with the ratios to the peers,
the bandwidth fraction (decode tok/s over memory bandwidth / weight bytes per token) and the product
owner's targets. Pure: result documents in, text out."""

from __future__ import annotations

from webllama.evalsuite.bench.report import med, spread

# Measured by the product owner on this kind of machine (2 threads, SmolLM2-135M-Instruct, 128-token prompt,
# 128 decoded tokens): decode tok/s, prefill tok/s.
TARGETS = {
    "llama.cpp Q4_0": (89, 423),
    "onnxruntime CPU, onnxruntime-genai builder int4": (75, 332),
    "onnxruntime CPU, optimum export + int4 RTN": (36, 432),
    "transformers.js 4.3.1 WASM q4": (3.0, 72),
    "transformers.js 4.3.1 WASM fp32": (12.4, 80),
}
# (ours, peer, what) pairs of result names for the ratio lines
RATIOS = [
    ("onnx-q4", "llamacpp-q4_0", "onnxruntime CPU q4 vs llama.cpp Q4_0 (native, same threads)"),
    ("onnx-q4-fused", "llamacpp-q4_0", "onnxruntime CPU q4, fused graph vs llama.cpp Q4_0 (native, same threads)"),
    ("onnx-q4-fused", "onnx-q4", "fused graph vs reference graph, onnxruntime CPU"),
    ("onnx-q4-fused-acc4", "llamacpp-q4_0", "onnxruntime CPU q4, fused graph, accuracy_level 4 vs llama.cpp Q4_0"),
    ("onnx-q4-fused-acc4", "onnx-q4-fused", "accuracy_level 4 (int8 activations) vs unset, onnxruntime CPU, fused graph"),
    ("browser-wasm-q4-fused", "browser-wasm-q4", "fused graph vs reference graph, our engine on WASM"),
    ("browser-webgpu-q4-fused", "browser-webgpu-q4", "fused graph vs reference graph, our engine on WebGPU"),
    ("browser-wasm-q4-fused", "wllama-wasm-q4_0", "our engine (fused graph) vs wllama, WASM"),
    ("browser-wasm-q4", "browser-wasm-q4-matmulnbits", "int4 on WASM: dequantize-at-load graph vs MatMulNBits graph"),
    ("browser-wasm-q4", "browser-wasm-fp32", "int4 on WASM (dequantize-at-load) vs the fp32 variant"),
    ("browser-wasm-q4", "transformersjs-wasm-q4", "our engine vs transformers.js, WASM, same bundle"),
    ("browser-webgpu-q4", "transformersjs-webgpu-q4", "our engine vs transformers.js, WebGPU, same bundle"),
    ("browser-wasm-q4", "wllama-wasm-q4_0", "our engine vs wllama (llama.cpp wasm, Q4_0 GGUF), WASM"),
    ("browser-wasm-q4", "onnx-q4", "our engine on WASM vs the same bundle on native onnxruntime"),
]


def _prefill(doc: dict, length: str = "128") -> dict | None:
    p = doc["metrics"]["prefill_tokens_per_s"]
    return p.get(length) or (p[max(p, key=int)] if p else None)


def results_table(docs: dict[str, dict], bandwidth: dict | None) -> str:
    """Rows: every result; columns: load, ttft, prefill 16/128/512, decode, RSS, bytes, bandwidth fraction."""
    bw = bandwidth["read_bytes_per_s"] if bandwidth else None
    head = (
        "| run | runtime / device | variant | load s | load (cached) s | TTFT s (128) | prefill 16 | prefill 128 | "
        "prefill 512 | decode tok/s | peak RSS MiB | MiB on disk | B/param | decode / bandwidth limit |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for name, d in docs.items():
        m = d["metrics"]
        p = m["prefill_tokens_per_s"]
        limit = bw / m["weight_bytes"] if bw and m.get("weight_bytes") else None
        frac = f"{med(m['decode_tokens_per_s']) / limit:.0%} of {limit:.0f}" if limit else "n/a"
        bpp = f"{m['bytes_per_parameter']:.3f}" if m.get("bytes_per_parameter") else "n/a"
        lines.append(
            f"| {name} | {d['runtime']} / {d['device']} | {d['variant']} | {spread(m['load_s'])} | {spread(m['load_cached_s'])} | "
            f"{spread(m['ttft_s'])}{_short_prompt(d)} | {spread(p.get('16'))} | {spread(p.get('128'))} | {spread(_longest(p))} | "
            f"{spread(m['decode_tokens_per_s'])} | {m['peak_rss_bytes'] / 2**20:.0f} | {m['bundle_bytes'] / 2**20:.1f} | "
            f"{bpp} | {frac} |"
        )
    return "\n".join(lines)


def _short_prompt(doc: dict) -> str:
    """Slow devices (SwiftShader WebGPU) run with a shorter decode/TTFT prompt: say so in the cell."""
    n = doc.get("settings", {}).get("ttft_prompt_length", 128)
    return "" if n == 128 else f" (prompt {n})"


def _longest(p: dict) -> dict | None:
    longer = [k for k in p if int(k) > 128]
    return p[max(longer, key=int)] if longer else None


def ratio_lines(docs: dict[str, dict]) -> list[str]:
    out = ["| comparison | decode ratio | prefill-128 ratio |", "|---|---|---|"]
    for ours, peer, what in RATIOS:
        if ours not in docs or peer not in docs:
            missing = ", ".join(n for n in (ours, peer) if n not in docs)
            out.append(f"| {what} | n/a ({missing} missing) | n/a |")
            continue
        a, b = docs[ours]["metrics"], docs[peer]["metrics"]
        dec = med(a["decode_tokens_per_s"]) / med(b["decode_tokens_per_s"])
        pre = med(_prefill(docs[ours])) / med(_prefill(docs[peer]))
        out.append(f"| {what} | {dec:.2f}x | {pre:.2f}x |")
    return out


def target_lines(docs: dict[str, dict]) -> list[str]:
    mapping = {
        "llama.cpp Q4_0": "llamacpp-q4_0",
        "onnxruntime CPU, optimum export + int4 RTN": "onnx-q4",
        "onnxruntime CPU, onnxruntime-genai builder int4": "onnx-q4-fused",
        "transformers.js 4.3.1 WASM q4": "transformersjs-wasm-q4",
        "transformers.js 4.3.1 WASM fp32": "transformersjs-wasm-fp32",
    }
    out = ["| product owner's target (decode / prefill tok/s) | closest run here | measured decode / prefill-128 |", "|---|---|---|"]
    for what, (dec, pre) in TARGETS.items():
        name = mapping.get(what)
        got = docs.get(name) if name else None
        meas = f"{med(got['metrics']['decode_tokens_per_s']):.1f} / {med(_prefill(got)):.0f}" if got else "not run"
        out.append(f"| {what}: {dec} / {pre} | {name or 'not reproduced'} | {meas} |")
    return out


def graph_lines(graphs: dict[str, dict]) -> list[str]:
    """Node count per graph (each node is one kernel launch; on WebGPU one dispatch) and its commonest ops."""
    out = ["| q4 graph | nodes | most frequent ops |", "|---|---|---|"]
    for name, g in graphs.items():
        ops = ", ".join(f"{k} {v}" for k, v in g["top_ops"].items())
        out.append(f"| {name} | {g['nodes']} | {ops} |")
    return out


def conversion_lines(conv: list[dict]) -> list[str]:
    out = ["| variant | wall s | peak RSS MiB | bundle MiB |", "|---|---|---|---|"]
    for c in conv:
        if not c.get("ok"):
            out.append(f"| {c['variant']} | failed: {c.get('error')} | | |")
            continue
        mib = (c.get("variant_bytes") or 0) / 2**20
        out.append(f"| {c['variant']} | {c['wall_s']:.1f} | {c['peak_rss_bytes'] / 2**20:.0f} | {mib:.1f} |")
    return out
