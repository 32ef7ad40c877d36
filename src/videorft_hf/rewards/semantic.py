"""VideoRFT's semantic-consistency reward: how well the reasoning agrees with the frames, scored by SigLIP.

`get_semantic_consistency_reward(...)` builds the reward from steps that each do one thing: the encoder (found when
the reward is built, loaded once and lazily: `_SemanticEncoder`), the media of each row (`_row_media`, frames passed
by the trainer or files decoded here), the gate on accuracy (`_gate`), the reasoning text and its embedding
(`reasoning_span`, `_embed_reasoning`), the frame embeddings (`_embed_frames`) and the score
(`consistency_score`).
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

from .accuracy import row_accuracies
from .completions import THINK_CLOSE, THINK_OPEN, RewardFunc, completion_column, completion_text, first_span

DEFAULT_SEMANTIC_MODEL = "google/siglip-so400m-patch14-384"


class RewardModelError(OSError):
    """A model a reward function needs cannot be found or loaded; raised when the reward is built or its trainer
    starts, never partway through training. The message names the model and says what to pass instead."""


def _reward_model_error(model_name_or_path: str, cause: object) -> RewardModelError:
    return RewardModelError(
        f"The semantic-consistency reward model {model_name_or_path!r} cannot be loaded: {cause}. Pass a local "
        f"folder or the Hub id of a text-image encoder (--semantic_model_name_or_path; default "
        f"{DEFAULT_SEMANTIC_MODEL}); without network access, download it first (`hf download <id>`)."
    )


def resolve_reward_model(model_name_or_path: str) -> str:
    """Checks that a reward model exists, without loading it: a local folder with a `config.json`, or a Hub id
    whose `config.json` is in the local cache or on the Hub (one small download at most; offline, the cache only).

    Args:
        model_name_or_path: A local folder or a Hub model id.

    Returns:
        The path of the model's `config.json`.

    Raises:
        RewardModelError: the folder or id does not exist, has no config, or is not cached while offline.

    Example:
        >>> resolve_reward_model("/no/such/model")  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        RewardModelError: The semantic-consistency reward model '/no/such/model' cannot be loaded: ...
    """
    path = os.path.expanduser(os.fspath(model_name_or_path))
    if os.path.isdir(path):
        config = os.path.join(path, "config.json")
        if not os.path.isfile(config):
            raise _reward_model_error(model_name_or_path, f"the folder {path} has no config.json")
        return config
    if path.startswith((".", "/", "~")) or path.count("/") > 1 or os.path.exists(path):  # a path, not a Hub id
        raise _reward_model_error(model_name_or_path, f"no such folder ({os.path.abspath(path)})")
    from huggingface_hub.utils import HFValidationError
    from transformers.utils import cached_file

    try:
        return cached_file(path, "config.json")
    except (OSError, HFValidationError, ValueError) as error:
        raise _reward_model_error(model_name_or_path, " ".join(str(error).split())) from error


# --------------------------------------------------------------------------------------------- text
def reasoning_span(text: str) -> str:
    """The text the semantic-consistency reward embeds, as the release defines it.

    The content of the first `<think>...</think>` block after its first period (left-stripped), or the whole think
    content when it has no period; the whole completion when there is no think block. Truncation to the text
    encoder's limit happens at tokenization.

    Args:
        text: a completion's text.

    Returns:
        The reasoning span.

    Example:
        >>> reasoning_span("<think>Let me see. The ball is red.</think><answer>A</answer>")
        'The ball is red.'
    """
    think = first_span(text, THINK_OPEN, THINK_CLOSE)
    if think is None:
        return text
    period = think.find(".")
    return think[period + 1 :].lstrip() if period >= 0 else think


# --------------------------------------------------------------------------------------------- encoder
class _SemanticEncoder:
    """Loads the text-image encoder once, lazily, and embeds texts and frames in batches (L2-normalised, float32)."""

    def __init__(
        self,
        model_name_or_path: str,
        model: Any,
        processor: Any,
        device: Any,
        torch_dtype: Any,
        text_batch_size: int,
        frame_batch_size: int,
        max_text_tokens: int | None,
    ):
        self.model_name_or_path = model_name_or_path
        self.model = model
        self.processor = processor
        self.device = device
        self.torch_dtype = torch_dtype
        self.text_batch_size = text_batch_size
        self.frame_batch_size = frame_batch_size
        self.max_text_tokens = max_text_tokens
        self._lock = threading.Lock()
        self._ready = False

    @property
    def loaded(self) -> bool:
        return self._ready

    def load(self) -> None:
        """Loads (or places) the model and processor; a no-op after the first call."""
        with self._lock:
            if self._ready:
                return
            import torch

            dtype = self.torch_dtype
            if isinstance(dtype, str):
                dtype = getattr(torch, dtype)
            if self.model is None:
                from transformers import AutoModel

                device = self.device
                if device is None:
                    device = f"cuda:{torch.cuda.current_device()}" if torch.cuda.is_available() else "cpu"
                try:
                    self.model = AutoModel.from_pretrained(self.model_name_or_path, dtype=dtype or torch.float32)
                except OSError as error:
                    raise _reward_model_error(self.model_name_or_path, " ".join(str(error).split())) from error
                self.model.to(device)
            elif self.device is not None or dtype is not None:
                self.model.to(device=self.device, dtype=dtype)
            if self.processor is None:
                from transformers import AutoProcessor

                self.processor = AutoProcessor.from_pretrained(self.model_name_or_path)
            self.model.eval().requires_grad_(False)
            if self.max_text_tokens is None:
                text_config = getattr(self.model.config, "text_config", self.model.config)
                self.max_text_tokens = getattr(text_config, "max_position_embeddings", None) or 64
            self._ready = True

    @staticmethod
    def _pooled(output):
        return output if hasattr(output, "norm") else output.pooler_output

    def _normalised(self, embeddings):
        import torch

        embeddings = self._pooled(embeddings).float()
        return embeddings / embeddings.norm(p=2, dim=-1, keepdim=True).clamp_min(torch.finfo(torch.float32).tiny)

    def embed_texts(self, texts: list[str]):
        import torch

        self.load()
        tokenizer = getattr(self.processor, "tokenizer", self.processor)
        parameter = next(self.model.parameters())
        chunks = []
        for start in range(0, len(texts), self.text_batch_size):
            inputs = tokenizer(
                texts[start : start + self.text_batch_size],
                padding="max_length",  # SigLIP pools the last position: it was trained on texts padded to 64
                truncation=True,
                max_length=self.max_text_tokens,
                return_tensors="pt",
            )
            inputs = {k: v.to(parameter.device) for k, v in inputs.items()}
            with torch.inference_mode():
                chunks.append(self._normalised(self.model.get_text_features(**inputs)))
        return torch.cat(chunks)

    def embed_images(self, images: list):
        import torch

        self.load()
        image_processor = getattr(self.processor, "image_processor", self.processor)
        parameter = next(self.model.parameters())
        chunks = []
        for start in range(0, len(images), self.frame_batch_size):
            batch = images[start : start + self.frame_batch_size]
            # uint8 arrays and PIL images go to the processor as they are: it rescales once, nothing wraps.
            pixels = image_processor(images=batch, return_tensors="pt", input_data_format="channels_last")
            pixel_values = pixels["pixel_values"].to(device=parameter.device, dtype=parameter.dtype)
            with torch.inference_mode():
                chunks.append(self._normalised(self.model.get_image_features(pixel_values=pixel_values)))
        return torch.cat(chunks)


# --------------------------------------------------------------------------------------------- media
@dataclass(frozen=True, eq=False)
class _Media:
    """What one row is scored against: the frames the trainer passed, or a video or image file to decode."""

    kind: str  # "frames", "video" or "image"
    value: Any  # the passed frames, or the file's resolved path
    row: int  # the first row that has it (named in errors)

    @property
    def key(self) -> Hashable:
        # Frames are embedded once per distinct media: passed frames by identity (the trainer passes one array per
        # prompt), files by resolved path (however the rows spell it).
        return (self.kind, id(self.value)) if self.kind == "frames" else (self.kind, self.value)


def _row_media(kwargs: dict, size: int, media_root: str | os.PathLike | None) -> list[_Media | None]:
    """Each row's media: its `frames` entry, else its `video` path, else its `image` path; None for a text row.

    Relative paths resolve in `media_root` (and may not leave it); without one, in the current directory."""
    passed = completion_column(kwargs, "frames", size)
    videos, images = completion_column(kwargs, "video", size), completion_column(kwargs, "image", size)
    media: list[_Media | None] = []
    for row in range(size):
        if passed[row] is not None:
            media.append(_Media("frames", passed[row], row))
        elif videos[row] is not None:
            media.append(_Media("video", _resolve_path(videos[row], media_root), row))
        elif images[row] is not None:
            media.append(_Media("image", _resolve_path(images[row], media_root), row))
        else:
            media.append(None)
    return media


def _resolve_path(path: Any, media_root: str | os.PathLike | None) -> str:
    path = os.fspath(path)
    if media_root is not None and not os.path.isabs(path):
        from ..schema import resolve_media_path

        return resolve_media_path(path, media_root)
    return os.path.abspath(path)


def _frames_to_images(frames: Any, row: int) -> list:
    """Turns one entry of the `frames` keyword into a list of (H, W, 3) uint8 arrays or PIL images."""
    import numpy as np
    from PIL import Image

    if isinstance(frames, Image.Image):
        return [frames.convert("RGB")]
    if isinstance(frames, (list, tuple)):  # a list of frames
        return [image for frame in frames for image in _frames_to_images(frame, row)]
    if hasattr(frames, "detach") and hasattr(frames, "cpu"):  # torch tensor
        frames = frames.detach().cpu().numpy()
    array = np.asarray(frames)
    if array.dtype != np.uint8:
        raise TypeError(
            f"frames[{row}] has dtype {array.dtype}; pass uint8 RGB frames in [0, 255] (as `load_video_frames` "
            "returns them): float pixels are ambiguous (0-1 or 0-255) and the release's float path wrapped colours."
        )
    if array.ndim == 3 and array.shape[-1] == 3:
        return [array]
    if array.ndim == 4 and array.shape[-1] == 3 and array.shape[0] > 0:
        return list(array)
    raise ValueError(
        f"frames[{row}] has shape {tuple(array.shape)}; expected (T, H, W, 3) for a video or (H, W, 3) for an image, "
        "channels last."
    )


def _decode_media(kind: str, path: str, sampling_config: Any, video_backend: str, frame_store: Any) -> list:
    """The frames of a video file (sampled as `sampling_config` says; the frame store first) or an image file."""
    from .. import video as video_module

    config = sampling_config or video_module.VideoSamplingConfig.from_preset("videorft-train")
    if kind == "video":
        frames, _ = video_module.load_video_frames(path, config, backend=video_backend, store=frame_store)
        return list(frames)
    return [video_module.load_image(path, config)]


# --------------------------------------------------------------------------------------------- gate and score
def _accuracy_for_gate(completions: Sequence[Any], kwargs: dict, lenient_multiple_choice: bool) -> list[float | None]:
    """Each row's accuracy, as `accuracy_reward` defines it, for the gate."""
    if kwargs.get("solution") is None or kwargs.get("problem_type") is None:
        raise ValueError(
            "semantic_consistency_reward is gated on accuracy and needs the `solution` and `problem_type` "
            "columns; add them to the dataset or build the reward with gate_on_accuracy=False."
        )
    return row_accuracies(completions, kwargs, lenient_multiple_choice)


