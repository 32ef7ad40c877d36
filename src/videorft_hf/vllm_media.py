"""Video and image rows for vLLM rollouts, in both of trl's vLLM modes.

trl 1.16 hands vLLM the images of a row (colocate: `multi_modal_data`; server: image features the server renders)
and nothing for video. `VideoGRPOTrainer` passes each row's decoded media as a `VLLMMedia` through the same `images`
argument of trl's `VLLMGeneration.generate`, so trl's own gathering carries it (to the main process in server mode,
across the tensor-parallel group in colocate mode); two adapters turn it into what vLLM takes:

- colocate: `MultimodalLLM` wraps `vllm.LLM` and replaces the payload trl put in `multi_modal_data` with the row's
  real data: each video as `(frames, metadata)` with `do_sample_frames=False` (vLLM's processor computes
  `second_per_grid_ts` and timestamps from the true fps and frame indices, as the trainer's processor did), images as
  PIL images. vLLM expands each image and video placeholder of a token prompt itself (an already expanded prompt
  would be expanded again), so the engine gets the row's prompt as the chat template wrote it
  (`VLLMMedia.template_ids`), and the prompt it expanded must equal the trainer's prompt ids, token for token, or
  `VLLMPromptMismatchError` names the row.
- server: `MultimodalClient` wraps trl's `VLLMClient`: the server renders each row from its frames, sent lossless
  through vLLM's frame-sequence video input (`data:video/jpeg;base64,<frame>,<frame>,...`, whose frames vLLM opens
  with PIL whatever their format; PNG here) with the metadata in `media_io_kwargs`; `place_features` then points the
  returned features at the trainer's own prompt ids by finding the exact token span the server expanded, and raises
  `VLLMPromptMismatchError` when the trainer's prompt does not contain it (never generating from misplaced features).

In both modes the token ids vLLM generates from are the ones the trainer's processor expanded (checked), so generation
and the log-prob passes see the same sequence. vLLM keeps the vision encoder's outputs by media content across
requests (its encoder cache), which outlive a weight update (trl resets only the prefix cache when it syncs weights):
`patched` resets that cache before each media batch, so every rollout's vision features come from the weights it is
sampled with. `patched` is the one place that changes trl's `VLLMGeneration` for this (through
`videorft_hf.internals.vllm_generation_patched`, which does the swapping): the trainer only enters it around a media
batch's generation call, and everything it set is restored on exit. Nothing here imports vLLM.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .internals import SUPPRESSED_LOGIT_BIAS, vllm_generation_patched
from .media_encoding import encode_image_data_url

if TYPE_CHECKING:
    from .processing import RowMedia

__all__ = [
    "MultimodalClient",
    "MultimodalLLM",
    "VLLMMedia",
    "VLLMPromptMismatchError",
    "VLLMServerError",
    "SERVER_FLAGS",
    "check_expanded",
    "frames_data_url",
    "media_payloads",
    "patched",
    "place_features",
    "render_refusal",
    "render_request",
]

logger = logging.getLogger(__name__)

RENDER_TOKEN_IDS = "_videorft_render_token_ids"  # carried from the render response to `place_features`
ROW_NAME = "_videorft_row"
_METADATA_KEYS = ("fps", "frames_indices", "total_num_frames", "duration")
_DEFAULT_CONCURRENCY = 64


class VLLMPromptMismatchError(ValueError):
    """The vision tokens vLLM expanded for a row (server or colocated engine) differ from the trainer's prompt ids."""


class VLLMServerError(RuntimeError):
    """The vLLM server refused to render a row's media."""


@dataclass
class VLLMMedia:
    """Decoded media of one row for vLLM: videos as `(uint8 frames (T, H, W, 3), metadata)`, images as PIL.

    `name` says which row this is in errors ("row 3 of the generation batch"); `template_ids` are the row's prompt
    token ids with one placeholder per image and video, as the chat template writes them (colocate mode)."""

    videos: list[tuple[np.ndarray, Any]] = field(default_factory=list)  # (frames, transformers VideoMetadata)
    images: list = field(default_factory=list)
    name: str = "a row"
    template_ids: list[int] | None = None

    def video_metadata(self, metadata) -> dict:
        """The metadata vLLM needs for one video (a `VideoMetadata`), as plain JSON values."""
        missing = [key for key in _METADATA_KEYS if getattr(metadata, key, None) is None]
        if missing:
            raise ValueError(f"The video of {self.name} has no {', '.join(missing)} in its metadata.")
        return {
            "fps": float(metadata.fps),
            "frames_indices": [int(i) for i in metadata.frames_indices],
            "total_num_frames": int(metadata.total_num_frames),
            "duration": float(metadata.duration),
        }

    def multi_modal_data(self) -> dict:
        """vLLM's `multi_modal_data` (colocate mode)."""
        data: dict[str, Any] = {}
        if self.videos:
            data["video"] = [(frames, _metadata_dict(metadata)) for frames, metadata in self.videos]
        if self.images:
            data["image"] = self.images if len(self.images) > 1 else self.images[0]
        return data


