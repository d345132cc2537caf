"""llama2.c checkpoints (karpathy/llama2.c): the legacy v0 format and the "ak42" v1 format.

v0: 7 int32 header (dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len); a negative
vocab_size means the classifier is NOT shared with the embedding. Then fp32 tensors in a fixed order.
v1: magic "ak42", version 1, the same 7 ints, a shared-classifier byte, padded to 256 bytes; fp32
tensors in another fixed order. v2 (int8 Q8_0) is refused with a clear message.

llama2.c stores q/k rows in Meta's interleaved RoPE layout (pairs 2i, 2i+1 rotate together);
transformers rotates halves (i, i + d/2). `permute_rope` converts, exactly as transformers'
convert_llama_weights_to_hf.py does.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from webllama.converter.archs import for_format
from webllama.converter.archs.transforms import permute_rope  # noqa: F401  (re-exported: callers undo q/k rows with it)
from webllama.converter.errors import BadFormat, MissingFile, TokenizerError, UnsupportedSource
from webllama.converter.sources.base import SOURCES, LoadedSource, SourceReader, sha256_files
from webllama.converter.sources.tensors import TensorSource

MAGIC_V1 = 0x616B3432  # "ak42"
TOKENIZER_NAMES = ("tokenizer.bin", "tok512.bin", "tok4096.bin")
# run.c's per-layer weight arrays, (n_layers, ...) each
LAYER_FIELDS = ("attention_norm", "wq", "wk", "wv", "wo", "ffn_norm", "w1", "w2", "w3")


@dataclass(frozen=True)
class Llama2cHeader:
    dim: int
    hidden_dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    vocab_size: int
    seq_len: int
    shared_classifier: bool
    version: int
    data_offset: int

    @property
    def head_size(self) -> int:
        return self.dim // self.n_heads


def read_header(path: Path) -> Llama2cHeader:
    raw = path.read_bytes()[:256]
    if len(raw) < 28:
        raise BadFormat(f"{path}: {len(raw)} bytes is too short for a llama2.c header (28 bytes); the file is truncated")
    magic, version = struct.unpack("<Ii", raw[:8])
    if magic == MAGIC_V1:
        if version != 1:
            raise UnsupportedSource(
                f"{path}: llama2.c format version {version} is not supported (only v0 and v1 fp32); "
                "re-export with llama2.c's export.py --version 1"
            )
        dims = struct.unpack("<7i", raw[8:36])
        shared = bool(raw[36])
        return Llama2cHeader(*dims, shared_classifier=shared, version=1, data_offset=256)
    dims = list(struct.unpack("<7i", raw[:28]))
    shared = dims[5] > 0  # v0 signals an untied classifier with a negative vocab size
    dims[5] = abs(dims[5])
    return Llama2cHeader(*dims, shared_classifier=shared, version=0, data_offset=28)


def _tensor_shapes(h: Llama2cHeader) -> list[tuple[str, tuple[int, ...]]]:
    """The fixed tensor order of each format, with shapes in torch nn.Linear (out, in) layout."""
    L, d, hd, kv = h.n_layers, h.dim, h.hidden_dim, h.n_kv_heads * h.head_size
    per_layer = {
        "attention_norm": (L, d),
        "wq": (L, d, d),  # (layer, n_heads*head_size, dim)
        "wk": (L, kv, d),  # (layer, n_kv_heads*head_size, dim)
        "wv": (L, kv, d),
        "wo": (L, d, d),
        "ffn_norm": (L, d),
        "w1": (L, hd, d),  # gate
        "w2": (L, d, hd),  # down
        "w3": (L, hd, d),  # up
    }
    if h.version == 0:
        order = [("tok_embeddings", (h.vocab_size, d)), ("attention_norm", per_layer["attention_norm"])]
        order += [(n, per_layer[n]) for n in ("wq", "wk", "wv", "wo", "ffn_norm", "w1", "w2", "w3")]
        order += [("norm", (d,)), ("freq_cis_real", (h.seq_len, h.head_size // 2))]
        order += [("freq_cis_imag", (h.seq_len, h.head_size // 2))]
    else:
        order = [("attention_norm", per_layer["attention_norm"]), ("ffn_norm", per_layer["ffn_norm"])]
        order += [("norm", (d,)), ("tok_embeddings", (h.vocab_size, d))]
        order += [(n, per_layer[n]) for n in ("wq", "wk", "wv", "wo", "w1", "w2", "w3")]
    if not h.shared_classifier:
        order.append(("output", (h.vocab_size, d)))
    return order


def check_size(path: Path, h: Llama2cHeader) -> int:
    """Number of float32 weights the header promises; BadFormat if the file holds fewer."""
    need = sum(int(np.prod(s)) for _, s in _tensor_shapes(h))
    size = path.stat().st_size - h.data_offset
    if size < need * 4:
        raise BadFormat(
            f"{path}: holds {size} bytes of weights but the header (dim={h.dim}, layers={h.n_layers}, "
            f"vocab={h.vocab_size}) needs {need * 4}; the file is truncated or corrupt: download it again"
        )
    return need


class Llama2cTensors(TensorSource):
    """A llama2.c checkpoint through np.memmap: tensors are views of the file, per-layer arrays named
    "<run.c field>.{i}" (archs/llama.py maps them); nothing is read before it is asked for."""

    kind = "llama2c"

    def __init__(self, ckpt: Path, header: Llama2cHeader | None = None) -> None:
        h = header or read_header(ckpt)
        if h.dim % h.n_heads or h.n_heads % h.n_kv_heads:
            raise BadFormat(f"{ckpt}: header dim={h.dim} heads={h.n_heads} kv_heads={h.n_kv_heads} is inconsistent")
        check_size(ckpt, h)
        self.header, self.where = h, str(ckpt)
        self.arch = for_format("llama2c")
        self.hf_config = hf_config(h)
        self._arrays: dict[str, np.ndarray] = {}
        offset = h.data_offset
        for name, shape in _tensor_shapes(h):
            self._arrays[name] = np.memmap(ckpt, dtype="<f4", mode="r", offset=offset, shape=shape)
            offset += int(np.prod(shape)) * 4
        self._open()

    def names(self) -> list[str]:
        layers = range(self.header.n_layers)
        return [n for n in self._arrays if n not in LAYER_FIELDS] + [f"{n}.{i}" for n in LAYER_FIELDS for i in layers]

    def read(self, name: str) -> np.ndarray:
        field, _, i = name.partition(".")
        a = self._arrays[field]
        return np.array(a[int(i)] if i else a, dtype=np.float32)


def read_tokenizer_bin(path: Path, vocab_size: int) -> tuple[list[str], list[float]]:
    """llama2.c tokenizer.bin: int32 max_token_length, then per token: f32 score, i32 length, bytes."""
    raw = path.read_bytes()
    pieces, scores, off = [], [], 4
    for i in range(vocab_size):
        if off + 8 > len(raw):
            raise TokenizerError(f"{path}: ends after {i} of {vocab_size} tokens; the tokenizer file is truncated")
        score, length = struct.unpack("<fi", raw[off : off + 8])
        off += 8
        if length < 0 or off + length > len(raw):
            raise TokenizerError(f"{path}: token {i} has a bad length {length}; the tokenizer file is corrupt")
        try:
            piece = raw[off : off + length].decode("utf-8", errors="strict")
        except UnicodeDecodeError:
            raise TokenizerError(f"{path}: token {i} is not valid UTF-8; not a llama2.c tokenizer.bin or a corrupt one") from None
        off += length
        # The exporter wrote "\n<s>\n" for BOS/EOS and a space for SentencePiece's "▁": undo both.
        pieces.append(piece.strip("\n") if piece.strip("\n") in ("<s>", "</s>") else piece.replace(" ", "▁"))
        scores.append(score)
    return pieces, scores


def build_tokenizer(pieces: list[str], scores: list[float]):
    """A SentencePiece-style BPE with byte fallback, identical in layout to transformers' LlamaConverter.

    Merges are derived from the scores with transformers' own `generate_merges` (the same code its
    slow->fast SentencePiece conversion uses), so encoding matches llama2.c's score-greedy merging.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers
    from transformers import LlamaTokenizerFast
    from transformers.convert_slow_tokenizer import generate_merges

    vocab = {p: i for i, p in enumerate(pieces)}
    if len(vocab) != len(pieces):
        raise TokenizerError("tokenizer.bin has duplicate pieces; cannot build a BPE vocabulary from it")
    merges = generate_merges(vocab, {p: s for p, s in zip(pieces, scores, strict=True)})
    bpe = models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", fuse_unk=True, byte_fallback=True)
    tok = Tokenizer(bpe)
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    tok.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in ("<unk>", "<s>", "</s>")])
    return LlamaTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        add_bos_token=True,
        add_eos_token=False,
        legacy=True,
        clean_up_tokenization_spaces=False,
    )


