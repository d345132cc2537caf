"""A bundle variant on onnxruntime in Python: the reference runtime every other runtime must match.

`forward` scores whole sequences (no cache; left or right padding), `greedy` decodes with the KV
cache exactly as the browser engine does (prefill, then one token per step feeding `present.*` back
as `past_key_values.*`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from webllama.converter.errors import BundleError
from webllama.converter.manifest import Bundle, open_bundle

PREFILL_CHUNK = 1024  # tokens per call when forward() scores one long sequence (see forward)
APPEND_STEP = 256  # an appended cache grows in steps of this many positions, as web/engine/kv_cache.js APPEND_STEP


class OrtModel:
    def __init__(
        self,
        bundle: str | Path | Bundle,
        variant: str | None = None,
        provider: str = "CPUExecutionProvider",
        threads: int | None = None,
        graph: str = "default",
    ) -> None:
        """graph: "default" (the variant's graph) or "wasm" (its WASM graph, the one the browser engine runs on
        WASM: int8 weights in MatMulInteger with per-token 8-bit activations, converter/quant/unpack.py), run with
        the same session setting as there."""
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self.bundle = bundle if isinstance(bundle, Bundle) else open_bundle(bundle)
        self.spec = self.bundle.variant(variant)
        self.variant = self.spec["name"]
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if threads:
            opts.intra_op_num_threads = threads
        model = self.spec["model"]
        if graph == "wasm":
            if not self.spec.get("wasm_model"):
                raise BundleError(
                    f"{self.bundle.root}: variant {self.variant} has no WASM graph (only float32 int4 "
                    "variants get one); convert the bundle again with this version"
                )
            model = self.spec["wasm_model"]
            # older bundles' WASM graph folds DequantizeLinear at load; the engine sets this for every WASM graph
            opts.add_session_config_entry("session.disable_quant_qdq", "1")
        elif graph != "default":
            raise ValueError(f"graph must be 'default' or 'wasm', not {graph!r}")
        self.graph = graph
        self.session = ort.InferenceSession(str(self.bundle.root / model), opts, providers=[provider])
        # A fused bundle's WASM graph has decomposed attention for one unpadded sequence (what the browser
        # engine feeds); padded batches would silently attend to padding there.
        meta = self.session.get_modelmeta().custom_metadata_map
        self.single_sequence = meta.get("webllama.single_sequence") == "1"
        # present.* are the new positions only; the past may carry masked spare slots (quant/unfuse_attention.py)
        self.kv_append = meta.get("webllama.kv_append") == "1"
        self.tokenizer = Tokenizer.from_file(str(self.bundle.root / "tokenizer.json"))
        cfg = self.bundle.manifest["config"]
        self.n_layers = cfg["num_hidden_layers"]
        self.n_kv_heads = cfg["num_key_value_heads"]
        self.head_dim = cfg["head_dim"]
        self.context_length = self.bundle.manifest["context_length"]
        tok = self.bundle.manifest["tokenizer"]
        self.bos_token_id: int | None = tok["bos_token_id"]
        self.eos_token_ids: list[int] = tok["eos_token_ids"]
        self.kv_dtype = np.float16 if self.spec["kv_dtype"] == "float16" else np.float32
        self.past_names = [i.name for i in self.session.get_inputs() if i.name.startswith("past_key_values.")]
        self.present_names = [o.name for o in self.session.get_outputs() if o.name.startswith("present.")]

    def empty_past(self, batch: int) -> dict[str, np.ndarray]:
        shape = (batch, self.n_kv_heads, 0, self.head_dim)
        return {n: np.zeros(shape, dtype=self.kv_dtype) for n in self.past_names}

    def run(self, input_ids: np.ndarray, attention_mask: np.ndarray, past: dict[str, np.ndarray]):
        """One step: logits (B, T, V) float32 and the new cache."""
        seq = input_ids.shape[1]
        if self.single_sequence and (input_ids.shape[0] != 1 or not np.all(attention_mask)):
            raise BundleError(
                f"{self.bundle.root}: the {self.graph} graph of {self.variant} runs one unpadded sequence at a time "
                f"(got batch {input_ids.shape[0]}, padded: {not np.all(attention_mask)}); use graph='default' for batches"
            )
        # Position of each token = number of real tokens before it (HF's convention for padding).
        position_ids = np.clip(np.cumsum(attention_mask, axis=1) - 1, 0, None)[:, -seq:]
        feeds = {
            "input_ids": input_ids.astype(np.int64),
            "attention_mask": attention_mask.astype(np.int64),
            "position_ids": position_ids.astype(np.int64),
            **past,
        }
        out = self.session.run(["logits", *self.present_names], feeds)
        new_past = {p.replace("present.", "past_key_values.", 1): v for p, v in zip(self.present_names, out[1:], strict=True)}
        if self.kv_append:  # the graph returned the new positions: the cache is the past followed by them
            new_past = {n: np.concatenate([past[n], v], axis=2) for n, v in new_past.items()}
        return out[0].astype(np.float32, copy=False), new_past

    def forward(self, input_ids: np.ndarray, attention_mask: np.ndarray | None = None) -> np.ndarray:
        """Logits (B, T, V) for whole sequences, starting from an empty cache.

        One unpadded sequence longer than PREFILL_CHUNK is fed in chunks through the KV cache: causal
        attention makes that the same computation, but the decomposed-attention graph's (heads, T, T)
        score tensors stay (heads, chunk, T) instead of growing with T squared (an 8192-token
        perplexity window of SmolLM2 took > 22 GB in one call)."""
        input_ids = np.asarray(input_ids, dtype=np.int64)
        if attention_mask is None:
            attention_mask = np.ones_like(input_ids)
        attention_mask = np.asarray(attention_mask, dtype=np.int64)
        batch, seq = input_ids.shape
        past = self.empty_past(batch)
        if batch != 1 or seq <= PREFILL_CHUNK or not attention_mask.all():
            return self.run(input_ids, attention_mask, past)[0]
        parts = []
        for start in range(0, seq, PREFILL_CHUNK):
            end = min(seq, start + PREFILL_CHUNK)
            logits, past = self.run(input_ids[:, start:end], attention_mask[:, :end], past)  # (1,c,V)
            parts.append(logits)
        return np.concatenate(parts, axis=1)  # (1,T,V)

    def greedy(
        self, prompt_ids: list[int], max_new_tokens: int, eos: bool = True, share_buffer_capacity: int | None = None
    ) -> list[int]:
        """Greedy decoding with the KV cache; returns only the new tokens.

        share_buffer_capacity: decode as the engine's fixed WebGPU cache does (web/engine/kv_cache.js): one
        buffer of that many positions per tensor bound as both past and present, written in place by
        GroupQueryAttention (the variant's `past_present_share_buffer`), doubled when full."""
        if share_buffer_capacity is not None:
            return self._greedy_shared(prompt_ids, max_new_tokens, eos, share_buffer_capacity)
        if self.kv_append:
            return self._greedy_append(prompt_ids, max_new_tokens, eos)
        ids = np.array([prompt_ids], dtype=np.int64)
        mask = np.ones_like(ids)
        past = self.empty_past(1)
        out: list[int] = []
        for _ in range(max_new_tokens):
            logits, past = self.run(ids, mask, past)
            nxt = int(np.argmax(logits[0, -1]))
            out.append(nxt)
            if eos and nxt in self.eos_token_ids:
                break
            ids = np.array([[nxt]], dtype=np.int64)
            mask = np.concatenate([mask, np.ones((1, 1), dtype=np.int64)], axis=1)
        return out

    def _decode_steps(self, prompt_ids: list[int], max_new_tokens: int, eos: bool, step) -> list[int]:
        """The greedy loop of the engine-shaped decoders: `step(feeds, held, need)` runs one call on the token
        feeds of `need - held` new tokens after `held` cached ones and returns its logits."""
        held, feed, out = 0, list(prompt_ids), []
        for _ in range(max_new_tokens):
            need = held + len(feed)
            feeds = {
                "input_ids": np.array([feed], dtype=np.int64),
                "attention_mask": np.ones((1, need), dtype=np.int64),
                "position_ids": np.arange(held, need, dtype=np.int64)[None],
            }
            nxt = int(np.argmax(step(feeds, held, need)[0, -1]))
            out.append(nxt)
            if eos and nxt in self.eos_token_ids:
                break
            held, feed = need, [nxt]
        return out

    def _greedy_shared(self, prompt_ids: list[int], max_new_tokens: int, eos: bool, capacity: int) -> list[int]:
        import onnxruntime as ort

        if not self.spec.get("past_present_share_buffer") or self.graph != "default":
            raise BundleError(
                f"{self.bundle.root}: the {self.graph} graph of {self.variant} has no past_present_share_buffer "
                "(its attention is not GroupQueryAttention); decode it with the growing cache"
            )
        bufs: dict[str, object] = {}

        def step(feeds: dict, held: int, need: int) -> np.ndarray:
            nonlocal bufs, capacity
            if need > capacity or not bufs:
                while capacity < need:
                    capacity *= 2
                shape = (1, self.n_kv_heads, min(capacity, self.context_length), self.head_dim)
                grown = {}
                for n in self.past_names:  # carry the held positions over (NaN elsewhere: never read)
                    a = np.full(shape, np.nan, dtype=self.kv_dtype)
                    if n in bufs:
                        a[:, :, :held] = bufs[n].numpy()[:, :, :held]
                    grown[n] = ort.OrtValue.ortvalue_from_numpy(a)
                bufs = grown
            b = self.session.io_binding()
            for n, v in feeds.items():
                b.bind_cpu_input(n, v)
            for n, v in bufs.items():
                b.bind_ortvalue_input(n, v)
                b.bind_ortvalue_output(n.replace("past_key_values.", "present.", 1), v)
            b.bind_output("logits")
            self.session.run_with_iobinding(b)
            return b.copy_outputs_to_cpu()[-1]

        return self._decode_steps(prompt_ids, max_new_tokens, eos, step)

    def _greedy_append(self, prompt_ids: list[int], max_new_tokens: int, eos: bool) -> list[int]:
        """Decode as the engine's WASM cache does (AppendKvCache): one buffer per tensor whose capacity is the held length
        rounded up to APPEND_STEP, fed whole (the slots past the held length are zeros, masked by the graph), and
        each run's new positions copied in after the held ones."""
        bufs: dict[str, np.ndarray] = {}

        def step(feeds: dict, held: int, need: int) -> np.ndarray:
            nonlocal bufs
            cap = min(-(-need // APPEND_STEP) * APPEND_STEP, self.context_length)
            if not bufs or cap != next(iter(bufs.values())).shape[2]:
                grown = {n: np.zeros((1, self.n_kv_heads, cap, self.head_dim), dtype=self.kv_dtype) for n in self.past_names}
                for n, a in bufs.items():
                    grown[n][:, :, :held] = a[:, :, :held]
                bufs = grown
            logits, *present = self.session.run(["logits", *self.present_names], {**feeds, **bufs})
            for n, v in zip(self.present_names, present, strict=True):
                bufs[n.replace("present.", "past_key_values.", 1)][:, :, held:need] = v
            return logits

        return self._decode_steps(prompt_ids, max_new_tokens, eos, step)
