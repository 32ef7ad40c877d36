"""Loading the full RL set without materialising media: a 310K-row JSONL in the release schema goes through
`load_videorft_dataset`, map-style (then every row is read back) and streaming (every row iterated); then the same
rows are built into the Hub-native layout (`dataset_scripts/`) and loaded from it, map-style and streaming.

Prints wall time, rows/s and memory for each phase; no media file exists or is opened. Peak RSS is sampled every
5 ms during each phase (so each phase gets its own peak; `baseline_rss_mib` is the process after importing torch,
transformers and datasets), next to the process's lifetime peak from `resource.getrusage`. RSS counts the pages of
memory-mapped Arrow files that were read, so reading every row of a map-style dataset grows it by up to the cache
size without allocating. `--tracemalloc` adds the peak of Python allocations per phase (and slows everything down).

    HF_HUB_OFFLINE=1 python benchmarks/bench_load_310k.py [--rows 310000] [--num-proc N] [--tracemalloc]

`main(argv)` returns the figures as a dict, for a benchmark runner.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import sys
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Callable, Sequence
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import datasets  # noqa: E402

from videorft_hf.data import load_videorft_dataset  # noqa: E402
from videorft_hf.dataset_builder import DatasetSpec, build_dataset  # noqa: E402

PROBLEM_TYPES = ("multiple choice", "numerical", "OCR", "free-form", "regression")
SOURCES = ("LLaVA-Video-178K/30_60_s_youtube_v0_1", "CLEVRER", "STAR", "Video-R1-image/ChartQA", "PerceptionTest")


def write_release_jsonl(path: str, rows: int, seed: int = 0) -> int:
    """Writes `rows` release-schema records (44% video, all five problem types, about 250 words of question) and
    returns the file size in bytes."""
    rng = random.Random(seed)
    filler = "the person in the red jacket walks towards the door while the camera pans left".split()
    with open(path, "w", encoding="utf-8") as stream:
        for problem_id in range(rows):
            problem_type = PROBLEM_TYPES[problem_id % len(PROBLEM_TYPES)]
            data_type = "video" if rng.random() < 0.44 else "image"
            record = {
                "problem_id": problem_id,
                "problem": " ".join(rng.choices(filler, k=rng.randint(12, 40))) + "?",
                "data_type": data_type,
                "problem_type": problem_type,
                "options": ["A. left", "B. right", "C. up", "D. down"] if problem_type == "multiple choice" else [],
                "process": "",
                "solution": "<answer>A</answer>"
                if problem_type == "multiple choice"
                else f"<answer>{problem_id % 97}</answer>",
                "path": f"./{SOURCES[problem_id % len(SOURCES)]}/{problem_id:07d}.{'mp4' if data_type == 'video' else 'jpg'}",
                "data_source": SOURCES[problem_id % len(SOURCES)],
            }
            stream.write(json.dumps(record) + "\n")
    return os.path.getsize(path)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as stream:
        return int(stream.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _lifetime_peak_mib() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 / 1024 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


def _phase(name: str, fn: Callable[[], Any], use_tracemalloc: bool) -> tuple[Any, dict[str, float]]:
    """Runs `fn`, timing it and sampling its peak RSS on a background thread."""
    peak, stop = [_rss_bytes()], threading.Event()

    def sample() -> None:
        while not stop.wait(0.005):
            peak[0] = max(peak[0], _rss_bytes())

    sampler = threading.Thread(target=sample, daemon=True)
    start_rss = _rss_bytes()
    if use_tracemalloc:
        tracemalloc.start()
    sampler.start()
    start = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - start
    stop.set()
    sampler.join()
    figures = {
        f"{name}_s": round(seconds, 3),
        f"{name}_peak_rss_mib": round(max(peak[0], _rss_bytes()) / 2**20, 1),
        f"{name}_rss_growth_mib": round((max(peak[0], _rss_bytes()) - start_rss) / 2**20, 1),
    }
    if use_tracemalloc:
        figures[f"{name}_tracemalloc_peak_mib"] = round(tracemalloc.get_traced_memory()[1] / 2**20, 1)
        tracemalloc.stop()
    return result, figures


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Runs the benchmark and returns its figures (seconds, rows/s, MiB)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=310_000, help="rows to generate (default 310000)")
    parser.add_argument("--num-proc", type=int, default=None, help="processes for the conversion map (map-style)")
    parser.add_argument("--tracemalloc", action="store_true", help="also trace Python allocations (slow)")
    parser.add_argument("--skip-hub", action="store_true", help="skip building and loading the Hub-native layout")
    args = parser.parse_args(argv)
    datasets.disable_progress_bars()

    figures: dict[str, Any] = {"rows": args.rows, "num_proc": args.num_proc}
    figures["baseline_rss_mib"] = round(_rss_bytes() / 2**20, 1)
    with tempfile.TemporaryDirectory(prefix="videorft_bench_") as tmp:
        path = os.path.join(tmp, "VideoRFT-RL-310K.jsonl")
        media_root = os.path.join(tmp, "media")  # an empty root: it must exist (MediaRootError), loading reads no media
        os.makedirs(media_root)
        cache_dir = os.path.join(tmp, "cache")
        figures["jsonl_mib"] = round(write_release_jsonl(path, args.rows) / 2**20, 1)

        def load(streaming: bool = False):
            return load_videorft_dataset(
                path, media_root=media_root, cache_dir=cache_dir, streaming=streaming, num_proc=args.num_proc
            )

        dataset, phase = _phase("load", load, args.tracemalloc)
        figures.update(phase)
        assert len(dataset) == args.rows, (len(dataset), args.rows)
        count, phase = _phase("iterate", lambda: sum(1 for _ in dataset), args.tracemalloc)
        figures.update(phase)
        assert count == args.rows
        _, phase = _phase("reload_cached", load, args.tracemalloc)
        figures.update(phase)

        def stream_all() -> int:
            return sum(1 for _ in load(streaming=True))

        count, phase = _phase("streaming", stream_all, args.tracemalloc)
        figures.update(phase)
        assert count == args.rows
        figures["cache_mib"] = round(
            sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(cache_dir) for f in files) / 2**20, 1
        )

        if not args.skip_hub:
            hub_dir = os.path.join(tmp, "hub")
            card = os.path.join(tmp, "card.md")
            with open(card, "w") as stream:
                stream.write("# $pretty_name\n\n$num_rows rows.\n")
            spec = DatasetSpec("VideoRFT-RL-310K", card)
            _, phase = _phase(
                "hub_build", lambda: build_dataset(path, hub_dir, spec, progress=False), args.tracemalloc
            )
            figures.update(phase)

            def hub_load(streaming: bool = False):
                return load_videorft_dataset(
                    hub_dir, media_root=media_root, cache_dir=cache_dir, streaming=streaming, num_proc=args.num_proc
                )

            dataset, phase = _phase("hub_load", hub_load, args.tracemalloc)
            figures.update(phase)
            assert len(dataset) == args.rows
            count, phase = _phase("hub_streaming", lambda: sum(1 for _ in hub_load(streaming=True)), args.tracemalloc)
            figures.update(phase)
            assert count == args.rows
        figures["media_root_untouched"] = not os.listdir(media_root)

    figures["load_rows_per_s"] = round(args.rows / figures["load_s"])
    figures["iterate_rows_per_s"] = round(args.rows / figures["iterate_s"])
    figures["streaming_rows_per_s"] = round(args.rows / figures["streaming_s"])
    for name in ("hub_build", "hub_load", "hub_streaming"):
        if f"{name}_s" in figures:
            figures[f"{name}_rows_per_s"] = round(args.rows / figures[f"{name}_s"])
    figures["lifetime_peak_rss_mib"] = round(_lifetime_peak_mib(), 1)
    return figures


if __name__ == "__main__":
    results = main()
    width = max(len(key) for key in results)
    for key, value in results.items():
        print(f"{key:<{width}}  {value}")
