"""The quantization pass: float weights -> a `QuantStore` of ready MatMulNBits weights, one layer at a time.

Both graph builders read the store (the fused builder for its MatMulNBits nodes, the reference export's graph
pass for its MatMuls), so one recipe gives the same bytes whichever graph carries them.

With a calibrated method, the pass runs the model itself layer by layer over the calibration tokens: layer i is
built from transformers' own decoder-layer class (so every family transformers implements is handled with its
own math) on CPU with its weights read from the streaming reader, hooks collect the input statistics of each
linear (X^T X), the layer's weights are quantized, and the layer is run again with the quantized weights to give
the next layer its inputs (GPTQ's sequential scheme: later layers see the error of earlier ones). Memory is one
layer, its Hessians and the calibration activations, whatever the model's depth.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from webllama.converter.archs.transforms import permute_rope
from webllama.converter.errors import BadFormat
from webllama.converter.graph.quantize import NBits, pack_blocks, q4_0_to_nbits
from webllama.converter.quant.methods import METHODS, Stats, quantize_weight
from webllama.converter.quant.policy import LINEAR, QuantSpec, TensorQuant

CALIBRATION_SEQ_LEN = 512


# ---------------------------------------------------------------- calibration text


def builtin_corpus() -> tuple[str, str]:
    """(text, name) of the default calibration corpus: converter/quant/data/calibration.txt, about 26 KB of plain
    English written for this purpose (stories, dialogue in the user/assistant shape chat models see, explanations,
    instructions, letters, news, a little code), shipped in the package so every conversion is reproducible, and
    disjoint from every text a figure is measured on (verify's story, WikiText-2, the eval benchmarks). Measured on
    SmolLM2 (benchmarks/README.md): in-distribution prose matters, CPython's reference docs as the corpus gave mean
    KL 0.26 where WikiText gave 0.19 with the same recipe."""
    from importlib.resources import files

    return files("webllama.converter.quant").joinpath("data/calibration.txt").read_text(encoding="utf-8"), "webllama calibration.txt"


def calibration_text(spec: QuantSpec) -> tuple[str, dict]:
    """The calibration text and its record for the manifest (name, sha256, tokens asked)."""
    if spec.calibration:
        path = Path(spec.calibration)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise BadFormat(f"--calibration {path}: cannot read it as UTF-8 text ({e}); give a plain text file") from None
        name = path.name
    else:
        text, name = builtin_corpus()
    if len(text.strip()) < 1000:
        raise BadFormat(f"calibration text {name!r} holds {len(text.strip())} characters; give at least a few pages of text")
    digest = hashlib.sha256(text.encode()).hexdigest()
    return text, {"name": name, "sha256": digest, "tokens": spec.calibration_tokens, "seq_len": CALIBRATION_SEQ_LEN}


def calibration_batches(tokenizer, text: str, n_tokens: int, seq_len: int = CALIBRATION_SEQ_LEN) -> np.ndarray:
    """(n_seq, seq_len) int64 token ids: consecutive windows of the tokenized text (deterministic)."""
    ids = tokenizer(text[: n_tokens * 16]).input_ids  # enough characters for n_tokens in any tokenizer (>= 1 char/token)
    seq_len = min(seq_len, max(16, len(ids) // 2))
    n_seq = max(1, min(n_tokens // seq_len, len(ids) // seq_len))
    if len(ids) < seq_len:
        raise BadFormat(f"calibration text is {len(ids)} tokens; it needs at least {seq_len}")
    return np.asarray(ids[: n_seq * seq_len], dtype=np.int64).reshape(n_seq, seq_len)


# ---------------------------------------------------------------- the store


@dataclass
class QuantStore:
    """HF weight name -> NBits (float32 scales), kept in memory or spilled to `scratch` (large models)."""

    scratch: Path | None = None
    spill_bytes: int = 256 * 2**20
    record: dict = field(default_factory=dict)
    embedding_shares_head: bool = False  # a tied table stored once: the lookup reads the head's bytes
    _mem: dict[str, NBits] = field(default_factory=dict)
    _disk: dict[str, Path] = field(default_factory=dict)
    _held: int = 0
    floats: dict[str, np.ndarray] = field(default_factory=dict)  # float tensors the recipe changed (AWQ's norms)

    def put(self, name: str, w: NBits) -> None:
        size = w.packed.nbytes + w.scales.nbytes
        if self.scratch is not None and self._held + size > self.spill_bytes:
            self.scratch.mkdir(parents=True, exist_ok=True)
            path = self.scratch / f"{len(self._disk):05d}.npz"
            zp = {} if w.zero_points is None else {"zero_points": w.zero_points}
            np.savez(path, packed=w.packed, scales=w.scales, meta=np.array([w.k, w.n, w.bits, w.block_size]), **zp)
            self._disk[name] = path
            return
        self._mem[name] = w
        self._held += size

    def get(self, name: str) -> NBits | None:
        if name in self._mem:
            return self._mem[name]
        if name not in self._disk:
            return None
        with np.load(self._disk[name]) as z:
            k, n, bits, block = (int(v) for v in z["meta"])
            zp = z["zero_points"] if "zero_points" in z.files else None
            return NBits(z["packed"], z["scales"], zp, k, n, bits, block)

    def __contains__(self, name: str) -> bool:
        return name in self._mem or name in self._disk

    def names(self) -> list[str]:
        return sorted([*self._mem, *self._disk])


# ---------------------------------------------------------------- the pass


def _quantize(reader, name: str, tq: TensorQuant, stats: Stats | None, w: np.ndarray | None = None) -> NBits:
    """One weight (canonical name): GGUF Q4_0 transcoded exactly where the recipe is its grid (rtn, symmetric
    int4, block 32); q/k rows stored in llama.cpp's interleaved order are permuted back (rows only: exact)."""
    if tq.method == "rtn" and tq.bits == 4 and tq.symmetric and tq.block_size == 32:
        raw = reader.raw(name)
        if raw is not None and raw[0] == "Q4_0":
            blocks = raw[1]
            n, k = blocks.shape[0], blocks.shape[1] // 18 * 32
            w = q4_0_to_nbits(blocks, n, k)
            heads = _rope_heads(reader.config, name)
            if heads:
                rows = permute_rope(np.arange(n, dtype=np.int64)[:, None], heads)[:, 0]
                w = NBits(w.packed[rows], w.scales[rows], None, w.k, w.n, w.bits, w.block_size)
            return w
    use = stats if tq.method != "rtn" else None
    w = reader.get(name) if w is None else w
    return pack_blocks(quantize_weight(w, tq.method, tq.bits, tq.block_size, tq.symmetric, use))


def _rope_heads(c, name: str) -> int | None:
    """Raw q/k blocks come in llama.cpp's RoPE row order (sources/tensors.py `raw`): heads to un-permute."""
    if name.endswith(".q"):
        return c.n_heads
    if name.endswith(".k"):
        return c.n_kv_heads
    return None


def layer_linears(c, i: int) -> list[str]:
    tensors = set(c.layer_tensors())
    return [f"layers.{i}.{k}" for k in LINEAR if k in tensors]


def quantize_weights(
    reader, spec: QuantSpec, calibration: np.ndarray | None, scratch: Path | None = None, progress: Callable[[str], None] | None = None
) -> QuantStore:
    """Every weight the recipe quantizes -> the store. `calibration`: (n_seq, seq_len) ids, needed by calibrated methods."""
    import torch

    store = QuantStore(scratch=scratch)
    c = reader.config
    needs = spec.needs_calibration
    threads = torch.get_num_threads()
    # Tiny models: every tensor op is small, and OpenMP's thread handoff costs more than the work (10-20x slower
    # with 2 threads on a loaded 2-core machine, measured); one thread is fastest. WEBLLAMA_QUANT_THREADS overrides.
    want = os.environ.get("WEBLLAMA_QUANT_THREADS") or (1 if c.dim < 256 else threads)
    torch.set_num_threads(int(want))
    try:
        return _quantize_all(reader, spec, calibration, store, needs, progress)
    finally:
        torch.set_num_threads(threads)


def _quantize_all(reader, spec: QuantSpec, calibration, store: QuantStore, needs, progress) -> QuantStore:
    c = reader.config
    if needs and calibration is None:
        raise ValueError("the recipe's methods need calibration tokens")
    runner = _LayerRunner(reader, calibration, needs == "hessian") if needs else None
    for i in range(c.n_layers):
        stats = runner.stats(i) if runner else {}
        scales = awq_scales(reader, spec, i, stats) if (spec.awq and runner) else {}
        for name in layer_linears(c, i):
            tq = spec.for_tensor(name, c.n_layers)
            if tq is None:
                continue
            w, st = reader.get(name), stats.get(name)
            norm = AWQ_GROUPS.get(name.rsplit(".", 1)[1])
            if norm in scales:  # x W^T = (x / s) (W s)^T: quantize W s, the norm absorbs 1 / s
                w, st = w * scales[norm][None, :], _scaled_stats(st, scales[norm])
            store.put(name, _quantize(reader, name, tq, st, w))
        for norm, sc in scales.items():
            store.floats[f"layers.{i}.{norm}"] = reader.get(f"layers.{i}.{norm}") / sc
        if runner:
            runner.advance(i, store, scales)
        if progress:
            progress(f"layer {i + 1}/{c.n_layers}")
    _quantize_head_and_embedding(reader, spec, store, runner)
    store.record = {"calibrated": bool(runner), "statistics": needs}
    return store


# ---------------------------------------------------------------- AWQ: activation-aware scales folded into the norms

# projection -> the RMSNorm whose weight feeds its input (where a per-channel scale can be folded without a graph change)
AWQ_GROUPS = {"q": "attn_norm", "k": "attn_norm", "v": "attn_norm", "gate": "mlp_norm", "up": "mlp_norm"}
AWQ_GRID = tuple(i / 10 for i in range(11))


def awq_scales(reader, spec: QuantSpec, i: int, stats: dict[str, Stats]) -> dict[str, np.ndarray]:
    """Per input channel scales s = rms(x)^alpha of each norm-fed group (AWQ, Lin et al. 2023), alpha searched on a
    grid to minimize the group's output error tr(dW H dW^T) under round-to-nearest of W s (dW = Q(W s)/s - W).
    alpha = 0 (s = 1) is in the grid, so the chosen scales never raise that error. o_proj and down_proj are left:
    their inputs come from attention / the gated product, not from a norm whose weight could absorb a scale."""
    out = {}
    for norm in sorted(set(AWQ_GROUPS.values())):
        names = [
            f"layers.{i}.{k}"
            for k, n in AWQ_GROUPS.items()
            if n == norm and spec.for_tensor(f"layers.{i}.{k}", reader.config.n_layers)
        ]
        names = [n for n in names if n in stats and stats[n].hessian is not None]
        if not names or norm not in reader.config.layer_tensors():
            continue
        w = np.concatenate([reader.get(n) for n in names])  # (sum of outputs, K)
        h = stats[names[0]].hessian
        rms = np.sqrt(np.maximum(stats[names[0]].imatrix, 1e-12))
        tq = spec.for_tensor(names[0], reader.config.n_layers)
        best, best_loss = None, None
        for alpha in AWQ_GRID:
            sc = rms**alpha
            sc = sc / np.sqrt(sc.max() * sc.min())
            dq = quantize_weight(w * sc[None, :], "rtn", tq.bits, tq.block_size, tq.symmetric).dequantize() / sc[None, :]
            dw = dq - w
            loss = float(np.einsum("nk,kj,nj->", dw, h, dw))
            if best_loss is None or loss < best_loss:
                best, best_loss = sc, loss
        if best is not None and not np.allclose(best, 1.0):
            out[norm] = best.astype(np.float32)
    return out


def _scaled_stats(st: Stats | None, sc: np.ndarray) -> Stats | None:
    """Statistics of x / s (the scaled projection's input)."""
    if st is None:
        return None
    inv = 1.0 / sc.astype(np.float64)
    h = None if st.hessian is None else st.hessian * np.outer(inv, inv)
    return Stats(imatrix=st.imatrix * inv * inv, hessian=h, tokens=st.tokens)


def _quantize_head_and_embedding(reader, spec: QuantSpec, store: QuantStore, runner) -> None:
    """The output projection under "lm_head" (the embedding table when tied); the lookup table under "embed"
    unless it shares the head's bytes (tied, 4-bit, whole blocks: stored once)."""
    c = reader.config
    head = spec.for_tensor("lm_head")
    if head is not None:
        src = _HeadView(reader) if c.tie_embeddings else reader
        store.put("lm_head", _quantize(src, "lm_head", head, runner.head_stats() if runner else None))
    if not spec.embedding:
        return
    if c.tie_embeddings and spec.tie_once and head is not None and head.bits == 4 and c.dim % head.block_size == 0:
        store.embedding_shares_head = True
        return
    own = spec.for_tensor("embed")
    if own is None or own.bits != 4 or c.dim % own.block_size:
        return  # GatherBlockQuantized reads 4-bit codes over whole blocks: keep the table float otherwise
    # a lookup has no input activations: a Hessian method (GPTQ and its variants) falls back to the search
    method = "search" if METHODS.get(own.method).needs == "hessian" else own.method
    store.put("embed", _quantize(reader, "embed", TensorQuant(4, own.block_size, own.symmetric, method), None))


class OverlayReader:
    """A reader whose float tensors the recipe changed (AWQ-scaled norms) come from the store: what an int4
    variant's graph reads. Everything else is the wrapped reader's."""

    def __init__(self, reader, floats: dict[str, np.ndarray]) -> None:
        self._reader, self._floats = reader, floats

    def get(self, name: str) -> np.ndarray:
        return self._floats[name] if name in self._floats else self._reader.get(name)

    def __getattr__(self, attr: str):
        return getattr(self._reader, attr)


class _HeadView:
    """A tied model's output projection is its embedding table: serve it under the head's name."""

    def __init__(self, reader) -> None:
        self.reader, self.config = reader, reader.config

    def get(self, name: str) -> np.ndarray:
        return self.reader.get("embed")

    def raw(self, name: str):
        return self.reader.raw("embed")


def hf_names(reader) -> dict[str, list[str]]:
    """Hugging Face weight name -> the canonical tensors it holds (several for a packed projection), for the
    reference export's graph pass, which sees transformers' module names."""
    from webllama.converter.archs.transforms import PACKS

    wm = reader.arch.weight_map("hf", reader.where)
    out: dict[str, list[tuple[str, str]]] = {}
    for canonical, r in wm.resolve(reader.config).items():
        out.setdefault(r.source, []).append((canonical, r.transform))
    if reader.config.tie_embeddings:
        out.setdefault("lm_head.weight", []).append(("lm_head", "copy"))
    res = {}
    for name, parts in out.items():
        if len(parts) > 1 and name != "lm_head.weight":
            order = next(p for p in PACKS.values() if set(p) == {t for _, t in parts})
            parts.sort(key=lambda ct: order.index(ct[1]))
        res[name] = [c for c, _ in parts]
    return res


def _meta_model(config):
    """The model's transformers class on the meta device: its layer classes, without any weights."""
    import torch
    from transformers import AutoModelForCausalLM

    config = config.__class__.from_dict(config.to_dict())
    config._attn_implementation = "sdpa"  # causal without a mask tensor
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config, torch_dtype=torch.float32)  # calibration runs in float32


