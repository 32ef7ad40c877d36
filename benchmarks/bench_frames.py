"""The frame pipeline: `load_video_frames` against qwen-vl-utils' `fetch_video` (the release's path, with decord) and
transformers' `load_video` (PyAV), on the same real H.264 clips at the training preset (16 frames at 128*28*28);
then reading the same frames back from a frame store (lossless PNG and lossy JPEG) instead of decoding.

Clips (the set): `write_test_video(pattern="footage")`, index blocks under a seeded texture that a camera pans across
(2 s moving, 2 s still) plus +-1 level of sensor noise, so that every frame carries its index and decoding costs
about what real camera footage costs. The pattern is calibrated on the 60 s clip against the costs measured on a real
60 s 640x360 clip (a sequential PyAV pass of every frame about 0.66 s, `fetch_video` about 0.9 s for 16 frames): the
60 s footage clip is 6.3 MB (0.84 Mbit/s) and a sequential PyAV pass takes about 0.75-0.85 s wall (1.1-1.3 CPU
seconds) on this 2-core machine. Geometries: 60 s 640x360 at 30 fps with 8-second keyframe intervals, 20 s 480x270
with 2-second intervals, and an 8 s 320x240 clip with the encoder's default keyframes. Set throughput, its ratios
and `targets_met` come from these three only.

Worst case, reported apart: `60s-noise`, the 60 s geometry with `pattern="noise"` (independent +-40 levels of noise in
every pixel of every frame: 92 MB, 12 Mbit/s, about 4.2 s wall / 7 CPU seconds for a sequential PyAV pass, some six
times real footage). It is timed for `ours_auto` and `fetch_video_decord` only, and its ratio is
`speedup_vs_fetch_video_noise` (never part of the set's figures). The solid-block "index" pattern is not used: it
decodes almost for free (60 s: `fetch_video` 0.3 s), which would measure per-call overheads instead of decoding.

Clips are written once into `--cache_dir` (file names carry the geometry and the pattern; the 60 s footage clip
takes about 20 s to encode here, the 60 s noise clip about 40 s) and reused.

Checks, before timing, on every clip (the worst case too): every path returns the same frame indices (the indices
drawn in the frames are read back with `decode_frame_index`, so this is what was decoded, not what was reported),
the same frame size, and pixels that agree within codec noise (PyAV's and decord's RGB conversions differ by a few
levels).

Timing: "first decode" of a video, i.e. nothing cached by the loader (each call opens the file afresh; the file's
bytes are in the OS page cache for every path alike). Calls are interleaved across paths and repeated; the median
wall time of each is reported, and process CPU time next to it (the machine may be shared). Throughput over the clip
set = clips / sum of median seconds; ratios are against `fetch_video`.

    HF_HUB_OFFLINE=1 python benchmarks/bench_frames.py [--repeats 3] [--clips 60s,20s,8s,60s-noise] [--cache_dir DIR]

`main(argv)` returns the figures as a dict.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("FORCE_QWENVL_VIDEO_READER", "decord")  # the release's reader; read when qwen-vl-utils imports

import numpy as np  # noqa: E402

from videorft_hf.frame_store import prepare_frames  # noqa: E402
from videorft_hf.testing import decode_frame_index, write_test_video  # noqa: E402
from videorft_hf.video import VideoSamplingConfig, available_backends, load_video_frames, resize_frames  # noqa: E402

# geometry name -> write_test_video arguments
GEOMETRIES: dict[str, dict[str, Any]] = {
    "60s": dict(num_frames=1800, fps=30, width=640, height=360, gop=240),
    "20s": dict(num_frames=600, fps=30, width=480, height=270, gop=60),
    "8s": dict(num_frames=240, fps=30, width=320, height=240),
}
# clip name -> (geometry, pattern). CLIPS: the set behind the throughput figures; WORST_CASE_CLIPS: reported apart.
CLIPS: dict[str, tuple[str, str]] = {name: (name, "footage") for name in GEOMETRIES}
WORST_CASE_CLIPS: dict[str, tuple[str, str]] = {"60s-noise": ("60s", "noise")}
WORST_CASE_PATHS = ("ours_auto", "fetch_video_decord")  # the paths timed on the worst-case clips
PRESET = "videorft-train"


def clip_spec(name: str) -> dict[str, Any]:
    """write_test_video arguments of a clip of CLIPS or WORST_CASE_CLIPS, `pattern` included."""
    geometry, pattern = {**CLIPS, **WORST_CASE_CLIPS}[name]
    return {**GEOMETRIES[geometry], "pattern": pattern}


def clip_path(cache_dir: str, name: str) -> str:
    """Writes the clip once (deterministic bytes) and returns its path; the file name carries geometry and pattern."""
    geometry, pattern = {**CLIPS, **WORST_CASE_CLIPS}[name]
    label = "_".join(f"{k}{v}" for k, v in GEOMETRIES[geometry].items())
    path = os.path.join(cache_dir, f"bench_frames_{geometry}_{label}_{pattern}.mp4")
    if not os.path.isfile(path):
        tmp = f"{path}.{os.getpid()}.tmp.mp4"
        write_test_video(tmp, **clip_spec(name))
        os.replace(tmp, path)
    return path


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# --------------------------------------------------------------------------------------------- the paths
def ours(config: VideoSamplingConfig, backend: str = "auto") -> Callable[[str], tuple[np.ndarray, list[int]]]:
    def run(path: str):
        frames, metadata = load_video_frames(path, config, backend=backend)
        return frames, list(metadata.frames_indices)

    return run


def from_store(config: VideoSamplingConfig, store) -> Callable[[str], tuple[np.ndarray, list[int]]]:
    def run(path: str):
        frames, metadata = load_video_frames(path, config, store=store)
        return frames, list(metadata.frames_indices)

    return run


def fetch_video(config: VideoSamplingConfig) -> Callable[[str], tuple[np.ndarray, list[int]]]:
    """qwen-vl-utils 0.0.14 `fetch_video` with decord, as the release calls it for a training sample."""
    from qwen_vl_utils import vision_process

    vision_process.get_video_reader_backend.cache_clear()
    if vision_process.get_video_reader_backend() != "decord":
        raise RuntimeError("qwen-vl-utils did not pick decord; set FORCE_QWENVL_VIDEO_READER=decord before importing.")

    def run(path: str):
        element = {
            "video": path, "fps": config.fps, "min_frames": config.min_frames, "max_frames": config.max_frames,
            "min_pixels": config.min_pixels, "max_pixels": config.max_pixels, "total_pixels": config.total_pixels,
        }
        video, metadata = vision_process.fetch_video(element, return_video_metadata=True)
        # fetch_video returns float32 (T, C, H, W) holding whole numbers; the model's processor takes either.
        return video.permute(0, 2, 3, 1).numpy().astype(np.uint8), list(metadata["frames_indices"])

    return run


def transformers_load_video(config: VideoSamplingConfig) -> Callable[[str], tuple[np.ndarray, list[int]]]:
    """transformers' `load_video` (its default PyAV reader) with the same indices, then the same resize."""
    from transformers.video_utils import load_video

    def run(path: str):
        def sample_indices_fn(metadata, **kwargs):
            return config.frame_indices(metadata.total_num_frames, metadata.fps)

        frames, metadata = load_video(path, backend="pyav", sample_indices_fn=sample_indices_fn)
        height, width = config.frame_size(frames.shape[1], frames.shape[2], len(frames))
        return resize_frames(frames, height, width), list(metadata.frames_indices)

    return run


