"""Scale test of the fused builder (not in CI): a random Llama-2-7B-shaped model saved as float16
safetensors (one shard per layer, ~13.5 GB), converted to q4 without verification; the converting
process's peak RSS must stay under 8 GiB and must not grow with the number of layers.

    WEBLLAMA_SCALE_TEST=1 WEBLLAMA_SCALE_DIR=/tmp/wl-scale .venv/bin/python -m pytest -q \
        tests/converter/test_fused_scale.py -s
    .venv/bin/python -m tests.converter.test_fused_scale /tmp/wl-scale [n_layers] [fused|optimum]   # as a script

The reference exporter (`optimum`) loads the whole model in float32 and traces it, so its peak RSS grows
with the layer count (~4 bytes per parameter and more): run it with a few layers and read the slope.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

LLAMA2_7B = {
    "vocab_size": 32000,
    "hidden_size": 4096,
    "intermediate_size": 11008,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 32,
    "max_position_embeddings": 4096,
    "rms_norm_eps": 1e-5,
    "rope_theta": 10000.0,
    "tie_word_embeddings": False,
}
RSS_LIMIT = 8 << 30


def write_random_llama(folder: Path, n_layers: int, stories_dir: Path) -> None:
    """float16 safetensors, one shard per layer; a few random matrices reused (memory, not numerics)."""
    import torch
    from safetensors.torch import save_file
    from transformers import LlamaConfig
    from webllama.converter.sources.llama2c import build_tokenizer, read_tokenizer_bin

    folder.mkdir(parents=True, exist_ok=True)
    cfg = LlamaConfig(**{**LLAMA2_7B, "num_hidden_layers": n_layers}, architectures=["LlamaForCausalLM"], torch_dtype="float16")
    cfg.save_pretrained(folder)
    build_tokenizer(*read_tokenizer_bin(stories_dir / "tok512.bin", 512)).save_pretrained(folder)
    g = torch.Generator().manual_seed(0)
    d, h, v = cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size

    def rnd(*shape):
        return (torch.randn(*shape, generator=g) * 0.02).to(torch.float16)

    sq, up, down = rnd(d, d), rnd(h, d), rnd(d, h)
    index = {}
    for i in range(n_layers):
        p = f"model.layers.{i}."
        shard = {
            p + "input_layernorm.weight": torch.ones(d, dtype=torch.float16),
            p + "post_attention_layernorm.weight": torch.ones(d, dtype=torch.float16),
        }
        shard |= {p + f"self_attn.{n}_proj.weight": sq.roll(k, 0).contiguous() for k, n in enumerate("qkvo")}
        shard |= {
            p + "mlp.gate_proj.weight": up.roll(i, 0).contiguous(),
            p + "mlp.up_proj.weight": up,
            p + "mlp.down_proj.weight": down.roll(i, 0).contiguous(),
        }
        save_file(shard, folder / f"model-{i:05d}.safetensors", metadata={"format": "pt"})
        index |= {k: f"model-{i:05d}.safetensors" for k in shard}
    rest = {
        "model.embed_tokens.weight": rnd(v, d),
        "lm_head.weight": rnd(v, d),
        "model.norm.weight": torch.ones(d, dtype=torch.float16),
    }
    save_file(rest, folder / "model-rest.safetensors", metadata={"format": "pt"})
    index |= {k: "model-rest.safetensors" for k in rest}
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": index}))


def convert_and_measure(src: Path, out: Path, graph: str = "fused") -> tuple[int, float]:
    """Convert in a child process (q4, no verify; the default calibrated recipe with WEBLLAMA_SCALE_CALIBRATION
    tokens, 512 unless set); returns (peak RSS bytes of that child, seconds)."""
    quant = os.environ.get("WEBLLAMA_SCALE_QUANT", "gptq")
    tokens = int(os.environ.get("WEBLLAMA_SCALE_CALIBRATION", "512"))
    code = (
        "import resource; from webllama.converter import ConvertOptions, convert; "
        "from webllama.converter.variants import parse_variants; from webllama.converter.quant.policy import from_options; "
        f"convert({str(src)!r}, {str(out)!r}, ConvertOptions(variants=parse_variants('q4'), graph={graph!r}, "
        f"quant=from_options(quant={quant!r}, calibration_tokens={tokens}), verify=False, force=True, progress=False)); "
        "print('MAXRSS', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
    )
    t = time.time()
    r = subprocess.run(
        [sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[2], capture_output=True, text=True
    )
    rss_kib = int(next(ln for ln in r.stdout.splitlines() if ln.startswith("MAXRSS")).split()[1])
    return rss_kib * 1024, time.time() - t


def run(root: Path, n_layers: int = 32, graph: str = "fused") -> dict:
    stories = Path(os.environ.get("WEBLLAMA_SHARED", Path(__file__).resolve().parents[3] / "shared")) / "data/models/stories260K"
    src = root / f"llama2-7b-shaped-{n_layers}"
    if not (src / "model.safetensors.index.json").exists():
        free = shutil.disk_usage(root.parent if not root.exists() else root).free
        need = 2 * (2 * 4096 * 32000 + n_layers * (4 * 4096 * 4096 + 3 * 4096 * 11008)) * 1.3
        if free < need:
            raise RuntimeError(f"need about {need / 1e9:.0f} GB free for the source and the bundle, have {free / 1e9:.0f}")
        write_random_llama(src, n_layers, stories)
    out = root / f"bundle-{graph}-{n_layers}"
    rss, seconds = convert_and_measure(src, out, graph)
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    shutil.rmtree(out, ignore_errors=True)
    return {
        "graph": graph,
        "layers": n_layers,
        "peak_rss_gib": round(rss / (1 << 30), 2),
        "seconds": round(seconds, 1),
        "bundle_gb": round(size / 1e9, 2),
    }


@pytest.mark.skipif(not os.environ.get("WEBLLAMA_SCALE_TEST"), reason="scale test: set WEBLLAMA_SCALE_TEST=1 (~14 GB disk)")
def test_llama2_7b_shaped_q4_in_bounded_memory():
    root = Path(os.environ.get("WEBLLAMA_SCALE_DIR", "/tmp/wl-scale"))
    r = run(root, int(os.environ.get("WEBLLAMA_SCALE_LAYERS", "32")))
    print(r)
    assert r["peak_rss_gib"] * (1 << 30) < RSS_LIMIT, r


if __name__ == "__main__":
    print(
        json.dumps(
            run(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 32, sys.argv[3] if len(sys.argv) > 3 else "fused")
        )
    )
