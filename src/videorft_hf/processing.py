"""From a conversational row to model inputs: media decoding, prompt rendering and the processor call.

The one code path for every stage that feeds a Qwen-VL model: `VideoGRPOTrainer` builds its rollouts (T-GRPO's
shuffled ones included) this way, the SFT collator `DataCollatorForVideoLanguageModeling` builds its prompts this way
and `videorft eval` builds its generation inputs this way, so the sampling rules, the prompt text, the sampled frames,
their `VideoMetadata` (hence `second_per_grid_ts` and Qwen3-VL timestamps) and the vision-token check cannot drift
between SFT, RL and evaluation.

Example:
    ```python
    from videorft_hf import VideoSamplingConfig
    from videorft_hf.processing import (
        check_vision_tokens, encode_prompt, load_row_media, model_sampling_config, render_prompt
    )

    config = model_sampling_config(VideoSamplingConfig.from_preset("videorft-eval"), model.config, processor)
    media = load_row_media(row, config)  # row from load_videorft_dataset / make_conversation
    text = render_prompt(processor, row["prompt"])
    ids, vision = encode_prompt(processor, text, media.videos, media.images)
    check_vision_tokens(processor, ids, vision, model.config)
    ```
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from .video import FrameCache, MediaDecodeError, VideoSamplingConfig, load_image, load_video_frames

__all__ = [
    "SUPPORTED_VIDEO_MODEL_TYPES",
    "VISION_KEYS",
    "RowMedia",
    "UnsupportedVideoModelError",
    "VisionTokenMismatchError",
    "check_vision_tokens",
    "collate_vision",
    "encode_prompt",
    "load_row_media",
    "media_sources",
    "mm_token_type_ids",
    "model_sampling_config",
    "render_prompt",
    "vision_patch_factor",
]

# Processor outputs that carry vision features, per row.
VISION_KEYS = ("pixel_values", "image_grid_thw", "pixel_values_videos", "video_grid_thw", "second_per_grid_ts")
# Model families whose video inputs this package builds, by `config.model_type` (never by checkpoint name).
SUPPORTED_VIDEO_MODEL_TYPES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen3_vl_moe")


class VisionTokenMismatchError(ValueError):
    """A sample's vision placeholder tokens do not match the number of vision features the processor returned."""


class UnsupportedVideoModelError(ValueError):
    """The model cannot take video inputs through this package."""


@dataclass
class RowMedia:
    """Decoded media of one row: `videos` as `(uint8 frames (T, H, W, 3), VideoMetadata)` pairs, `images` as PIL.

    `key` names the row's media sources (rows with equal keys show the same media); `error` is the decode error of a
    row whose media could not be loaded, when `load_row_media` captures errors (its `videos` and `images` are then
    empty).
    """

    videos: list = field(default_factory=list)
    images: list = field(default_factory=list)
    key: tuple = ()
    error: MediaDecodeError | None = None


def vision_patch_factor(processor) -> int:
    """Side multiple of the processor's vision tower (patch size * spatial merge): 28 for Qwen2/2.5-VL, 32 for Qwen3-VL.

    Raises:
        UnsupportedVideoModelError: the processor has no `patch_size` / `merge_size`.
    """
    sub = getattr(processor, "video_processor", None) or getattr(processor, "image_processor", None)
    patch = getattr(sub, "patch_size", None)
    merge = getattr(sub, "merge_size", None)
    if patch is None or merge is None:
        raise UnsupportedVideoModelError(
            f"{type(processor).__name__} has no patch_size/merge_size: it is not a Qwen-VL style processor."
        )
    return int(patch) * int(merge)


def model_sampling_config(config: VideoSamplingConfig, model_config, processor) -> VideoSamplingConfig:
    """`config` with its `patch_factor` set to the model's vision tower (frame sides must be multiples of it, or the
    processor would resize them again).

    Args:
        config: the run's sampling rules.
        model_config: the model's `PretrainedConfig`: its `model_type` decides (never the checkpoint name). None when
            only the processor is known (the SFT collator): then a Qwen-VL style processor (one with `patch_size` and
            `merge_size`) sets the factor.
        processor: the model's processor.

    Returns:
        The config to decode with: unchanged for model types outside `SUPPORTED_VIDEO_MODEL_TYPES` (or, without a
        model config, for a processor without a patch size).

    Raises:
        UnsupportedVideoModelError: a supported model type whose processor has no `patch_size` / `merge_size`.
    """
    if model_config is None:
        try:
            return replace(config, patch_factor=vision_patch_factor(processor))
        except UnsupportedVideoModelError:
            return config
    if getattr(model_config, "model_type", None) in SUPPORTED_VIDEO_MODEL_TYPES:
        return replace(config, patch_factor=vision_patch_factor(processor))
    return config


