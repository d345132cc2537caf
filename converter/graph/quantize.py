"""Per-tensor block quantization for the fused builder, with onnxruntime's own kernels.

The same functions that converter/quant/int4.py reaches through MatMulNBitsQuantizer (the C++
`quantize_matmul_{4,8}bits` for MatMul weights, `DefaultWeightOnlyQuantizer.quantize_ndarray` for
the embedding), called one tensor at a time: the fused q4 graph carries the very same bytes as the
reference q4 graph built from the same float weights. GGUF Q4_0 blocks map onto MatMulNBits'
symmetric int4 exactly and are transcoded without dequantizing (`q4_0_to_nbits`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class NBits:
    """A MatMulNBits weight: packed (N, k_blocks, blob) uint8, scales (N, k_blocks), zero points or None."""

    packed: np.ndarray
    scales: np.ndarray
    zero_points: np.ndarray | None
    k: int
    n: int
    bits: int
    block_size: int


# MatMulNBits and GatherBlockQuantized take their scales in the activations' type. A float32 graph stores them as
# float16 in the bundle with a Cast in front, which onnxruntime folds into a float32 initializer when the session is
# created (the runtime graph is the same MatMulNBits): at block 32 the scales cost 0.5 bit per weight instead of 1,
# which is how llama.cpp's Q4_0/Q4_1 store theirs (fp16 d and m). Rounding a scale to float16 moves a weight by at
# most 2^-11 of its block's scale times its code (~1/30 of the 4-bit rounding step at the extremes); a tensor with a
# scale float16 cannot hold closely (subnormal below 6.1e-5, overflow above 65504) keeps float32 scales.
F16_NORMAL = (float(np.finfo(np.float16).tiny), float(np.finfo(np.float16).max))


def scales_as_float16(scales: np.ndarray) -> np.ndarray | None:
    """The scales as float16, or None when some nonzero one is outside float16's normal range."""
    a = np.abs(np.asarray(scales, dtype=np.float32))
    nz = a[a != 0]
    if not np.isfinite(a).all() or (nz.size and (nz.min() < F16_NORMAL[0] or nz.max() > F16_NORMAL[1])):
        return None
    return np.asarray(scales, dtype=np.float32).astype(np.float16)


def quantize_matmul(w_kn: np.ndarray, bits: int, block_size: int, symmetric: bool) -> NBits:
    """w_kn: (K, N) float32/float16, the MatMul's B. Same result as MatMulNBitsQuantizer (QOperator)."""
    from onnxruntime.capi._pybind_state import quantize_matmul_4bits, quantize_matmul_8bits

    w_kn = np.ascontiguousarray(w_kn)
    rows, cols = w_kn.shape
    kpack = 8 // bits
    k_blocks = (rows + block_size - 1) // block_size
    blob = (block_size + kpack - 1) // kpack
    if k_blocks * block_size != rows:
        w_kn = np.pad(w_kn, ((0, k_blocks * block_size - rows), (0, 0)))
    packed = np.zeros((cols, k_blocks, blob), dtype=np.uint8)
    zp = np.zeros((cols, (k_blocks + kpack - 1) // kpack), dtype=np.uint8)
    scales = np.zeros((cols, k_blocks), dtype=w_kn.dtype)
    fn = quantize_matmul_8bits if bits == 8 else quantize_matmul_4bits
    fn(packed, w_kn, scales, zp, block_size, cols, rows, symmetric)
    return NBits(packed, scales, None if symmetric else zp, rows, cols, bits, block_size)


def quantize_gather(table: np.ndarray, block_size: int, symmetric: bool):
    """Embedding (vocab, dim) -> (int4 packed bytes, scales (vocab, dim/block), zero points or None)."""
    from onnxruntime.quantization.matmul_nbits_quantizer import DefaultWeightOnlyQuantizer

    return DefaultWeightOnlyQuantizer.quantize_ndarray(table, 1, block_size, symmetric)


def q4_0_to_nbits(blocks: np.ndarray, n: int, k: int) -> NBits:
    """GGUF Q4_0 (per block of 32: fp16 d, 16 bytes of nibbles; x = d * (q - 8)) -> MatMulNBits int4.

    Q4_0 stores element j in the low nibble of byte j and element j+16 in the high nibble; MatMulNBits
    stores element 2j low and 2j+1 high. Same values, same scale, zero point 8 (MatMulNBits' default
    for symmetric int4): an exact transcode. blocks: raw (n, k/32*18) uint8 rows of the weight (out, in).
    """
    b = np.asarray(blocks, dtype=np.uint8).reshape(n, k // 32, 18)
    d = b[:, :, :2].copy().view(np.float16)[:, :, 0].astype(np.float32)  # (N, k_blocks)
    qs = b[:, :, 2:]
    q = np.concatenate([qs & 0x0F, qs >> 4], axis=-1)  # (N, k_blocks, 32) in element order
    packed = (q[:, :, 0::2] | (q[:, :, 1::2] << 4)).astype(np.uint8)
    return NBits(np.ascontiguousarray(packed), d, None, k, n, 4, 32)


def unpack_nbits(w: NBits):
    """NBits (packed bytes) -> methods.Blocks (one code per element): the inverse of `pack_blocks`."""
    from webllama.converter.quant.methods import Blocks

    n, nb = w.scales.shape
    if w.bits == 8:
        codes = w.packed.reshape(n, nb * w.block_size)
        zp = None if w.zero_points is None else w.zero_points[:, :nb]
    else:
        codes = np.stack([w.packed & 0x0F, w.packed >> 4], axis=-1).reshape(n, nb * w.block_size)
        zp = None
        if w.zero_points is not None:
            zp = np.stack([w.zero_points & 0x0F, w.zero_points >> 4], axis=-1).reshape(n, -1)[:, :nb]
    return Blocks(
        codes.astype(np.uint8), w.scales.astype(np.float32), None if zp is None else zp.astype(np.uint8), w.k, w.bits, w.block_size
    )


def pack_blocks(b) -> NBits:
    """methods.Blocks -> NBits in MatMulNBits' layout: B (N, n_blocks, block*bits/8) uint8, 4-bit codes two per
    byte (element 2j low nibble, 2j+1 high); zero points (N, ceil(n_blocks*bits/8)) uint8, 4-bit ones packed per row."""
    n, nb = b.scales.shape
    codes = b.codes.reshape(n, nb, b.block_size).astype(np.uint8)
    if b.bits == 8:
        packed = codes
        zp = b.zero_points
    elif b.bits == 4:
        packed = codes[:, :, 0::2] | (codes[:, :, 1::2] << 4)
        zp = None
        if b.zero_points is not None:
            z = b.zero_points.astype(np.uint8)
            if nb % 2:
                z = np.concatenate([z, np.full((n, 1), 8, np.uint8)], axis=1)  # onnxruntime pads with 8
            zp = z[:, 0::2] | (z[:, 1::2] << 4)
    else:
        raise ValueError(f"MatMulNBits packing for {b.bits} bits is not implemented")
    return NBits(
        np.ascontiguousarray(packed, dtype=np.uint8),
        np.ascontiguousarray(b.scales, dtype=np.float32),
        None if zp is None else np.ascontiguousarray(zp, dtype=np.uint8),
        b.k,
        n,
        b.bits,
        b.block_size,
    )
