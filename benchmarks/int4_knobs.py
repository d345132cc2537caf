#!/usr/bin/env python3
"""A/B of MatMulNBits knobs on onnxruntime CPU for a bundle's q4 variant: accuracy_level (0 = kernel default,
fp32 compute; 4 = int8 activations, the fast integer kernels) set on a copy of the graph (weights shared by
hard link). Runs are interleaved A, B, A, B ... so a busy machine slows both alike.

    .venv/bin/python benchmarks/int4_knobs.py /tmp/wl/smollm2 --levels 0,4 --threads 2 --rounds 5
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def variant_copy(bundle: Path, variant: str, level: int, work: Path) -> Path:
    import onnx
    from webllama.converter.manifest import open_bundle, sha256_of

    b = open_bundle(bundle)
    spec = b.variant(variant)
    dest = work / f"{bundle.name}-acc{level}"
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for p in bundle.rglob("*"):
        rel = p.relative_to(bundle)
        if p.is_dir():
            (dest / rel).mkdir(exist_ok=True)
        elif str(rel) != spec["model"]:
            # hard links (copies across file systems): onnxruntime refuses external data that a symlink
            # resolves to outside the model's folder
            try:
                os.link(p, dest / rel)
            except OSError:
                shutil.copy2(p, dest / rel)
    model = onnx.load(str(bundle / spec["model"]), load_external_data=False)
    for node in model.graph.node:
        if node.op_type == "MatMulNBits":
            for a in [a for a in node.attribute if a.name == "accuracy_level"]:
                node.attribute.remove(a)
            node.attribute.append(onnx.helper.make_attribute("accuracy_level", level))
    onnx.save(model, str(dest / spec["model"]))
    # the bundle's manifest records every file's size and sha256 (open_bundle checks them): re-record the new graph
    manifest = json.loads((bundle / "manifest.json").read_text())
    for f in manifest["files"]:
        if f["path"] == spec["model"]:
            f["size"], f["sha256"] = (dest / f["path"]).stat().st_size, sha256_of(dest / f["path"])
    (dest / "manifest.json").unlink()
    (dest / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return dest


def main() -> int:
    from webllama.evalsuite.bench.measure import prompt_ids
    from webllama.evalsuite.bench.runners.onnx import OrtRunner

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundle", type=Path)
    ap.add_argument("--variant", default="q4")
    ap.add_argument("--levels", default="0,4")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--work", type=Path, default=Path("/tmp/webllama-int4-knobs"))
    a = ap.parse_args()
    runners = {}
    for level in [int(x) for x in a.levels.split(",")]:
        r = OrtRunner(variant_copy(a.bundle, a.variant, level, a.work), a.variant, a.threads)
        r.load()
        runners[level] = r
    any_r = next(iter(runners.values()))
    ids = prompt_ids(any_r.vocab_size, 128, any_r.bos_token_id)
    for r in runners.values():  # warm-up
        r.prefill(ids)
        r.decode(ids, 4)
    res = {lv: {"prefill": [], "decode": []} for lv in runners}
    for _ in range(a.rounds):
        for lv, r in runners.items():
            res[lv]["prefill"].append(128 / r.prefill(ids))
            res[lv]["decode"].append(32 / r.decode(ids, 32))
    for lv, d in res.items():
        p, q = d["prefill"], d["decode"]
        print(
            f"accuracy_level={lv}: prefill-128 {statistics.median(p):.1f} tok/s [{min(p):.1f}..{max(p):.1f}], "
            f"decode {statistics.median(q):.1f} tok/s [{min(q):.1f}..{max(q):.1f}]"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
