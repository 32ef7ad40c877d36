"""Test media that check themselves: frames that carry their own index (`encode_frame_index`, `decode_frame_index`),
real H.264 videos made of them (`write_test_video`, optionally with footage-like texture), images, and the broken
files of error-path tests."""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import numpy as np

# ----------------------------------------------------------------------------------------------------------------
# Frames that carry their index
# ----------------------------------------------------------------------------------------------------------------

# A 4 x 4 grid of solid cells. Three corners are fixed colour markers (red top-left, green top-right, blue
# bottom-left), so a rotated or mirrored frame is detected instead of misread; the 13 other cells are the bits of the
# frame index (white = 1, black = 0), least significant first in row-major order.
_GRID = 4
_MARKERS = {(0, 0): (255, 0, 0), (0, _GRID - 1): (0, 255, 0), (_GRID - 1, 0): (0, 0, 255)}
_BIT_CELLS = [(r, c) for r in range(_GRID) for c in range(_GRID) if (r, c) not in _MARKERS]
MAX_FRAME_INDEX = 2 ** len(_BIT_CELLS) - 1


def _cell_bounds(size: int, i: int) -> tuple[int, int]:
    return (i * size) // _GRID, ((i + 1) * size) // _GRID


def encode_frame_index(index: int, height: int, width: int) -> np.ndarray:
    """Draw the frame whose solid blocks encode `index`.

    Args:
        index: Frame index, `0 <= index <= MAX_FRAME_INDEX` (8191).
        height: Frame height in pixels (at least 8).
        width: Frame width in pixels (at least 8).

    Returns:
        A `(height, width, 3)` uint8 RGB array.
    """
    if not 0 <= index <= MAX_FRAME_INDEX:
        raise ValueError(f"index must be in [0, {MAX_FRAME_INDEX}], got {index}.")
    if height < 2 * _GRID or width < 2 * _GRID:
        raise ValueError(f"frames must be at least {2 * _GRID} x {2 * _GRID} pixels, got {height} x {width}.")
    frame = np.zeros((height, width, 3), dtype=np.uint8)
    for (r, c), colour in _MARKERS.items():
        (y0, y1), (x0, x1) = _cell_bounds(height, r), _cell_bounds(width, c)
        frame[y0:y1, x0:x1] = colour
    for bit, (r, c) in enumerate(_BIT_CELLS):
        if index >> bit & 1:
            (y0, y1), (x0, x1) = _cell_bounds(height, r), _cell_bounds(width, c)
            frame[y0:y1, x0:x1] = 255
    return frame


def decode_frame_index(frame: np.ndarray) -> int:
    """Recover the index drawn by `encode_frame_index` from an RGB frame, at any size.

    Each cell is read as the mean of its central half, so codec noise at block edges and resizing (cells are located
    relative to the frame size) do not matter.

    Args:
        frame: `(H, W, 3)` RGB array, uint8 in [0, 255] (or float in [0, 1]), `H, W >= 8`.

    Returns:
        The frame index.

    Raises:
        ValueError: The corner markers are not where an upright test frame has them (the frame is rotated, mirrored,
            channel-swapped (e.g. BGR) or not a test frame).
    """
    frame = np.asarray(frame)
    if frame.ndim != 3 or frame.shape[-1] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB frame, got shape {frame.shape}.")
    values = frame.astype(np.float64)
    if not np.issubdtype(frame.dtype, np.integer) and values.max() <= 1.0:
        values = values * 255.0
    height, width = frame.shape[:2]

    def cell_mean(r: int, c: int) -> np.ndarray:
        (y0, y1), (x0, x1) = _cell_bounds(height, r), _cell_bounds(width, c)
        dy, dx = (y1 - y0) // 4, (x1 - x0) // 4
        return values[y0 + dy : max(y1 - dy, y0 + dy + 1), x0 + dx : max(x1 - dx, x0 + dx + 1)].mean(axis=(0, 1))

    for (r, c), colour in _MARKERS.items():
        mean = cell_mean(r, c)
        if not all((m > 128) == (ref > 128) for m, ref in zip(mean, colour, strict=True)):
            raise ValueError(
                f"cell ({r}, {c}) has mean RGB {np.round(mean).astype(int).tolist()}, expected about {list(colour)}: "
                "not an upright RGB test frame (rotated, mirrored, BGR, or not written by videorft_hf.testing)."
            )
    index = 0
    for bit, (r, c) in enumerate(_BIT_CELLS):
        if cell_mean(r, c).mean() > 128:
            index |= 1 << bit
    return index


