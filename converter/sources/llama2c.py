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
from webllama.converter.errors import BadFormat, MissingFile, TokenizerError, UnsupportedSource
from webllama.converter.sources.base import SOURCES, LoadedSource, SourceReader, check_finite, sha256_files

MAGIC_V1 = 0x616B3432  # "ak42"
TOKENIZER_NAMES = ("tokenizer.bin", "tok512.bin", "tok4096.bin")


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


def read_weights(path: Path, h: Llama2cHeader) -> dict[str, np.ndarray]:
    shapes = _tensor_shapes(h)
    need = check_size(path, h)
    flat = np.fromfile(path, dtype="<f4", offset=h.data_offset, count=need)
    out, pos = {}, 0
    for name, shape in shapes:
        n = int(np.prod(shape))
        out[name] = flat[pos : pos + n].reshape(shape)
        pos += n
    for name, w in out.items():
        check_finite(name, w, str(path))
    return out


def permute_rope(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Interleaved (Meta/llama2.c) -> rotate-half (HF) row order for a q or k projection (out, in)."""
    out_dim, in_dim = w.shape
    return w.reshape(n_heads, out_dim // n_heads // 2, 2, in_dim).transpose(0, 2, 1, 3).reshape(out_dim, in_dim)


# Declarative map: HF name template -> (llama2.c tensor, transform). "{i}" is the layer index.
WEIGHT_MAP: dict[str, tuple[str, str]] = {
    "model.embed_tokens.weight": ("tok_embeddings", "copy"),
    "model.norm.weight": ("norm", "copy"),
    "model.layers.{i}.input_layernorm.weight": ("attention_norm", "layer"),
    "model.layers.{i}.self_attn.q_proj.weight": ("wq", "layer_rope_q"),
    "model.layers.{i}.self_attn.k_proj.weight": ("wk", "layer_rope_k"),
    "model.layers.{i}.self_attn.v_proj.weight": ("wv", "layer"),
    "model.layers.{i}.self_attn.o_proj.weight": ("wo", "layer"),
    "model.layers.{i}.post_attention_layernorm.weight": ("ffn_norm", "layer"),
    "model.layers.{i}.mlp.gate_proj.weight": ("w1", "layer"),
    "model.layers.{i}.mlp.down_proj.weight": ("w2", "layer"),
    "model.layers.{i}.mlp.up_proj.weight": ("w3", "layer"),
}


def to_hf_state_dict(w: dict[str, np.ndarray], h: Llama2cHeader) -> dict[str, np.ndarray]:
    sd: dict[str, np.ndarray] = {}
    for template, (src, how) in WEIGHT_MAP.items():
        if how == "copy":
            sd[template] = w[src]
            continue
        for i in range(h.n_layers):
            t = w[src][i]
            if how == "layer_rope_q":
                t = permute_rope(t, h.n_heads)
            elif how == "layer_rope_k":
                t = permute_rope(t, h.n_kv_heads)
            sd[template.format(i=i)] = t
    if not h.shared_classifier:
        sd["lm_head.weight"] = w["output"]
    return {k: np.ascontiguousarray(v) for k, v in sd.items()}


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
    """The transformers LlamaConfig of a llama2.c header (llama2.c's fixed eps, theta and token ids)."""
    from transformers import LlamaConfig

    return LlamaConfig(
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
        architectures=["LlamaForCausalLM"],
    )


def load(path: Path, revision: str | None = None) -> LoadedSource:
    import torch
    from transformers import LlamaForCausalLM

    ckpt, tok_path = _find_files(path)
    h = read_header(ckpt)
    if h.dim % h.n_heads or h.n_heads % h.n_kv_heads:
        raise BadFormat(f"{ckpt}: header dim={h.dim} heads={h.n_heads} kv_heads={h.n_kv_heads} is inconsistent")
    weights = read_weights(ckpt, h)
    pieces, scores = read_tokenizer_bin(tok_path, h.vocab_size)
    tokenizer = build_tokenizer(pieces, scores)
    config = hf_config(h)
    model = LlamaForCausalLM(config)
    state = {k: torch.from_numpy(v) for k, v in to_hf_state_dict(weights, h).items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [m for m in missing if not (h.shared_classifier and m == "lm_head.weight")]
    if missing or unexpected:
        raise BadFormat(f"{ckpt}: weight mapping incomplete (missing {missing}, unexpected {unexpected})")
    model.tie_weights()
    model.eval()
    return LoadedSource(
        kind="llama2c",
        path=str(path),
        name=ckpt.stem,
        sha256=sha256_files([ckpt, tok_path]),
        model=model,
        tokenizer=tokenizer,
        revision=None,
        files=[str(ckpt), str(tok_path)],
    )


SOURCES.add("llama2c", SourceReader("llama2c", detect, load))
