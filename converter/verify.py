"""Parity of a bundle against its source model: torch (the truth) vs onnxruntime CPU (the bundle).

Two measurements per variant:
- teacher-forced over a fixed English text: max |delta logit|, mean KL(torch || bundle), top-1 agreement;
- greedy generation of 64 tokens with the KV cache on both sides: the first divergent token.
fp32 must be token-exact (greedy identical, top-1 = 100%); the other variants report their figures.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np
from webllama.converter.errors import VerifyFailed
from webllama.converter.manifest import published_path
from webllama.converter.ort_model import OrtModel
from webllama.converter.sources.base import LoadedSource

# A fixed, plain English text (written for this purpose) so every bundle is measured on the same tokens.
VERIFY_TEXT = (
    "Once upon a time, in a small village at the edge of a great forest, there lived an old clockmaker "
    "named Tobias. Every morning he opened the wooden shutters of his shop, swept the floor, and wound "
    "each of the hundred clocks that hung on his walls. The children of the village liked to gather at "
    "his window, because at noon every clock would chime at once, and the sound was like a choir of "
    "bells. One winter the river froze, the roads were closed, and no travellers came to buy his clocks. "
    "Tobias did not complain. He spent the long evenings repairing a music box that had belonged to his "
    "mother, a delicate machine with a silver cylinder and a tiny dancer who turned when the tune began. "
    "When spring returned, a girl named Mira knocked on his door. She carried a broken pocket watch that "
    "her grandfather had left her, and she asked whether it could be saved. The clockmaker looked at the "
    "cracked glass and the bent hands, and he smiled. Time, he told her, is patient with those who are "
    "patient with it. Together they took the watch apart, cleaned every gear, and replaced the spring. "
    "It took them three weeks. On the last day the watch began to tick again, quietly at first and then "
    "with a steady, confident rhythm. Mira became his apprentice that summer. She learned to read the "
    "small marks that old makers scratched inside their cases, to balance a pendulum, and to listen for "
    "the difference between a healthy tick and a tired one. Years later, when Tobias was too old to climb "
    "the ladder to the tallest clock, Mira wound it for him, and the village still gathered at noon to "
    "hear the hundred clocks sing together. Scientists measure time with atoms today, but people still "
    "remember it with stories, and that is why the clockmaker's shop remains open on the market square."
)
GREEDY_PROMPT = "Once upon a time"
MAX_TEACHER_TOKENS = 384
GREEDY_TOKENS = 64


@dataclass
class VariantReport:
    variant: str
    tokens_scored: int
    max_abs_logit_diff: float
    mean_kl: float
    top1_agreement: float
    greedy_tokens: int
    greedy_match: bool
    first_divergence: int | None  # index into the generated tokens, None if identical
    torch_greedy_text: str
    bundle_greedy_text: str
    exact_required: bool
    min_top1: float  # the variant's floor (1.0 where exactness is required)
    passed: bool
    seconds: float

    def summary(self) -> dict:
        keys = ("max_abs_logit_diff", "mean_kl", "top1_agreement", "greedy_match", "first_divergence", "passed")
        return {k: getattr(self, k) for k in keys}


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def logit_stats(ref: np.ndarray, got: np.ndarray) -> tuple[float, float, float]:
    """max |delta|, mean KL(ref || got), top-1 agreement over (T, V) logits."""
    lp, lq = _log_softmax(ref), _log_softmax(got)
    kl = (np.exp(lp) * (lp - lq)).sum(axis=-1)
    top1 = (ref.argmax(-1) == got.argmax(-1)).mean()
    return float(np.abs(ref - got).max()), float(kl.mean()), float(top1)


def torch_logits(source: LoadedSource, ids: list[int]) -> np.ndarray:
    import torch

    with torch.no_grad():
        return source.model(torch.tensor([ids])).logits[0].float().numpy()


def torch_greedy(source: LoadedSource, prompt: list[int], n: int) -> list[int]:
    """Greedy decoding with transformers' KV cache, never stopping early (fixed length on both sides)."""
    import torch
    from transformers import DynamicCache

    out: list[int] = []
    cache = DynamicCache()
    ids = torch.tensor([prompt])
    with torch.no_grad():
        for _ in range(n):
            res = source.model(input_ids=ids, past_key_values=cache, use_cache=True)
            cache = res.past_key_values
            nxt = int(res.logits[0, -1].argmax())
            out.append(nxt)
            ids = torch.tensor([[nxt]])
    return out


def encode(source: LoadedSource, text: str) -> list[int]:
    return source.tokenizer(text).input_ids


