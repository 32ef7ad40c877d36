"""The PyAV backend: one demuxing pass indexes the packets, `plan_pyav_decode` plans, and only what the sampled
frames need is decoded (`decode_pyav`). Also opens files for the other backends' checks (`open_pyav`,
`video_codec`)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .errors import CorruptVideoError, EmptyVideoError, NotAVideoError, VideoDecodeError, VideoNotFoundError
from .planner import DecodePlan, PacketIndex, plan_pyav_decode
from .probe import Probe


def open_pyav(path: str):
    """Opens a video file with PyAV; typed errors for a missing file, a file that is not media, a file without a video
    stream, and an image."""
    import av

    try:
        container = av.open(path)
    except av.error.FileNotFoundError as error:
        raise VideoNotFoundError(path, "file not found") from error
    except (av.error.InvalidDataError, av.error.FFmpegError) as error:
        raise NotAVideoError(path, f"not a readable media file ({error.__class__.__name__}: {error})") from error
    if not container.streams.video:
        container.close()
        raise NotAVideoError(path, "the file holds no video stream")
    demuxer = container.format.name or ""
    if demuxer == "image2" or demuxer.endswith("_pipe"):
        container.close()
        raise NotAVideoError(path, f"this is an image ({demuxer}), not a video", "Give it data_type 'image'.")
    return container


def video_codec(path: str) -> str | None:
    """The codec name of the file's first video stream as PyAV reads it, or None when PyAV cannot open one."""
    try:
        container = open_pyav(path)
    except VideoDecodeError:
        return None
    try:
        return container.streams.video[0].codec_context.codec.canonical_name  # "av1", not the decoder "libdav1d"
    finally:
        container.close()


def _h264_nal_length_size(stream) -> int | None:
    """Bytes of the NAL length prefix of an H.264 stream stored as AVCC (mp4, mkv, mov), else None.

    Only such streams let the decoder skip disposable frames (see `_is_disposable_h264`); Annex B streams (MPEG-TS)
    and other codecs are decoded in full.
    """
    extradata = stream.codec_context.extradata
    if stream.codec_context.name != "h264" or not extradata or len(extradata) < 7 or extradata[0] != 1:
        return None
    return (extradata[4] & 3) + 1


def _is_disposable_h264(packet, length_size: int) -> bool:
    """True when the packet's picture has nal_ref_idc 0: H.264 never predicts another picture from it, so a frame
    that is not sampled can be left undecoded without changing any other frame (ITU-T H.264, 7.4.1)."""
    data = memoryview(packet)
    size, offset = len(data), 0
    while offset + length_size < size:
        nal_size = int.from_bytes(data[offset : offset + length_size], "big")
        header = data[offset + length_size]
        if header & 0x1F in (1, 5):  # the first slice of the picture decides
            return header & 0x60 == 0
        offset += length_size + nal_size
    return False


def _index_packets(container, stream, path: str) -> PacketIndex:
    """One demuxing pass over the stream (no decoding): timestamps, keyframes and disposable pictures."""
    import av

    length_size = _h264_nal_length_size(stream)
    packets = PacketIndex(pts=[])
    try:
        for packet in container.demux(stream):
            if packet.size == 0:
                continue
            if packet.pts is None:
                packets.ordered_by_pts = False
                continue
            packets.pts.append(packet.pts)
            if packet.is_keyframe:
                packets.keyframe_pts.append(packet.pts)
            elif length_size is not None and _is_disposable_h264(packet, length_size):
                packets.disposable_pts.add(packet.pts)
    except av.error.FFmpegError as error:
        raise CorruptVideoError(path, f"the stream cannot be read ({error})") from error
    packets.pts.sort()
    # Some muxers (screen recorders, phones) give consecutive frames one timestamp: then a timestamp does not name
    # a frame, and frames are counted in the order the decoder returns them, from the start, as for missing ones.
    if len(set(packets.pts)) < len(packets.pts):
        packets.ordered_by_pts = False
    return packets


def _probe_pyav(stream, packets: PacketIndex, path: str) -> Probe:
    """Frame count and rate of the stream; typed errors for a truncated, empty or rateless one."""
    fps = float(stream.average_rate or stream.guessed_rate or 0)
    total = len(packets.pts)
    if not packets.ordered_by_pts:
        total = stream.frames or total
    elif stream.frames and total < stream.frames:
        raise CorruptVideoError(
            path, f"the stream ends after {total} of the {stream.frames} frames its header declares; the file is truncated"
        )
    if total == 0:
        raise EmptyVideoError(path, "the video stream has no frames")
    if fps <= 0:
        raise CorruptVideoError(path, "the video stream declares no frame rate")
    return Probe(total, fps)


