"""OrtModel.forward: a long sequence scored in KV-cache chunks equals the one-call forward."""

import numpy as np
from webllama.converter import ort_model
from webllama.converter.ort_model import OrtModel


def test_chunked_forward_equals_one_call(s260_bundle, monkeypatch):
    for variant in ("fp32", "q4"):
        m = OrtModel(s260_bundle, variant=variant)
        ids = np.random.default_rng(0).integers(3, 512, size=(1, 100))  # (1,T)
        whole = m.forward(ids)  # (1,T,V): T <= PREFILL_CHUNK, one call
        monkeypatch.setattr(ort_model, "PREFILL_CHUNK", 16)
        chunked = m.forward(ids)  # 7 calls through the cache
        monkeypatch.setattr(ort_model, "PREFILL_CHUNK", 1024)
        assert chunked.shape == whole.shape
        np.testing.assert_allclose(chunked, whole, atol=2e-4, rtol=0)
        assert (chunked.argmax(-1) == whole.argmax(-1)).all()


def test_share_buffer_decoding_equals_the_growing_cache(s260_int8_bundle, s260_bundle):
    """The manifest's past_present_share_buffer promise, kept on onnxruntime CPU: one buffer per KV tensor bound
    as past and present (what the engine's fixed WebGPU cache does), doubled 8 -> 16 -> 32 -> 64 -> 128, gives
    the same greedy ids as feeding present back as past; a graph without the flag is refused by name."""
    import pytest
    from webllama.converter.errors import BundleError
    from webllama.converter.manifest import read_manifest

    assert read_manifest(s260_int8_bundle)["variants"]["q4"]["past_present_share_buffer"] is True  # fused: GQA
    assert read_manifest(s260_bundle)["variants"]["q4"]["past_present_share_buffer"] is False  # optimum export
    m = OrtModel(s260_int8_bundle, variant="q4")
    prompt = [m.bos_token_id, *m.tokenizer.encode("Once upon a time", add_special_tokens=False).ids]
    want = m.greedy(prompt, 100, eos=False)
    assert m.greedy(prompt, 100, eos=False, share_buffer_capacity=8) == want
    with pytest.raises(BundleError, match="no past_present_share_buffer"):
        OrtModel(s260_bundle, variant="q4").greedy(prompt, 4, share_buffer_capacity=8)