def _as_list(value: Any) -> list:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [item for item in value if item is not None]
    return [value]


def media_sources(row: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """A row's media in prompt order, as `(kind, source)` pairs: its `video` (a path, or a list of paths), then its
    `images` (or, without them, its `image`), each a path or an in-memory image.

    Example:
        >>> media_sources({"video": "clip.mp4", "image": None})
        [('video', 'clip.mp4')]
    """
    images = _as_list(row.get("images")) or _as_list(row.get("image"))
    return [("video", video) for video in _as_list(row.get("video"))] + [("image", image) for image in images]


def load_row_media(
    row: Mapping[str, Any],
    config: VideoSamplingConfig,
    backend: str = "auto",
    cache: FrameCache | None = None,
    store=None,
    *,
    decoded: MutableMapping[tuple, Any] | None = None,
    counts: Counter | None = None,
    errors: str = "raise",
) -> RowMedia:
    """Decodes a row's `video` (a path, or a list of paths) and its `image` / `images` (paths or in-memory images).

    Args:
        row: a conversational row (`load_videorft_dataset`, `make_conversation` or a stock trl dataset).
        config: sampling rules (see `model_sampling_config`).
        backend: video backend for `load_video_frames`.
        cache: optional `FrameCache` (a video asked by several questions is decoded once, across batches).
        store: optional `videorft_hf.frame_store.FrameStore` of prepared frames, read before decoding.
        decoded: the media already loaded for other rows of the same batch, by source (pass one dict for every row
            of a batch): a source in it is reused, not decoded again, and a source decoded here is added to it (its
            decode error too, so that a bad file is opened once).
        counts: if given, counts `video_decodes` / `image_decodes` (files opened; in-memory images are not) and
            `video_reuses` / `image_reuses` (sources found in `decoded`).
        errors: "raise" the row's first `MediaDecodeError`, or "capture" it in the returned `RowMedia.error` (whose
            media are then empty), for callers that skip bad samples.

    Returns:
        The row's `RowMedia` (empty for a text row).

    Raises:
        MediaDecodeError: (a typed subclass) a media file is missing or cannot be decoded, with `errors="raise"`.
        TypeError: the `video` column holds something other than paths.
    """
    if errors not in ("raise", "capture"):
        raise ValueError(f"errors must be 'raise' or 'capture', got {errors!r}.")
    decoded = {} if decoded is None else decoded
    counts = Counter() if counts is None else counts
    media = RowMedia()
    for kind, source in media_sources(row):
        is_path = isinstance(source, (str, os.PathLike))
        if kind == "video" and not is_path:
            raise TypeError(
                f"The `video` column must hold file paths, got {type(source).__name__}. Build rows with "
                "videorft_hf.load_videorft_dataset or make_conversation."
            )
        key = (kind, os.fspath(source) if is_path else id(source))
        media.key += (key,)
        if key in decoded:
            counts[f"{kind}_reuses"] += 1
        else:
            decoded[key] = _load_source(kind, source, config, backend, cache, store, counts)
        result = decoded[key]
        if isinstance(result, MediaDecodeError):  # the row's first bad file decides
            if errors == "raise":
                raise result
            return RowMedia(key=media.key, error=result)
        (media.videos if kind == "video" else media.images).append(result)
    return media


def _load_source(kind: str, source, config, backend, cache, store, counts: Counter):
    """One video or image, or its `MediaDecodeError` (so that a batch remembers a bad file as it does a good one)."""
    try:
        if kind == "video":
            counts["video_decodes"] += 1
            return load_video_frames(source, config, backend=backend, cache=cache, store=store)
        if isinstance(source, (str, os.PathLike)):
            counts["image_decodes"] += 1
            return load_image(source, config)
        return source  # an in-memory image, passed to the processor as a stock trl dataset would
    except MediaDecodeError as error:
        return error


def render_prompt(processor, prompt: Sequence[Mapping[str, Any]], **chat_template_kwargs) -> str:
    """The prompt's text through the processor's chat template, ending with the assistant turn's header.

    Args:
        processor: the model's processor.
        prompt: trl conversational messages with `{"type": "video"}` / `{"type": "image"}` placeholders.
        **chat_template_kwargs: forwarded to `apply_chat_template` (e.g. `chat_template=`, `tools=`).
    """
    return processor.apply_chat_template(
        list(prompt), add_generation_prompt=True, tokenize=False, **chat_template_kwargs
    )


def encode_prompt(
    processor, text: str, videos: Sequence = (), images: Sequence = (), where: str = ""
) -> tuple[list[int], dict]:
    """Runs the processor on one rendered prompt and its decoded media.

    Frames go in with their `VideoMetadata` and `do_sample_frames=False` (they are already sampled), so the processor
    computes `second_per_grid_ts` (Qwen2.5-VL) and timestamps (Qwen3-VL) from the video's true fps.

    Args:
        processor: the model's processor.
        text: the rendered prompt (`render_prompt`).
        videos: `(frames, VideoMetadata)` pairs, in prompt order.
        images: PIL images (or arrays), in prompt order.
        where: names the sample in the error, e.g. "Row 3 of the generation batch".

    Returns:
        `(input_ids, vision)`: the prompt's token ids and its vision tensors (the `VISION_KEYS` the processor
        returned; `second_per_grid_ts` as float32).

    Raises:
        VisionTokenMismatchError: the prompt's media placeholders and the media differ in number (checked before
            the processor runs).
    """
    import torch

    for token, items, what in (
        (getattr(processor, "video_token", None), videos, "video"),
        (getattr(processor, "image_token", None), images, "image"),
    ):
        if token is not None and text.count(token) != len(items):
            raise VisionTokenMismatchError(
                f"{where or 'The sample'} has {text.count(token)} {what} placeholder(s) in its prompt but "
                f"{len(items)} {what}(s). Each {what} needs exactly one {{'type': '{what}'}} block in the prompt and "
                f"one entry in the `{what}` column."
            )

    kwargs: dict[str, Any] = {}
    if videos:
        kwargs.update(
            # Frames shared through a `FrameCache` are read-only; the processor hands them to `torch.from_numpy`,
            # which warns about (and would alias) a read-only array, so those get a private, writable copy.
            videos=[frames if getattr(frames, "flags", None) is None or frames.flags.writeable else frames.copy()
                    for frames, _ in videos],
            video_metadata=[metadata for _, metadata in videos],
            do_sample_frames=False,
        )
    if images:
        kwargs["images"] = list(images)
    # The rendered template already holds any BOS token (as trl's `apply_chat_template(tokenize=True)` assumes).
    encoding = processor(text=[text], return_tensors="pt", add_special_tokens=False, **kwargs)
    ids = encoding["input_ids"][0].tolist()
    vision = {key: encoding[key] for key in VISION_KEYS if key in encoding}
    if "second_per_grid_ts" in vision:
        vision["second_per_grid_ts"] = torch.as_tensor(vision["second_per_grid_ts"], dtype=torch.float32)
    return ids, vision


def check_vision_tokens(
    processor, ids: Sequence[int], vision: Mapping[str, Any], model_config, where: str = ""
) -> None:
    """Checks that the prompt holds exactly one placeholder token per vision feature, for videos and images.

    Args:
        processor: the model's processor (its `merge_size`).
        ids: the prompt's token ids.
        vision: its vision tensors (`encode_prompt`).
        model_config: the model's config (`video_token_id`, `image_token_id`).
        where: names the sample in the error, e.g. "Row 3 of the generation batch".

    Raises:
        VisionTokenMismatchError: counts differ (a prompt without a media placeholder, or two media for one).
    """
    merge = getattr(getattr(processor, "image_processor", None), "merge_size", 2) ** 2
    for token_id, grid_key, what in (
        (getattr(model_config, "video_token_id", None), "video_grid_thw", "video"),
        (getattr(model_config, "image_token_id", None), "image_grid_thw", "image"),
    ):
        if token_id is None:
            continue
        tokens = sum(1 for t in ids if t == token_id)
        grid = vision.get(grid_key)
        features = int(grid.prod(dim=-1).sum().item()) // merge if grid is not None else 0
        if tokens != features:
            raise VisionTokenMismatchError(
                f"{where or 'The sample'} has {tokens} {what} placeholder tokens "
                f"but {features} {what} features. Each {what} needs exactly one {{'type': '{what}'}} block in the "
                f"prompt and one entry in the `{what}` column."
            )


def mm_token_type_ids(input_ids, image_token_id: int | None, video_token_id: int | None):
    """The `mm_token_type_ids` Qwen-VL models need with pixel inputs: 1 at image tokens, 2 at video tokens, else 0."""
    import torch

    types = torch.zeros_like(input_ids)
    if image_token_id is not None:
        types[input_ids == image_token_id] = 1
    if video_token_id is not None:
        types[input_ids == video_token_id] = 2
    return types


def collate_vision(rows: Sequence[Mapping[str, Any] | None]) -> dict:
    """Concatenates per-row vision tensors in row order (rows without media contribute nothing)."""
    import torch

    out = {}
    for key in VISION_KEYS:
        parts = [row[key] for row in rows if row is not None and key in row]
        if parts:
            out[key] = torch.cat(parts, dim=0)
    return out
