"""WebllamaLM: the scoring math shared by every webllama backend, on top of lm-eval's TemplateLM.

A backend gives token ids in and logits (or generated token ids) out; everything lm-eval asks for is
computed here, the same way for all of them, so that differences between backends are differences of
the model runtime and nothing else:

    loglikelihood          TemplateLM._encode_pair -> _loglikelihood_tokens -> score_pairs (batched)
    loglikelihood_rolling  get_rolling_token_windows + make_disjoint_window -> _loglikelihood_tokens
    generate_until         left-truncated prompt -> generate(prompts, GenOptions) -> decode, cut at stops

Subclasses implement:
    forward_logits(input_ids (B,T) i64, attention_mask (B,T) i64) -> logits (B,T,V) f32   [right padding]
    generate(prompts: list[list[int]], opts: GenOptions) -> list[list[int]]             [new tokens only]
and may override score_pairs (the browser does: it scores inside the page and returns only sums).

Tokenization mirrors lm-eval's `hf` model exactly (same tokenizer call, same BOS rule, same truncation),
which is what makes `webllama-native` agree with `hf` on the same checkpoint.
"""

from __future__ import annotations

import json
from abc import abstractmethod
from dataclasses import dataclass

import numpy as np
from lm_eval import utils
from lm_eval.api.model import TemplateLM
from lm_eval.models.utils import (
    _add_special_kwargs,
    handle_stop_sequences,
    has_bos_prefix,
    normalize_gen_kwargs,
    postprocess_generated_text,
)
from tqdm import tqdm
from webllama.evalsuite.errors import BackendError

DEFAULT_MAX_GEN_TOKS = 256
LOGITS_BUDGET = 256 * 2**20  # bytes of float32 logits one forward call may return


@dataclass(frozen=True)
class GenOptions:
    """How to generate one batch of continuations (lm-eval gen_kwargs, normalized)."""

    max_new_tokens: int
    until: tuple[str, ...]  # stop strings; the output is cut at the first one
    eos_ids: tuple[int, ...]
    do_sample: bool = False
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int = 1234


# A scoring pair: (context tokens, continuation tokens), len(ctx) >= 1, len(ctx) + len(cont) <= max_length + 1.
Pair = tuple[list[int], list[int]]


