"""The public loaders: `load_video_frames` (backend choice, clip bounds, the cache and the frame store, then decode,
rotate upright and resize) and `load_image`."""

from __future__ import annotations

import importlib.util
import math
import os

import numpy as np
from transformers.video_utils import VideoMetadata

from .cache import FrameCache
from .decord_decoder import decode_decord
from .errors import (
    AspectRatioError,
    EmptyVideoError,
    ImageDecodeError,
    ImageNotFoundError,
    NotAVideoError,
    VideoNotFoundError,
)
from .probe import Probe
from .pyav_decoder import decode_pyav
from .sampling import FRAME_FACTOR, VideoSamplingConfig, resize_frames
from .torchcodec_decoder import decode_torchcodec

VIDEO_BACKENDS = ("decord", "pyav", "torchcodec")


def available_backends() -> list[str]:
    """Video backends importable here, in order of preference for `backend="auto"`."""
    found = [name for name, module in (("pyav", "av"), ("decord", "decord")) if importlib.util.find_spec(module)]
    if importlib.util.find_spec("torchcodec") is not None:
        found.append("torchcodec")
    return found


def _resolve_backend(backend: str) -> str:
    if backend == "auto":
        # PyAV first, by measurement (benchmarks/bench_frames.py): its planned decode skips what the sampled frames do
        # not need: 2x qwen-vl-utils' fetch_video (decord) over footage-cost clips, 1.5x on a short single-keyframe clip.
        return "pyav" if importlib.util.find_spec("av") is not None else "decord"
    if backend not in VIDEO_BACKENDS:
        raise ValueError(f"Unknown video backend {backend!r}; choose 'auto' or one of {list(VIDEO_BACKENDS)}.")
    module = {"pyav": "av"}.get(backend, backend)
    if importlib.util.find_spec(module) is None:
        extra = {"torchcodec": " (pip install 'videorft_hf[torchcodec]' and a system FFmpeg)"}.get(backend, "")
        raise ImportError(f"Video backend {backend!r} is not installed{extra}.")
    return backend


def _clip_range(total: int, fps: float, start: float | None, end: float | None, path: str) -> tuple[int, int]:
    """First and last frame of the [start, end] seconds clip (the qwen-vl-utils rule)."""
    if start is None and end is None:
        return 0, total - 1
    duration = total / fps
    first = math.ceil(max(0.0, min(start, duration)) * fps) if start is not None else 0
    last = min(math.floor(max(0.0, min(end, duration)) * fps), total - 1) if end is not None else total - 1
    if first >= last:
        raise ValueError(f"{path}: clip [{start}, {end}] s holds fewer than two frames of this {duration:.2f} s video.")
    return first, last


def _rotate_upright(frames: np.ndarray, rotation: int) -> np.ndarray:
    """Applies the display rotation (degrees counter-clockwise, as FFmpeg's display matrix and PyAV report it)."""
    quarter_turns = (round(rotation / 90) % 4) if rotation else 0
    if quarter_turns == 0:
        return frames
    return np.ascontiguousarray(np.rot90(frames, k=quarter_turns, axes=(1, 2)))


_DECODERS = {"pyav": decode_pyav, "decord": decode_decord, "torchcodec": decode_torchcodec}