def _gate(media: list[_Media | None], accuracies: list[float | None] | None) -> tuple[list[float | None], list[int]]:
    """Which rows are scored. Rows without media get None; with `accuracies` (the gate on), rows with an unknown
    accuracy get None and rows whose accuracy is <= 0 get 0.0, as released.

    Returns:
        The rewards decided so far (the scored rows hold None) and the rows to score.

    Example:
        >>> m = _Media("image", "/a.png", 0)
        >>> _gate([m, m, None, m], [1.0, 0.0, 1.0, None])
        ([None, 0.0, None, None], [0])
    """
    rewards: list[float | None] = [None] * len(media)
    scored = []
    for row, row_media in enumerate(media):
        if row_media is None:
            continue
        if accuracies is not None:
            if accuracies[row] is None:
                continue
            if accuracies[row] <= 0.0:
                rewards[row] = 0.0
                continue
        scored.append(row)
    return rewards, scored


def _embed_reasoning(encoder: _SemanticEncoder, completions: Sequence[Any], rows: list[int]):
    """The embedding of each row's reasoning span, one per row of `rows`; each distinct text is encoded once."""
    texts = [reasoning_span(completion_text(completions[row])) for row in rows]
    unique = list(dict.fromkeys(texts))
    embeddings = encoder.embed_texts(unique)
    index = {text: j for j, text in enumerate(unique)}
    return [embeddings[index[text]] for text in texts]


