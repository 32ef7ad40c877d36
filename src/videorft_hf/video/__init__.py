"""Video and image frames for the model: sampling rules, decoding backends, resizing and a frame cache.

Frame sampling and resizing follow the qwen-vl-utils rules the VideoRFT release trained with (fps 2, an even
number of frames, both sides multiples of 28, bicubic with antialias), implemented here so that every stage
(SFT collator, GRPO trainer, rewards, evaluation) samples a video identically from one `VideoSamplingConfig`.

Frames come back as uint8 arrays together with a `transformers.video_utils.VideoMetadata`, so the processor
computes `second_per_grid_ts` (Qwen2.5-VL) and timestamps (Qwen3-VL) from the true fps and frame indices.

Modules, each importing only those above it:

- `errors`: the typed media errors (`MediaDecodeError` and its subclasses).
- `sampling`: `VideoSamplingConfig` (frame count, indices and size), `smart_resize`, `resize_frames`.
- `probe`: what a decoder reads about a stream before decoding.
- `planner`: the PyAV decode planner (`plan_pyav_decode`), pure.
- `pyav_decoder`, `decord_decoder`, `torchcodec_decoder`: one module per backend.
- `cache`: `FrameCache`.
- `loading`: `load_video_frames` and `load_image`, the entry points.

Example:
    >>> from videorft_hf import VideoSamplingConfig, load_video_frames
    >>> config = VideoSamplingConfig.from_preset("videorft-train")
    >>> frames, metadata = load_video_frames("clip.mp4", config)  # doctest: +SKIP
    >>> frames.shape, metadata.frames_indices  # doctest: +SKIP
    ((16, 224, 420, 3), [0, 120, ...])
"""

from .cache import FrameCache
from .errors import (
    AspectRatioError,
    CorruptVideoError,
    EmptyVideoError,
    ImageDecodeError,
    ImageNotFoundError,
    MediaDecodeError,
    NotAVideoError,
    UnsupportedVideoError,
    VideoDecodeError,
    VideoNotFoundError,
)
from .loading import VIDEO_BACKENDS, available_backends, load_image, load_video_frames
from .planner import DecodePlan, PacketIndex, plan_pyav_decode
from .sampling import FRAME_FACTOR, MAX_ASPECT_RATIO, VideoSamplingConfig, resize_frames, smart_resize

__all__ = [
    "FRAME_FACTOR",
    "MAX_ASPECT_RATIO",
    "VIDEO_BACKENDS",
    "AspectRatioError",
    "CorruptVideoError",
    "DecodePlan",
    "EmptyVideoError",
    "FrameCache",
    "ImageDecodeError",
    "ImageNotFoundError",
    "MediaDecodeError",
    "NotAVideoError",
    "PacketIndex",
    "UnsupportedVideoError",
    "VideoDecodeError",
    "VideoNotFoundError",
    "VideoSamplingConfig",
    "available_backends",
    "load_image",
    "load_video_frames",
    "plan_pyav_decode",
    "resize_frames",
    "smart_resize",
]
