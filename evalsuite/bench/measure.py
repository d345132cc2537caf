"""The measurement protocol, the same for every runtime.

A Runner loads a model and times two things on token ids, each from an empty KV cache:
  prefill(ids) -> seconds from the prompt to the first new token (one forward over the prompt + argmax)
  decode(ids, n) -> seconds for n more greedy tokens after `ids` was prefilled (prefill not counted)
`run_protocol` warms up, repeats, and turns the timings into metric stats; memory is the peak RSS
of the processes that do the work (this one, or the browser's), sampled while they run.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Protocol

from webllama.evalsuite.bench.schema import stat

PROMPT_LENGTHS = (16, 128, 512)
DECODE_TOKENS = 128
DECODE_PROMPT = 128  # the product owner's targets: 128-token prompt, 128 decoded tokens


@dataclass(frozen=True)
class Settings:
    runs: int = 5
    warmup: int = 1
    prompt_lengths: tuple[int, ...] = PROMPT_LENGTHS
    decode_tokens: int = DECODE_TOKENS
    decode_prompt: int = DECODE_PROMPT
    load_runs: int = 3

    def capped(self, context_length: int) -> Settings:
        """Prompt lengths capped at the context; decode fits prompt + tokens in the context."""
        lengths = tuple(sorted({min(n, context_length - 1) for n in self.prompt_lengths}))
        dprompt = min(self.decode_prompt, max(1, context_length // 2))
        dtokens = min(self.decode_tokens, context_length - dprompt - 1)
        return Settings(self.runs, self.warmup, lengths, dtokens, dprompt, self.load_runs)

    def as_dict(self) -> dict:
        return {
            "runs": self.runs,
            "warmup": self.warmup,
            "prompt_lengths": list(self.prompt_lengths),
            "decode_tokens": self.decode_tokens,
            "decode_prompt_length": self.decode_prompt,
            "ttft_prompt_length": self.decode_prompt,
            "load_runs": self.load_runs,
        }


class Runner(Protocol):
    context_length: int  # these three are known after the first load()
    vocab_size: int
    bos_token_id: int | None

    def load(self) -> dict: ...  # {"load_s": float, "load_cached_s": float | None}; (re)loads the model
    def prefill(self, ids: list[int]) -> float: ...
    def decode(self, ids: list[int], n: int) -> float: ...
    def pids(self) -> list[int]: ...  # processes whose RSS counts as this runtime's memory


@dataclass
class PeakRss:
    """Samples the summed RSS of `pids()` every `interval` s in a thread; `peak` is the highest sum seen."""

    pids: object  # () -> list[int]
    interval: float = 0.05
    peak: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)

    def sample(self) -> int:
        import psutil

        total = 0
        for pid in self.pids():
            try:
                total += psutil.Process(pid).memory_info().rss
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
        self.peak = max(self.peak, total)
        return total

    def __enter__(self) -> PeakRss:
        self.sample()
        threading.Thread(target=self._loop, daemon=True).start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self.sample()


def prompt_ids(vocab_size: int, n: int, bos: int | None, seed: int = 0) -> list[int]:
    """A deterministic prompt of exactly n ids: BOS (when the model has one) then pseudo-random ids
    away from the special tokens at the start of the vocabulary. Speed does not depend on the text."""
    import numpy as np

    rng = np.random.default_rng(seed + n)
    body = rng.integers(min(256, vocab_size // 4), vocab_size, size=n).tolist()
    return ([bos] + body[: n - 1]) if bos is not None else body


def run_protocol(runner: Runner, settings: Settings, log=None) -> dict:
    """Warm-up, then `settings.runs` timed repeats of every measurement; returns the metrics dict."""
    log = log or (lambda msg: None)
    with PeakRss(runner.pids) as rss:
        baseline = rss.sample()  # nothing loaded yet: this process, or Chromium with the empty benchmark page
        loads = [runner.load() for _ in range(max(1, settings.load_runs))]
        log(f"loaded in {loads[0]['load_s']:.2f} s")
        s = settings.capped(runner.context_length)
        prompts = {n: prompt_ids(runner.vocab_size, n, runner.bos_token_id) for n in (*s.prompt_lengths, s.decode_prompt)}
        for _ in range(s.warmup):
            runner.prefill(prompts[s.decode_prompt])
            runner.decode(prompts[s.decode_prompt], min(8, s.decode_tokens))
        prefill = {n: [runner.prefill(prompts[n]) for _ in range(s.runs)] for n in s.prompt_lengths}
        log("prefill: " + ", ".join(f"{n}: {n / sorted(v)[len(v) // 2]:.1f} tok/s" for n, v in prefill.items()))
        ttft = prefill.get(s.decode_prompt) or [runner.prefill(prompts[s.decode_prompt]) for _ in range(s.runs)]
        decode = [runner.decode(prompts[s.decode_prompt], s.decode_tokens) for _ in range(s.runs)]
        log(f"decode: {s.decode_tokens / sorted(decode)[len(decode) // 2]:.1f} tok/s")
    cached = [x["load_cached_s"] for x in loads if x.get("load_cached_s") is not None]
    return {
        "settings": s.as_dict(),
        "load_s": stat([x["load_s"] for x in loads], "s"),
        "load_cached_s": stat(cached, "s") if cached else None,
        "ttft_s": stat(ttft, "s"),
        "prefill_tokens_per_s": {str(n): stat([n / t for t in v], "tokens/s") for n, v in prefill.items()},
        "decode_tokens_per_s": stat([s.decode_tokens / t for t in decode], "tokens/s"),
        "peak_rss_bytes": rss.peak,
        "baseline_rss_bytes": baseline,
        # what loading and running the model added, the same way for every runtime (browsers: every Chromium process)
        "peak_above_baseline_bytes": rss.peak - baseline,
    }


def timed(fn, *args) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - t0, out