def _embed_frames(encoder: _SemanticEncoder, media: list[_Media], images_of: Callable[[_Media], list]) -> dict:
    """The frame embeddings of each distinct media (by `_Media.key`), each encoded once."""
    embeddings = {}
    for row_media in media:
        if row_media.key not in embeddings:
            embeddings[row_media.key] = encoder.embed_images(images_of(row_media))
    return embeddings


def consistency_score(frame_embeddings, text_embedding, weight: float) -> float:
    """The mean over frames f of min(1, weight * max(cos(t, v_f), 0)), from L2-normalised embeddings.

    Args:
        frame_embeddings: `(F, D)` tensor, one row per frame.
        text_embedding: `(D,)` tensor.
        weight: scale applied to the cosine before clipping at 1.

    Returns:
        The score in [0, 1].

    Example:
        >>> import torch
        >>> round(consistency_score(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([0.6, 0.8]), 1.0), 4)
        0.7
    """
    import torch

    cosines = frame_embeddings @ text_embedding
    return float(torch.clamp(weight * cosines.clamp_min(0.0), max=1.0).mean())


# --------------------------------------------------------------------------------------------- the reward
def get_semantic_consistency_reward(
    model_name_or_path: str = DEFAULT_SEMANTIC_MODEL,
    weight: float = 2.0,
    gate_on_accuracy: bool = True,
    *,
    model: Any = None,
    processor: Any = None,
    device: Any = None,
    torch_dtype: Any = None,
    media_root: str | os.PathLike | None = None,
    sampling_config: Any = None,
    video_backend: str = "auto",
    frame_store: Any = None,
    lenient_multiple_choice: bool = False,
    text_batch_size: int = 64,
    frame_batch_size: int = 64,
    max_text_tokens: int | None = None,
    resolve: bool = True,
) -> RewardFunc:
    """Returns VideoRFT's `semantic_consistency_reward`: how well the reasoning agrees with the frames.

    For each completion, text t = `reasoning_span(completion)` (the think content after its first period; the whole
    completion without a think block), truncated to the text encoder's limit (64 tokens for SigLIP); for each frame
    f, r_f = min(1, weight * max(cos(t, v_f), 0)); the reward is the mean of r_f over the frames (an image is one
    frame). Gated: 0.0 wherever the accuracy is 0.

    Frames: pass the keyword `frames`, a list with one entry per completion, each None or a uint8 numpy array / torch
    tensor of shape (T, H, W, 3) (a video), or a PIL image / (H, W, 3) uint8 array (an image); `VideoGRPOTrainer`
    passes the frames it decoded for the rollout, the same object for all completions of a prompt. Entries that are
    None, or a missing `frames` keyword (stock trl), make the reward decode the row's `video` (else `image`) column
    with `videorft_hf.video` and `sampling_config`. Frame embeddings are computed once per distinct video per call:
    keyed by `id(frames[i])` for passed frames and by path for decoded ones. Rows with no media get None.

    Building it checks that the model exists (`resolve_reward_model`: a local folder, or a Hub id cached or on the
    Hub), so a misspelled id fails here and not at the first correct answer of a training run. The weights load at
    `reward.encoder.load()`, which `VideoGRPOTrainer` calls before the first step, or else at the first call.
    Nothing is built at import: `get_reward_funcs(script_args)` calls this with `semantic_model_name_or_path`.

    Args:
        model_name_or_path: text-image encoder with `get_text_features` / `get_image_features` (SigLIP in the paper).
        weight: scale w applied to the cosine before clipping at 1.
        gate_on_accuracy: return 0.0 where the accuracy is 0. The accuracy is computed here with the same
            definitions as `accuracy_reward` (cheap), from the `solution` and `problem_type` columns, which must be
            present; rows with an unknown problem type get None.
        model: an already built model (e.g. a tiny one in tests); `model_name_or_path` is then not loaded.
        processor: its processor (tokenizer + image processor); loaded from `model_name_or_path` when None.
        device: where the model runs; default the current CUDA device if any, else CPU (a passed `model` stays where
            it is unless this is set).
        torch_dtype: model dtype (a `torch.dtype` or its name); default float32 for a loaded model, unchanged for a
            passed one.
        media_root: folder that relative `./` media paths are resolved in (absolute paths are used as they are).
        sampling_config: `VideoSamplingConfig` for decoding; default the "videorft-train" preset (16 frames), as the
            release's reward sampled.
        video_backend: backend for `load_video_frames`.
        frame_store: optional `videorft_hf.frame_store.FrameStore` of prepared frames, read before decoding.
        lenient_multiple_choice: gate with the lenient multiple-choice accuracy (see `get_accuracy_reward`).
        text_batch_size: texts per text-encoder pass.
        frame_batch_size: frames per image-encoder pass.
        max_text_tokens: token limit of the text; default the encoder's `max_position_embeddings` (64 for SigLIP).
        resolve: check now that `model_name_or_path` exists (ignored when `model` is given).

    Returns:
        A reward function named `semantic_consistency_reward` with one float in [0, 1] or None per completion. Its
        `encoder` attribute holds the model (`encoder.load()`, `encoder.loaded`, `encoder.model`).

    Raises:
        RewardModelError: `model_name_or_path` names no model (with `resolve`).

    Example:
        >>> reward = get_semantic_consistency_reward()  # found, not loaded yet  # doctest: +SKIP
        >>> reward(completions, frames=[frames] * len(completions), solution=solutions,
        ...        problem_type=problem_types)  # doctest: +SKIP
        [0.43, 0.0, ...]
    """
    if not (isinstance(weight, (int, float)) and math.isfinite(weight) and weight >= 0):
        raise ValueError(f"weight must be a finite number >= 0, got {weight!r}.")
    if resolve and model is None:
        resolve_reward_model(model_name_or_path)
    encoder = _SemanticEncoder(
        model_name_or_path, model, processor, device, torch_dtype, text_batch_size, frame_batch_size, max_text_tokens
    )

    def images_of(media: _Media) -> list:
        if media.kind == "frames":
            return _frames_to_images(media.value, media.row)
        return _decode_media(media.kind, media.value, sampling_config, video_backend, frame_store)

    def semantic_consistency_reward(completions: Sequence[Any], **kwargs) -> list[float | None]:
        size = len(completions)
        media = _row_media(kwargs, size, media_root)
        accuracies = _accuracy_for_gate(completions, kwargs, lenient_multiple_choice) if gate_on_accuracy else None
        rewards, rows = _gate(media, accuracies)
        if not rows:
            return rewards
        texts = _embed_reasoning(encoder, completions, rows)
        frames = _embed_frames(encoder, [media[row] for row in rows], images_of)
        for row, text in zip(rows, texts, strict=True):
            rewards[row] = consistency_score(frames[media[row].key], text, weight)
        return rewards

    semantic_consistency_reward.encoder = encoder
    return semantic_consistency_reward
