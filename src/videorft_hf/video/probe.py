"""What a decoder learns about a stream before decoding (`Probe`): the loader picks the sampled frame indices from it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Probe:
    """A video stream's frame count and frame rate, as one decoder reads them."""

    total_frames: int
    fps: float