def _metadata_dict(metadata) -> dict:
    return {key: metadata[key] for key in metadata if metadata[key] is not None}


# ------------------------------------------------------------------------------------------------- colocate
class MultimodalLLM:
    """Wraps a colocated `vllm.LLM`: replaces the `VLLMMedia` trl placed in a prompt's `multi_modal_data["image"]`
    with the row's real `multi_modal_data` (and `do_sample_frames=False` for video: the frames are already sampled),
    and its expanded prompt ids with the row's `template_ids`, which the engine expands.

    Raises:
        VLLMPromptMismatchError: from `generate`, when the prompt the engine expanded differs from the trainer's
            (naming the row): the engine's processor resizes or samples the media differently.
    """

    def __init__(self, llm):
        self.llm = llm

    def generate(self, prompts, *args, **kwargs):
        expected: dict[int, tuple[list[int], str]] = {}
        for index, prompt in enumerate(prompts):
            payload = (prompt.get("multi_modal_data") or {}).get("image")
            if isinstance(payload, VLLMMedia):
                expected[index] = (list(prompt["prompt_token_ids"]), payload.name)
                if payload.template_ids is not None:
                    prompt["prompt_token_ids"] = list(payload.template_ids)
                prompt["multi_modal_data"] = payload.multi_modal_data()
                if payload.videos:
                    prompt["mm_processor_kwargs"] = {"do_sample_frames": False}
        outputs = self.llm.generate(prompts, *args, **kwargs)
        for index, (ids, name) in expected.items():
            check_expanded(list(outputs[index].prompt_token_ids), ids, name)
        return outputs

    def __getattr__(self, name):
        return getattr(self.llm, name)


def check_expanded(engine_ids: list[int], trainer_ids: list[int], name: str) -> None:
    """Raises `VLLMPromptMismatchError` unless the prompt the colocated engine expanded is the trainer's."""
    if engine_ids == trainer_ids:
        return
    pairs = enumerate(zip(engine_ids, trainer_ids, strict=False))
    at = next((i for i, (a, b) in pairs if a != b), min(len(engine_ids), len(trainer_ids)))
    raise VLLMPromptMismatchError(
        f"vLLM expanded the media of {name} into a prompt of {len(engine_ids)} tokens that differs from the "
        f"trainer's ({len(trainer_ids)} tokens) from token {at} on: the engine's processor resizes or samples this "
        "media differently from the trainer's. Give the engine the same processor settings (min/max pixels) as "
        "training."
    )


# --------------------------------------------------------------------------------------------------- server
def frames_data_url(frames: np.ndarray) -> str:
    """A video as vLLM's frame-sequence data URL, each frame a lossless PNG (vLLM opens frames with PIL)."""
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"Frames must be uint8 (T, H, W, 3), got {frames.dtype} {tuple(frames.shape)}.")
    return "data:video/jpeg;base64," + ",".join(encode_image_data_url(f, "png").split(",", 1)[1] for f in frames)


def render_request(media: VLLMMedia, model: str) -> dict:
    """The body of a `/v1/chat/completions/render` request that has the server process one row's media.

    Raises:
        ValueError: a row with more than one video (the server takes one set of video metadata per request).
    """
    if len(media.videos) > 1:
        raise ValueError(
            f"{media.name} has {len(media.videos)} videos; vLLM server mode takes one video per row (its metadata "
            "travels in the request's media_io_kwargs). Use vllm_mode='colocate' for rows with several videos."
        )
    content = [{"type": "video_url", "video_url": {"url": frames_data_url(frames)}} for frames, _ in media.videos]
    content += [{"type": "image_url", "image_url": {"url": encode_image_data_url(image, "png")}} for image in media.images]
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": content}], "max_tokens": 1}
    if media.videos:
        metadata = media.video_metadata(media.videos[0][1])
        # num_frames=-1: every frame sent is used; do_sample_frames=False: they are already the sampled frames.
        body["media_io_kwargs"] = {"video": {"num_frames": -1, **metadata, "do_sample_frames": False}}
        body["mm_processor_kwargs"] = {"do_sample_frames": False}
    return body


