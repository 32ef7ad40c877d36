"""A corpus of real-world video oddities, written with real encoders through PyAV (libx264, libx265, libsvtav1,
libvpx-vp9, aac), every frame carrying its index (`videorft_hf.testing.encode_frame_index`).

Each writer makes one file as some camera, phone, screen recorder or broadcast muxer does; `CORPUS` lists them with
their frame count. Files are tiny (96x64, at most 48 frames) so the whole corpus is written in about a second.
"""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from videorft_hf.testing import encode_frame_index, write_test_video

WIDTH, HEIGHT = 96, 64
# One thread and fixed options: the same bytes on every machine.
_X264 = {"preset": "veryfast", "threads": "1"}


def _index_frame(index: int, width: int = WIDTH, height: int = HEIGHT, pix_fmt: str = "yuv420p") -> av.VideoFrame:
    frame = av.VideoFrame.from_ndarray(encode_frame_index(index, height, width), format="rgb24")
    return frame if pix_fmt == "rgb24" else frame.reformat(format=pix_fmt)


def _video_stream(container, codec: str, rate, options: dict, pix_fmt: str = "yuv420p", size=(WIDTH, HEIGHT)):
    stream = container.add_stream(codec, rate=rate)
    stream.width, stream.height = size
    stream.pix_fmt = pix_fmt
    stream.codec_context.options = options
    return stream


def _encode_frames(container, stream, num_frames: int, pix_fmt: str = "yuv420p") -> None:
    """Encodes and muxes index frames 0..num_frames-1 with timestamps 0, 1, ... in the stream's rate, then flushes."""
    for i in range(num_frames):
        frame = _index_frame(i, pix_fmt=pix_fmt)
        frame.pts = i
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)


def write_duplicate_timestamps(path: Path, num_frames: int = 48) -> None:
    """H.264 in Matroska with variable frame timing where some consecutive frames share one timestamp (as screen
    recorders and some phone muxers write them): frames 4, 11, 18, ... have the timestamp of the frame before."""
    with av.open(str(path), "w") as container:
        stream = _video_stream(container, "libx264", 30, {**_X264, "x264-params": "bframes=0:keyint=12:scenecut=0"})
        stream.codec_context.time_base = Fraction(1, 1000)
        packets = []
        for i in range(num_frames):
            frame = _index_frame(i)
            frame.pts = i * 33
            packets += stream.encode(frame)
        packets += stream.encode()
        assert len(packets) == num_frames  # no B-frames: one packet per frame, in display order
        time = 0
        for i, packet in enumerate(packets):
            packet.pts = packet.dts = time
            packet.time_base = Fraction(1, 1000)
            container.mux(packet)
            time += 0 if i % 7 == 3 else (33 if i % 5 else 50)


def write_variable_frame_rate(path: Path, num_frames: int = 40) -> None:
    """H.264 in mp4 with B-frames and frame durations cycling through 20, 33, 80 and 45 ms (a phone that drops its
    frame rate in low light)."""
    with av.open(str(path), "w") as container:
        stream = _video_stream(container, "libx264", 30, _X264)
        stream.codec_context.time_base = stream.time_base = Fraction(1, 1000)
        time = 0
        for i in range(num_frames):
            frame = _index_frame(i)
            frame.pts, frame.time_base = time, Fraction(1, 1000)
            time += (20, 33, 80, 45)[i % 4]
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def write_open_gop(path: Path, num_frames: int = 48) -> None:
    """H.264 with open GOPs (non-IDR keyframes every 12 frames, followed in decode order by B-frames shown before
    them) and pyramid B-frames, so decode timestamps start negative. Broadcast and camera encoders do this."""
    params = "open-gop=1:bframes=3:b-pyramid=normal:keyint=12:min-keyint=12:scenecut=0"
    with av.open(str(path), "w") as container:
        _encode_frames(container, _video_stream(container, "libx264", 24, {**_X264, "x264-params": params}), num_frames)