def verify_variant(source: LoadedSource, model: OrtModel, exact: bool, min_top1: float = 0.0) -> VariantReport:
    t0 = time.time()
    limit = min(MAX_TEACHER_TOKENS, model.context_length - 1)
    ids = encode(source, VERIFY_TEXT)[:limit]
    ref = torch_logits(source, ids)
    got = model.forward(np.array([ids]))[0]
    max_diff, kl, top1 = logit_stats(ref, got)
    prompt = encode(source, GREEDY_PROMPT)
    n = min(GREEDY_TOKENS, model.context_length - len(prompt))
    want = torch_greedy(source, prompt, n)
    have = model.greedy(prompt, n, eos=False)
    diverge = next((i for i, (a, b) in enumerate(zip(want, have, strict=True)) if a != b), None)
    match = diverge is None
    finite = all(np.isfinite(x) for x in (max_diff, kl, top1))
    # A NaN/Inf figure means the bundle computes garbage somewhere: it fails whatever the variant's floor.
    passed = bool(finite and ((match and top1 == 1.0) if exact else top1 >= min_top1))
    max_diff, kl, top1 = (float(x) if np.isfinite(x) else None for x in (max_diff, kl, top1))
    return VariantReport(
        variant=model.variant,
        tokens_scored=len(ids),
        max_abs_logit_diff=max_diff,
        mean_kl=kl,
        top1_agreement=top1,
        greedy_tokens=n,
        greedy_match=match,
        first_divergence=diverge,
        torch_greedy_text=source.tokenizer.decode(want),
        bundle_greedy_text=source.tokenizer.decode(have),
        exact_required=exact,
        min_top1=1.0 if exact else min_top1,
        passed=passed,
        seconds=round(time.time() - t0, 2),
    )


def verify_bundle(source: LoadedSource, bundle, variants: list[str] | None = None, progress=None, peers: bool = True) -> dict:
    """Verify every (or the named) variant; returns the verify.json document."""
    from webllama.converter.variants import VARIANTS

    reports = {}
    for name in variants or bundle.variants:
        if progress:
            progress(f"verify {name}")
        model = OrtModel(bundle, name)
        reports[name] = asdict(verify_variant(source, model, exact=VARIANTS[name].exact, min_top1=VARIANTS[name].min_top1))
        # The WASM engine's graph gets its own row where its numerics differ (int8 weights); the float graph folds the
        # same int4 weights (q4's numbers: tests/converter/test_unpack.py).
        if bundle.variant(name).get("wasm_model") and bundle.variant(name).get("wasm_weights") == "int8":
            wasm = asdict(verify_variant(source, OrtModel(bundle, name, graph="wasm"), False, VARIANTS[name].min_top1))
            reports[f"{name}_wasm"] = {**wasm, "variant": f"{name}_wasm", "graph": bundle.variant(name)["wasm_model"]}
    return {
        "source": {"kind": source.kind, "path": published_path(source.path), "sha256": source.sha256},
        "text_tokens": next(iter(reports.values()))["tokens_scored"] if reports else 0,
        "variants": reports,
        # The plainest peer on the same source and text (converter/baselines.py): every figure above reads against it.
        "baselines": peer_figures(source, bundle) if peers else {},
        "passed": all(r["passed"] for r in reports.values()),
    }


def peer_figures(source: LoadedSource, bundle) -> dict:
    from webllama.converter.baselines import peer_baselines

    limit = min(MAX_TEACHER_TOKENS, int(bundle.manifest.get("context_length") or MAX_TEACHER_TOKENS) - 1)
    ids = encode(source, VERIFY_TEXT)[:limit]
    return peer_baselines(source, ids, torch_logits(source, ids))


def _fig(x: float | None, fmt: str) -> str:
    """A figure for the table; None is a non-finite one (verify.json is strict JSON: NaN is null)."""
    return format(x, fmt) if x is not None else "non-finite"


def raise_if_failed(doc: dict, where: str) -> None:
    bad = []
    for k, r in doc["variants"].items():
        if r["passed"]:
            continue
        if None in (r["max_abs_logit_diff"], r["mean_kl"], r["top1_agreement"]):
            bad.append(f"{k} computes non-finite logits")
        elif r.get("exact_required"):
            bad.append(
                f"{k} is not token-exact with the source model (top-1 {r['top1_agreement']:.4f}, "
                f"first divergent greedy token {r['first_divergence']})"
            )
        else:
            bad.append(f"{k}'s top-1 agreement {r['top1_agreement']:.4f} is below its floor {r.get('min_top1', 0):.2f}")
    if bad:
        raise VerifyFailed(f"{where}: {'; '.join(bad)}; see verify.json")


def format_table(doc: dict) -> str:
    rows = ["variant  max|dlogit|   mean KL    top-1    greedy(64)   status"]
    for name, r in doc["variants"].items():
        greedy = "identical" if r["greedy_match"] else f"diverges@{r['first_divergence']}"
        status = "ok" if r["passed"] else "FAILED"
        rows.append(
            f"{name:<8} {_fig(r['max_abs_logit_diff'], '>11.5f')} {_fig(r['mean_kl'], '>10.6f')} "
            f"{_fig(r['top1_agreement'], '>8.4f')}   {greedy:<12} {status}"
        )
    for name, r in doc.get("baselines", {}).items():  # peers on the same source and text, for reading the rows above
        rows.append(f"  {name + ' (peer)':<24}       {_fig(r['mean_kl'], '>10.6f')} {_fig(r['top1_agreement'], '>8.4f')}")
    for name, r in (doc.get("perplexity") or {}).get("rows", {}).items():
        rows.append(f"  perplexity {name:<13} token {r['token_ppl']:.3f}  word {r['word_ppl']:.3f}")
    return "\n".join(rows)
