"""The sampling rules: how many frames of a video, which ones, and at what size (`VideoSamplingConfig`), plus the
resize rule (`smart_resize`) and kernel (`resize_frames`) of qwen-vl-utils."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np

FRAME_FACTOR = 2  # temporal patch size of the Qwen-VL vision towers: frame counts are even
MAX_ASPECT_RATIO = 200

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
