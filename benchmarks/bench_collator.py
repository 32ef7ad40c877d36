"""Throughput of the SFT collator: samples per second through a `DataLoader`, decoding in the main process
(`num_workers=0`, the reference) versus in worker processes.

Writes `--videos` real H.264 clips (320x240, 30 fps, 4 s, noise texture so decoding costs what footage costs), builds
`--rows` VideoRFT CoT rows over them (each row decodes its video: no frame cache), and collates them with
`DataCollatorForVideoLanguageModeling` (the "videorft-train" preset: 16 frames at 128*28*28 pixels) and the tiny
Qwen2.5-VL processor of `videorft_hf.testing` (a real `Qwen2_5_VLProcessor`; only the tokenizer is tiny). No model
runs. Each setting is timed over a full pass, worker start-up included, after one warm-up pass.

    HF_HUB_OFFLINE=1 python benchmarks/bench_collator.py [--rows 64] [--videos 16] [--batch-size 2] [--workers 0 1 2]

`main(argv)` returns the figures as a dict, for a benchmark runner.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from torch.utils.data import DataLoader  # noqa: E402

from videorft_hf import DataCollatorForVideoLanguageModeling, make_conversation  # noqa: E402
from videorft_hf.testing import build_tiny_processor, write_test_video  # noqa: E402
from videorft_hf.video import VideoSamplingConfig  # noqa: E402


def write_rows(root: str, num_videos: int, num_rows: int) -> list[dict[str, Any]]:
    """Writes the clips under `root` and returns `num_rows` SFT rows cycling over them."""
    for i in range(num_videos):
        write_test_video(
            os.path.join(root, f"clip{i}.mp4"), num_frames=120, fps=30.0, width=320, height=240, pattern="noise"
        )
    rows = []
    for i in range(num_rows):
        record = {
            "problem_id": i,
            "problem": "What does the person do after opening the door?",
            "data_type": "video",
            "problem_type": "multiple choice",
            "options": ["A. sits down", "B. leaves", "C. waves", "D. reads"],
            "process": "<think>Let me think. The person opens the door, looks around, then sits down.</think>",
            "solution": "<answer>A</answer>",
            "path": f"./clip{i % num_videos}.mp4",
            "data_source": "bench",
        }
        rows.append(make_conversation(record, media_root=root))
    return rows


def time_pass(rows: list[dict], collator, batch_size: int, workers: int) -> float:
    """Seconds for one full pass over `rows` (worker start-up included)."""
    start = time.perf_counter()
    loader = DataLoader(rows, batch_size=batch_size, collate_fn=collator, num_workers=workers)
    for _ in loader:
        pass
    return time.perf_counter() - start


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=64)
    parser.add_argument("--videos", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--backend", default="auto")
    args = parser.parse_args(argv)

    processor = build_tiny_processor("qwen2_5_vl")
    collator = DataCollatorForVideoLanguageModeling(
        processor, sampling_config=VideoSamplingConfig.from_preset("videorft-train"), video_backend=args.backend
    )
    results: dict[str, Any] = {
        "rows": args.rows,
        "videos": args.videos,
        "batch_size": args.batch_size,
        "cpus": os.cpu_count(),
        "backend": args.backend,
    }
    with tempfile.TemporaryDirectory() as root:
        rows = write_rows(root, args.videos, args.rows)
        first = collator(rows[:1])
        results["tokens_per_sample"] = int(first["input_ids"].shape[1])
        results["video_grid_thw"] = first["video_grid_thw"][0].tolist()
        time_pass(rows[: max(args.batch_size, 4)], collator, args.batch_size, 0)  # warm-up: imports, page cache
        figures = {}
        for workers in args.workers:
            seconds = time_pass(rows, collator, args.batch_size, workers)
            figures[workers] = {"seconds": round(seconds, 3), "samples_per_s": round(args.rows / seconds, 2)}
    reference = figures.get(0, next(iter(figures.values())))["samples_per_s"]
    for workers, figure in figures.items():
        figure["speedup_vs_num_workers_0"] = round(figure["samples_per_s"] / reference, 2)
        print(
            f"num_workers={workers}: {figure['samples_per_s']:7.2f} samples/s "
            f"({figure['seconds']:.2f} s for {args.rows} rows) x{figure['speedup_vs_num_workers_0']:.2f}"
        )
    results["num_workers"] = figures
    print(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