class MultimodalClient:
    """Wraps trl's `VLLMClient`: `image_features` renders `VLLMMedia` rows (video and images) on the server."""

    def __init__(self, client):
        self.client = client

    def reset_encoder_cache(self) -> None:
        """Drops the server's cached vision encoder outputs (computed with weights a sync has since replaced).

        Raises:
            VLLMServerError: the server does not serve `/reset_encoder_cache` (started without
                `VLLM_SERVER_DEV_MODE=1`, which trl's weight sync needs too).
        """
        client = self.client
        response = client.session.post(f"{client.base_url}/reset_encoder_cache")
        if response.status_code == 404:
            raise VLLMServerError(
                f"The vLLM server at {client.base_url} does not serve /reset_encoder_cache, which drops vision "
                "features computed with the weights before a sync. Start it with VLLM_SERVER_DEV_MODE=1 in its "
                "environment, as the README's `vllm serve` command does."
            )
        if response.status_code != 200:
            raise VLLMServerError(
                f"The vLLM server could not reset its encoder cache: {response.status_code} {response.text}"
            )

    def image_features(self, rows: list, max_concurrent_requests: int = _DEFAULT_CONCURRENCY) -> list[dict | None]:
        """Server-side features for each unique prompt's media (`[VLLMMedia]` or `None`), with the token ids the
        server expanded them into, for `place_features`."""
        client = self.client

        def send(row):
            if not row:
                return None
            if len(row) != 1 or not isinstance(row[0], VLLMMedia):
                raise TypeError(f"Expected [VLLMMedia] per prompt, got {type(row[0]).__name__} items.")
            media = row[0]
            url = f"{client.base_url}/v1/chat/completions/render"
            response = client.session.post(url, json=render_request(media, client.model))
            if response.status_code != 200:
                raise VLLMServerError(render_refusal(client.base_url, media.name, response.status_code, response.text))
            data = response.json()
            if "features" not in data or "token_ids" not in data:
                raise VLLMServerError(
                    f"The vLLM server's render response for {media.name} lacks 'features' or 'token_ids' "
                    f"(keys: {sorted(data)}); this vLLM version does not return what server-mode video needs."
                )
            return {**data["features"], RENDER_TOKEN_IDS: data["token_ids"], ROW_NAME: media.name}

        with ThreadPoolExecutor(max_workers=max(1, min(max_concurrent_requests, len(rows)))) as executor:
            return list(executor.map(send, rows))

    def __getattr__(self, name):
        return getattr(self.client, name)


SERVER_FLAGS = ("--enable-scale-out", "--trust-request-mm-kwargs")  # what server-mode media needs of `vllm serve`


def render_refusal(base_url: str, name: str, status: int, text: str) -> str:
    """The message of the `VLLMServerError` raised when a vLLM server refuses to render a row's media: it names the
    `vllm serve` flag the server lacks where the answer shows which one.

    Args:
        base_url: the server's address.
        name: the row ("row 0 of the generation batch").
        status, text: the server's HTTP answer.
    """
    restart = " (the README's `vllm serve` command passes every flag server mode needs: " + " ".join(SERVER_FLAGS) + ")"
    if status == 404:
        return (
            f"The vLLM server at {base_url} does not serve /v1/chat/completions/render, which video and image prompts "
            f"use: restart it with --enable-scale-out{restart}."
        )
    if "trust-request-mm-kwargs" in text or "mm_processor_kwargs" in text:
        return (
            f"The vLLM server at {base_url} refused the media of {name}: it does not take the per-request processor "
            "settings (`mm_processor_kwargs`: the frames are already sampled) that server-mode video sends. Restart "
            f"it with --trust-request-mm-kwargs{restart}. The server said: {status} {text}"
        )
    return f"The vLLM server at {base_url} could not render the media of {name}: {status} {text}"


def _find(sequence: list[int], span: list[int], start: int) -> int:
    first = span[0]
    for position in range(start, len(sequence) - len(span) + 1):
        if sequence[position] == first and sequence[position : position + len(span)] == span:
            return position
    return -1