def load_video_frames(
    path: str | os.PathLike,
    config: VideoSamplingConfig | None = None,
    backend: str = "auto",
    start: float | None = None,
    end: float | None = None,
    cache: FrameCache | None = None,
    store=None,
) -> tuple[np.ndarray, VideoMetadata]:
    """Samples and resizes the frames of a video by the rules of `config`.

    Args:
        path: a local video file.
        config: sampling rules; defaults to `VideoSamplingConfig()` (the qwen-vl-utils defaults).
        backend: "auto" (PyAV, else decord), "decord", "pyav" or "torchcodec".
        start, end: optional clip bounds in seconds.
        cache: an optional `FrameCache`; the returned frames are then read-only.
        store: prepared frames to read before decoding (a miss decodes): a `videorft_hf.frame_store.FrameStore`,
            or any object with its `get(path, config, start, end)`. None (or False): decode, read no store. Only
            the store passed here is read; nothing process-wide is consulted.

    Returns:
        `(frames, metadata)`: uint8 frames of shape (T, H, W, 3), upright, resized; and a `VideoMetadata` with
        the video's fps, its frame count (of the clip when `start`/`end` are given), duration, upright size
        before resizing and the sampled `frames_indices`.

    Raises:
        VideoDecodeError: (a subclass naming the cause) for a missing file, a file that is not a video, a video
            with fewer than two frames, a truncated or corrupt stream, or an aspect ratio above 200.

    Example:
        >>> frames, metadata = load_video_frames("clip.mp4", VideoSamplingConfig.from_preset("videorft-train"))  # doctest: +SKIP
    """
    config = config or VideoSamplingConfig()
    path = os.fspath(path)
    if not os.path.isfile(path):
        if os.path.isdir(path):
            raise NotAVideoError(path, "is a directory, not a video file", "A record's `path` must name a file.")
        raise VideoNotFoundError(path, "file not found", "Check the media root and the record's `path`.")
    key = None
    if cache is not None:
        key = FrameCache.key(path, config, start, end)
        hit = cache.get(key)
        if hit is not None:
            return hit
    # The caller's frame store (videorft_hf.frame_store, which builds on this module) serves prepared frames first.
    if store is not None and store is not False:  # (a FrameStore has a length: an empty one is still read)
        hit = store.get(path, config, start, end)
        if hit is not None:
            if cache is not None:
                cache.put(key, *hit)
            return hit
    name = _resolve_backend(backend)
    clip: dict = {}

    def indices_fn(probe: Probe) -> list[int]:
        try:
            first, last = _clip_range(probe.total_frames, probe.fps, start, end, path)
        except ValueError as error:
            raise EmptyVideoError(path, str(error).split(": ", 1)[1]) from error
        clip.update(first=first, last=last)
        indices = config.frame_indices(probe.total_frames, probe.fps, first, last)
        if not indices:
            raise EmptyVideoError(path, f"the video has {last - first + 1} frame(s); at least {FRAME_FACTOR} needed")
        return indices

    frames, indices, probe, rotation = _DECODERS[name](path, indices_fn)
    frames = _rotate_upright(frames, rotation)
    height, width = frames.shape[1:3]
    try:
        target_h, target_w = config.frame_size(height, width, len(indices))
    except ValueError as error:
        raise AspectRatioError(path, str(error)) from error
    frames = resize_frames(frames, target_h, target_w)
    clip_frames = clip["last"] - clip["first"] + 1
    metadata = VideoMetadata(
        total_num_frames=clip_frames,
        fps=probe.fps,
        width=width,
        height=height,
        duration=clip_frames / probe.fps,
        video_backend=name,
        frames_indices=list(indices),
    )
    if cache is not None:
        cache.put(key, frames, metadata)
    return frames, metadata


def load_image(path: str | os.PathLike, config: VideoSamplingConfig | None = None):
    """Loads an image as RGB and resizes it by the image pixel rules of `config` (bicubic).

    Returns:
        A `PIL.Image.Image` in RGB whose sides are multiples of `config.patch_factor`.

    Raises:
        ImageDecodeError: for a missing (`ImageNotFoundError`) or unreadable file, or an aspect ratio above 200.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    config = config or VideoSamplingConfig()
    path = os.fspath(path)
    if not os.path.isfile(path):
        if os.path.isdir(path):
            raise ImageDecodeError(path, "is a directory, not an image file", "A record's `path` must name a file.")
        raise ImageNotFoundError(path, "file not found", "Check the media root and the record's `path`.")
    try:
        with Image.open(path) as opened:
            image = ImageOps.exif_transpose(opened)
            if image.mode == "RGBA":  # transparent pixels become white, as in qwen-vl-utils
                background = Image.new("RGB", image.size, (255, 255, 255))
                background.paste(image, mask=image.split()[3])
                image = background
            else:
                image = image.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise ImageDecodeError(path, f"not a readable image ({error})") from error
    width, height = image.size
    try:
        target_h, target_w = config.image_size(height, width)
    except ValueError as error:
        raise ImageDecodeError(path, str(error)) from error
    if (target_w, target_h) != (width, height):
        image = image.resize((target_w, target_h), resample=Image.BICUBIC)
    return image
