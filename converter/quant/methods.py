"""Block-wise weight quantization methods, one registry: float (N, K) weight -> integer codes + scales + zero points.

Every method produces the MatMulNBits grid the runtimes read (integer codes 0..2^bits-1 per element, one float
scale per block of `block_size` inputs, an integer zero point per block when asymmetric, the default 2^(bits-1)
when symmetric): w ~ scale * (q - zero_point). Integer zero points are what onnxruntime's CPU, WASM
(DequantizeLinear) and WebGPU kernels accept, so every method's output runs everywhere.

Methods (see `METHODS`):
- `rtn`: round-to-nearest from the block's range, onnxruntime's own quantizer (`quantize_matmul_{4,8}bits`): the
  bytes are identical to MatMulNBitsQuantizer's.
- `search`: per block, the scale (and zero point) that minimize the weighted squared error, searched over a grid
  of candidate ranges with a least-squares refit of the scale for each candidate (llama.cpp's `make_qx_quants` /
  `make_qkx2_quants`, with onnxruntime's integer zero points). The weights are the importance matrix (mean
  squared activation per input channel, `Stats.imatrix`) times sqrt(sigma^2 + w^2) as llama.cpp weighs them;
  without calibration the importance is 1.
- `gptq`: GPTQ (Frantar et al. 2022): columns quantized in order with the Hessian H = X^T X of the layer's
  inputs, each column's rounding error spread over the columns not yet quantized; the grid of each block is
  chosen by `search` on the error-updated weights when the block is entered. Variants (parameters of
  `quantize_gptq`): `gptq-act` processes the columns in order of decreasing Hessian diagonal with static groups
  (each contiguous block's grid fixed when its first column is reached: MatMulNBits' layout, no g_idx);
  `gptq-refit` refits each row's block scales by least squares on the final codes (`refit_scales`).
Why not onnxruntime's `k_quant` / `gptq` (matmul_nbits_quantizer): both take a whole ONNX model and a
calibration reader that runs it, which needs the full float model in memory and a second graph; here a
layer's weights and its calibration statistics are in memory one layer at a time (converter/quant/calibrate.py).
The numerics are onnxruntime's where they exist (`rtn` calls its C++ quantizer; tests compare `search` and
`gptq` against it and against RTN on the verify text).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from webllama.registry import Registry


@dataclass
class Stats:
    """Calibration statistics of one weight's input activations.

    hessian: (K, K) float64 sum of x x^T over calibration tokens (GPTQ); imatrix: (K,) mean of x^2 (its diagonal
    over the token count: llama.cpp's importance matrix); tokens: how many tokens were seen."""

    imatrix: np.ndarray
    hessian: np.ndarray | None = None
    tokens: int = 0
    cache: dict = field(default_factory=dict, repr=False)  # GPTQ's inverse-Hessian factor, shared by q/k/v


@dataclass
class Blocks:
    """Quantized weight in MatMulNBits' logical layout, before packing.

    codes: (N, n_blocks * block_size) uint8 in 0..2^bits-1 (K padded up to whole blocks with zeros);
    scales: (N, n_blocks) float32; zero_points: (N, n_blocks) uint8 or None (symmetric: 2^(bits-1))."""

    codes: np.ndarray
    scales: np.ndarray
    zero_points: np.ndarray | None
    k: int
    bits: int
    block_size: int

    def dequantize(self) -> np.ndarray:
        """(N, K) float32: scale * (q - zero_point)."""
        n, nb = self.scales.shape
        zp = self.zero_points if self.zero_points is not None else np.full((n, nb), 1 << (self.bits - 1), np.uint8)
        q = self.codes.reshape(n, nb, self.block_size).astype(np.float32) - zp[:, :, None].astype(np.float32)
        return (q * self.scales[:, :, None]).reshape(n, -1)[:, : self.k]


@dataclass(frozen=True)
class Method:
    name: str
    quantize: Callable[..., Blocks]  # (w (N, K) float32, bits, block_size, symmetric, stats | None) -> Blocks
    needs: str | None  # None | "imatrix" (uses it when given) | "hessian" (requires calibration)
    description: str
    params: tuple[tuple[str, float], ...] = ()  # the method's fixed hyper-parameters, recorded in the manifest


METHODS: Registry[Method] = Registry("quantization method")


def _blocked(w: np.ndarray, block: int) -> torch.Tensor:
    """(N, K) -> (N, n_blocks, block) float64, K zero-padded to whole blocks."""
    n, k = w.shape
    nb = -(-k // block)
    t = torch.zeros((n, nb * block), dtype=torch.float32)
    t[:, :k] = torch.from_numpy(np.asarray(w, dtype=np.float32))
    return t.view(n, nb, block)


# ---------------------------------------------------------------- rtn: onnxruntime's quantizer


def quantize_rtn(w: np.ndarray, bits: int, block_size: int, symmetric: bool, stats: Stats | None = None) -> Blocks:
    from webllama.converter.graph.quantize import quantize_matmul, unpack_nbits

    nb = quantize_matmul(np.ascontiguousarray(w.T, dtype=np.float32), bits, block_size, symmetric)
    return unpack_nbits(nb)


# ---------------------------------------------------------------- search: weighted error-minimizing grid


def _weights(x: torch.Tensor, importance: torch.Tensor | None) -> torch.Tensor:
    """llama.cpp's per-element weight: importance * sqrt(sigma^2 + x^2), sigma^2 the block row's mean square."""
    sigma2 = (x * x).mean(dim=-1, keepdim=True)
    base = torch.sqrt(sigma2 + x * x)
    return base if importance is None else base * importance


def _fit(x: torch.Tensor, wt: torch.Tensor, lvl: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Least-squares scale for fixed integer levels l (x ~ s*l) and its weighted error reduction sumlx^2/suml2
    (the error at that scale is sum(wt x^2) - sumlx^2/suml2, so a larger gain is a smaller error)."""
    sumlx = (wt * x * lvl).sum(-1)
    suml2 = (wt * lvl * lvl).sum(-1)
    ok = suml2 > 0
    safe = torch.where(ok, suml2, 1.0)
    return torch.where(ok, sumlx / safe, 0.0), torch.where(ok, sumlx * sumlx / safe, -1.0)


def _pick(gain: torch.Tensor, *values: torch.Tensor) -> list[torch.Tensor]:
    """Along the leading candidate axis: each value at the candidate of largest gain."""
    best = gain.argmax(dim=0, keepdim=True)
    return [torch.gather(v, 0, best).squeeze(0) for v in values]


def _search_symmetric(x: torch.Tensor, wt: torch.Tensor, bits: int, steps: int = 9):
    """x, wt: (..., B). Returns (scale, codes (..., B)) with codes in 0..2^bits-1, zero point 2^(bits-1).
    All candidates at once on a leading axis: candidate i maps the block's extreme value to -(nmax + 0.1 i)."""
    nmax = 1 << (bits - 1)
    amax = torch.gather(x, -1, x.abs().argmax(dim=-1, keepdim=True))  # signed value of largest magnitude
    safe = torch.where(amax == 0, 1.0, amax)
    steps_t = torch.arange(-steps, steps + 1, dtype=x.dtype).view(-1, *([1] * x.dim()))
    iscale = -(nmax + 0.1 * steps_t) / safe  # (C, ..., 1)
    lvl = torch.clamp(torch.round(x * iscale), -nmax, nmax - 1)
    scale, gain = _fit(x, wt, lvl)
    (scale,) = _pick(gain, scale)
    s = scale.unsqueeze(-1)
    lvl = torch.where(s == 0, 0.0, torch.clamp(torch.round(x / torch.where(s == 0, 1.0, s)), -nmax, nmax - 1))
    return scale, lvl + nmax


def _search_asymmetric(x: torch.Tensor, wt: torch.Tensor, bits: int, steps: int = 10):
    """x ~ s * (q - z), q in 0..qmax and integer z in 0..qmax. Candidate ranges shrink/grow the block's
    [min(x, 0), max(x, 0)]; for each, z is rounded and s refit by weighted least squares (all at once)."""
    qmax = (1 << bits) - 1
    lo = torch.clamp(x.min(dim=-1).values, max=0.0)
    hi = torch.clamp(x.max(dim=-1).values, min=0.0)
    rng = torch.where(hi - lo == 0, 1.0, hi - lo)
    steps_t = torch.arange(-steps, steps + 1, dtype=x.dtype).repeat(3).view(-1, *([1] * rng.dim()))
    # the zero point is rounded, so each range is also tried with the window slid by a quarter step either way
    shift = torch.tensor([0.0, 0.25, -0.25], dtype=x.dtype).repeat_interleave(2 * steps + 1).view(-1, *([1] * rng.dim()))
    s0 = rng / (qmax + 0.1 * steps_t)  # (C, ...)
    z = torch.clamp(torch.round(-lo / s0 + shift), 0, qmax)
    q = torch.clamp(torch.round(x / s0.unsqueeze(-1)) + z.unsqueeze(-1), 0, qmax)
    scale, gain = _fit(x, wt, q - z.unsqueeze(-1))
    scale, z = _pick(gain, scale, z)
    s = scale.unsqueeze(-1)
    q = torch.clamp(torch.round(x / torch.where(s == 0, 1.0, s)) + z.unsqueeze(-1), 0, qmax)
    q = torch.where(s == 0, z.unsqueeze(-1), q)
    return scale, q, z


def search_grid(x: torch.Tensor, wt: torch.Tensor, bits: int, symmetric: bool):
    """(scale, codes, zero_point or None) minimizing sum wt * (x - s (q - z))^2 per row of (..., B)."""
    if symmetric:
        scale, q = _search_symmetric(x, wt, bits)
        return scale, q, None
    return _search_asymmetric(x, wt, bits)


def _to_blocks(scale, codes, zps, k: int, bits: int, block: int) -> Blocks:
    n = codes.shape[0]
    return Blocks(
        codes=codes.reshape(n, -1).to(torch.uint8).numpy(),
        scales=scale.to(torch.float32).numpy(),
        zero_points=None if zps is None else zps.to(torch.uint8).numpy(),
        k=k,
        bits=bits,
        block_size=block,
    )


def _importance(stats: Stats | None, k: int, block: int) -> torch.Tensor | None:
    if stats is None:
        return None
    imp = torch.zeros(-(-k // block) * block, dtype=torch.float32)
    imp[:k] = torch.from_numpy(np.asarray(stats.imatrix, dtype=np.float32))
    return imp.view(1, -1, block)


SEARCH_CHUNK = 1 << 19  # elements of W searched at once (x 63 candidates in float32: ~130 MB per temporary)


def quantize_search(w: np.ndarray, bits: int, block_size: int, symmetric: bool, stats: Stats | None = None) -> Blocks:
    x_all = _blocked(w, block_size)
    imp = _importance(stats, w.shape[1], block_size)
    rows = max(1, SEARCH_CHUNK // max(1, w.shape[1]))
    parts = []
    for r in range(0, x_all.shape[0], rows):
        x = x_all[r : r + rows]
        parts.append(search_grid(x, _weights(x, imp), bits, symmetric))
    scale = torch.cat([p[0] for p in parts])
    codes = torch.cat([p[1] for p in parts])
    zps = None if symmetric else torch.cat([p[2] for p in parts])
    return _to_blocks(scale, codes, zps, w.shape[1], bits, block_size)


# ---------------------------------------------------------------- gptq: Hessian error compensation


def _padded_hessian(stats: Stats, k: int, kp: int) -> torch.Tensor:
    """The (kp, kp) float64 Hessian of a weight whose K inputs are zero-padded to whole blocks."""
    H = torch.zeros((kp, kp), dtype=torch.float64)
    H[:k, :k] = torch.from_numpy(np.asarray(stats.hessian, dtype=np.float64))
    return H


def _damped(h: torch.Tensor, damp: float) -> torch.Tensor:
    """H with dead inputs (zero diagonal) set to 1 and lambda = damp x mean diag added: GPTQ's dampening."""
    h = h.clone()
    dead = torch.diag(h) == 0
    h[dead, dead] = 1.0
    return h + torch.eye(h.shape[0], dtype=h.dtype) * damp * torch.mean(torch.diag(h))


def _hinv_cholesky(h: torch.Tensor, damp: float) -> torch.Tensor:
    """Upper Cholesky factor of H^-1 (GPTQ's formulation), with dead inputs fixed and percdamp dampening."""
    chol = torch.linalg.cholesky(_damped(h, damp))
    hinv = torch.cholesky_inverse(chol)
    return torch.linalg.cholesky(hinv, upper=True)


# GPTQ's dampening (lambda = damp x mean diag H). The papers' 0.01 fits the calibration text best and transfers
# worst: SmolLM2 mixed, one sitting (2026-12-03, default built-in calibration): damp 0.01 / 0.1 / 0.3 / 1.0 gave
# mean KL on verify's text 0.0959 / 0.0920 / 0.0909 / 0.0935 and WikiText-2 word perplexity 92.94 / 89.97 / 89.51
# / 90.25 (native 78.36); stories260K gptq KL 0.1068 -> 0.1027 at 0.3. Chosen on the verify KL; WikiText agrees.
GPTQ_DAMP = 0.3


def _grid_rows(x: torch.Tensor, imp: torch.Tensor, bits: int, symmetric: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """search_grid's (scale, zero point) of x (N, ..., B), a chunk of rows at a time: a tied output projection
    has ~50k rows, and all candidates at once would be GBs of temporaries (the rows are independent)."""
    rows = max(1, SEARCH_CHUNK // max(1, x[0].numel()))
    parts = [search_grid(c, _weights(c, imp), bits, symmetric) for c in torch.split(x, rows)]
    z = None if symmetric else torch.cat([p[2] for p in parts])
    return torch.cat([p[0] for p in parts]), z


def quantize_gptq(
    w: np.ndarray,
    bits: int,
    block_size: int,
    symmetric: bool,
    stats: Stats | None = None,
    damp: float = GPTQ_DAMP,
    act_order: bool = False,
    refit: bool = False,
) -> Blocks:
    """GPTQ into MatMulNBits' contiguous blocks. `act_order`: columns are processed in order of decreasing
    Hessian diagonal (the inputs that matter most first, while the most columns are left to absorb their error)
    with static groups: each original block's grid is fixed when the first of its columns is reached, so the
    output keeps the contiguous-block layout (no g_idx, which the runtimes do not read). `refit`: afterwards each
    row's block scales are refit jointly by least squares on the final codes under the (damped) Hessian."""
    if stats is None or stats.hessian is None:
        raise ValueError("gptq needs calibration statistics (a Hessian per weight)")
    n, k = w.shape
    kp = -(-k // block_size) * block_size
    W = torch.zeros((n, kp), dtype=torch.float32)  # float32 updates; the factorization is float64
    W[:, :k] = torch.from_numpy(np.asarray(w, dtype=np.float32))
    key = ("hinv", kp, damp, act_order)
    if key not in stats.cache:  # one factorization per input: q/k/v (and gate/up) share their Stats
        H = _padded_hessian(stats, k, kp)
        # stable sort: ties (and the zero padding, last) keep their order, so the result is deterministic
        perm = torch.argsort(-torch.diag(H), stable=True) if act_order else torch.arange(kp)
        imp = (torch.diag(H) / max(stats.tokens, 1)).to(torch.float32)
        stats.cache[key] = (_hinv_cholesky(H[perm][:, perm], damp).to(torch.float32), imp, perm)
    U, imp, perm = stats.cache[key]
    nblk = kp // block_size
    scales = torch.zeros((n, nblk), dtype=torch.float32)
    zs = torch.full((n, nblk), float(1 << (bits - 1)), dtype=torch.float32)  # symmetric: the fixed 2^(bits-1)
    have = torch.zeros(nblk, dtype=torch.bool)
    pos_of = torch.argsort(perm)  # original column -> its position in processing order
    group = perm // block_size  # processing position -> its original block
    Wp = W[:, perm] if act_order else W
    codes_p = torch.zeros((n, kp), dtype=torch.float32)
    qmax = (1 << bits) - 1
    for i0 in range(0, kp, block_size):  # lazy batch of block_size columns in processing order
        i1 = i0 + block_size
        Wb = Wp[:, i0:i1].clone()
        err = torch.zeros_like(Wb)
        Ub = U[i0:i1, i0:i1]
        for j in range(block_size):
            g = int(group[i0 + j])
            if not have[g]:  # the block's first column: fix its grid on the error-updated weights
                pos = pos_of[g * block_size : (g + 1) * block_size]
                cur = Wp[:, pos].clone()
                inb = (pos >= i0) & (pos < i1)
                cur[:, inb] = Wb[:, pos[inb] - i0]
                later = pos >= i1  # columns of later batches lack this batch's pending updates: apply them here
                if j and bool(later.any()):
                    cur[:, later] -= err[:, :j] @ U[i0 : i0 + j][:, pos[later]]
                s, z = _grid_rows(cur, imp[g * block_size : (g + 1) * block_size], bits, symmetric)
                scales[:, g] = s
                if z is not None:
                    zs[:, g] = z
                have[g] = True
            s, zz = scales[:, g], zs[:, g]
            col = Wb[:, j]
            q = torch.clamp(torch.round(col / torch.where(s == 0, 1.0, s)) + zz, 0, qmax)
            q = torch.where(s == 0, zz, q)
            codes_p[:, i0 + j] = q
            e = (col - s * (q - zz)) / Ub[j, j]
            Wb[:, j:] -= e.unsqueeze(1) * Ub[j, j:].unsqueeze(0)
            err[:, j] = e
        Wp[:, i1:] -= err @ U[i0:i1, i1:]
    codes = codes_p[:, pos_of] if act_order else codes_p
    if refit:
        H = _padded_hessian(stats, k, kp)
        W0 = torch.zeros((n, kp), dtype=torch.float32)
        W0[:, :k] = torch.from_numpy(np.asarray(w, dtype=np.float32))
        scales = refit_scales(W0, codes, scales, zs, H, damp, block_size)
    return _to_blocks(scales, codes, None if symmetric else zs, k, bits, block_size)


def refit_scales(
    w: torch.Tensor, codes: torch.Tensor, scales: torch.Tensor, zs: torch.Tensor, h: torch.Tensor, damp: float, block: int
) -> torch.Tensor:
    """With the integer codes and zero points fixed, the scales of one row minimizing (w_hat - w) H (w_hat - w)^T,
    w_hat = sum_b s_b L_b (L = codes - zero point, per block): the normal equations A s = r, A[b, c] = L_b H_bc L_c,
    r[b] = L_b (H w)_b, solved for every row at once. GPTQ fixes each block's scale before it has seen the errors
    pushed into the block, so on its own codes a joint least-squares scale is never worse on this objective.
    H is dampened as in GPTQ (lambda = damp x mean diag), which keeps the solution near the plain weight fit."""
    n, kp = w.shape
    nb = kp // block
    hf = _damped(h, damp).to(torch.float32)
    lvl = (codes.view(n, nb, block) - zs.unsqueeze(-1)).view(n, kp)
    r = (lvl * (w @ hf)).view(n, nb, block).sum(-1).double()
    A = torch.zeros((n, nb, nb), dtype=torch.float64)
    for b in range(nb):
        t = lvl[:, b * block : (b + 1) * block] @ hf[b * block : (b + 1) * block]  # (n, kp)
        A[:, b] = (t * lvl).view(n, nb, block).sum(-1).double()
    diag = torch.diagonal(A, dim1=1, dim2=2)
    empty = diag <= 0  # a block whose codes are all at the zero point: its scale is free, keep it
    A = A + torch.diag_embed(torch.where(empty, 1.0, 0.0).double())
    r = torch.where(empty, scales.double(), r)
    new = torch.linalg.solve(A, r.unsqueeze(-1)).squeeze(-1)
    ok = torch.isfinite(new).all(dim=1, keepdim=True)
    return torch.where(ok, new.to(torch.float32), scales)


METHODS.add("rtn", Method("rtn", quantize_rtn, None, "round-to-nearest from the block's range (onnxruntime's quantizer)"))
METHODS.add(
    "search",
    Method("search", quantize_search, "imatrix", "weighted error-minimizing scale/zero search per block (llama.cpp make_qx_quants)"),
)
METHODS.add(
    "gptq",
    Method("gptq", quantize_gptq, "hessian", "GPTQ: Hessian error compensation, search grid per block", (("damp", GPTQ_DAMP),)),
)
# The variants, kept as options with their measurements (benchmarks/README.md "int4 recipes (issue 14)", 2026-12-03
# v2): on SmolLM2 neither beat plain `gptq` on both mean KL and WikiText-2 perplexity, so no recipe uses them.
METHODS.add(
    "gptq-act",
    Method(
        "gptq-act",
        functools.partial(quantize_gptq, act_order=True),
        "hessian",
        "GPTQ, act-order (decreasing Hessian diagonal) with static contiguous blocks (no g_idx)",
        (("damp", GPTQ_DAMP), ("act_order", 1.0)),
    ),
)
METHODS.add(
    "gptq-refit",
    Method(
        "gptq-refit",
        functools.partial(quantize_gptq, refit=True),
        "hessian",
        "GPTQ, then each row's block scales refit by least squares on its codes under the dampened Hessian",
        (("damp", GPTQ_DAMP), ("refit", 1.0)),
    ),
)


def quantize_weight(w: np.ndarray, method: str, bits: int, block_size: int, symmetric: bool, stats: Stats | None = None) -> Blocks:
    """Quantize one (N, K) float weight with a registered method."""
    m = METHODS.get(method)
    if m.needs == "hessian" and (stats is None or stats.hessian is None):
        stats_kind = "none" if stats is None else "imatrix only"
        raise ValueError(f"method {method!r} needs calibration with Hessians (got {stats_kind})")
    with torch.no_grad():
        return m.quantize(np.asarray(w, dtype=np.float32), bits, block_size, symmetric, stats)
