"""Video and image frames for the model: sampling rules, decoding backends, resizing and a frame cache.

Frame sampling and resizing follow the qwen-vl-utils rules the VideoRFT release trained with (fps 2, an even
number of frames, both sides multiples of 28, bicubic with antialias), implemented here so that every stage
(SFT collator, GRPO trainer, rewards, evaluation) samples a video identically from one `VideoSamplingConfig`.

Frames come back as uint8 arrays together with a `transformers.video_utils.VideoMetadata`, so the processor
computes `second_per_grid_ts` (Qwen2.5-VL) and timestamps (Qwen3-VL) from the true fps and frame indices.

Example:
    >>> from videorft_hf import VideoSamplingConfig, load_video_frames
    >>> config = VideoSamplingConfig.from_preset("videorft-train")
    >>> frames, metadata = load_video_frames("clip.mp4", config)  # doctest: +SKIP
    >>> frames.shape, metadata.frames_indices  # doctest: +SKIP
    ((16, 224, 420, 3), [0, 120, ...])
"""

from __future__ import annotations

import bisect
import dataclasses
import importlib.util
import math
import os
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from transformers.video_utils import VideoMetadata

FRAME_FACTOR = 2  # temporal patch size of the Qwen-VL vision towers: frame counts are even
MAX_ASPECT_RATIO = 200
VIDEO_BACKENDS = ("decord", "pyav", "torchcodec")
# Decoding one frame after a seek costs about as much as flushing the decoder; used by the decode planner.
_SEEK_OVERHEAD_FRAMES = 2
# Threads decoding independent keyframe groups of one video at once (PyAV backend); 1 turns it off.
_DECODE_THREADS = min(2, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


# --------------------------------------------------------------------------------------------- errors
class MediaDecodeError(ValueError):
    """A media file could not be turned into frames. The message names the path and the cause."""

    def __init__(self, path: str, cause: str, hint: str = ""):
        self.path = str(path)
        self.cause = cause
        message = f"{self.path}: {cause}"
        if hint:
            message += f" {hint}"
        super().__init__(message)

    def __reduce__(self):  # keeps the error picklable across dataloader worker processes
        return (self.__class__, (self.path, self.cause))


class VideoDecodeError(MediaDecodeError):
    """A video could not be decoded into frames."""


class VideoNotFoundError(VideoDecodeError, FileNotFoundError):
    """The video file does not exist."""


class NotAVideoError(VideoDecodeError):
    """The file exists but holds no decodable video stream."""


class EmptyVideoError(VideoDecodeError):
    """The video has no frames, or fewer than the two a temporal patch needs."""


class CorruptVideoError(VideoDecodeError):
    """The stream ends early or fails to decode (truncated or corrupt file)."""


class UnsupportedVideoError(VideoDecodeError):
    """A valid video that the chosen backend cannot decode, or would decode to wrong frames; another backend can."""


class AspectRatioError(VideoDecodeError):
    """The frames are too thin to resize (aspect ratio above 200)."""


class ImageDecodeError(MediaDecodeError):
    """An image could not be loaded."""


class ImageNotFoundError(ImageDecodeError, FileNotFoundError):
    """The image file does not exist."""


# --------------------------------------------------------------------------------------------- config
_PRESETS: dict[str, dict] = {
    # VideoRFT training: exactly 16 frames at 128*28*28 pixels per frame.
    "videorft-train": dict(min_frames=16, max_frames=16, min_pixels=128 * 28 * 28, max_pixels=128 * 28 * 28),
    # VideoRFT / Video-R1 evaluation: 32 frames at 256*28*28.
    "videorft-eval": dict(min_frames=32, max_frames=32, min_pixels=128 * 28 * 28, max_pixels=256 * 28 * 28),
    # Video-R1 training: 4..16 frames at 128*28*28.
    "video-r1-train": dict(min_frames=4, max_frames=16, min_pixels=128 * 28 * 28, max_pixels=128 * 28 * 28),
}


@dataclass(frozen=True)
class VideoSamplingConfig:
    """How videos and images are sampled and resized. One object flows from the recipe to every stage.

    Frame count: `n = clamp(duration * fps, min_frames, max_frames)`, capped at the number of frames in the
    video (or clip), floored to an even number; frame indices are `round(linspace(first, last, n))`.
    Frame size: aspect ratio kept, both sides multiples of `patch_factor`, pixels per frame within
    `[min_pixels, cap]` with `cap = min(max_pixels, max(min(max_pixels, total_pixels / n * 2), 1.05 * min_pixels))`
    (the qwen-vl-utils rule with the configured `max_pixels` taking precedence, as the release's per-sample
    `max_pixels` did).

    Example:
        >>> VideoSamplingConfig.from_preset("videorft-train").max_frames
        16
    """

    fps: float = field(default=2.0, metadata={"help": "Frames sampled per second of video."})
    min_frames: int = field(default=4, metadata={"help": "Fewest frames sampled (rounded up to even)."})
    max_frames: int = field(default=768, metadata={"help": "Most frames sampled (rounded down to even)."})
    min_pixels: int = field(default=128 * 28 * 28, metadata={"help": "Fewest pixels per video frame."})
    max_pixels: int = field(default=768 * 28 * 28, metadata={"help": "Most pixels per video frame."})
    total_pixels: int = field(
        default=int(128000 * 28 * 28 * 0.9), metadata={"help": "Pixel budget of a whole video (all frames)."}
    )
    image_min_pixels: int = field(default=4 * 28 * 28, metadata={"help": "Fewest pixels per image."})
    image_max_pixels: int = field(default=256 * 28 * 28, metadata={"help": "Most pixels per image."})
    patch_factor: int = field(
        default=28, metadata={"help": "Both frame sides become multiples of this (patch size * spatial merge)."}
    )

    def __post_init__(self):
        if not (isinstance(self.fps, (int, float)) and math.isfinite(self.fps) and self.fps > 0):
            raise ValueError(f"fps must be a positive number, got {self.fps!r}.")
        if self.min_frames < 1 or self.max_frames < FRAME_FACTOR:
            raise ValueError(
                f"min_frames must be >= 1 and max_frames >= {FRAME_FACTOR}, got {self.min_frames}, {self.max_frames}."
            )
        if self.min_frames > self.max_frames:
            raise ValueError(
                f"min_frames ({self.min_frames}) is larger than max_frames ({self.max_frames}); lower min_frames."
            )
        if self.patch_factor < 1:
            raise ValueError(f"patch_factor must be >= 1, got {self.patch_factor}.")
        for low, high in (("min_pixels", "max_pixels"), ("image_min_pixels", "image_max_pixels")):
            lo, hi = getattr(self, low), getattr(self, high)
            if lo < 1 or hi < lo:
                raise ValueError(f"Need 1 <= {low} <= {high}, got {low}={lo}, {high}={hi}.")
        if self.total_pixels < self.min_pixels:
            raise ValueError(f"total_pixels ({self.total_pixels}) must be >= min_pixels ({self.min_pixels}).")

    @classmethod
    def from_preset(cls, name: str, **overrides) -> VideoSamplingConfig:
        """Returns a preset ("videorft-train", "videorft-eval", "video-r1-train"), with fields overridden.

        Raises:
            ValueError: for an unknown preset name.
        """
        if name not in _PRESETS:
            raise ValueError(f"Unknown sampling preset {name!r}; choose one of {sorted(_PRESETS)}.")
        return cls(**{**_PRESETS[name], **overrides})

    @staticmethod
    def preset_names() -> list[str]:
        return sorted(_PRESETS)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def describe(self) -> str:
        """The video sampling in words, as cards and warnings state it.

        Example:
            >>> VideoSamplingConfig.from_preset("videorft-eval").describe()
            '32 frames at 2 fps, 100352-200704 pixels per frame'
        """
        frames = (
            f"{self.max_frames} frames"
            if self.min_frames == self.max_frames
            else f"{self.min_frames}-{self.max_frames} frames"
        )
        pixels = (
            f"{self.max_pixels} pixels"
            if self.min_pixels == self.max_pixels
            else f"{self.min_pixels}-{self.max_pixels} pixels"
        )
        return f"{frames} at {self.fps:g} fps, {pixels} per frame"

    def differences(self, other: VideoSamplingConfig) -> dict[str, tuple]:
        """The sampling fields (all but `patch_factor`, which follows the model) whose values differ from `other`'s,
        as `{field: (self's value, other's value)}`.

        Example:
            >>> train, evaluation = (VideoSamplingConfig.from_preset(name) for name in ("videorft-train", "videorft-eval"))
            >>> sorted(evaluation.differences(train))
            ['max_frames', 'max_pixels', 'min_frames']
        """
        return {
            f.name: (getattr(self, f.name), getattr(other, f.name))
            for f in dataclasses.fields(self)
            if f.name != "patch_factor" and getattr(self, f.name) != getattr(other, f.name)
        }

    # ---------------------------------------------------------------- the sampling rules
    def num_frames(self, total_frames: int, video_fps: float) -> int:
        """Number of frames to sample from a video (or clip) of `total_frames` frames at `video_fps`.

        Returns 0 when the video has fewer than two frames (the caller raises).
        """
        min_frames = _ceil_by(self.min_frames, FRAME_FACTOR)
        max_frames = _floor_by(self.max_frames, FRAME_FACTOR)
        n = total_frames / video_fps * self.fps
        n = min(max(n, min_frames), max_frames, total_frames)
        n = _floor_by(n, FRAME_FACTOR)
        return n if n >= FRAME_FACTOR else 0

    def frame_indices(self, total_frames: int, video_fps: float, start_frame: int = 0, end_frame: int | None = None):
        """Indices of the sampled frames, `round(linspace(start_frame, end_frame, n))` (float32, half to even).

        Uses torch's float32 `linspace` so the indices equal those of qwen-vl-utils for every video.
        """
        import torch

        end_frame = total_frames - 1 if end_frame is None else end_frame
        n = self.num_frames(end_frame - start_frame + 1, video_fps)
        if n == 0:
            return []
        return torch.linspace(start_frame, end_frame, n).round().long().tolist()

    def frame_size(self, height: int, width: int, num_frames: int) -> tuple[int, int]:
        """Target (height, width) of every frame of a video sampled to `num_frames` frames."""
        cap = max(min(self.max_pixels, self.total_pixels / num_frames * FRAME_FACTOR), 1.05 * self.min_pixels)
        cap = min(self.max_pixels, cap)
        return smart_resize(height, width, self.patch_factor, self.min_pixels, cap)

    def image_size(self, height: int, width: int) -> tuple[int, int]:
        """Target (height, width) of an image."""
        return smart_resize(height, width, self.patch_factor, self.image_min_pixels, self.image_max_pixels)


def _ceil_by(x: float, factor: int) -> int:
    return math.ceil(x / factor) * factor


def _floor_by(x: float, factor: int) -> int:
    return math.floor(x / factor) * factor


def smart_resize(height: int, width: int, factor: int, min_pixels: float, max_pixels: float) -> tuple[int, int]:
    """Target size with both sides multiples of `factor`, pixels in [min_pixels, max_pixels], aspect ratio kept.

    Raises:
        ValueError: if the aspect ratio exceeds 200 (callers turn it into their typed error).
    """
    if min(height, width) <= 0:
        raise ValueError(f"frame size must be positive, got {height}x{width}")
    ratio = max(height, width) / min(height, width)
    if ratio > MAX_ASPECT_RATIO:
        raise ValueError(f"aspect ratio {ratio:.1f} is above {MAX_ASPECT_RATIO} ({width}x{height})")
    h_bar = max(factor, round(height / factor) * factor)
    w_bar = max(factor, round(width / factor) * factor)
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, _floor_by(height / beta, factor))
        w_bar = max(factor, _floor_by(width / beta, factor))
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = _ceil_by(height * beta, factor)
        w_bar = _ceil_by(width * beta, factor)
    return h_bar, w_bar


