"""The figures every verify report reads against: llama.cpp's plain recipes on the same source and text, and
perplexity on held-out text.

Peer baselines: each projection of the source's torch model quantized and dequantized with ggml's reference
quantizers (gguf-py's `gguf.quants`, the same numerics as llama.cpp's `quantize` without an importance matrix),
then scored on verify's text exactly as a bundle is (mean KL to the source, top-1 agreement). `Q4_0` is llama.cpp's
plainest 4-bit recipe (linears Q4_0; a tied embedding, which llama.cpp stores as the output matrix, Q8_0).

Perplexity: the source in torch and a bundle variant on onnxruntime over the same held-out text, in
non-overlapping windows (every token but each window's first is scored); token and word perplexity
(exp(total NLL / words), lm-eval's word_perplexity over the scored span).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

# recipe -> (projection type, embedding/output type): ggml type names
PEER_RECIPES: dict[str, tuple[str, str]] = {
    "llama.cpp Q4_0": ("Q4_0", "Q8_0"),
    "llama.cpp Q4_1": ("Q4_1", "Q8_0"),
    "llama.cpp Q5_0": ("Q5_0", "Q8_0"),
}
DEFAULT_PEERS = ("llama.cpp Q4_0",)


def ggml_roundtrip(w: np.ndarray, type_name: str) -> np.ndarray:
    """(N, K) float32 through ggml's reference quantizer and back (rows are quantized along K, as llama.cpp does)."""
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, quants

    t = getattr(GGMLQuantizationType, type_name)
    if w.shape[-1] % GGML_QUANT_SIZES[t][0]:
        # Rows that are not whole blocks: llama.cpp's quantize refuses such a tensor for Q4_0/Q4_1/Q5_0 ("Unsupported
        # tensor size"); the baseline keeps it F16, which favours the peer (webllama pads and quantizes it).
        return w.astype(np.float16).astype(np.float32)
    return quants.dequantize(quants.quantize(np.ascontiguousarray(w, dtype=np.float32), t), t).astype(np.float32)


def _peer_weights(model, linear: str, embed: str) -> dict[str, np.ndarray]:
    """parameter name -> its llama.cpp round trip, for every 2-D weight of the decoder and the output matrix."""
    import torch

    out = {}
    for name, p in model.named_parameters():
        if p.dim() != 2:
            continue
        is_table = name.endswith("embed_tokens.weight") or name == "lm_head.weight"
        if name == "lm_head.weight" and model.config.tie_word_embeddings:
            continue
        out[name] = ggml_roundtrip(p.detach().to(torch.float32).numpy(), embed if is_table else linear)
    return out


def peer_logits(source, ids: list[int], recipe: str) -> np.ndarray:
    """Logits of the source with a llama.cpp recipe applied to its weights (restored afterwards)."""
    import torch

    linear, embed = PEER_RECIPES[recipe]
    model = source.model
    params = dict(model.named_parameters())
    saved = {}
    try:
        for name, w in _peer_weights(model, linear, embed).items():
            saved[name] = params[name].data
            params[name].data = torch.from_numpy(w)
        with torch.no_grad():
            return model(torch.tensor([ids])).logits[0].float().numpy()
    finally:
        for name, data in saved.items():
            params[name].data = data


def peer_baselines(source, ids: list[int], ref: np.ndarray, recipes=DEFAULT_PEERS) -> dict[str, dict]:
    """{recipe: {mean_kl, top1_agreement, bytes_per_weight}} on the same tokens as the bundle's figures."""
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
    from webllama.converter.verify import logit_stats

    out = {}
    for r in recipes:
        _, kl, top1 = logit_stats(ref, peer_logits(source, ids, r))
        block, size = GGML_QUANT_SIZES[getattr(GGMLQuantizationType, PEER_RECIPES[r][0])]
        out[r] = {"mean_kl": kl, "top1_agreement": top1, "linear_bits_per_weight": 8 * size / block}
    return out


# ---------------------------------------------------------------- perplexity


def wikitext_heldout(data_dir: Path) -> str:
    """The second half of WikiText-2's test documents: the first half is where a user may calibrate
    (`--calibration`), and the built-in calibration corpus is another text altogether."""
    raw = (data_dir / "wikitext2" / "wiki.test.raw").read_text(encoding="utf-8")
    parts = re.split(r"\n = ([^=\n]+) = \n", raw)
    docs = [f" = {parts[i]} = \n{parts[i + 1]}" for i in range(1, len(parts) - 1, 2)]
    return "".join(docs[len(docs) // 2 :])


def nll_windows(logits_of, ids: list[int], window: int) -> tuple[float, int]:
    """(total NLL, tokens scored) over non-overlapping windows; logits_of(window_ids) -> (T, V)."""
    total, count = 0.0, 0
    for start in range(0, len(ids) - 1, window):
        chunk = ids[start : start + window]
        if len(chunk) < 2:
            break
        lg = logits_of(chunk).astype(np.float64)
        lg = lg - lg.max(-1, keepdims=True)
        logp = lg - np.log(np.exp(lg).sum(-1, keepdims=True))
        tgt = np.asarray(chunk[1:])
        total -= float(logp[np.arange(len(tgt)), tgt].sum())
        count += len(tgt)
    return total, count


def perplexity(source, models: dict, text: str, max_tokens: int = 4096, window: int = 512) -> dict:
    """Token and word perplexity of the source (torch) and each OrtModel in `models` over the same tokens."""
    import torch

    ids = source.tokenizer(text).input_ids[:max_tokens]
    words = len(source.tokenizer.decode(ids[1:]).split())

    def torch_logits(chunk):
        with torch.no_grad():
            return source.model(torch.tensor([chunk])).logits[0].float().numpy()

    rows = {"native": nll_windows(torch_logits, ids, window)}
    for name, m in models.items():
        rows[name] = nll_windows(lambda c, m=m: m.forward(np.array([c]))[0], ids, window)
    return {
        "tokens": len(ids),
        "words": words,
        "window": window,
        "rows": {
            k: {"token_ppl": float(np.exp(nll / n)), "word_ppl": float(np.exp(nll / max(words, 1)))} for k, (nll, n) in rows.items()
        },
    }
