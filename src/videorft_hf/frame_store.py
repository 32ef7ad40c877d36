"""A persistent store of sampled, resized video frames: decode every video of a dataset once, read it back many times.

`videorft prepare-frames` (or `prepare_frames`) samples each video at a `VideoSamplingConfig` and stores the frames at
their target size. `load_video_frames(..., store=...)` reads frames from the store it is given and falls back to
decoding on a miss. The store is named by the `frame_store` field of the configs (`VideoSamplingArguments`), which
hand it to the SFT collator, `VideoGRPOTrainer`, the semantic-consistency reward and `videorft eval`; nothing
process-wide is read, so two configs in one process can use two stores (or none). On the command line:

    videorft grpo --frame_store /data/frames ...      # or in the recipe: frame_store: /data/frames
    export VIDEORFT_FRAME_STORE=/data/frames          # the `videorft` commands' default for --frame_store

Layout of a store folder:

    store.json              the store's mode: "lossless" (PNG), "raw" (uncompressed uint8), "lossy" (JPEG q90, 4:4:4)
    index.sqlite            one row per entry: key, shard, offset, length, metadata (JSON)
    shards/<id>-NNNNN.bin   append-only blobs of encoded frames, rolled over at `shard_bytes`

An entry's key hashes the media file's real path, its identity (size and modification time, so a replaced file is a
miss, never stale frames), the sampling config and the clip bounds. The entry holds the frames and the
`VideoMetadata` that decoding returned (fps, frame count, source size, sampled indices, backend), so a hit returns
exactly what `load_video_frames` returned when the store was prepared: in "lossless" and "raw" mode the same pixels
(frames from the backend that prepared the store; backends differ from each other by codec noise), in "lossy" mode
within JPEG's error (stated in `LOSSY_TOLERANCE`). Blob bytes are written and fsynced before their index rows are
committed in one SQLite transaction, so an interrupted write leaves at most unreferenced bytes in a shard, never an
index row pointing at a torn blob; each blob carries a CRC32 checked on read (a mismatch is logged and read as a miss).

Example:
    >>> from videorft_hf import VideoSamplingConfig, load_video_frames
    >>> from videorft_hf.frame_store import FrameStore, prepare_frames
    >>> config = VideoSamplingConfig.from_preset("videorft-train")
    >>> summary = prepare_frames(["clip.mp4"], "frames", config, num_workers=2)  # doctest: +SKIP
    >>> frames, metadata = load_video_frames("clip.mp4", config, store=FrameStore("frames"))  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import multiprocessing
import os
import sqlite3
import threading
import time
import uuid
import zlib
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from transformers.video_utils import VideoMetadata

from .video import MediaDecodeError, VideoSamplingConfig, load_video_frames

logger = logging.getLogger(__name__)

__all__ = [
    "FrameStore",
    "FrameStoreError",
    "MODES",
    "LOSSY_TOLERANCE",
    "STORE_ENV",
    "open_frame_store",
    "prepare_frames",
]

STORE_ENV = "VIDEORFT_FRAME_STORE"
MODES = ("lossless", "raw", "lossy")
JPEG_QUALITY = 90
# What "lossy" mode (JPEG quality 90, 4:4:4) promises against the decoded frames, per video: mean absolute error in
# levels and PSNR. The worst case is high-frequency content (the per-pixel noise test clips: mean 2.7-3.1 levels, PSNR
# 36-37 dB, largest single error about 45); smooth content does far better (VideoRFT-mini: mean 0.15, PSNR 55 dB).
LOSSY_TOLERANCE = {"mean_abs_error": 4.0, "psnr_db": 33.0}
_FORMAT_VERSION = 1
_DEFAULT_SHARD_BYTES = 1 << 30


class FrameStoreError(RuntimeError):
    """A frame store folder is missing, of another mode, or unreadable. The message says what to fix."""


def _file_identity(path: str) -> dict[str, Any]:
    stat = os.stat(path)
    return {"path": os.path.realpath(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _encode(frames: np.ndarray, mode: str) -> tuple[bytes, list[int]]:
    """Frames (T, H, W, 3) uint8 -> (payload, per-frame byte sizes)."""
    if mode == "raw":
        payload = np.ascontiguousarray(frames).tobytes()
        return payload, [len(payload) // len(frames)] * len(frames)
    from PIL import Image

    parts = []
    for frame in frames:
        buffer = io.BytesIO()
        if mode == "lossy":
            # 4:4:4: chroma subsampling on top of the video's own doubles the worst error for 25% fewer bytes
            Image.fromarray(frame).save(buffer, format="JPEG", quality=JPEG_QUALITY, subsampling=0)
        else:
            Image.fromarray(frame).save(buffer, format="PNG", compress_level=1)  # level 1: decode speed is the same
        parts.append(buffer.getvalue())
    return b"".join(parts), [len(part) for part in parts]


def _decode(payload: bytes | bytearray, shape: Sequence[int], sizes: Sequence[int], mode: str) -> np.ndarray:
    if mode == "raw":
        return np.frombuffer(payload, dtype=np.uint8).reshape(shape)
    from PIL import Image

    frames = np.empty(shape, dtype=np.uint8)
    view, offset = memoryview(payload), 0
    for i, size in enumerate(sizes):
        with Image.open(io.BytesIO(view[offset : offset + size])) as image:
            frames[i] = np.asarray(image.convert("RGB") if image.mode != "RGB" else image)
        offset += size
    return frames


def _entry_meta(path, config, shape, sizes, payload, metadata, start, end) -> dict[str, Any]:
    """The JSON an index row holds: what decoding the payload and rebuilding the `VideoMetadata` need."""
    return {
        "path": os.path.realpath(os.fspath(path)),
        "shape": [int(n) for n in shape],
        "sizes": [int(n) for n in sizes],
        "crc32": zlib.crc32(payload),
        "metadata": {
            "total_num_frames": int(metadata.total_num_frames),
            "fps": None if metadata.fps is None else float(metadata.fps),
            "width": metadata.width,
            "height": metadata.height,
            "duration": None if metadata.duration is None else float(metadata.duration),
            "video_backend": metadata.video_backend,
            "frames_indices": [int(i) for i in metadata.frames_indices],
        },
        "config": config.to_dict(),
        "start": start,
        "end": end,
    }


class FrameStore:
    """A folder of sampled frames keyed by media path, file identity, sampling config and clip bounds.

    Reading is safe from many processes at once (dataloader workers, ranks); write from one process at a time
    (`prepare_frames` writes from its parent process only). Connections and file handles are reopened after a fork.

    Args:
        path: the store folder; created when `create` is true and it does not exist.
        mode: "lossless" (PNG), "raw" (uncompressed uint8: fastest, largest) or "lossy" (JPEG quality 90, 4:4:4:
            a fraction of the bytes). None: the mode of an existing store, else "lossless". A store keeps one mode.
        create: create the folder when missing (otherwise a missing store raises `FrameStoreError`).
        shard_bytes: start a new shard file once the current one holds this many bytes.
        flush_every: commit written entries to the index after this many `put` calls (and on `flush` / `close`).

    Example:
        >>> store = FrameStore("frames", mode="lossy")  # doctest: +SKIP
        >>> store.put("clip.mp4", config, frames, metadata)  # doctest: +SKIP
        >>> store.flush()  # doctest: +SKIP
        >>> frames, metadata = store.get("clip.mp4", config)  # doctest: +SKIP
    """

    def __init__(
        self,
        path: str | os.PathLike,
        mode: str | None = None,
        *,
        create: bool = True,
        shard_bytes: int = _DEFAULT_SHARD_BYTES,
        flush_every: int = 32,
    ):
        self.path = os.path.abspath(os.fspath(path))
        self.shard_bytes = shard_bytes
        self.flush_every = max(1, flush_every)
        self.hits = 0
        self.misses = 0
        meta_path = os.path.join(self.path, "store.json")
        if os.path.isfile(meta_path):
            with open(meta_path, encoding="utf-8") as stream:
                info = json.load(stream)
            if info.get("format_version") != _FORMAT_VERSION:
                raise FrameStoreError(f"{self.path}: store format {info.get('format_version')} is not supported here.")
            if mode is not None and mode != info["mode"]:
                raise FrameStoreError(
                    f"{self.path} is a {info['mode']!r} store, not {mode!r}; use another folder for {mode!r} frames."
                )
            self.mode = info["mode"]
        elif not create:
            raise FrameStoreError(
                f"{self.path} is not a frame store (no store.json); prepare one with `videorft prepare-frames`."
            )
        else:
            self.mode = mode or "lossless"
            if self.mode not in MODES:
                raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}.")
            os.makedirs(os.path.join(self.path, "shards"), exist_ok=True)
            tmp = f"{meta_path}.{uuid.uuid4().hex}.tmp"
            with open(tmp, "w", encoding="utf-8") as stream:
                json.dump({"format_version": _FORMAT_VERSION, "mode": self.mode, "jpeg_quality": JPEG_QUALITY}, stream)
            os.replace(tmp, meta_path)  # two processes creating one store at once both write the same content
        if self.mode not in MODES:
            raise FrameStoreError(f"{self.path}: unknown mode {self.mode!r} in store.json.")
        self._lock = threading.Lock()
        self._pid = -1
        self._reset()
        with self._lock:
            self._connection().execute(
                "CREATE TABLE IF NOT EXISTS entries (key TEXT PRIMARY KEY, shard TEXT NOT NULL, offset INTEGER NOT "
                "NULL, length INTEGER NOT NULL, meta TEXT NOT NULL)"
            )
            self._connection().commit()

    # ------------------------------------------------------------------ process-local handles
    def _reset(self) -> None:
        self._pid = os.getpid()
        self._db: sqlite3.Connection | None = None
        self._readers: dict[str, int] = {}
        self._writer = None
        self._writer_name: str | None = None
        self._writer_prefix = uuid.uuid4().hex[:12]
        self._writer_count = 0
        self._pending: list[tuple] = []

    def _check_pid(self) -> None:
        if self._pid != os.getpid():  # forked: the parent's SQLite connection and files must not be shared
            self._reset()

    def _connection(self) -> sqlite3.Connection:
        self._check_pid()
        if self._db is None:
            self._db = sqlite3.connect(os.path.join(self.path, "index.sqlite"), timeout=60, check_same_thread=False)
        return self._db

    def __getstate__(self):  # picklable for dataloader workers: handles are reopened on the other side
        state = self.__dict__.copy()
        for name in ("_db", "_writer", "_lock"):
            state[name] = None
        state["_readers"], state["_pending"], state["_pid"] = {}, [], -1
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ keys
    @staticmethod
    def key(
        path: str | os.PathLike, config: VideoSamplingConfig, start: float | None = None, end: float | None = None
    ) -> str:
        """The entry key: a SHA-256 over the real path, size, modification time, sampling config and clip bounds.

        Raises:
            FileNotFoundError: the media file does not exist.
        """
        description = {**_file_identity(os.fspath(path)), "config": config.to_dict(), "start": start, "end": end}
        return hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()

    def __contains__(self, key: str) -> bool:
        with self._lock:
            row = self._connection().execute("SELECT 1 FROM entries WHERE key = ?", (key,)).fetchone()
        return row is not None or any(pending[0] == key for pending in self._pending)

    def __len__(self) -> int:
        with self._lock:
            return self._connection().execute("SELECT COUNT(*) FROM entries").fetchone()[0]

    def keys(self) -> set[str]:
        """Keys of the committed entries."""
        with self._lock:
            return {row[0] for row in self._connection().execute("SELECT key FROM entries")}

    # ------------------------------------------------------------------ read
    def get(
        self,
        path: str | os.PathLike,
        config: VideoSamplingConfig,
        start: float | None = None,
        end: float | None = None,
    ) -> tuple[np.ndarray, VideoMetadata] | None:
        """The stored frames and metadata of a video, or None on a miss (unknown key, changed file, bad checksum).

        Args:
            path: the media file (it must exist: its identity is part of the key).
            config: the sampling config the frames were prepared with.
            start, end: clip bounds in seconds, as given to `load_video_frames`.

        Returns:
            `(frames, metadata)` as `load_video_frames` returns them, or None.
        """
        try:
            key = self.key(path, config, start, end)
        except OSError:
            self.misses += 1
            return None
        with self._lock:
            row = self._connection().execute(
                "SELECT shard, offset, length, meta FROM entries WHERE key = ?", (key,)
            ).fetchone()
            if row is None:
                if not self.misses:  # once per process: a store prepared with other settings misses every time
                    logger.info(
                        "Frame store %s has no entry for %s at this sampling config; decoding it (misses are counted "
                        "in `.misses`; prepare the store with the same preset and overrides).", self.path, path
                    )
                self.misses += 1
                return None
            shard, offset, length, meta_json = row
            meta = json.loads(meta_json)
            try:
                payload = self._read(shard, offset, length)
            except OSError as error:
                logger.warning("Frame store %s: cannot read %s (%s); decoding instead.", self.path, shard, error)
                self.misses += 1
                return None
        if len(payload) != length or zlib.crc32(payload) != meta["crc32"]:
            logger.warning("Frame store %s: entry of %s fails its checksum; decoding instead.", self.path, path)
            self.misses += 1
            return None
        frames = _decode(payload, meta["shape"], meta["sizes"], self.mode)
        self.hits += 1
        return frames, VideoMetadata(**meta["metadata"])

    def _read(self, shard: str, offset: int, length: int) -> bytearray:
        fd = self._readers.get(shard)
        if fd is None:
            fd = os.open(os.path.join(self.path, "shards", shard), os.O_RDONLY)
            self._readers[shard] = fd
        payload = bytearray(length)
        read = os.preadv(fd, [payload], offset)
        return payload if read == length else payload[:read]

    # ------------------------------------------------------------------ write
    def put(
        self,
        path: str | os.PathLike,
        config: VideoSamplingConfig,
        frames: np.ndarray,
        metadata: VideoMetadata,
        start: float | None = None,
        end: float | None = None,
    ) -> str:
        """Stores the frames of a video (committed to the index at the next `flush`, automatic every `flush_every`).

        Args:
            path: the media file the frames come from.
            config: the sampling config they were sampled with.
            frames: uint8 array (T, H, W, 3) as `load_video_frames` returned it.
            metadata: its `VideoMetadata`.
            start, end: clip bounds in seconds.

        Returns:
            The entry's key.
        """
        frames = np.asarray(frames)
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"frames must be uint8 of shape (T, H, W, 3), got {frames.dtype} {frames.shape}.")
        key = self.key(path, config, start, end)
        payload, sizes = _encode(frames, self.mode)
        self._append(key, _entry_meta(path, config, frames.shape, sizes, payload, metadata, start, end), payload)
        return key

    def _append(self, key: str, meta: dict, payload: bytes) -> None:
        with self._lock:
            self._check_pid()
            if self._writer is None or self._writer.tell() >= self.shard_bytes:
                self._roll_shard()
            offset = self._writer.tell()
            self._writer.write(payload)
            self._pending.append((key, self._writer_name, offset, len(payload), json.dumps(meta)))
            pending = len(self._pending)
        if pending >= self.flush_every:
            self.flush()

    def _roll_shard(self) -> None:
        if self._writer is not None:
            self._flush_locked()
            self._writer.close()
        self._writer_name = f"{self._writer_prefix}-{self._writer_count:05d}.bin"  # one writer per file, never shared
        self._writer_count += 1
        self._writer = open(os.path.join(self.path, "shards", self._writer_name), "ab")

    def flush(self) -> None:
        """Makes the written entries durable and visible: fsync the shard, then commit their index rows."""
        with self._lock:
            self._flush_locked()

    def _flush_locked(self) -> None:
        self._check_pid()
        if not self._pending:
            return
        self._writer.flush()
        os.fsync(self._writer.fileno())  # blob bytes reach the disk before any index row refers to them
        connection = self._connection()
        with connection:
            connection.executemany("INSERT OR REPLACE INTO entries VALUES (?, ?, ?, ?, ?)", self._pending)
        self._pending = []

    def close(self) -> None:
        """Flushes and closes every handle of this process."""
        self.flush()
        with self._lock:
            if self._writer is not None:
                self._writer.close()
                self._writer = None
            for fd in self._readers.values():
                os.close(fd)
            self._readers = {}
            if self._db is not None:
                self._db.close()
                self._db = None

    def __enter__(self) -> FrameStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"FrameStore({self.path!r}, mode={self.mode!r})"


# --------------------------------------------------------------------------------------------- configuration
def open_frame_store(store: FrameStore | str | os.PathLike | None) -> FrameStore | None:
    """The existing store a config names (its `frame_store` field), opened for reading; None for None.

    Args:
        store: a `FrameStore`, the folder of an existing one, or None.

    Raises:
        FrameStoreError: the folder holds no store (prepare one with `videorft prepare-frames`).
    """
    if store is None or isinstance(store, FrameStore):
        return store
    return FrameStore(store, create=False)


# --------------------------------------------------------------------------------------------- prepare
def _prepare_one(task: tuple) -> tuple:
    """Worker: decode one video and encode its frames. Returns ("ok", ...) or ("failed", path, error)."""
    key, path, config, backend, mode = task
    try:
        frames, metadata = load_video_frames(path, config, backend=backend)
    except MediaDecodeError as error:
        return ("failed", path, f"{type(error).__name__}: {error}")
    payload, sizes = _encode(frames, mode)
    return ("ok", key, payload, _entry_meta(path, config, frames.shape, sizes, payload, metadata, None, None))


def _worker_init() -> None:
    import torch

    torch.set_num_threads(1)  # one decode per worker process; the workers are the parallelism


def prepare_frames(
    videos: Iterable[str | os.PathLike],
    store: FrameStore | str | os.PathLike,
    config: VideoSamplingConfig,
    *,
    mode: str | None = None,
    num_workers: int = 2,
    backend: str = "auto",
    progress: bool = True,
) -> dict[str, Any]:
    """Samples every video once at `config` and stores the frames; resumable (present entries are skipped).

    Args:
        videos: video files (duplicates are stored once).
        store: a `FrameStore` or its folder (created when missing).
        mode: the store mode when the store is created here ("lossless", "raw", "lossy").
        num_workers: decoding processes, started with spawn (a script calling this needs `if __name__ == "__main__":`);
            0 decodes in this process. Only this process writes to the store.
        backend: video backend, as for `load_video_frames` ("auto" is what training uses by default).
        progress: show a tqdm progress bar.

    Returns:
        Counts and timings: `videos`, `stored`, `present` (skipped, already stored), `failed` (a list of
        `{"path", "error"}`: these videos are decoded, and fail with their typed error, at training time),
        `seconds`, `store`, `mode`, `bytes_written`.

    Example:
        >>> prepare_frames(["a.mp4", "b.mp4"], "frames", VideoSamplingConfig(), num_workers=2)  # doctest: +SKIP
        {'videos': 2, 'stored': 2, 'present': 0, 'failed': [], ...}
    """
    from tqdm.auto import tqdm

    started = time.perf_counter()
    store = store if isinstance(store, FrameStore) else FrameStore(store, mode=mode)
    if mode is not None and mode != store.mode:
        raise FrameStoreError(f"{store.path} is a {store.mode!r} store, not {mode!r}.")
    unique = list(dict.fromkeys(os.fspath(video) for video in videos))
    present = store.keys()
    tasks, failed, already = [], [], 0
    for path in unique:
        try:
            key = store.key(path, config)
        except OSError as error:
            failed.append({"path": path, "error": f"VideoNotFoundError: {error}"})
            continue
        if key in present:
            already += 1
        else:
            tasks.append((key, path, config, backend, store.mode))
    stored, bytes_written = 0, 0

    def consume(results) -> None:
        nonlocal stored, bytes_written
        for result in tqdm(results, total=len(tasks), desc="Preparing frames", unit=" videos", disable=not progress):
            if result[0] == "failed":
                failed.append({"path": result[1], "error": result[2]})
                continue
            _, key, payload, meta = result
            store._append(key, meta, payload)  # only this process writes; workers decode and encode
            stored += 1
            bytes_written += len(payload)

    try:
        if num_workers > 0 and len(tasks) > 1:
            # spawn, not fork: a child forked while decord's or torch's threads hold a lock hangs forever (seen
            # here). Scripts calling this need the usual `if __name__ == "__main__":` guard.
            context = multiprocessing.get_context("spawn")
            with context.Pool(min(num_workers, len(tasks)), initializer=_worker_init) as pool:
                consume(pool.imap_unordered(_prepare_one, tasks, chunksize=1))
        else:
            consume(map(_prepare_one, tasks))
    finally:
        store.flush()  # what was decoded before an interruption is kept; the rest is redone on the next run
    return {
        "videos": len(unique),
        "stored": stored,
        "present": already,
        "failed": failed,
        "seconds": round(time.perf_counter() - started, 3),
        "store": store.path,
        "mode": store.mode,
        "bytes_written": bytes_written,
    }
