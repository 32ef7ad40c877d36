"""The torchcodec backend (`decode_torchcodec`)."""

from __future__ import annotations

import numpy as np

from .errors import CorruptVideoError, EmptyVideoError, NotAVideoError
from .probe import Probe


def decode_torchcodec(path: str, indices_fn) -> tuple[np.ndarray, list[int], Probe, int]:
    """Decodes with torchcodec (exact seek mode): the frames `indices_fn(probe)` names."""
    from torchcodec.decoders import VideoDecoder

    try:
        decoder = VideoDecoder(path, seek_mode="exact")
    except (RuntimeError, ValueError) as error:
        raise NotAVideoError(path, f"not a readable video ({error})") from error
    meta = decoder.metadata
    total = int(meta.num_frames or 0)
    if total == 0:
        raise EmptyVideoError(path, "the video stream has no frames")
    probe = Probe(total, float(meta.average_fps))
    indices = indices_fn(probe)
    try:
        frames = decoder.get_frames_at(indices=indices).data.permute(0, 2, 3, 1).numpy()
    except (RuntimeError, IndexError) as error:
        raise CorruptVideoError(path, f"decoding failed ({error})") from error
    # torchcodec applies the display rotation itself.
    return frames, indices, probe, 0
