"""The PyAV decode planner: from one demuxing pass (`PacketIndex`) and the sampled frames, which packets to decode
and where to seek (`plan_pyav_decode` -> `DecodePlan`). Pure: no file is read, so it is tested on its own."""

from __future__ import annotations

import bisect
import os
from dataclasses import dataclass, field

import numpy as np

# Decoding one frame after a seek costs about as much as flushing the decoder.
_SEEK_OVERHEAD_FRAMES = 2
# Threads decoding independent keyframe groups of one video at once (PyAV backend); 1 turns it off.
_DECODE_THREADS = min(2, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


@dataclass
class PacketIndex:
    """What one demuxing pass (no decoding) tells about a video stream, in presentation order.

    Attributes:
        pts: the packets' timestamps, sorted: frame `i` is the packet with the `i`-th smallest timestamp.
        keyframe_pts: timestamps of keyframes (where a seek can start decoding).
        disposable_pts: timestamps of disposable pictures (H.264 nal_ref_idc 0: no other picture is predicted from
            them, so one that is not sampled need never be decoded).
        ordered_by_pts: whether timestamps name frames: False when a packet has none or two share one (then frames
            are counted in the order the decoder returns them, from the start).
    """

    pts: list[int]
    keyframe_pts: list[int] = field(default_factory=list)
    disposable_pts: set[int] = field(default_factory=set)
    ordered_by_pts: bool = True


@dataclass(frozen=True)
class DecodePlan:
    """How the PyAV backend decodes the sampled frames of one video (made by `plan_pyav_decode`).

    Attributes:
        targets: the distinct frame indices to decode, ascending.
        skip_pts: timestamps of packets never sent to the decoder (disposable pictures that are not sampled).
        seek_threads: empty for one sequential pass from the start; else, per decoding thread, the groups it decodes
            after a seek: `(keyframe index, targets from that keyframe on)`, by keyframe. One entry: a single thread
            on the demuxer of the planning pass; more: one thread each, each with its own demuxer.
    """

    targets: tuple[int, ...]
    skip_pts: frozenset[int] = frozenset()
    seek_threads: tuple[tuple[tuple[int, tuple[int, ...]], ...], ...] = ()

    @property
    def seeks(self) -> bool:
        return bool(self.seek_threads)


def plan_pyav_decode(
    packets: PacketIndex,
    indices: list[int],
    *,
    seek_overhead: int | None = None,
    threads: int | None = None,
) -> DecodePlan:
    """Plans which packets to decode for the frames `indices`: one sequential pass, or one seek per keyframe group.

    Targets are grouped by the keyframe before them (targets before the first keyframe go with frame 0); seeking is
    chosen when there are two groups or more and their decode cost (frames decoded from each keyframe to its group's
    last target, plus `seek_overhead` per seek) is below that of one pass from frame 0 to the last target. Disposable pictures that are not sampled count as free (never decoded). Groups are
    spread over up to `threads` threads, heaviest first, each to the least loaded thread. A stream whose timestamps
    do not name frames is always decoded in one pass, without skipping.

    Args:
        packets: the stream's `PacketIndex`.
        indices: the sampled frame indices (any order, repeats allowed).
        seek_overhead: frames one seek costs (default `_SEEK_OVERHEAD_FRAMES`).
        threads: most decoding threads when seeking (default `_DECODE_THREADS`).

    Returns:
        The `DecodePlan`.

    Example:
        >>> packets = PacketIndex(pts=list(range(100)), keyframe_pts=[0, 50])
        >>> plan_pyav_decode(packets, [10, 60, 62], threads=1).seek_threads
        (((0, (10,)), (50, (60, 62))),)
        >>> plan_pyav_decode(packets, [2, 4, 60], threads=1).seeks  # 5 frames, seek, 11 frames vs 61 frames
        True
        >>> plan_pyav_decode(packets, [2, 40, 49], threads=1).seeks  # one group: one pass from the start
        False
    """
    seek_overhead = _SEEK_OVERHEAD_FRAMES if seek_overhead is None else seek_overhead
    threads = _DECODE_THREADS if threads is None else threads
    pts_list = packets.pts
    targets = sorted(set(indices))
    target_set = set(targets)
    pts_to_index = {pts: i for i, pts in enumerate(pts_list)}
    keyframes = sorted(pts_to_index[p] for p in packets.keyframe_pts if p in pts_to_index)
    disposable = packets.disposable_pts if packets.ordered_by_pts else set()
    skip = frozenset(p for p in disposable if pts_to_index[p] not in target_set)
    # needed[i]: frames among the first i that must be decoded (the cost unit).
    needed = np.concatenate([[0], np.cumsum([p not in skip for p in pts_list])]) if pts_list else np.zeros(1)

    groups: dict[int, list[int]] = {}
    for t in targets:
        k = keyframes[bisect.bisect_right(keyframes, t) - 1] if keyframes and keyframes[0] <= t else 0
        groups.setdefault(k, []).append(t)

    def cost(first: int, last: int) -> int:
        return int(needed[min(last + 1, len(needed) - 1)] - needed[min(first, len(needed) - 1)])

    seek_cost = sum(cost(k, max(g)) + seek_overhead for k, g in groups.items())
    sequential_cost = cost(0, targets[-1])
    if not packets.ordered_by_pts or len(groups) <= 1 or seek_cost >= sequential_cost:
        return DecodePlan(tuple(targets), skip)
    # Groups start at keyframes, so they decode independently: heaviest first, each to the least loaded thread.
    workers = min(len(groups), threads)
    items = sorted(
        ((k, tuple(g)) for k, g in groups.items()), key=lambda item: cost(item[0], item[1][-1]), reverse=True
    )
    if workers <= 1:
        return DecodePlan(tuple(targets), skip, (tuple(sorted(items)),))
    bins: list[list[tuple[int, tuple[int, ...]]]] = [[] for _ in range(workers)]
    loads = [0] * workers
    for item in items:
        j = loads.index(min(loads))
        bins[j].append(item)
        loads[j] += cost(item[0], item[1][-1]) + seek_overhead
    return DecodePlan(tuple(targets), skip, tuple(tuple(sorted(b)) for b in bins))