# --------------------------------------------------------------------------------------------- measuring
def check_agreement(results: dict[str, tuple[np.ndarray, list[int]]], reference: str) -> dict[str, Any]:
    """Same indices (reported and read back from the pixels), same shapes, pixels within codec noise."""
    ref_frames, ref_indices = results[reference]
    report: dict[str, Any] = {}
    for name, (frames, indices) in results.items():
        drawn = [decode_frame_index(frame) for frame in frames]
        if indices != ref_indices or drawn != ref_indices:
            raise AssertionError(f"{name} sampled {indices} (pixels say {drawn}), {reference} sampled {ref_indices}")
        if frames.shape != ref_frames.shape:
            raise AssertionError(f"{name} frames {frames.shape} != {reference} {ref_frames.shape}")
        diff = np.abs(frames.astype(np.int16) - ref_frames.astype(np.int16))
        report[name] = {"mean_abs_diff": round(float(diff.mean()), 3), "max_abs_diff": int(diff.max())}
    return report


def time_paths(paths: dict[str, Callable], clips: dict[str, str], repeats: int) -> dict[str, dict[str, dict]]:
    """Median wall and CPU seconds per (path, clip); calls interleaved, the order rotated every repeat."""
    names = list(paths)
    samples: dict[tuple[str, str], list[tuple[float, float]]] = {(n, c): [] for n in names for c in clips}
    for repeat in range(repeats):
        order = names[repeat % len(names) :] + names[: repeat % len(names)]
        for clip, path in clips.items():
            for name in order:
                wall, cpu = time.perf_counter(), _cpu_seconds()
                paths[name](path)
                samples[(name, clip)].append((time.perf_counter() - wall, _cpu_seconds() - cpu))
    return {
        name: {
            clip: {
                "wall_s": round(statistics.median(s[0] for s in samples[(name, clip)]), 4),
                "cpu_s": round(statistics.median(s[1] for s in samples[(name, clip)]), 4),
            }
            for clip in clips
        }
        for name in names
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Runs the benchmark and returns its figures (seconds, ratios, agreement checks)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per path and clip (median reported)")
    parser.add_argument("--store_repeats", type=int, default=10, help="timed reads per clip from the frame store")
    parser.add_argument(
        "--clips",
        default=",".join([*CLIPS, *WORST_CASE_CLIPS]),
        help=f"comma-separated: one or more of {list(CLIPS)}, optionally the worst case {list(WORST_CASE_CLIPS)}",
    )
    parser.add_argument(
        "--cache_dir",
        default=os.environ.get("VIDEORFT_BENCH_CACHE", os.path.join(tempfile.gettempdir(), "videorft_bench_clips")),
        help="folder keeping the written clips between runs",
    )
    args = parser.parse_args(argv)
    wanted = [name for name in args.clips.split(",") if name]
    unknown = [name for name in wanted if name not in CLIPS and name not in WORST_CASE_CLIPS]
    if unknown or not any(name in CLIPS for name in wanted):
        parser.error(f"--clips takes one or more of {list(CLIPS)} and optionally {list(WORST_CASE_CLIPS)}: {wanted}")
    os.makedirs(args.cache_dir, exist_ok=True)
    config = VideoSamplingConfig.from_preset(PRESET)
    written = time.perf_counter()
    clips = {name: clip_path(args.cache_dir, name) for name in wanted if name in CLIPS}
    worst_clips = {name: clip_path(args.cache_dir, name) for name in wanted if name in WORST_CASE_CLIPS}
    figures: dict[str, Any] = {
        "preset": PRESET,
        "clips": {name: clip_spec(name) for name in clips},
        "worst_case_clips": {name: clip_spec(name) for name in worst_clips},
        "clip_bytes": {name: os.path.getsize(path) for name, path in {**clips, **worst_clips}.items()},
        "clip_write_s": round(time.perf_counter() - written, 1),
        "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
    }

    # "auto" is PyAV (chosen by this benchmark); decord and torchcodec through the same function show why.
    paths: dict[str, Callable] = {
        "ours_auto": ours(config),
        "fetch_video_decord": fetch_video(config),
        "transformers_load_video": transformers_load_video(config),
        "ours_decord": ours(config, "decord"),
    }
    if "torchcodec" in available_backends():
        try:
            import torchcodec.decoders  # noqa: F401  (needs a system FFmpeg as well as the wheel)

            paths["ours_torchcodec"] = ours(config, "torchcodec")
        except Exception:  # noqa: BLE001 - an optional backend that cannot load is left out of the table
            pass
    smallest = min(clips, key=lambda name: clip_spec(name)["num_frames"])
    for run in paths.values():  # one-time import and initialisation costs are not a video's decode
        run(clips[smallest])
    figures["agreement"] = {
        clip: check_agreement({name: run(path) for name, run in paths.items()}, "fetch_video_decord")
        for clip, path in {**clips, **worst_clips}.items()
    }
    timings = time_paths(paths, clips, args.repeats)
    figures["seconds"] = timings
    if worst_clips:
        worst = time_paths({name: paths[name] for name in WORST_CASE_PATHS}, worst_clips, args.repeats)
        figures["worst_case_seconds"] = worst

        def worst_ratio(kind: str) -> float:
            reference_s = sum(worst["fetch_video_decord"][clip][kind] for clip in worst_clips)
            return round(reference_s / sum(worst["ours_auto"][clip][kind] for clip in worst_clips), 2)

        # Apart from the set's figures: this clip costs some six times real footage to decode.
        figures["speedup_vs_fetch_video_noise"] = {"ours_auto": worst_ratio("wall_s")}
        figures["cpu_speedup_vs_fetch_video_noise"] = {"ours_auto": worst_ratio("cpu_s")}

    with tempfile.TemporaryDirectory() as tmp:
        for mode in ("lossless", "lossy"):
            store_dir = os.path.join(tmp, mode)
            summary = prepare_frames(list(clips.values()), store_dir, config, mode=mode, num_workers=2, progress=False)
            from videorft_hf.frame_store import FrameStore

            store = FrameStore(store_dir)
            name = f"store_{mode}"
            read = from_store(config, store)
            for clip, path in clips.items():
                frames, indices = read(path)
                reference, ref_indices = paths["ours_auto"](path)
                if indices != ref_indices or (mode == "lossless" and not np.array_equal(frames, reference)):
                    raise AssertionError(f"{name} returned other frames than decoding for {clip}")
            timings[name] = time_paths({name: read}, clips, args.store_repeats)[name]
            figures[f"{name}_prepare_s"] = summary["seconds"]
            figures[f"{name}_bytes_per_video"] = summary["bytes_written"] // max(1, summary["stored"])
            if store.misses:
                raise AssertionError(f"{name}: {store.misses} misses")

    def throughput(name: str) -> float:
        return len(clips) / sum(timings[name][clip]["wall_s"] for clip in clips)

    reference = throughput("fetch_video_decord")
    figures["videos_per_s"] = {name: round(throughput(name), 3) for name in timings}
    figures["speedup_vs_fetch_video"] = {name: round(throughput(name) / reference, 2) for name in timings}
    cpu_reference = sum(timings["fetch_video_decord"][clip]["cpu_s"] for clip in clips)
    figures["cpu_speedup_vs_fetch_video"] = {  # CPU seconds: steadier than wall time on a shared machine
        name: round(cpu_reference / sum(timings[name][clip]["cpu_s"] for clip in clips), 2) for name in timings
    }
    figures["speedup_vs_fetch_video_per_clip"] = {
        name: {
            clip: round(timings["fetch_video_decord"][clip]["wall_s"] / timings[name][clip]["wall_s"], 2)
            for clip in clips
        }
        for name in timings
    }
    figures["first_decode_speedup"] = figures["speedup_vs_fetch_video"]["ours_auto"]
    figures["store_lossless_speedup"] = figures["speedup_vs_fetch_video"]["store_lossless"]
    figures["store_lossy_speedup"] = figures["speedup_vs_fetch_video"]["store_lossy"]
    figures["targets_met"] = {
        "first_decode_2x": figures["first_decode_speedup"] >= 2.0,
        # The issue states this target for JPEG frames (16 JPEG decodes at 224x420 in about 14 ms): the lossy store.
        # The lossless (PNG) store is reported next to it; it trades speed for exact pixels.
        "store_20x": figures["store_lossy_speedup"] >= 20.0,
    }
    return figures


def _print(figures: dict[str, Any]) -> None:
    clips = list(figures["clips"])
    print(f"| path | {' | '.join(f'{c} wall s (cpu s)' for c in clips)} | videos/s | vs fetch_video |")
    print("|---|" + "---|" * (len(clips) + 2))
    for name, per_clip in figures["seconds"].items():
        cells = " | ".join(f"{per_clip[c]['wall_s']:.3f} ({per_clip[c]['cpu_s']:.3f})" for c in clips)
        print(f"| {name} | {cells} | {figures['videos_per_s'][name]} | {figures['speedup_vs_fetch_video'][name]}x |")
    worst = figures.get("worst_case_seconds")
    if worst:
        worst_clips = list(figures["worst_case_clips"])
        print("\nWorst case, not part of the set's figures:\n")
        print(f"| path | {' | '.join(f'{c} wall s (cpu s)' for c in worst_clips)} |")
        print("|---|" + "---|" * len(worst_clips))
        for name, per_clip in worst.items():
            cells = " | ".join(f"{per_clip[c]['wall_s']:.3f} ({per_clip[c]['cpu_s']:.3f})" for c in worst_clips)
            print(f"| {name} | {cells} |")
        print(f"speedup_vs_fetch_video_noise: {figures['speedup_vs_fetch_video_noise']}\n")
    print(json.dumps({k: v for k, v in figures.items() if k not in ("seconds", "worst_case_seconds")}, indent=2))


if __name__ == "__main__":
    _print(main())
    sys.exit(0)
