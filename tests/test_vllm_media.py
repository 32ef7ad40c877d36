"""vllm_media.patched: the one place that changes trl's vLLM generation object, restored whatever happens.

The requests it makes vLLM send are tested end to end against trl's real `VLLMGeneration` in tests/test_trainer.py
(`-k vllm`); these tests check what it sets and that everything is put back.
"""

from types import SimpleNamespace

import numpy as np
import pytest

from videorft_hf.processing import RowMedia
from videorft_hf.video import VideoNotFoundError
from videorft_hf.vllm_media import (
    MultimodalClient,
    MultimodalLLM,
    VLLMMedia,
    VLLMPromptMismatchError,
    VLLMServerError,
    media_payloads,
    patched,
    place_features,
)


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


class _Session:
    """Records the POSTs a client makes; answers each with `status`."""

    def __init__(self, status=200):
        self.posts, self.status = [], status

    def post(self, url, json=None):
        self.posts.append(url)
        return SimpleNamespace(status_code=self.status, text="Not Found", json=lambda: {})


def _engine():
    resets = []
    return SimpleNamespace(llm_engine=SimpleNamespace(reset_encoder_cache=lambda: resets.append(1))), resets


def test_server_mode_is_patched_and_restored_even_when_generation_fails():
    client = SimpleNamespace(base_url="http://server", session=_Session())
    generation = SimpleNamespace(mode="server", vllm_client=client, generation_kwargs={"logit_bias": {5: 1.0}})
    with pytest.raises(RuntimeError, match="generation failed"):
        with patched(generation, _rows(), [7, 8]) as images:
            assert isinstance(generation.vllm_client, MultimodalClient) and generation.vllm_client.client is client
            assert generation._place_features is place_features
            assert generation.generation_kwargs["logit_bias"] == {5: 1.0, 7: -100.0, 8: -100.0}
            assert images[0] and images[1] is None
            # the server's cached vision features (from weights before the last sync) are dropped first
            assert client.session.posts == ["http://server/reset_encoder_cache"]
            raise RuntimeError("generation failed")
    assert generation.vllm_client is client and "_place_features" not in vars(generation)
    assert generation.generation_kwargs == {"logit_bias": {5: 1.0}}


def test_a_server_process_without_a_client_and_colocate_mode():
    other_rank = SimpleNamespace(mode="server", vllm_client=None, generation_kwargs={})
    with patched(other_rank, _rows(), [7]):
        assert other_rank.vllm_client is None and "_place_features" not in vars(other_rank)
    assert other_rank.generation_kwargs == {}
    engine, resets = _engine()
    colocate = SimpleNamespace(mode="colocate", llm=engine, generation_kwargs={})
    with patched(colocate, _rows()):
        assert isinstance(colocate.llm, MultimodalLLM) and colocate.llm.llm is engine
        assert colocate.generation_kwargs == {}  # nothing to suppress: no bias set
        assert resets == [1]  # the engine's encoder cache is empty before a media batch
    assert colocate.llm is engine
    with patched(colocate, _rows()[1:]):  # no media: the cache stays
        assert resets == [1]


def test_a_server_without_dev_mode_says_which_variable_to_set():
    client = SimpleNamespace(base_url="http://server", session=_Session(status=404))
    generation = SimpleNamespace(mode="server", vllm_client=client, generation_kwargs={})
    with pytest.raises(VLLMServerError, match=r"VLLM_SERVER_DEV_MODE=1"):
        with patched(generation, _rows()):
            pass
    assert generation.vllm_client is client


class _ExpandingEngine:
    """Expands each placeholder token of a prompt into `expand` copies, as vLLM's processor does with a token prompt,
    and echoes the prompt it generated from."""

    def __init__(self, placeholder, expand):
        self.placeholder, self.expand, self.prompts = placeholder, expand, []

    def generate(self, prompts, *args, **kwargs):
        self.prompts.extend(prompts)
        outputs = []
        for prompt in prompts:
            ids = [t for token in prompt["prompt_token_ids"] for t in ([token] * self.expand if token == self.placeholder else [token])]
            outputs.append(SimpleNamespace(prompt_token_ids=ids, outputs=[]))
        return outputs