def make_index_frames(num_frames: int, height: int, width: int, start: int = 0, step: int = 1) -> np.ndarray:
    """Stack the index frames `start, start + step, ...` without any codec, like frames a loader returns.

    Args:
        num_frames: Number of frames.
        height: Frame height.
        width: Frame width.
        start: Index of the first frame.
        step: Index increment between frames.

    Returns:
        A `(num_frames, height, width, 3)` uint8 array.
    """
    return np.stack([encode_frame_index(start + i * step, height, width) for i in range(num_frames)])


def _noise_texture(index: int, height: int, width: int) -> np.ndarray:
    rng = np.random.default_rng(index)
    return rng.integers(-40, 41, size=(height, width, 3), dtype=np.int16)


# pattern="footage" (what it shows and what it costs to decode: write_test_video's docstring).
_FOOTAGE_LEVELS = (40, 216)  # what black and white index cells become; decode_frame_index thresholds at 128
_FOOTAGE_TEXTURE_STD = 20.0  # grey levels
_FOOTAGE_TEXTURE_LIMIT = 64  # texture clipped to +-64: every cell mean stays >= 23 levels on its side of 128
_FOOTAGE_SPECTRUM_SLOPE = 1.5  # amplitude ~ 1 / frequency ** slope (natural images: about 1, softer above)
_FOOTAGE_PAN = (1, 2)  # pixels per frame (down, right) while the camera moves: a slow diagonal pan
_FOOTAGE_PAN_CYCLE = (60, 60)  # frames moving, then frames held still, repeated (2 s each at 30 fps)
_FOOTAGE_SENSOR_NOISE = 1  # per-frame luma noise, uniform in [-1, 1] levels
_FOOTAGE_SEED = 20240


def _footage_texture(height: int, width: int) -> np.ndarray:
    """A seeded `(height, width, 3)` int16 texture, periodic in both directions (so it pans without a seam): filtered
    Gaussian noise with amplitude spectrum `1 / f ** _FOOTAGE_SPECTRUM_SLOPE`, mostly luma (80%) with some chroma."""
    rng = np.random.default_rng(_FOOTAGE_SEED)
    white = rng.standard_normal((height, width, 3))
    radius = np.hypot(np.fft.fftfreq(height)[:, None], np.fft.rfftfreq(width)[None, :])
    radius[0, 0] = 1.0
    spectrum = np.fft.rfft2(white, axes=(0, 1)) / radius[..., None] ** _FOOTAGE_SPECTRUM_SLOPE
    spectrum[0, 0] = 0.0
    texture = np.fft.irfft2(spectrum, s=(height, width), axes=(0, 1))
    luma = texture.mean(axis=2, keepdims=True)
    texture = 0.8 * luma / luma.std() + 0.2 * texture / texture.std()
    texture *= _FOOTAGE_TEXTURE_STD / texture.std()
    limit = _FOOTAGE_TEXTURE_LIMIT
    return np.clip(np.round(texture), -limit, limit).astype(np.int16)