def _hf_layer_map(reader, i: int) -> dict[str, list[tuple[str, str]]]:
    """Layer i's Hugging Face parameter names (relative to the layer) -> [(canonical, transform)], from the
    architecture's HF weight map: a packed projection (Phi-3's qkv_proj) lists its parts in row order."""
    from webllama.converter.archs.transforms import PACKS

    wm = reader.arch.weight_map("hf", reader.where)
    prefix = f"model.layers.{i}."
    out: dict[str, list[tuple[str, str]]] = {}
    for k in reader.config.layer_tensors():
        r = wm.layer[k]
        out.setdefault(r.source.format(i=i).removeprefix(prefix), []).append((f"layers.{i}.{k}", r.transform))
    for parts in out.values():
        if len(parts) > 1:
            order = next(p for p in PACKS.values() if set(p) == {t for _, t in parts})
            parts.sort(key=lambda ct: order.index(ct[1]))
    return out


class _LayerRunner:
    """Runs transformers' decoder layers one at a time over the calibration activations."""

    def __init__(self, reader, ids: np.ndarray, hessians: bool, batch: int = 4) -> None:
        import torch

        self.reader, self.hessians, self.batch = reader, hessians, batch
        self.meta = meta = _meta_model(reader.hf_config)
        embed = torch.from_numpy(reader.get("embed"))
        self.h = torch.nn.functional.embedding(torch.from_numpy(ids), embed)  # (n_seq, T, dim) float32
        del embed
        rotary = type(meta.model.rotary_emb)(config=meta.config)
        pos = torch.arange(ids.shape[1]).unsqueeze(0)
        self.pos_emb = rotary(self.h[:1], pos)
        self.tokens = ids.shape[0] * ids.shape[1]
        self._layer = None

    def _build(self, i: int):
        import torch
        from webllama.converter.archs.transforms import concat_rows

        self.map = _hf_layer_map(self.reader, i)
        state = {k: torch.from_numpy(concat_rows([self.reader.get(c) for c, _ in parts])) for k, parts in self.map.items()}
        layer = self.meta.model.layers[i].to_empty(device="cpu")
        missing, unexpected = layer.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ValueError(f"layer {i}: the architecture's weight map does not cover {missing or unexpected}")
        return layer.eval()

    def _forward(self, layer):
        import torch

        outs = []
        with torch.no_grad():
            for b in range(0, self.h.shape[0], self.batch):
                x = self.h[b : b + self.batch]
                cos, sin = self.pos_emb
                out = layer(x, attention_mask=None, position_embeddings=(cos, sin))
                outs.append(out[0] if isinstance(out, tuple) else out)
        return torch.cat(outs)

    def stats(self, i: int) -> dict[str, Stats]:
        """Input statistics of layer i's linears over the current activations (float weights)."""
        import torch

        layer = self._build(i)
        acc: dict[str, torch.Tensor] = {}  # input group (its first module) -> sum of x x^T (or of x^2)
        group_of: dict[str, str] = {}  # module -> its input group: q/k/v (and gate/up) read one input
        last: list = [None, None]  # (the input tensor seen last, its group)

        def hook(name):
            def fn(_m, inp, _out):
                if last[0] is not inp[0]:
                    x = inp[0].reshape(-1, inp[0].shape[-1])
                    prod = (x.T @ x).double() if self.hessians else (x * x).sum(0).double()
                    acc[name] = acc[name] + prod if name in acc else prod
                    last[0], last[1] = inp[0], name
                group_of.setdefault(name, last[1])

            return fn

        handles = [m.register_forward_hook(hook(n)) for n, m in layer.named_modules() if isinstance(m, torch.nn.Linear)]
        self._forward(layer)
        last[0] = last[1] = None
        for h in handles:
            h.remove()
        self._layer = layer
        shared = {}
        for g, s in acc.items():
            diag = torch.diag(s) if self.hessians else s
            shared[g] = Stats(imatrix=(diag / self.tokens).numpy(), hessian=s.numpy() if self.hessians else None, tokens=self.tokens)
        out = {}
        for n, g in group_of.items():
            for canonical, _ in self.map.get(f"{n}.weight", []):  # a packed projection's parts share its input
                out[canonical] = shared[g]
        return out

    def advance(self, i: int, store: QuantStore, scales: dict[str, np.ndarray] | None = None) -> None:
        """Run layer i with its quantized weights: the next layer's inputs carry this layer's error."""
        import torch

        layer = self._layer
        with torch.no_grad():
            for n, m in layer.named_modules():
                parts = self.map.get(f"{n}.weight") if isinstance(m, torch.nn.Linear) else None
                if not parts or not all(c in store for c, _ in parts):
                    continue
                w = np.concatenate([self._effective(store, c, scales or {}) for c, _ in parts])
                m.weight.copy_(torch.from_numpy(w))
        self.h = self._forward(layer)
        layer.to_empty(device="meta")  # free the layer's CPU weights: memory stays one layer
        self._layer = None

    @staticmethod
    def _effective(store: QuantStore, canonical: str, scales: dict[str, np.ndarray]) -> np.ndarray:
        """The quantized weight in the float model's own parametrization (an AWQ scale divided back out)."""
        from webllama.converter.graph.quantize import unpack_nbits

        w = unpack_nbits(store.get(canonical)).dequantize()
        norm = AWQ_GROUPS.get(canonical.rsplit(".", 1)[1])
        return w / scales[norm][None, :] if norm in scales else w

    def head_stats(self) -> Stats:
        """Statistics of the output projection's input: the final norm of the last layer's output."""
        import torch

        norm = self.meta.model.norm.to_empty(device="cpu")
        norm.load_state_dict({"weight": torch.from_numpy(self.reader.get("norm"))})
        with torch.no_grad():
            x = norm(self.h).reshape(-1, self.h.shape[-1])
        return Stats(imatrix=(x * x).mean(0).double().numpy(), hessian=(x.T @ x).double().numpy(), tokens=x.shape[0])