class _PyAVFrames:
    """Carries out a `DecodePlan`: decodes packets, keeps the RGB arrays of the targets (`decoded`) and the display
    rotation the frames report. Frames that are not targets are never converted to RGB or copied. `container` is the
    demuxer of the planning pass, replaced by a fresh one for a sequential pass; the caller closes the last one."""

    def __init__(self, path: str, container, packets: PacketIndex, plan: DecodePlan, size: tuple[int, int]):
        self.path = path
        self.container = container
        self.plan = plan
        self.by_position = not packets.ordered_by_pts
        self.pts_to_index = {pts: i for i, pts in enumerate(packets.pts)}
        self.seek_pts = packets.pts
        # A stream whose resolution changes midway is scaled to its first resolution, as FFmpeg's tools do.
        self.size = size
        self.decoded: dict[int, np.ndarray] = {}
        self.rotation = 0

    def decode_until(self, container, stream, last_target: int, wanted: set[int]) -> None:
        """Feeds packets from the demuxer's position until the frame `last_target` (or a later one) is out."""
        position = 0
        for packet in container.demux(stream):
            if packet.pts is not None and packet.pts in self.plan.skip_pts:
                continue
            for frame in packet.decode():  # an empty packet at the end of the file flushes the decoder
                self.rotation = int(frame.rotation or 0)
                i = position if self.by_position or frame.pts is None else self.pts_to_index.get(frame.pts)
                position += 1
                if i in wanted and i not in self.decoded:
                    scale = (frame.width, frame.height) != self.size and all(self.size)
                    resize = dict(width=self.size[0], height=self.size[1]) if scale else {}
                    self.decoded[i] = frame.to_ndarray(format="rgb24", **resize)
                if i is not None and i >= last_target:
                    return

    def decode_groups(self, groups, own_container: bool) -> None:
        """Seeks to each group's keyframe and decodes up to its last target (one demuxer per thread)."""
        reader = open_pyav(self.path) if own_container else self.container
        try:
            video = reader.streams.video[0]
            # A thread of ours per demuxer already keeps the cores busy: FFmpeg's own frame threads on top of it
            # cost about 5% more CPU for nothing (60 s clip of BENCHMARKS.md: 3.44 s instead of 3.64 s).
            video.thread_type = "NONE" if own_container else "AUTO"
            for k, group in groups:
                reader.seek(self.seek_pts[k], stream=video, backward=True, any_frame=False)
                self.decode_until(reader, video, group[-1], set(group))
        finally:
            if own_container:
                reader.close()

    def run(self) -> None:
        """Decodes every target of the plan."""
        threads = self.plan.seek_threads
        if len(threads) > 1:  # PyAV releases the GIL while decoding: groups decode in parallel
            with ThreadPoolExecutor(len(threads)) as pool:
                for future in [pool.submit(self.decode_groups, groups, True) for groups in threads]:
                    future.result()
        elif threads:
            self.decode_groups(threads[0], False)
        # Without a seek, or when a seek landed past a group's keyframe (MPEG-TS seeks by byte position): one
        # sequential pass from the start on a fresh demuxer (the planning pass left this one at the end).
        wanted = {t for t in self.plan.targets if t not in self.decoded}
        if wanted:
            self.container.close()
            self.container = open_pyav(self.path)
            stream = self.container.streams.video[0]
            stream.thread_type = "AUTO"
            self.decode_until(self.container, stream, max(wanted), wanted)


def decode_pyav(path: str, indices_fn) -> tuple[np.ndarray, list[int], Probe, int]:
    """Decodes with PyAV: demux once (no decoding) to map timestamps to frame indices and find keyframes, plan
    (`plan_pyav_decode`: one sequential pass or one seek per keyframe group, whichever decodes fewer frames), then
    decode. Frames that are not sampled are never converted to RGB or copied.

    Speed-up (H.264 in mp4/mkv/mov): packets of disposable pictures (nal_ref_idc 0, no other picture is predicted
    from them) that are not sampled are never sent to the decoder; the pixels of every sampled frame are unchanged.
    With x264's default B-frames that is about 45% of the packets."""
    import av

    container = open_pyav(path)
    frames = None
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        packets = _index_packets(container, stream, path)
        probe = _probe_pyav(stream, packets, path)
        indices = indices_fn(probe)
        plan = plan_pyav_decode(packets, indices)
        size = (stream.codec_context.width, stream.codec_context.height)
        frames = _PyAVFrames(path, container, packets, plan, size)
        try:
            frames.run()
        except av.error.FFmpegError as error:
            raise CorruptVideoError(path, f"decoding failed ({error})") from error
        missing = [t for t in plan.targets if t not in frames.decoded]
        if missing:
            raise CorruptVideoError(
                path,
                f"the stream ended or broke before frame {missing[0]} of {probe.total_frames} "
                f"({len(missing)} of {len(plan.targets)} sampled frames missing); the file is truncated or corrupt",
            )
        return np.stack([frames.decoded[i] for i in indices]), indices, probe, frames.rotation
    finally:
        (frames.container if frames is not None else container).close()