def test_colocate_sends_the_template_ids_and_checks_the_engine_expanded_them_as_the_trainer():
    frames = np.zeros((2, 28, 28, 3), dtype=np.uint8)
    media = VLLMMedia(videos=[(frames, {"fps": 2.0})], name="row 0 of the generation batch", template_ids=[1, 9, 2])
    expanded = [1, 9, 9, 9, 2]  # the trainer's prompt: the video's 3 placeholders
    engine = _ExpandingEngine(placeholder=9, expand=3)
    outputs = MultimodalLLM(engine).generate([{"prompt_token_ids": expanded, "multi_modal_data": {"image": media}}])
    assert engine.prompts[0]["prompt_token_ids"] == [1, 9, 2] and outputs[0].prompt_token_ids == expanded
    assert engine.prompts[0]["mm_processor_kwargs"] == {"do_sample_frames": False}
    text = {"prompt_token_ids": [1, 2]}  # a text row of the same batch goes as it is
    MultimodalLLM(engine).generate([text])
    assert engine.prompts[-1] is text and text == {"prompt_token_ids": [1, 2]}

    other = _ExpandingEngine(placeholder=9, expand=2)  # an engine whose processor makes 2 tokens of the video
    with pytest.raises(VLLMPromptMismatchError, match=r"row 0 of the generation batch into a prompt of 4 tokens that differs from the trainer.s \(5 tokens\) from token 3"):
        MultimodalLLM(other).generate([{"prompt_token_ids": expanded, "multi_modal_data": {"image": media}}])


# ------------------------------------------------------------------------------------------- what a server needs
VLLM_031_REFUSAL = (
    '{"error":{"message":"Per-request mm_processor_kwargs are disabled by default for security reasons. Start the '
    'server with --trust-request-mm-kwargs only when clients are trusted.","type":"BadRequestError","code":400}}'
)


def test_a_refused_render_names_the_flag_the_server_lacks():
    """vLLM 0.31's answer to a render request with `mm_processor_kwargs` when started without the flag (its text, as
    the real server sends it: tests/test_vllm_engine.py gets it from one), and a server without the render route."""
    from videorft_hf.vllm_media import render_refusal

    message = render_refusal("http://gpu7:8000", "row 2 of the generation batch", 400, VLLM_031_REFUSAL)
    assert "refused the media of row 2 of the generation batch" in message
    assert "Restart it with --trust-request-mm-kwargs" in message and "400" in message
    message = render_refusal("http://gpu7:8000", "row 0 of the generation batch", 404, '{"detail":"Not Found"}')
    assert "restart it with --enable-scale-out" in message
    assert render_refusal("http://s", "row 1", 500, "boom") == "The vLLM server at http://s could not render the media of row 1: 500 boom"


def _readme_serve_line() -> str:
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    lines = [line for line in readme.splitlines() if " vllm serve " in f" {line} "]
    assert len(lines) == 1, lines
    return lines[0]


def test_the_readme_serve_command_has_every_flag_server_mode_needs():
    """The package's render flags, trl's weight sync (development endpoints, NCCL weight transfer) and the sampled
    log-probs the importance-sampling correction compares (processed: after temperature and logit bias). The real
    server started with this command is tested in tests/test_vllm_engine.py."""
    import shlex

    from videorft_hf.vllm_media import SERVER_FLAGS

    words = shlex.split(_readme_serve_line())
    assert "VLLM_SERVER_DEV_MODE=1" in words[: words.index("vllm")]
    for flag in SERVER_FLAGS:
        assert flag in words, flag
    assert words[words.index("--logprobs-mode") + 1] == "processed_logprobs"
    assert words[words.index("--weight-transfer-config") + 1] == '{"backend": "nccl"}'


def test_the_vllm_extra_is_trls_supported_range():
    """pyproject's `vllm` extra admits exactly the vLLM releases trl 1.16 supports (trl's own `vllm` extra)."""
    import ast
    import importlib.metadata
    import re
    from pathlib import Path

    from packaging.requirements import Requirement

    pyproject = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text(encoding="utf-8")
    (extra,) = re.findall(r"^vllm = (\[.*?\])", pyproject, flags=re.M)  # (tomllib is not in Python 3.10)
    ours = [Requirement(r) for r in ast.literal_eval(extra)]
    trls = [Requirement(r) for r in importlib.metadata.requires("trl")]
    trl_vllm = [r for r in trls if r.name == "vllm" and r.marker is not None and r.marker.evaluate({"extra": "vllm"})]
    assert [r.name for r in ours] == ["vllm"] and len(trl_vllm) == 1
    assert ours[0].specifier == trl_vllm[0].specifier, (str(ours[0].specifier), str(trl_vllm[0].specifier))
    assert not ours[0].specifier.contains("0.21.0") and ours[0].specifier.contains("0.31.0")
    assert not ours[0].specifier.contains("0.32.0")
