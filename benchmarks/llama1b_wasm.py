"""A Llama-3.2-1B-shaped model in Chromium on WASM: built, converted to q4, loaded, decoded, compared.

The model has Llama-3.2-1B's shape (hidden 2048, 16 layers, 32 heads over 8 KV heads, MLP 8192, vocab 128256,
tied embedding, llama3 RoPE) and random weights (scaled up so greedy decoding has clear winners); the
stories260K tokenizer stands in for the 128K one (prompts are token ids). Steps, each skipped when its output
exists in OUT:

1. OUT/src: the Hugging Face checkpoint (safetensors, ~4.9 GB float32).
2. OUT/bundle: `webllama convert OUT/src OUT/bundle --variant q4 --no-verify` (the streaming fused converter).
3. greedy ids on onnxruntime CPU over the graph the WASM engine runs (`OrtModel(graph="wasm")`).
4. the same prompt in headless Chromium (benchmarks/wasm_memory.py: page memory above the empty page, decode
   tok/s at each context), ids compared token for token.

    .venv/bin/python benchmarks/llama1b_wasm.py --out /tmp/wl/llama1b --output benchmarks/results/llama1b-wasm.json

Needs ~12 GB RAM free at step 1 and ~10 GB of disk; on 2 cores steps 1-2 take ~10 minutes, step 4 a few.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHAPE = {
    "vocab_size": 128256,
    "hidden_size": 2048,
    "intermediate_size": 8192,
    "num_hidden_layers": 16,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "head_dim": 64,
    "max_position_embeddings": 131072,
    "rope_theta": 500000.0,
    "rope_scaling": {
        "rope_type": "llama3",
        "factor": 32.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
    },
    "tie_word_embeddings": True,
    "rms_norm_eps": 1e-5,
    "bos_token_id": 1,
    "eos_token_id": 2,
}


def build_source(dest: Path, shared: Path, seed: int = 0) -> None:
    """The random Llama-3.2-1B-shaped checkpoint, written to a temporary folder and renamed into place."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    from webllama.converter.sources.llama2c import build_tokenizer, read_tokenizer_bin

    torch.manual_seed(seed)
    tmp = dest.with_name(dest.name + ".partial")
    cfg = LlamaConfig(**SHAPE)
    model = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():  # init std 0.02 gives near-uniform logits; x4 makes greedy decisions clear-cut
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(4.0)
    model.save_pretrained(tmp, safe_serialization=True)
    pieces, scores = read_tokenizer_bin(shared / "data" / "models" / "stories260K" / "tok512.bin", 512)
    build_tokenizer(pieces, scores).save_pretrained(tmp)
    tmp.rename(dest)


def convert(src: Path, bundle: Path, context_length: int) -> None:
    cmd = [str(REPO / ".venv" / "bin" / "webllama"), "convert", str(src), str(bundle), "--variant", "q4", "--no-verify"]
    cmd += ["--context-length", str(context_length)]
    subprocess.run(cmd, check=True)


def ort_greedy(bundle: Path, prompt: list[int], n: int, threads: int) -> tuple[list[int], float]:
    from webllama.converter.ort_model import OrtModel

    m = OrtModel(bundle, variant="q4", graph="wasm", threads=threads)
    t0 = time.perf_counter()
    ids = m.greedy(prompt, n, eos=False)
    return ids, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True, help="work folder (checkpoint, bundle)")
    p.add_argument("--shared", type=Path, default=REPO.parent / "shared")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--contexts", default="128", help="prompt lengths decoded after in the browser")
    p.add_argument("--decode", type=int, default=16)
    p.add_argument("--context-length", type=int, default=4096, help="the bundle's context (the engine's KV bound)")
    p.add_argument("--output", type=Path)
    a = p.parse_args(argv)
    sys.path.insert(0, str(REPO / "benchmarks"))
    import wasm_memory
    from webllama.evalsuite.bench.measure import prompt_ids

    a.out.mkdir(parents=True, exist_ok=True)
    src, bundle = a.out / "src", a.out / "bundle"
    timings = {}
    if not src.exists():
        t0 = time.perf_counter()
        build_source(src, a.shared)
        timings["build_s"] = time.perf_counter() - t0
    if not bundle.exists():
        t0 = time.perf_counter()
        convert(src, bundle, a.context_length)
        timings["convert_s"] = time.perf_counter() - t0
    first = int(a.contexts.split(",")[0])
    prompt = prompt_ids(SHAPE["vocab_size"], first, SHAPE["bos_token_id"])
    want, ort_s = ort_greedy(bundle, prompt, a.decode + 1, a.threads)
    args = [str(bundle), "--contexts", a.contexts, "--decode", str(a.decode), "--threads", str(a.threads)]
    doc = wasm_memory.measure(wasm_memory._args(args))
    got = doc["decode"][str(first)]["ids"]
    doc.update(
        {
            "shape": SHAPE,
            "timings": timings,
            "ort_cpu_greedy": want,
            "ort_cpu_greedy_s": ort_s,
            "token_exact_with_ort_cpu": got == want,
            "bundle_files": {f["path"]: f["size"] for f in json.loads((bundle / "manifest.json").read_text())["files"]},
        }
    )
    text = json.dumps(doc, indent=2)
    if a.output:
        a.output.parent.mkdir(parents=True, exist_ok=True)
        a.output.write_text(text + "\n")
    per = doc["above_empty_bytes_per_parameter"]
    print(
        f"llama-1b-shaped q4 on WASM: token-exact with onnxruntime CPU: {got == want}; above the empty page: load peak "
        f"{per['load_peak']:.2f} B/param, loaded {per['loaded']:.2f} B/param; decode "
        + ", ".join(f"ctx {k}: {v['tokens_per_s']:.2f} tok/s" for k, v in doc["decode"].items()),
        file=sys.stderr,
    )
    return 0 if got == want else 1


if __name__ == "__main__":
    raise SystemExit(main())