def _find_files(path: Path) -> tuple[Path, Path]:
    if path.is_dir():
        bins = sorted(p for p in path.glob("*.bin") if p.name not in TOKENIZER_NAMES and not p.name.startswith("tok"))
        if len(bins) != 1:
            raise MissingFile(f"{path}: expected exactly one llama2.c checkpoint *.bin, found {len(bins)}")
        ckpt, folder = bins[0], path
    else:
        ckpt, folder = path, path.parent
    for name in TOKENIZER_NAMES:
        if (folder / name).exists():
            return ckpt, folder / name
    tok = sorted(folder.glob("tok*.bin"))
    if tok:
        return ckpt, tok[0]
    raise MissingFile(
        f"{ckpt}: no llama2.c tokenizer next to the checkpoint (looked for {', '.join(TOKENIZER_NAMES)}); "
        "copy the tokenizer.bin the model was trained with beside it"
    )


def detect(path: Path) -> bool:
    if path.is_dir():
        if (path / "config.json").exists() or any(path.glob("*.gguf")):
            return False
        return any(p.suffix == ".bin" and not p.name.startswith("tok") for p in path.iterdir())
    if path.suffix != ".bin" or (path.parent / "config.json").exists():
        return False
    with open(path, "rb") as f:
        head = f.read(28)
    if len(head) >= 8 and struct.unpack("<I", head[:4])[0] == MAGIC_V1:
        return True
    if len(head) < 28:
        return True  # too short for anything: let load() report the truncation
    dim, hidden, layers, heads, kv, vocab, seq = struct.unpack("<7i", head)
    return 0 < dim < 65536 and 0 < layers < 1024 and 0 < heads <= dim and 0 < kv <= heads and vocab != 0


def hf_config(h):
    """The transformers config of a llama2.c header (llama2.c's fixed eps, theta and token ids)."""
    return for_format("llama2c").hf_config(
        vocab_size=h.vocab_size,
        hidden_size=h.dim,
        intermediate_size=h.hidden_dim,
        num_hidden_layers=h.n_layers,
        num_attention_heads=h.n_heads,
        num_key_value_heads=h.n_kv_heads,
        max_position_embeddings=h.seq_len,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        tie_word_embeddings=h.shared_classifier,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=None,
        torch_dtype="float32",
    )


def load(path: Path, revision: str | None = None) -> LoadedSource:
    ckpt, tok_path = _find_files(path)
    tensors = Llama2cTensors(ckpt)
    pieces, scores = read_tokenizer_bin(tok_path, tensors.header.vocab_size)
    tokenizer = build_tokenizer(pieces, scores)
    return LoadedSource(
        kind="llama2c",
        path=str(path),
        name=ckpt.stem,
        sha256=sha256_files([ckpt, tok_path]),
        model=tensors.torch_model(),
        tokenizer=tokenizer,
        revision=None,
        files=[str(ckpt), str(tok_path)],
    )


SOURCES.add("llama2c", SourceReader("llama2c", detect, load))