def place_features(features: dict | None, prompt_ids: list[int]) -> dict | None:
    """Points server-rendered features at the trainer's prompt ids.

    The server reports placeholders in the throwaway conversation it rendered; each placeholder's token span there
    (the vision pads, and for Qwen3-VL the timestamps between them) is looked up in order in `prompt_ids`.

    Raises:
        VLLMPromptMismatchError: a span is not in the prompt (the trainer and the server expand the media
            differently, e.g. other pixel limits), naming the row.
    """
    if features is None:
        return None
    features = dict(features)
    render_ids = list(features.pop(RENDER_TOKEN_IDS))
    name = features.pop(ROW_NAME, "a row")
    prompt_ids = list(prompt_ids)
    placed: dict[str, list[dict]] = {}
    for modality, ranges in features["mm_placeholders"].items():
        cursor, moved = 0, []
        for number, placeholder in enumerate(ranges):
            offset, length = int(placeholder["offset"]), int(placeholder["length"])
            # The span with one token of context on each side (vision start/end): a shorter run of pads must not
            # match inside a longer one.
            low, high = max(offset - 1, 0), min(offset + length + 1, len(render_ids))
            span = render_ids[low:high]
            at = _find(prompt_ids, span, cursor) if length else -1
            if at < 0:
                raise VLLMPromptMismatchError(
                    f"The vLLM server expanded {modality} {number} of {name} into {length} tokens that are not in the "
                    f"trainer's prompt ({len(prompt_ids)} tokens): the server's processor resizes or samples this media "
                    "differently from the trainer's. Start the server with the same processor settings (min/max "
                    "pixels) as training."
                )
            at += offset - low
            moved.append({**placeholder, "offset": at})
            cursor = at + length
        placed[modality] = moved
    return {**features, "mm_placeholders": placed}


# ------------------------------------------------------------------------------------------------------- patching
def _reset_encoder_cache(llm) -> None:
    """Drops a colocated engine's cached vision encoder outputs (vLLM's `LLMEngine.reset_encoder_cache`)."""
    reset = getattr(getattr(llm, "llm_engine", None), "reset_encoder_cache", None)
    if callable(reset):
        reset()
    elif not getattr(_reset_encoder_cache, "warned", False):
        _reset_encoder_cache.warned = True
        logger.warning(
            "This vLLM engine has no reset_encoder_cache: a video or image seen before a weight sync may keep "
            "the vision features of the old weights. vLLM 0.31 (the newest release trl 1.16 supports) has it."
        )


def media_payloads(
    media: Sequence[RowMedia], template_ids: Sequence[list[int]] | None = None
) -> list[list[VLLMMedia] | None] | None:
    """trl's `images` argument for a batch: `[VLLMMedia]` for each row with media, None for a row without (or a
    skipped row); None when no row has media. `template_ids`: each row's prompt ids before expansion."""
    payloads = [
        [VLLMMedia(m.videos, m.images, f"row {i} of the generation batch", template_ids[i] if template_ids else None)]
        if m.error is None and (m.videos or m.images)
        else None
        for i, m in enumerate(media)
    ]
    return payloads if any(payloads) else None


@contextmanager
def patched(
    generation,
    media: Sequence[RowMedia],
    suppress_tokens: Iterable[int] = (),
    template_ids: Sequence[list[int]] | None = None,
) -> Iterator[list | None]:
    """trl's `VLLMGeneration` set up to generate a media batch, and restored on exit.

    While entered:

    - colocate: `generation.llm` is a `MultimodalLLM` around the engine;
    - server, on the process that talks to the server: `generation.vllm_client` is a `MultimodalClient` and
      `generation._place_features` is `place_features` (trl's own places image runs only);
    - the engine's (colocate) or the server's vision encoder cache is empty when a batch with media starts;
    - `generation.generation_kwargs["logit_bias"]` holds `SUPPRESSED_LOGIT_BIAS` (-100) for `suppress_tokens` (the
      vision placeholders, which a rollout must never sample), on top of any bias already there; the trainer's
      log-prob passes add the same bias (`internals.biased_log_probs`), so they score what vLLM sampled from.

    Args:
        generation: the trainer's `vllm_generation`.
        media: the rows' decoded media (`processing.RowMedia`), in prompt order.
        suppress_tokens: token ids never to sample.
        template_ids: each row's prompt ids as the chat template wrote them (one placeholder per image and video),
            which the colocated engine expands; without them it gets the expanded ids (and `MultimodalLLM` checks
            what it made of them).

    Yields:
        The `images` argument for trl's `_generate_single_turn` (`media_payloads`).

    Example:
        >>> with patched(trainer.vllm_generation, media, [video_token_id]) as images:  # doctest: +SKIP
        ...     completion_ids, logprobs = trainer._generate_single_turn(prompt_ids, images, fields, 8)
    """
    bias = {token: SUPPRESSED_LOGIT_BIAS for token in suppress_tokens}
    with vllm_generation_patched(
        generation, wrap_llm=MultimodalLLM, wrap_client=MultimodalClient, place_features=place_features, logit_bias=bias
    ) as (llm, client):
        payloads = media_payloads(media, template_ids)
        if payloads is not None and llm is not None:
            _reset_encoder_cache(llm.llm)
        if payloads is not None and client is not None:
            client.reset_encoder_cache()
        yield payloads