class WebllamaLM(TemplateLM):
    """Shared base class; see the module docstring for the contract of subclasses."""

    backend = "causal"
    sort_by_length = True  # longest first: least padding per batch (the browser keeps lm-eval's order)

    def __init__(self, tokenizer, max_length: int, batch_size: int | str = 8, seed: int = 1234) -> None:
        super().__init__()
        self.tokenizer = tokenizer  # transformers PreTrainedTokenizerFast
        self._max_length = int(max_length)
        self.batch_size = 8 if batch_size in (None, "auto") else int(batch_size)
        self.seed = int(seed)

    # ----------------------------------------------------------------------------------- subclass API
    @abstractmethod
    def forward_logits(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """(B,T) int64 ids + (B,T) int64 mask, right-padded -> (B,T,V) float32 logits."""

    @abstractmethod
    def generate(self, prompts: list[list[int]], opts: GenOptions) -> list[list[int]]:
        """New token ids for each prompt; may run past a stop string (the caller cuts), never past eos."""

    @property
    @abstractmethod
    def vocab_size(self) -> int: ...

    def describe(self) -> dict:
        """What to record about the model in the results file (sha, variant, provider ...)."""
        return {}

    # ----------------------------------------------------------------------------------- tokenizer
    @property
    def eot_token_id(self) -> int:
        return self.tokenizer.eos_token_id

    @property
    def prefix_token_id(self) -> int:
        bos = self.tokenizer.bos_token_id
        return bos if bos is not None else self.tokenizer.eos_token_id

    @property
    def max_length(self) -> int:
        return self._max_length

    @property
    def max_gen_toks(self) -> int:
        return DEFAULT_MAX_GEN_TOKS

    @property
    def tokenizer_name(self) -> str:
        return self.tokenizer.name_or_path.replace("/", "__")

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs) -> list[int]:
        """lm-eval hf semantics: tokenizer default specials, none if the text already starts with BOS."""
        special = _add_special_kwargs(add_special_tokens, None)
        if add_special_tokens is None and has_bos_prefix(string, self.tokenizer.decode(self.prefix_token_id)):
            special["add_special_tokens"] = False
        return self.tokenizer.encode(string, **special)

    def tok_decode(self, tokens: list[int], skip_special_tokens: bool = True) -> str:
        return self.tokenizer.decode(tokens, skip_special_tokens=skip_special_tokens)

    # ----------------------------------------------------------------------------------- scoring
    def score_pairs(self, pairs: list[Pair]) -> list[tuple[float, bool]]:
        """Log-likelihood of each continuation and whether it is the greedy one, in one forward call."""
        seqs = [(ctx + cont)[:-1] for ctx, cont in pairs]
        width = max(len(s) for s in seqs)
        ids = np.zeros((len(seqs), width), dtype=np.int64)  # (B,T) right-padded with id 0
        mask = np.zeros((len(seqs), width), dtype=np.int64)  # (B,T)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = s
            mask[i, : len(s)] = 1
        logits = self.forward_logits(ids, mask)  # (B,T,V) f32
        return [_score_one(logits[i, : len(s)], cont) for i, (s, (_, cont)) in enumerate(zip(seqs, pairs, strict=True))]

    def _truncate(self, ctx: list[int], cont: list[int]) -> Pair:
        """hf's rule: keep the last max_length+1 tokens of ctx+cont; the continuation must fit."""
        if len(cont) > self.max_length:
            raise BackendError(f"continuation of {len(cont)} tokens is longer than the model context ({self.max_length})")
        whole = (ctx + cont)[-(self.max_length + 1) :]
        return whole[: len(whole) - len(cont)], cont

    def _batches(self, order: list[int], pairs: list[Pair]) -> list[list[int]]:
        """Chunks of indices (longest first) within batch_size and the logits memory budget."""
        out, cur, limit = [], [], 1
        for i in order:
            if not cur:  # the first index of a chunk is its longest sequence
                width = len(pairs[i][0]) + len(pairs[i][1])
                limit = min(self.batch_size, max(1, LOGITS_BUDGET // (4 * width * max(1, self.vocab_size))))
            cur.append(i)
            if len(cur) >= limit:
                out.append(cur)
                cur = []
        if cur:
            out.append(cur)
        return out

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs) -> list[tuple[float, bool]]:
        """requests: [((context, continuation) | None, context_enc, continuation_enc)] -> [(ll, is_greedy)]."""
        pairs = [self._truncate(list(ctx), list(cont)) for _, ctx, cont in requests]
        order = list(range(len(pairs)))
        if self.sort_by_length:
            order.sort(key=lambda i: (-(len(pairs[i][0]) + len(pairs[i][1])), i))
        results: list[tuple[float, bool] | None] = [None] * len(pairs)
        pbar = tqdm(total=len(pairs), disable=disable_tqdm, desc="Scoring log-likelihoods")
        for chunk in self._batches(order, pairs):
            for i, res in zip(chunk, self.score_pairs([pairs[i] for i in chunk]), strict=True):
                results[i] = res
                if requests[i][0] is not None:
                    self.cache_hook.add_partial("loglikelihood", requests[i][0], res)
            pbar.update(len(chunk))
        pbar.close()
        return results  # type: ignore[return-value]

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        """Sum of log-likelihoods over disjoint rolling windows (perplexity), one request per document."""
        out = []
        for (string,) in tqdm([r.args for r in requests], disable=disable_tqdm, desc="Rolling log-likelihoods"):
            windows = map(
                utils.make_disjoint_window,
                utils.get_rolling_token_windows(
                    token_list=self.tok_encode(string),
                    prefix_token=self.prefix_token_id,
                    max_seq_len=self.max_length,
                    context_len=1,
                ),
            )
            scores = self._loglikelihood_tokens([(None, c, t) for c, t in windows], disable_tqdm=True)
            total = float(sum(ll for ll, _ in scores))
            out.append(total)
            self.cache_hook.add_partial("loglikelihood_rolling", (string,), total)
        return out

    # ----------------------------------------------------------------------------------- generation
    def gen_options(self, gen_kwargs: dict) -> GenOptions:
        kwargs = normalize_gen_kwargs(dict(gen_kwargs), self.max_gen_toks)
        until = handle_stop_sequences(kwargs.pop("until", None), eos=self.tok_decode([self.eot_token_id], False))
        return GenOptions(
            max_new_tokens=int(kwargs.pop("max_gen_toks")),
            until=tuple(until),
            eos_ids=(self.eot_token_id,),
            do_sample=bool(kwargs.get("do_sample", False)),
            temperature=float(kwargs.get("temperature", 0.0) or 0.0),
            top_p=float(kwargs.get("top_p", 1.0) or 1.0),
            top_k=int(kwargs.get("top_k", 0) or 0),
            seed=self.seed,
        )

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        """Group requests by gen_kwargs, generate in batches, decode, cut at the first stop string."""
        args = [r.args for r in requests]
        groups: dict[str, list[int]] = {}
        for i, (_, gen_kwargs) in enumerate(args):
            groups.setdefault(json.dumps(gen_kwargs, sort_keys=True, default=str), []).append(i)
        results: list[str | None] = [None] * len(args)
        pbar = tqdm(total=len(args), disable=disable_tqdm, desc="Generating")
        for idx in groups.values():
            opts = self.gen_options(args[idx[0]][1])
            max_ctx = self.max_length - opts.max_new_tokens
            if max_ctx <= 0:
                raise BackendError(f"max_gen_toks {opts.max_new_tokens} leaves no room in context {self.max_length}")
            for start in range(0, len(idx), self.batch_size):
                chunk = idx[start : start + self.batch_size]
                prompts = [self.tok_encode(args[i][0])[-max_ctx:] for i in chunk]
                for i, new in zip(chunk, self.generate(prompts, opts), strict=True):
                    text = postprocess_generated_text(self.tok_decode(new), list(opts.until), None)
                    results[i] = text
                    self.cache_hook.add_partial("generate_until", args[i], text)
                pbar.update(len(chunk))
        pbar.close()
        return results  # type: ignore[return-value]


SCORE_CHUNK = 256  # rows of float64 log-softmax held at once: (256, V) instead of (8192, V) for perplexity windows


def _score_one(logits, cont: list[int]) -> tuple[float, bool]:
    """logits (T,V) of one unpadded sequence; the last len(cont) rows predict the continuation.

    Rows are scored in chunks: a whole 8192-token rolling window of a 49k-vocabulary model would otherwise
    need several (T,V) float64 temporaries (~13 GB; SmolLM2 wikitext was OOM-killed that way)."""
    target = np.asarray(cont, dtype=np.int64)
    start = len(logits) - len(cont)
    ll, greedy = 0.0, True
    for i in range(0, len(cont), SCORE_CHUNK):
        rows = np.asarray(logits[start + i : start + i + SCORE_CHUNK], dtype=np.float64)  # (c,V)
        rows -= rows.max(axis=-1, keepdims=True)
        logp = rows - np.log(np.exp(rows).sum(axis=-1, keepdims=True))  # (c,V) log-softmax
        t = target[i : i + SCORE_CHUNK]
        ll += float(logp[np.arange(len(t)), t].sum())
        greedy = greedy and bool((logp.argmax(axis=-1) == t).all())
    return ll, greedy


class StopWatcher:
    """Tells a token-by-token generator when to stop: eos, or a stop string in the decoded new text."""

    def __init__(self, tokenizer, opts: GenOptions) -> None:
        self.tokenizer = tokenizer
        self.stops = [s for s in opts.until if s]
        self.eos = set(opts.eos_ids)

    def done(self, new_tokens: list[int]) -> bool:
        if not new_tokens:
            return False
        if new_tokens[-1] in self.eos:
            return True
        if not self.stops:
            return False
        text = self.tokenizer.decode(new_tokens, skip_special_tokens=True)
        return any(s in text for s in self.stops)
