"""vllm_media.patched: the one place that changes trl's vLLM generation object, restored whatever happens.

The requests it makes vLLM send are tested end to end against trl's real `VLLMGeneration` in tests/test_trainer.py
(`-k vllm`); these tests check what it sets and that everything is put back.
"""

from types import SimpleNamespace

import numpy as np
import pytest

from videorft_hf.processing import RowMedia
from videorft_hf.video import VideoNotFoundError
from videorft_hf.vllm_media import MultimodalClient, MultimodalLLM, VLLMMedia, media_payloads, patched, place_features


def _rows():
    frames = np.zeros((2, 28, 28, 3), dtype=np.uint8)
    return [
        RowMedia(videos=[(frames, None)]),
        RowMedia(),  # a text row
        RowMedia(error=VideoNotFoundError("gone.mp4", "no such file")),  # a skipped row
    ]


def test_media_payloads_one_per_row_with_media():
    payloads = media_payloads(_rows())
    assert isinstance(payloads[0][0], VLLMMedia) and payloads[0][0].name == "row 0 of the generation batch"
    assert payloads[1:] == [None, None]
    assert media_payloads(_rows()[1:]) is None  # no row with media: trl's text-only request


def test_server_mode_is_patched_and_restored_even_when_generation_fails():
    client = SimpleNamespace(base_url="http://server")
    generation = SimpleNamespace(mode="server", vllm_client=client, generation_kwargs={"logit_bias": {5: 1.0}})
    with pytest.raises(RuntimeError, match="generation failed"):
        with patched(generation, _rows(), [7, 8]) as images:
            assert isinstance(generation.vllm_client, MultimodalClient) and generation.vllm_client.client is client
            assert generation._place_features is place_features
            assert generation.generation_kwargs["logit_bias"] == {5: 1.0, 7: -100.0, 8: -100.0}
            assert images[0] and images[1] is None
            raise RuntimeError("generation failed")
    assert generation.vllm_client is client and "_place_features" not in vars(generation)
    assert generation.generation_kwargs == {"logit_bias": {5: 1.0}}


def test_a_server_process_without_a_client_and_colocate_mode():
    other_rank = SimpleNamespace(mode="server", vllm_client=None, generation_kwargs={})
    with patched(other_rank, _rows(), [7]):
        assert other_rank.vllm_client is None and "_place_features" not in vars(other_rank)
    assert other_rank.generation_kwargs == {}
    engine = object()
    colocate = SimpleNamespace(mode="colocate", llm=engine, generation_kwargs={})
    with patched(colocate, _rows()):
        assert isinstance(colocate.llm, MultimodalLLM) and colocate.llm.llm is engine
        assert colocate.generation_kwargs == {}  # nothing to suppress: no bias set
    assert colocate.llm is engine
