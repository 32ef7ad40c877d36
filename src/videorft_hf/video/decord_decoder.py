"""The decord backend (`decode_decord`), with the checks that refuse the videos decord would decode to wrong frames."""

from __future__ import annotations

import numpy as np

from .errors import CorruptVideoError, EmptyVideoError, NotAVideoError, UnsupportedVideoError
from .probe import Probe
from .pyav_decoder import open_pyav, video_codec


def _decord_problem(path: str) -> str | None:
    """Why decord would return wrong frames for this video, found by demuxing it with PyAV (no decoding), else None.

    decord seeks by timestamp and counts frames from the container's start time. It returns frames at the wrong
    positions for MPEG-TS files (whose timestamps start late) and for open-GOP streams (pictures that follow a
    keyframe in decode order but are shown before it: after a seek they are counted as frames after it).
    """
    import av

    container = open_pyav(path)
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


def decode_decord(path: str, indices_fn) -> tuple[np.ndarray, list[int], Probe, int]:
    """Decodes with decord: the frames `indices_fn(probe)` names, read as one batch."""
    import decord

    hint = "Decode it with backend='pyav' (the default)."
    try:
        reader = decord.VideoReader(path, num_threads=0)
    except (decord.DECORDError, RuntimeError) as error:
        cause = str(error).splitlines()[0]
        codec = video_codec(path)
        if codec is not None:  # PyAV reads the video stream: decord lacks its codec
            raise UnsupportedVideoError(path, f"decord cannot decode this {codec} video ({cause})", hint) from error
        raise NotAVideoError(path, f"not a readable video ({cause})") from error
    problem = _decord_problem(path)
    if problem is not None:
        raise UnsupportedVideoError(path, f"decord would return wrong frames for {problem}", hint)
    total = len(reader)
    if total == 0:
        raise EmptyVideoError(path, "the video stream has no frames")
    probe = Probe(total, float(reader.get_avg_fps()))
    indices = indices_fn(probe)
    try:
        frames = reader.get_batch(indices).asnumpy()
    except decord.DECORDError as error:
        raise CorruptVideoError(path, f"decoding failed ({str(error).splitlines()[0]})") from error
    if frames.shape[0] != len(indices):
        raise CorruptVideoError(path, f"decoded {frames.shape[0]} of {len(indices)} sampled frames")
    # decord applies the display rotation itself (checked for 90, 180 and 270 degrees in the tests).
    return frames, indices, probe, 0
