"""`FrameCache`: decoded frames kept in memory, bounded, least recently used first out."""

from __future__ import annotations

import os
import threading
from collections import OrderedDict

import numpy as np
from transformers.video_utils import VideoMetadata

from .sampling import VideoSamplingConfig


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