def write_audio_first(path: Path, num_frames: int = 32) -> None:
    """An AAC audio stream placed before the H.264 video stream (stream 0 is audio), as some editors export."""
    with av.open(str(path), "w") as container:
        audio = container.add_stream("aac", rate=16000)
        audio.layout = "mono"
        video = _video_stream(container, "libx264", 16, _X264)
        samples = av.AudioFrame.from_ndarray(
            np.zeros((1, 16000 * num_frames // 16), dtype=np.float32), format="fltp", layout="mono"
        )
        samples.sample_rate, samples.pts = 16000, 0
        for packet in [*audio.encode(samples), *audio.encode()]:
            container.mux(packet)
        _encode_frames(container, video, num_frames)


def write_resolution_change(path: Path, num_frames: int = 32) -> None:
    """H.264 whose resolution changes halfway (96x64, then 128x96; new parameter sets in the stream), as a broadcast
    recording or a stream that adapts its quality. The container is chosen by the suffix (.mkv, .ts)."""
    sizes = ((WIDTH, HEIGHT), (128, 96))
    half = num_frames // 2
    with av.open(str(path), "w") as container:
        stream = _video_stream(container, "libx264", 16, {}, size=sizes[0])
        packets = []
        for part, (width, height) in enumerate(sizes):
            encoder = av.CodecContext.create("libx264", "w")
            encoder.width, encoder.height, encoder.pix_fmt = width, height, "yuv420p"
            encoder.time_base = Fraction(1, 16)
            encoder.options = {**_X264, "bframes": "0"}
            for i in range(part * half, (part + 1) * half):
                frame = _index_frame(i, width, height)
                frame.pts = i
                packets += encoder.encode(frame)
            packets += encoder.encode()
        for packet in packets:
            packet.stream, packet.time_base = stream, Fraction(1, 16)
            container.mux(packet)


def _write_codec(path: Path, codec: str, pix_fmt: str, options: dict, num_frames: int = 24) -> None:
    with av.open(str(path), "w") as container:
        _encode_frames(container, _video_stream(container, codec, 12, options, pix_fmt=pix_fmt), num_frames, pix_fmt)


def write_hevc_10bit(path: Path) -> None:
    """10-bit HEVC (yuv420p10le, libx265), as recent phones record HDR video."""
    _write_codec(path, "libx265", "yuv420p10le", {"x265-params": "log-level=error:pools=1:frame-threads=1"})


def write_av1(path: Path) -> None:
    """AV1 (libsvtav1)."""
    _write_codec(path, "libsvtav1", "yuv420p", {"preset": "10", "crf": "10", "svtav1-params": "log-level=0"})


def write_vp9(path: Path) -> None:
    """VP9 in WebM (libvpx-vp9), as browsers and YouTube serve it."""
    _write_codec(path, "libvpx-vp9", "yuv420p", {"deadline": "realtime", "cpu-used": "8", "threads": "1"})


def write_rotated_portrait(path: Path) -> None:
    """A phone's portrait video: landscape frames stored with a 90 degree display rotation (the `rotate=90` tag)."""
    write_test_video(path, num_frames=24, fps=12, width=HEIGHT, height=WIDTH, rotation=-90)


# file name -> (writer, number of frames, encoder it needs)
CORPUS: dict[str, tuple[Callable[[Path], None], int, str]] = {
    "duplicate_timestamps.mkv": (write_duplicate_timestamps, 48, "libx264"),
    "variable_frame_rate.mp4": (write_variable_frame_rate, 40, "libx264"),
    "open_gop.mp4": (write_open_gop, 48, "libx264"),
    "open_gop.mkv": (write_open_gop, 48, "libx264"),
    "audio_first.mp4": (write_audio_first, 32, "libx264"),
    "resolution_change.mkv": (write_resolution_change, 32, "libx264"),
    "resolution_change.ts": (write_resolution_change, 32, "libx264"),
    "hevc_10bit.mp4": (write_hevc_10bit, 24, "libx265"),
    "av1.mp4": (write_av1, 24, "libsvtav1"),
    "vp9.webm": (write_vp9, 24, "libvpx-vp9"),
    "rotated_portrait.mp4": (write_rotated_portrait, 24, "libx264"),
}