def resize_frames(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resizes uint8 frames (T, H, W, 3) with bicubic interpolation and antialias, returning uint8 (T, h, w, 3).

    The same torchvision kernel as qwen-vl-utils on uint8 input, so pixels equal the release's.
    """
    if frames.shape[1] == height and frames.shape[2] == width:
        return frames
    import torch
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms.functional import resize

    tensor = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)
    out = torch.empty((len(frames), height, width, 3), dtype=torch.uint8)
    # One frame at a time: the same pixels as resizing the batch, in half the time here (16 frames 360x640 ->
    # 224x420: 28 ms instead of 55 ms; PyTorch's antialiasing kernel handles single images faster).
    for i, frame in enumerate(tensor):
        out[i] = resize(frame, [height, width], interpolation=InterpolationMode.BICUBIC, antialias=True).permute(1, 2, 0)
    return out.numpy()


# --------------------------------------------------------------------------------------------- backends
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


@dataclass
class _Probe:
    total_frames: int
    fps: float


def _rotate_upright(frames: np.ndarray, rotation: int) -> np.ndarray:
    """Applies the display rotation (degrees counter-clockwise, as FFmpeg's display matrix and PyAV report it)."""
    quarter_turns = (round(rotation / 90) % 4) if rotation else 0
    if quarter_turns == 0:
        return frames
    return np.ascontiguousarray(np.rot90(frames, k=quarter_turns, axes=(1, 2)))


def _open_pyav(path: str):
    import av

    try:
        container = av.open(path)
    except av.error.FileNotFoundError as error:
        raise VideoNotFoundError(path, "file not found") from error
    except (av.error.InvalidDataError, av.error.FFmpegError) as error:
        raise NotAVideoError(path, f"not a readable media file ({error.__class__.__name__}: {error})") from error
    if not container.streams.video:
        container.close()
        raise NotAVideoError(path, "the file holds no video stream")
    demuxer = container.format.name or ""
    if demuxer == "image2" or demuxer.endswith("_pipe"):
        container.close()
        raise NotAVideoError(path, f"this is an image ({demuxer}), not a video", "Give it data_type 'image'.")
    return container


def _video_codec(path: str) -> str | None:
    """The codec name of the file's first video stream as PyAV reads it, or None when PyAV cannot open one."""
    try:
        container = _open_pyav(path)
    except VideoDecodeError:
        return None
    try:
        return container.streams.video[0].codec_context.codec.canonical_name  # "av1", not the decoder "libdav1d"
    finally:
        container.close()


def _h264_nal_length_size(stream) -> int | None:
    """Bytes of the NAL length prefix of an H.264 stream stored as AVCC (mp4, mkv, mov), else None.

    Only such streams let the decoder skip disposable frames (see `_is_disposable_h264`); Annex B streams (MPEG-TS)
    and other codecs are decoded in full.
    """
    extradata = stream.codec_context.extradata
    if stream.codec_context.name != "h264" or not extradata or len(extradata) < 7 or extradata[0] != 1:
        return None
    return (extradata[4] & 3) + 1


def _is_disposable_h264(packet, length_size: int) -> bool:
    """True when the packet's picture has nal_ref_idc 0: H.264 never predicts another picture from it, so a frame
    that is not sampled can be left undecoded without changing any other frame (ITU-T H.264, 7.4.1)."""
    data = memoryview(packet)
    size, offset = len(data), 0
    while offset + length_size < size:
        nal_size = int.from_bytes(data[offset : offset + length_size], "big")
        header = data[offset + length_size]
        if header & 0x1F in (1, 5):  # the first slice of the picture decides
            return header & 0x60 == 0
        offset += length_size + nal_size
    return False


@dataclass
class PacketIndex:
    """What one demuxing pass (no decoding) tells about a video stream, in presentation order.

    Attributes:
        pts: the packets' timestamps, sorted: frame `i` is the packet with the `i`-th smallest timestamp.
        keyframe_pts: timestamps of keyframes (where a seek can start decoding).
        disposable_pts: timestamps of disposable pictures (H.264 nal_ref_idc 0: no other picture is predicted from
            them, so one that is not sampled need never be decoded).
        ordered_by_pts: whether timestamps name frames: False when a packet has none or two share one (then frames
            are counted in the order the decoder returns them, from the start).
    """

    pts: list[int]
    keyframe_pts: list[int] = field(default_factory=list)
    disposable_pts: set[int] = field(default_factory=set)
    ordered_by_pts: bool = True


@dataclass(frozen=True)
class DecodePlan:
    """How the PyAV backend decodes the sampled frames of one video (made by `plan_pyav_decode`).

    Attributes:
        targets: the distinct frame indices to decode, ascending.
        skip_pts: timestamps of packets never sent to the decoder (disposable pictures that are not sampled).
        seek_threads: empty for one sequential pass from the start; else, per decoding thread, the groups it decodes
            after a seek: `(keyframe index, targets from that keyframe on)`, by keyframe. One entry: a single thread
            on the demuxer of the planning pass; more: one thread each, each with its own demuxer.
    """

    targets: tuple[int, ...]
    skip_pts: frozenset[int] = frozenset()
    seek_threads: tuple[tuple[tuple[int, tuple[int, ...]], ...], ...] = ()

    @property
    def seeks(self) -> bool:
        return bool(self.seek_threads)


def plan_pyav_decode(
    packets: PacketIndex,
    indices: list[int],
    *,
    seek_overhead: int | None = None,
    threads: int | None = None,
) -> DecodePlan:
    """Plans which packets to decode for the frames `indices`: one sequential pass, or one seek per keyframe group.

    Targets are grouped by the keyframe before them (targets before the first keyframe go with frame 0); seeking is
    chosen when there are two groups or more and their decode cost (frames decoded from each keyframe to its group's
    last target, plus `seek_overhead` per seek) is below that of one pass from frame 0 to the last target. Disposable pictures that are not sampled count as free (never decoded). Groups are
    spread over up to `threads` threads, heaviest first, each to the least loaded thread. A stream whose timestamps
    do not name frames is always decoded in one pass, without skipping.

    Args:
        packets: the stream's `PacketIndex`.
        indices: the sampled frame indices (any order, repeats allowed).
        seek_overhead: frames one seek costs (default `_SEEK_OVERHEAD_FRAMES`).
        threads: most decoding threads when seeking (default `_DECODE_THREADS`).

    Returns:
        The `DecodePlan`.

    Example:
        >>> packets = PacketIndex(pts=list(range(100)), keyframe_pts=[0, 50])
        >>> plan_pyav_decode(packets, [10, 60, 62], threads=1).seek_threads
        (((0, (10,)), (50, (60, 62))),)
        >>> plan_pyav_decode(packets, [2, 4, 60], threads=1).seeks  # 5 frames, seek, 11 frames vs 61 frames
        True
        >>> plan_pyav_decode(packets, [2, 40, 49], threads=1).seeks  # one group: one pass from the start
        False
    """
    seek_overhead = _SEEK_OVERHEAD_FRAMES if seek_overhead is None else seek_overhead
    threads = _DECODE_THREADS if threads is None else threads
    pts_list = packets.pts
    targets = sorted(set(indices))
    target_set = set(targets)
    pts_to_index = {pts: i for i, pts in enumerate(pts_list)}
    keyframes = sorted(pts_to_index[p] for p in packets.keyframe_pts if p in pts_to_index)
    disposable = packets.disposable_pts if packets.ordered_by_pts else set()
    skip = frozenset(p for p in disposable if pts_to_index[p] not in target_set)
    # needed[i]: frames among the first i that must be decoded (the cost unit).
    needed = np.concatenate([[0], np.cumsum([p not in skip for p in pts_list])]) if pts_list else np.zeros(1)

    groups: dict[int, list[int]] = {}
    for t in targets:
        k = keyframes[bisect.bisect_right(keyframes, t) - 1] if keyframes and keyframes[0] <= t else 0
        groups.setdefault(k, []).append(t)

    def cost(first: int, last: int) -> int:
        return int(needed[min(last + 1, len(needed) - 1)] - needed[min(first, len(needed) - 1)])

    seek_cost = sum(cost(k, max(g)) + seek_overhead for k, g in groups.items())
    sequential_cost = cost(0, targets[-1])
    if not packets.ordered_by_pts or len(groups) <= 1 or seek_cost >= sequential_cost:
        return DecodePlan(tuple(targets), skip)
    # Groups start at keyframes, so they decode independently: heaviest first, each to the least loaded thread.
    workers = min(len(groups), threads)
    items = sorted(
        ((k, tuple(g)) for k, g in groups.items()), key=lambda item: cost(item[0], item[1][-1]), reverse=True
    )
    if workers <= 1:
        return DecodePlan(tuple(targets), skip, (tuple(sorted(items)),))
    bins: list[list[tuple[int, tuple[int, ...]]]] = [[] for _ in range(workers)]
    loads = [0] * workers
    for item in items:
        j = loads.index(min(loads))
        bins[j].append(item)
        loads[j] += cost(item[0], item[1][-1]) + seek_overhead
    return DecodePlan(tuple(targets), skip, tuple(tuple(sorted(b)) for b in bins))


def _index_packets(container, stream, path: str) -> PacketIndex:
    """One demuxing pass over the stream (no decoding): timestamps, keyframes and disposable pictures."""
    import av

    length_size = _h264_nal_length_size(stream)
    packets = PacketIndex(pts=[])
    try:
        for packet in container.demux(stream):
            if packet.size == 0:
                continue
            if packet.pts is None:
                packets.ordered_by_pts = False
                continue
            packets.pts.append(packet.pts)
            if packet.is_keyframe:
                packets.keyframe_pts.append(packet.pts)
            elif length_size is not None and _is_disposable_h264(packet, length_size):
                packets.disposable_pts.add(packet.pts)
    except av.error.FFmpegError as error:
        raise CorruptVideoError(path, f"the stream cannot be read ({error})") from error
    packets.pts.sort()
    # Some muxers (screen recorders, phones) give consecutive frames one timestamp: then a timestamp does not name
    # a frame, and frames are counted in the order the decoder returns them, from the start, as for missing ones.
    if len(set(packets.pts)) < len(packets.pts):
        packets.ordered_by_pts = False
    return packets


def _probe_pyav(stream, packets: PacketIndex, path: str) -> _Probe:
    """Frame count and rate of the stream; typed errors for a truncated, empty or rateless one."""
    fps = float(stream.average_rate or stream.guessed_rate or 0)
    total = len(packets.pts)
    if not packets.ordered_by_pts:
        total = stream.frames or total
    elif stream.frames and total < stream.frames:
        raise CorruptVideoError(
            path, f"the stream ends after {total} of the {stream.frames} frames its header declares; the file is truncated"
        )
    if total == 0:
        raise EmptyVideoError(path, "the video stream has no frames")
    if fps <= 0:
        raise CorruptVideoError(path, "the video stream declares no frame rate")
    return _Probe(total, fps)


class _PyAVFrames:
    """Carries out a `DecodePlan`: decodes packets, keeps the RGB arrays of the targets (`decoded`) and the display
    rotation the frames report. Frames that are not targets are never converted to RGB or copied. `container` is the
    demuxer of the planning pass, replaced by a fresh one for a sequential pass; the caller closes the last one."""

    def __init__(self, path: str, container, packets: PacketIndex, plan: DecodePlan, size: tuple[int, int]):
        self.path = path
        self.container = container
        self.plan = plan
        self.by_position = not packets.ordered_by_pts
        self.pts_to_index = {pts: i for i, pts in enumerate(packets.pts)}
        self.seek_pts = packets.pts
        # A stream whose resolution changes midway is scaled to its first resolution, as FFmpeg's tools do.
        self.size = size
        self.decoded: dict[int, np.ndarray] = {}
        self.rotation = 0

    def decode_until(self, container, stream, last_target: int, wanted: set[int]) -> None:
        """Feeds packets from the demuxer's position until the frame `last_target` (or a later one) is out."""
        position = 0
        for packet in container.demux(stream):
            if packet.pts is not None and packet.pts in self.plan.skip_pts:
                continue
            for frame in packet.decode():  # an empty packet at the end of the file flushes the decoder
                self.rotation = int(frame.rotation or 0)
                i = position if self.by_position or frame.pts is None else self.pts_to_index.get(frame.pts)
                position += 1
                if i in wanted and i not in self.decoded:
                    scale = (frame.width, frame.height) != self.size and all(self.size)
                    resize = dict(width=self.size[0], height=self.size[1]) if scale else {}
                    self.decoded[i] = frame.to_ndarray(format="rgb24", **resize)
                if i is not None and i >= last_target:
                    return

    def decode_groups(self, groups, own_container: bool) -> None:
        """Seeks to each group's keyframe and decodes up to its last target (one demuxer per thread)."""
        reader = _open_pyav(self.path) if own_container else self.container
        try:
            video = reader.streams.video[0]
            # A thread of ours per demuxer already keeps the cores busy: FFmpeg's own frame threads on top of it
            # cost about 5% more CPU for nothing (60 s clip of BENCHMARKS.md: 3.44 s instead of 3.64 s).
            video.thread_type = "NONE" if own_container else "AUTO"
            for k, group in groups:
                reader.seek(self.seek_pts[k], stream=video, backward=True, any_frame=False)
                self.decode_until(reader, video, group[-1], set(group))
        finally:
            if own_container:
                reader.close()

    def run(self) -> None:
        """Decodes every target of the plan."""
        threads = self.plan.seek_threads
        if len(threads) > 1:  # PyAV releases the GIL while decoding: groups decode in parallel
            with ThreadPoolExecutor(len(threads)) as pool:
                for future in [pool.submit(self.decode_groups, groups, True) for groups in threads]:
                    future.result()
        elif threads:
            self.decode_groups(threads[0], False)
        # Without a seek, or when a seek landed past a group's keyframe (MPEG-TS seeks by byte position): one
        # sequential pass from the start on a fresh demuxer (the planning pass left this one at the end).
        wanted = {t for t in self.plan.targets if t not in self.decoded}
        if wanted:
            self.container.close()
            self.container = _open_pyav(self.path)
            stream = self.container.streams.video[0]
            stream.thread_type = "AUTO"
            self.decode_until(self.container, stream, max(wanted), wanted)


def _decode_pyav(path: str, indices_fn) -> tuple[np.ndarray, list[int], _Probe, int]:
    """Decodes with PyAV: demux once (no decoding) to map timestamps to frame indices and find keyframes, plan
    (`plan_pyav_decode`: one sequential pass or one seek per keyframe group, whichever decodes fewer frames), then
    decode. Frames that are not sampled are never converted to RGB or copied.

    Speed-up (H.264 in mp4/mkv/mov): packets of disposable pictures (nal_ref_idc 0, no other picture is predicted
    from them) that are not sampled are never sent to the decoder; the pixels of every sampled frame are unchanged.
    With x264's default B-frames that is about 45% of the packets."""
    import av

    container = _open_pyav(path)
    frames = None
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        packets = _index_packets(container, stream, path)
        probe = _probe_pyav(stream, packets, path)
        indices = indices_fn(probe)
        plan = plan_pyav_decode(packets, indices)
        size = (stream.codec_context.width, stream.codec_context.height)
        frames = _PyAVFrames(path, container, packets, plan, size)
        try:
            frames.run()
        except av.error.FFmpegError as error:
            raise CorruptVideoError(path, f"decoding failed ({error})") from error
        missing = [t for t in plan.targets if t not in frames.decoded]
        if missing:
            raise CorruptVideoError(
                path,
                f"the stream ended or broke before frame {missing[0]} of {probe.total_frames} "
                f"({len(missing)} of {len(plan.targets)} sampled frames missing); the file is truncated or corrupt",
            )
        return np.stack([frames.decoded[i] for i in indices]), indices, probe, frames.rotation
    finally:
        (frames.container if frames is not None else container).close()


def _decord_problem(path: str) -> str | None:
    """Why decord would return wrong frames for this video, found by demuxing it with PyAV (no decoding), else None.

    decord seeks by timestamp and counts frames from the container's start time. It returns frames at the wrong
    positions for MPEG-TS files (whose timestamps start late) and for open-GOP streams (pictures that follow a
    keyframe in decode order but are shown before it: after a seek they are counted as frames after it).
    """
    import av

    container = _open_pyav(path)
    try:
        if container.format.name == "mpegts":
            return "an MPEG-TS file (decord counts its frames from the wrong start time)"
        keyframe_pts = None
        for packet in container.demux(container.streams.video[0]):
            if packet.pts is None or packet.size == 0:
                continue
            if packet.is_keyframe:
                keyframe_pts = packet.pts
            elif keyframe_pts is not None and packet.pts < keyframe_pts:
                return "an open-GOP stream (frames shown before their keyframe, which decord puts after it)"
    except av.error.FFmpegError:
        return None  # the decoder itself reports a broken stream
    finally:
        container.close()
    return None


def _decode_decord(path: str, indices_fn) -> tuple[np.ndarray, list[int], _Probe, int]:
    import decord

    hint = "Decode it with backend='pyav' (the default)."
    try:
        reader = decord.VideoReader(path, num_threads=0)
    except (decord.DECORDError, RuntimeError) as error:
        cause = str(error).splitlines()[0]
        codec = _video_codec(path)
        if codec is not None:  # PyAV reads the video stream: decord lacks its codec
            raise UnsupportedVideoError(path, f"decord cannot decode this {codec} video ({cause})", hint) from error
        raise NotAVideoError(path, f"not a readable video ({cause})") from error
    problem = _decord_problem(path)
    if problem is not None:
        raise UnsupportedVideoError(path, f"decord would return wrong frames for {problem}", hint)
    total = len(reader)
    if total == 0:
        raise EmptyVideoError(path, "the video stream has no frames")
    probe = _Probe(total, float(reader.get_avg_fps()))
    indices = indices_fn(probe)
    try:
        frames = reader.get_batch(indices).asnumpy()
    except decord.DECORDError as error:
        raise CorruptVideoError(path, f"decoding failed ({str(error).splitlines()[0]})") from error
    if frames.shape[0] != len(indices):
        raise CorruptVideoError(path, f"decoded {frames.shape[0]} of {len(indices)} sampled frames")
    # decord applies the display rotation itself (checked for 90, 180 and 270 degrees in the tests).
    return frames, indices, probe, 0


def _decode_torchcodec(path: str, indices_fn) -> tuple[np.ndarray, list[int], _Probe, int]:
    from torchcodec.decoders import VideoDecoder

    try:
        decoder = VideoDecoder(path, seek_mode="exact")
    except (RuntimeError, ValueError) as error:
        raise NotAVideoError(path, f"not a readable video ({error})") from error
    meta = decoder.metadata
    total = int(meta.num_frames or 0)
    if total == 0:
        raise EmptyVideoError(path, "the video stream has no frames")
    probe = _Probe(total, float(meta.average_fps))
    indices = indices_fn(probe)
    try:
        frames = decoder.get_frames_at(indices=indices).data.permute(0, 2, 3, 1).numpy()
    except (RuntimeError, IndexError) as error:
        raise CorruptVideoError(path, f"decoding failed ({error})") from error
    # torchcodec applies the display rotation itself.
    return frames, indices, probe, 0


_DECODERS = {"pyav": _decode_pyav, "decord": _decode_decord, "torchcodec": _decode_torchcodec}


# --------------------------------------------------------------------------------------------- cache
class FrameCache:
    """A bounded in-memory LRU cache of decoded frames, keyed by path, file identity and sampling config.

    File identity is (device, inode, size, modification time), so a replaced file is never served stale.
    Thread-safe. Off by default: pass one to `load_video_frames(..., cache=cache)`.

    Args:
        max_bytes: the most frame bytes held; least recently used entries are evicted beyond it.

    Example:
        >>> cache = FrameCache(max_bytes=2 * 1024**3)
        >>> frames, metadata = load_video_frames("clip.mp4", cache=cache)  # doctest: +SKIP
    """

    def __init__(self, max_bytes: int = 1 << 30):
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be positive, got {max_bytes}.")
        self.max_bytes = max_bytes
        self.current_bytes = 0
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def key(path: str, config: VideoSamplingConfig, start: float | None, end: float | None) -> tuple:
        stat = os.stat(path)
        identity = (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)
        return (os.path.realpath(path), identity, config, start, end)

    def get(self, key):
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return entry

    def put(self, key, frames: np.ndarray, metadata: VideoMetadata) -> None:
        size = frames.nbytes
        if size > self.max_bytes:
            return
        frames.setflags(write=False)  # shared between callers: nobody may modify a cached array in place
        with self._lock:
            if key in self._entries:
                self.current_bytes -= self._entries.pop(key)[0].nbytes
            self._entries[key] = (frames, metadata)
            self.current_bytes += size
            while self.current_bytes > self.max_bytes:
                _, (old, _) = self._entries.popitem(last=False)
                self.current_bytes -= old.nbytes

    def __len__(self) -> int:
        return len(self._entries)


# --------------------------------------------------------------------------------------------- public loaders
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

    def indices_fn(probe: _Probe) -> list[int]:
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
