"""Every quantization recipe on one model, in one sitting: the table of the int4 issue.

    .venv/bin/python benchmarks/quant_recipes.py --source SMOLLM2.gguf --data-dir ../shared/data/benchmarks \
        --out benchmarks/results/quant --recipe rtn --recipe search --recipe gptq ...

Per recipe (each `--recipe` is `webllama convert`'s quantization options, `NAME[,opt=value...]`, e.g.
`gptq,override=layers.*.down=8:32:sym:search`): a q4 bundle converted by `webllama convert` in a child process
(wall time and peak RSS of that process), its verify figures (mean KL, top-1 on verify's text), bytes/param and MB,
and WikiText-2 perplexity on the held-out half (native and bundle). The llama.cpp rows (Q4_0, Q4_1, Q5_0 with a
Q8_0 embedding, gguf-py's reference quantizers) are scored on the same text and tokens. One JSON per row and a
Markdown table (`table.md`).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def parse_recipe(text: str) -> tuple[str, list[str]]:
    name, *opts = text.split(",")
    flags = ["--quant", name]
    for o in opts:
        k, _, v = o.partition("=")
        flag = "--" + k.replace("_", "-")
        flags += [flag] if v in ("", "true") else [flag, v]
    return text, flags


# The child converts, then reports its own peak RSS (getrusage of itself: this row's process only).
CHILD = (
    "import resource, sys; from webllama.cli import main; rc = main(sys.argv[1:]); "
    "print('peak_rss_kib', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr); sys.exit(rc)"
)


def convert_row(source: str, out: Path, flags: list[str]) -> dict:
    cmd = [sys.executable, "-c", CHILD, "convert", source, str(out), "--variant", "q4", "--force", *flags]
    t0 = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.time() - t0
    lines = proc.stderr.strip().splitlines()
    if proc.returncode:
        return {"error": next((ln for ln in reversed(lines) if ln.startswith("error:")), f"exit {proc.returncode}")}
    rss = next(int(ln.split()[1]) for ln in lines if ln.startswith("peak_rss_kib"))
    return {"convert_s": round(wall, 1), "peak_rss_mib": round(rss / 1024)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", required=True)
    ap.add_argument("--data-dir", required=True, type=Path)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--recipe", action="append", required=True)
    ap.add_argument("--ppl-tokens", type=int, default=4096)
    ap.add_argument("--no-peers", action="store_true", help="skip the llama.cpp rows (they do not depend on the recipes)")
    args = ap.parse_args()

    from webllama.converter import open_bundle
    from webllama.converter.baselines import PEER_RECIPES, nll_windows, peer_baselines, perplexity, wikitext_heldout
    from webllama.converter.ort_model import OrtModel
    from webllama.converter.sources import load_source
    from webllama.converter.verify import MAX_TEACHER_TOKENS, VERIFY_TEXT, encode, torch_logits

    args.out.mkdir(parents=True, exist_ok=True)
    src = load_source(args.source)
    heldout = wikitext_heldout(args.data_dir)
    rows = []
    ids = encode(src, VERIFY_TEXT)[:MAX_TEACHER_TOKENS]
    ref = torch_logits(src, ids)
    for peer, fig in ({} if args.no_peers else peer_baselines(src, ids, ref, tuple(PEER_RECIPES))).items():
        ppl = _peer_ppl(src, peer, heldout, args.ppl_tokens, nll_windows)
        rows.append({"recipe": peer, **fig, **ppl})
        print(json.dumps(rows[-1]), flush=True)
    n_params = sum(p.numel() for p in src.model.parameters())
    for text in args.recipe:
        label, flags = parse_recipe(text)
        bundle_dir = args.out / "bundles" / label.replace(",", "_").replace("=", "-").replace("*", "x").replace(":", "-")
        row = {"recipe": label, **convert_row(args.source, bundle_dir, flags)}
        if "error" not in row:
            b = open_bundle(bundle_dir)
            v = b.variant("q4")
            row.update(mean_kl=v["verify"]["mean_kl"], top1_agreement=v["verify"]["top1_agreement"])
            row.update(mb=round(v["bytes"] / 1e6, 1), bytes_per_param=round(v["bytes"] / n_params, 4))
            p = perplexity(src, {"q4": OrtModel(b, "q4")}, heldout, max_tokens=args.ppl_tokens)["rows"]
            row.update(native_word_ppl=p["native"]["word_ppl"], word_ppl=p["q4"]["word_ppl"])
        rows.append(row)
        print(json.dumps(row), flush=True)
        (args.out / "rows.json").write_text(json.dumps(rows, indent=2) + "\n")
    (args.out / "table.md").write_text(table(rows))
    print(table(rows))
    return 0


def _peer_ppl(src, peer: str, text: str, max_tokens: int, nll_windows) -> dict:
    import torch
    from webllama.converter.baselines import PEER_RECIPES, _peer_weights

    ids = src.tokenizer(text).input_ids[:max_tokens]
    words = len(src.tokenizer.decode(ids[1:]).split())
    params = dict(src.model.named_parameters())
    saved = {}
    try:
        for name, w in _peer_weights(src.model, *PEER_RECIPES[peer]).items():
            saved[name] = params[name].data
            params[name].data = torch.from_numpy(w)

        def logits(chunk):
            with torch.no_grad():
                return src.model(torch.tensor([chunk])).logits[0].float().numpy()

        nll, _ = nll_windows(logits, ids, 512)
    finally:
        for name, data in saved.items():
            params[name].data = data
    return {"word_ppl": float(np.exp(nll / max(words, 1)))}


def table(rows: list[dict]) -> str:
    head = "| recipe | bytes/param | MB | mean KL | top-1 | WikiText word ppl (native -> bundle) | convert s | peak RSS MiB |"
    out = [head, "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            out.append(f"| {r['recipe']} | error: {r['error']} | | | | | | |")
            continue
        ppl = (
            f"{r.get('native_word_ppl', float('nan')):.2f} -> {r['word_ppl']:.2f}"
            if "native_word_ppl" in r
            else f"{r['word_ppl']:.2f}"
        )
        out.append(
            f"| {r['recipe']} | {r.get('bytes_per_param', '')} | {r.get('mb', '')} | {r['mean_kl']:.4f} | {r['top1_agreement']:.4f} | "
            f"{ppl} | {r.get('convert_s', '')} | {r.get('peak_rss_mib', '')} |"
        )
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.exit(main())