def _footage_frame(index: int, height: int, width: int, texture: np.ndarray) -> np.ndarray:
    low, high = _FOOTAGE_LEVELS
    blocks = encode_frame_index(index, height, width).astype(np.int32) * (high - low) // 255 + low
    moving, held = _FOOTAGE_PAN_CYCLE
    steps = index // (moving + held) * moving + min(index % (moving + held), moving)
    dy, dx = _FOOTAGE_PAN
    panned = np.roll(texture, (steps * dy % height, steps * dx % width), axis=(0, 1))
    noise = np.random.default_rng((_FOOTAGE_SEED, index)).integers(
        -_FOOTAGE_SENSOR_NOISE, _FOOTAGE_SENSOR_NOISE + 1, size=(height, width, 1), dtype=np.int16
    )
    return np.clip(blocks + panned + noise, 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------------------------------------------
# Files
# ----------------------------------------------------------------------------------------------------------------


def write_test_video(
    path: str | os.PathLike,
    num_frames: int = 16,
    fps: float | Fraction = 8.0,
    width: int = 112,
    height: int = 112,
    codec: str = "libx264",
    gop: int | None = None,
    rotation: int | None = None,
    pattern: str = "index",
    faststart: bool = False,
) -> Path:
    """Write a real video file (H.264 in mp4 by default, yuv420p) whose frame `i` carries index `i`.

    The container is chosen from the suffix of `path` (`.mp4`, `.mkv`, `.mov`, `.avi`, ...). Frame `i` has
    presentation time `i / fps`. With libx264 the bytes are reproducible for the same arguments.

    Args:
        path: File to write; parent directories are created.
        num_frames: Number of frames, at most `MAX_FRAME_INDEX + 1`.
        fps: Frame rate; floats are turned into fractions (29.97 -> 2997/100).
        width: Displayed width in pixels (even, since yuv420p halves the chroma planes).
        height: Displayed height in pixels (even).
        codec: FFmpeg encoder name (`"libx264"`, `"mpeg4"`, ...).
        gop: Keyframe interval in frames: with libx264 a keyframe lands exactly every `gop` frames (scene-cut
            detection off). Encoder default when `None`.
        rotation: Display rotation in degrees counter-clockwise, one of 0, 90, 180, 270 (or -90), the convention of
            `av.VideoFrame.rotation`, which reads 270 back as -90. The stored frames are the upright frames rotated
            the other way (and are `height x width` for 90/270), so a reader that applies the display matrix gets
            upright `width x height` frames: `np.rot90(stored, k=rotation // 90)`. A phone's portrait video
            (`rotate=90` tag) has `rotation=-90`.
        pattern: What the frames show besides their index; every pattern decodes with `decode_frame_index`.
            `"index"`: the solid index blocks of `encode_frame_index` only; nearly free to decode (60 s at 640x360:
            about 0.15 s wall), far cheaper than real video. `"footage"`: the same blocks at reduced contrast
            (levels 40 and 216) under a fixed seeded texture with a natural-image-like spectrum, which a camera pans
            across (2 px right and 1 px down per frame for 2 s, then still for 2 s, repeated: motion compensation
            works as on real video) plus +-1 level of per-frame sensor noise; bitrate and decode cost resemble real
            camera footage (60 s 640x360 at 30 fps, `gop=240`: 6.3 MB, 0.84 Mbit/s, a full sequential PyAV decode
            about 0.75 s wall / 1.1 CPU seconds on 2 cores). `"noise"`: the solid blocks plus independent per-frame
            noise of +-40 levels, a worst case costing about six times real footage to decode (same clip: 92 MB,
            12 Mbit/s, about 4.2 s wall / 7 CPU seconds).
        faststart: Put the mp4 index (moov atom) before the media data. Then a truncated copy still opens and
            fails, or stops early, in the middle of the stream instead of failing to open.

    Returns:
        `path` as a `Path`.
    """
    import av

    if pattern not in ("index", "footage", "noise"):
        raise ValueError(f"pattern must be 'index', 'footage' or 'noise', got {pattern!r}.")
    if not 1 <= num_frames <= MAX_FRAME_INDEX + 1:
        raise ValueError(f"num_frames must be in [1, {MAX_FRAME_INDEX + 1}], got {num_frames}.")
    if width % 2 or height % 2:
        raise ValueError(f"width and height must be even for yuv420p, got {width} x {height}.")
    quarter_turns = 0
    if rotation:
        if rotation % 90:
            raise ValueError(f"rotation must be a multiple of 90 degrees, got {rotation}.")
        quarter_turns = (rotation // 90) % 4
    rate = fps if isinstance(fps, Fraction) else Fraction(fps).limit_denominator(1001)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    coded_w, coded_h = (height, width) if quarter_turns % 2 else (width, height)

    container_options = {"movflags": "+faststart"} if faststart else {}
    with av.open(str(path), mode="w", options=container_options) as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height = coded_w, coded_h
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = 1 / rate
        options = {}
        if codec in ("libx264", "h264"):
            # Reproducible bytes: x264's output depends on its thread count (which follows the CPUs the process
            # may use), and its assembly macroblock-tree pass gave different bytes from run to run, so one thread
            # and no mbtree. "veryfast" keeps B-frames: decode order differs from presentation order, as in real
            # footage.
            x264_params = ["mbtree=0"]
            if gop is not None:
                x264_params.append(f"keyint={gop}:min-keyint={gop}:scenecut=0")
            options = {"preset": "veryfast", "crf": "18", "threads": "1", "x264-params": ":".join(x264_params)}
        if gop is not None:
            stream.codec_context.gop_size = gop
        stream.codec_context.options = options
        if quarter_turns:
            stream.set_display_rotation(quarter_turns * 90)
        texture = _footage_texture(height, width) if pattern == "footage" else None
        for i in range(num_frames):
            if pattern == "footage":
                image = _footage_frame(i, height, width, texture)
            else:
                image = encode_frame_index(i, height, width)
            if pattern == "noise":
                image = np.clip(image.astype(np.int16) + _noise_texture(i, height, width), 0, 255).astype(np.uint8)
            stored = np.ascontiguousarray(np.rot90(image, k=-quarter_turns))
            frame = av.VideoFrame.from_ndarray(stored, format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_test_image(
    path: str | os.PathLike,
    width: int = 112,
    height: int = 112,
    color: tuple[int, int, int] = (255, 0, 0),
    index: int | None = None,
) -> Path:
    """Write an RGB image file (format from the suffix: `.png`, `.jpg`, ...).

    Args:
        path: File to write; parent directories are created.
        width: Width in pixels.
        height: Height in pixels.
        color: Solid RGB colour, used when `index` is `None`.
        index: Draw the index frame of `encode_frame_index` instead of a solid colour.

    Returns:
        `path` as a `Path`.
    """
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if index is None:
        array = np.empty((height, width, 3), dtype=np.uint8)
        array[:] = np.asarray(color, dtype=np.uint8)
    else:
        array = encode_frame_index(index, height, width)
    Image.fromarray(array, mode="RGB").save(path)
    return path


def write_truncated_video(src: str | os.PathLike, dst: str | os.PathLike, keep_fraction: float = 0.5) -> Path:
    """Copy the first `keep_fraction` of a file's bytes, as an interrupted download or copy leaves it.

    With a default mp4 (index at the end) the copy cannot be opened at all; with `write_test_video(...,
    faststart=True)` it opens and breaks off in the middle of the stream.

    Args:
        src: Existing file.
        dst: File to write; parent directories are created.
        keep_fraction: Fraction of bytes kept, in (0, 1).

    Returns:
        `dst` as a `Path`.
    """
    if not 0.0 < keep_fraction < 1.0:
        raise ValueError(f"keep_fraction must be in (0, 1), got {keep_fraction}.")
    data = Path(src).read_bytes()
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(data[: max(1, int(len(data) * keep_fraction))])
    return dst


def write_non_video_file(path: str | os.PathLike, content: str | bytes = "this is not a video\n") -> Path:
    """Write a file that is not a video (whatever its suffix says), for error-path tests.

    Args:
        path: File to write, e.g. `"broken.mp4"`; parent directories are created.
        content: Text or bytes to write; `""` writes an empty file.

    Returns:
        `path` as a `Path`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, str):
        content = content.encode()
    path.write_bytes(content)
    return path
