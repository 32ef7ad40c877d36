"""Decoded media as bytes for transport: an image (or one sampled frame) as a `data:` URL, sampled frames as an mp4.

Used wherever frames `videorft_hf.video` decoded leave the process: the vLLM server rows of the training path
(`videorft_hf.vllm_media`) and the OpenAI-compatible client of the curation pipeline
(`videorft_hf.curation.backends`). Nothing here talks to a server.

Example:
    >>> import numpy as np
    >>> encode_image_data_url(np.zeros((28, 28, 3), dtype=np.uint8), "png")[:22]
    'data:image/png;base64,'
"""

from __future__ import annotations

import base64
import io
from fractions import Fraction
from typing import Any

__all__ = ["encode_frames_mp4", "encode_image_data_url", "write_frames_mp4"]


def encode_image_data_url(image: Any, image_format: str = "jpeg", quality: int = 90) -> str:
    """Returns a `data:image/...;base64,` URL of an RGB image (a PIL image or a uint8 (H, W, 3) array).

    Args:
        image: the image.
        image_format: "jpeg" (small) or "png" (lossless).
        quality: JPEG quality.

    Returns:
        The data URL.

    Example:
        >>> import numpy as np
        >>> encode_image_data_url(np.zeros((28, 28, 3), dtype=np.uint8))[:23]
        'data:image/jpeg;base64,'
    """
    from PIL import Image

    if not isinstance(image, Image.Image):
        image = Image.fromarray(image)
    buffer = io.BytesIO()
    if image_format == "jpeg":
        image.convert("RGB").save(buffer, format="JPEG", quality=quality)
    else:
        image.save(buffer, format=image_format.upper())
    return f"data:image/{image_format};base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def write_frames_mp4(destination: Any, frames: Any, fps: float, options: dict[str, str] | None = None) -> None:
    """Writes frames as an H.264 mp4 (yuv420p) playing at `fps`, so that timestamps survive.

    Args:
        destination: a file path or a writable binary file object.
        frames: uint8 (T, H, W, 3) frames (even sides), an array or a sequence of arrays.
        fps: the frame rate (for sampled frames: frames sampled per second of source video).
        options: x264 options (default: `preset=veryfast`, `crf=18`); `threads=1` with `x264-params=mbtree=0` makes
            the bytes the same on every run and machine.
    """
    import av
    import numpy as np

    frames = np.asarray(frames)
    rate = Fraction(fps).limit_denominator(1001)
    with av.open(destination, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = 1 / rate
        stream.codec_context.options = dict(options or {"preset": "veryfast", "crf": "18"})
        for index, array in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(array), format="rgb24")
            frame.pts = index
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def encode_frames_mp4(frames: Any, fps: float) -> bytes:
    """The bytes of `write_frames_mp4(frames, fps)` (default options): sampled frames as an mp4, timestamps kept.

    Args:
        frames: uint8 (T, H, W, 3) frames (even sides, as `load_video_frames` returns them).
        fps: the sampled frame rate (frames sampled per second of source video).

    Returns:
        The mp4 file's bytes.
    """
    buffer = io.BytesIO()
    write_frames_mp4(buffer, frames, fps)
    return buffer.getvalue()
